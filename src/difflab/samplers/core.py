"""`sample()`: the one entry point over every sampler (registry, validation, NFE, seeding)."""
from __future__ import annotations

import contextlib
import inspect
import itertools
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..processes.base import Process
from . import exponential, multistep, ode, stochastic
from ._util import CountingModel
from .grids import make_grid


class SampleOutput(NamedTuple):
    samples: Tensor
    nfe: int


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function, its default time grid and its NFE per step (None: adaptive)."""

    fn: Callable
    default_grid: str
    nfe_per_step: Callable[[dict], int] | None = None
    options: dict = field(default_factory=dict)

    @staticmethod
    def make(fn, default_grid, nfe_per_step=None):
        params = inspect.signature(fn).parameters
        opts = {k: p.default for k, p in params.items() if k not in ("model", "process", "x", "ts", "callback", "generator")}
        return SamplerSpec(fn, default_grid, nfe_per_step, opts)


SAMPLERS: dict[str, SamplerSpec] = {
    "ancestral": SamplerSpec.make(stochastic.ancestral, "uniform_t", lambda o: 1),
    "ddim": SamplerSpec.make(stochastic.ddim, "uniform_t", lambda o: 1),
    "euler_maruyama": SamplerSpec.make(stochastic.euler_maruyama, "uniform_t", lambda o: 1),
    "pc": SamplerSpec.make(stochastic.pc, "uniform_t", lambda o: 1 + int(o["corrector_steps"])),
    "annealed_langevin": SamplerSpec.make(stochastic.annealed_langevin, "uniform_log_snr", lambda o: int(o["steps_each"])),
    "ode_euler": SamplerSpec.make(ode.ode_euler, "uniform_t", lambda o: 1),
    "ode_heun": SamplerSpec.make(ode.ode_heun, "edm", lambda o: 2),
    "ode_rk45": SamplerSpec.make(ode.ode_rk45, "uniform_t", None),
    "edm_stochastic": SamplerSpec.make(ode.edm_stochastic, "edm", lambda o: 2),
    "dpm_solver": SamplerSpec.make(exponential.dpm_solver, "uniform_log_snr", lambda o: 1),
    "dpm_solver_3m": SamplerSpec.make(exponential.dpm_solver_3m, "uniform_log_snr", lambda o: 1),
    "dpm_solver_sde": SamplerSpec.make(exponential.dpm_solver_sde, "uniform_log_snr", lambda o: 1),
    "dpm_solver_3m_sde": SamplerSpec.make(exponential.dpm_solver_3m_sde, "uniform_log_snr", lambda o: 1),
    "unipc": SamplerSpec.make(exponential.unipc, "uniform_log_snr", lambda o: 1),
    "lms": SamplerSpec.make(multistep.lms, "vp_uniform_t@10", lambda o: 1),  # + 1 NFE in all with to_zero
    "ipndm": SamplerSpec.make(multistep.ipndm, "edm", lambda o: 1),  # + 1 NFE in all with to_zero
}


def sampler_spec(sampler) -> SamplerSpec:
    """The registry entry of a sampler name, or a spec for a user's sampler function with the
    samplers' signature `(model, process, x, ts, callback, generator, **options)` (the extension
    path: `sampler._target_: my_pkg.my_sampler`); its default grid is uniform_t."""
    if callable(sampler):
        found = [s for s in SAMPLERS.values() if s.fn is sampler]
        return found[0] if found else SamplerSpec.make(sampler, "uniform_t")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def check_sampler(sampler, steps, options: dict) -> dict:
    """Validate the sampler (name or function), the step count and the option names; return the
    full option dict."""
    spec = sampler_spec(sampler)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(f"sampler {sampler!r} has no option {', '.join(unknown)}; its options are: {allowed}")
    return {**spec.options, **options}


def _infer_device(denoiser, generator, x_T: Tensor | None) -> torch.device:
    """Where to draw the start when `device=` is not given: x_T's device, else the generator's
    (the first of a list), else the denoiser's parameters or buffers, else the CPU."""
    if x_T is not None:
        return x_T.device
    first = generator[0] if isinstance(generator, (list, tuple)) and generator else generator
    if isinstance(first, torch.Generator):
        return first.device
    if isinstance(denoiser, torch.nn.Module):
        held = next(itertools.chain(denoiser.parameters(), denoiser.buffers()), None)
        if held is not None:
            return held.device
    return torch.device("cpu")


def sample(denoiser, process, shape, sampler="ddim", steps: int = 50, *, generator=None, device=None,
           dtype=torch.float32, callback=None, x_T: Tensor | None = None, grid=None, **options) -> SampleOutput:
    """Draw samples by running `sampler` for `steps` steps from the prior at t_max to t_min.

    denoiser: any callable (z [B, ...], t [B]) -> Prediction (a `Denoiser`, or
        `GMMOracle(...).denoiser(process)` for the exact answer).
    shape: (N, *data_shape). x_T: a start (else a draw of the process's prior).
    grid: None (the sampler's default), a name in `grids.GRIDS`, a function
        (process, steps) -> times, or an explicit descending sequence of steps + 1 times.
    generator: a torch.Generator, or a list of them, one per equal chunk of rows.
    options: the sampler's own (ddim: eta; pc: snr, corrector_steps; annealed_langevin:
        steps_each, step_lr; ode_rk45: rtol, atol, adaptive; dpm_solver: lower_order_final);
        grid options (edm: rho) are given as grid_rho=....
    Returns SampleOutput(samples, nfe) with nfe the number of denoiser calls on the batch.
    """
    grid_kwargs = {k[len("grid_"):]: options.pop(k) for k in list(options) if k.startswith("grid_")}
    opts = check_sampler(sampler, steps, options)
    spec = sampler_spec(sampler)
    ts = make_grid(process, int(steps), spec.default_grid if grid is None else grid, **grid_kwargs)
    if device is None:
        device = _infer_device(denoiser, generator, x_T)
    if x_T is None:
        if isinstance(generator, (list, tuple)):
            n = shape[0] // len(generator)
            x_T = torch.cat([process.prior_sample((n,) + tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])
        else:
            x_T = process.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}; give matching shapes")
        x_T = x_T.to(device=device, dtype=dtype)
    model = CountingModel(denoiser)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        if x_T.device.type != "cpu":  # the grid was checked once (make_grid); the CPU keeps every check, free there
            for proc in (process, getattr(denoiser, "process", None)):  # (the same one twice nests fine)
                if isinstance(proc, Process):
                    stack.enter_context(proc.times_unchecked())
        x = spec.fn(model, process, x_T, ts, callback=callback, generator=generator, **opts)
    return SampleOutput(x, model.nfe)
