"""Step-for-step agreement with k-diffusion's samplers (Karras et al. 2022's codebase; reference code
copied verbatim into tests/kdiffusion_ref.py), float64, the GMM oracle as the model.

k-diffusion integrates in x̃ = z/α with noise level σ̃ = σ/α and a denoiser D(x̃, σ̃) = E[x | x + σ̃ ε = x̃];
ours run on z with the process's own time. Same grid (σ̃ at our grid times, no trailing zero), same start
x̃_T = z_T/α(t_max), same noise: every step's x̂ and the final state must agree."""
import sys

import pytest
import torch

from difflab.models import GMMOracle
from difflab.processes import VESDE, VPSDE
from difflab.samplers import make_grid, sample

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import kdiffusion_ref as kd  # noqa: E402

ORACLE = GMMOracle([[-2.0, 0.5], [1.5, -1.0], [0.0, 2.0]], [0.4, 0.7, 0.3], [0.3, 0.5, 0.2])
SHAPE, STEPS = (32, 2), 8
PROCESSES = {"vp": VPSDE(0.1, 20.0), "ve": VESDE(0.01, 50.0)}


def kd_model(x, sigma):
    return ORACLE.posterior_mean(x, torch.ones_like(sigma), sigma)


def gen_noise(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(SHAPE, generator=g, dtype=torch.float64)


CHURN = dict(s_churn=10.0, s_tmin=0.05, s_tmax=10.0, s_noise=1.003)
# ours, theirs, our options, their options, stochastic (their last step adds noise, ours does not)
CASES = {
    "ode_euler": ("ode_euler", kd.sample_euler, {}, {}, False),
    "ode_heun": ("ode_heun", kd.sample_heun, {}, {}, False),
    "edm_stochastic": ("edm_stochastic", kd.sample_heun, CHURN, CHURN, False),
    "dpm_solver": ("dpm_solver", kd.sample_dpmpp_2m, dict(lower_order_final=False), {}, False),
    "dpm_solver_3m": ("dpm_solver_3m", kd.sample_dpmpp_3m_sde, dict(lower_order_final=False),
                      dict(eta=0.0, noise_sampler=0), False),
    "dpm_solver_sde": ("dpm_solver_sde", kd.sample_dpmpp_2m_sde, dict(lower_order_final=False),
                       dict(eta=1.0, noise_sampler=9), True),
    "dpm_solver_3m_sde": ("dpm_solver_3m_sde", kd.sample_dpmpp_3m_sde, dict(lower_order_final=False, eta=0.7),
                          dict(eta=0.7, noise_sampler=9), True),
}


@pytest.mark.parametrize("pid", list(PROCESSES))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("grid", ["edm", "uniform_log_snr"])
def test_matches_kdiffusion_step_for_step(pid, case, grid):
    ours, theirs, opts, kopts, stochastic = CASES[case]
    process = PROCESSES[pid]
    ts = make_grid(process, STEPS, grid)
    alpha = process.alpha(ts)
    sigmas = torch.exp(-0.5 * process.log_snr(ts))
    x_T = process.prior_sample(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    den_ours, den_kd = [], []
    out = sample(ORACLE.denoiser(process), process, SHAPE, ours, STEPS, grid=ts, x_T=x_T, dtype=torch.float64,
                 generator=torch.Generator().manual_seed(9), callback=lambda d: den_ours.append(d["denoised"]), **opts)
    if "noise_sampler" in kopts:  # a fresh noise stream per test, seeded as ours
        kopts = {**kopts, "noise_sampler": gen_noise(kopts["noise_sampler"])}
    torch.manual_seed(9)  # k-diffusion's churn noise comes from the global generator
    x_kd = theirs(kd_model, x_T / alpha[0], sigmas, callback=lambda d: den_kd.append(d["denoised"]), disable=True, **kopts)
    assert len(den_ours) == len(den_kd) == STEPS
    for i, (a, b) in enumerate(zip(den_ours, den_kd)):
        assert torch.allclose(a, b, atol=1e-9, rtol=1e-9), f"step {i}: x̂ differs by {(a - b).abs().max():.2e}"
    if not stochastic:
        torch.testing.assert_close(out.samples / alpha[-1], x_kd, atol=1e-9, rtol=1e-9)
