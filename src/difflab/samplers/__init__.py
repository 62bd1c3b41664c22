"""Samplers: each a short pure function of (model, process, x, time grid, callback, generator,
options), written in α, σ, λ, f and g only, so every one runs with every process.

`sample(denoiser, process, shape, sampler=..., steps=...)` is the entry point;
`SAMPLERS` the registry (name -> SamplerSpec); `grids` the reusable time grids
(`grid="tuned:<file>"` reads one that `difflab.evaluation.tuning.tune_grid` fitted to a model).
"""
from . import grids
from .core import SAMPLERS, SampleOutput, SamplerSpec, check_sampler, sample
from .grids import GRIDS, ddpm_leading, ddpm_trailing, edm, make_grid, uniform_log_snr, uniform_t
from .exponential import dpm_solver, dpm_solver_3m, dpm_solver_3m_sde, dpm_solver_sde, unipc
from .multistep import ipndm, lms
from .ode import edm_stochastic, ode_euler, ode_heun, ode_rk45
from .stochastic import ancestral, annealed_langevin, ddim, euler_maruyama, langevin, langevin_step, pc

__all__ = [
    "sample", "SampleOutput", "SAMPLERS", "SamplerSpec", "check_sampler", "grids", "GRIDS", "make_grid",
    "uniform_t", "uniform_log_snr", "edm", "ddpm_leading", "ddpm_trailing",
    "ancestral", "ddim", "euler_maruyama", "pc", "annealed_langevin", "langevin", "langevin_step",
    "ode_euler", "ode_heun", "ode_rk45", "edm_stochastic", "dpm_solver", "dpm_solver_3m", "dpm_solver_sde",
    "dpm_solver_3m_sde", "unipc", "lms", "ipndm",
]
