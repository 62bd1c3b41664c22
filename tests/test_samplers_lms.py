"""The linear multistep sampler `lms` and the `vp_uniform_t` grid, against theory and k-diffusion.

- Adams–Bashforth weights integrate every polynomial of degree < order exactly (Hairer et al., III.5).
- On one Gaussian N(μ, s²) the probability-flow ODE in x̃ = z/α, σ̃ = σ/α has the closed form
  x̃(σ̃) = μ + (x̃_T − μ) √(s² + σ̃²)/√(s² + σ̃_T²) (Karras et al. 2022, Eq. 4 with the exact denoiser):
  the error must fall with the step at least as h² (order 4 after an Euler start; global order ≥ 2), and
  order 4 must beat order 1 (Euler, global order 1); the Adams–Moulton corrector (PEC) must converge as
  fast and err less.
- Step for step equal to k-diffusion's `sample_lms` (tests/kdiffusion_ref.py), with and without its
  trailing σ = 0.
- vp_uniform_t is the uniform_t grid of the linear-β VP SDE (Karras et al. 2022, Table 1).
"""
import sys

import numpy as np
import pytest
import torch

from conftest import PROCESS_IDS, all_processes
from difflab.models import GMMOracle
from difflab.processes import VESDE, VPSDE
from difflab.samplers import make_grid, sample
from difflab.samplers.multistep import lms_coefficients

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import kdiffusion_ref as kd  # noqa: E402


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_coefficients_integrate_polynomials_exactly(k):
    rng = np.random.default_rng(k)
    nodes = sorted(rng.uniform(0.1, 80.0, k), reverse=True)
    a, b = nodes[0], nodes[0] * 0.6
    c = lms_coefficients(nodes, a, b)
    for deg in range(k):
        p = np.polynomial.Polynomial(rng.normal(size=deg + 1))
        exact = p.integ()(b) - p.integ()(a)
        assert abs(sum(cj * p(nj) for cj, nj in zip(c, nodes)) - exact) < 1e-9 * (1 + abs(exact))


MU, S = 0.7, 0.3
GAUSS = GMMOracle([[MU]], [S], [1.0])


def _closed_form_error(process, steps, order, grid="edm", corrector=False):
    x_T = process.prior_sample((64, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = make_grid(process, steps, grid)
    a, s = process.alpha_sigma(ts[[0, -1]])
    st = s / a
    xt_T = x_T / a[0]
    exact = MU + (xt_T - MU) * torch.sqrt(S**2 + st[1] ** 2) / torch.sqrt(S**2 + st[0] ** 2)
    out = sample(GAUSS.denoiser(process), process, (64, 1), "lms", steps, grid=ts, x_T=x_T, dtype=torch.float64,
                 order=order, corrector=corrector).samples
    return float((out / a[1] - exact).abs().max())


@pytest.mark.parametrize("process", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_convergence_order_on_the_exact_ode(process):
    e = {n: _closed_form_error(process, n, 4) for n in (10, 20, 40)}
    assert e[10] / e[20] > 2**2 * 0.9 and e[20] / e[40] > 2**2 * 0.9, e
    e1 = {n: _closed_form_error(process, n, 1) for n in (20, 40)}
    assert 2 * 0.8 < e1[20] / e1[40] < 2 * 1.25, e1  # Euler: first order
    assert e[40] < e1[40] / 10


@pytest.mark.parametrize("process", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_adams_moulton_corrector_converges_and_is_more_accurate(process):
    """PEC with Adams–Moulton weights: at least the predictor's order, and a smaller error (AM's error
    constant is below AB's at every order; Hairer et al., Table III.1.2)."""
    # in the asymptotic range: on VP the signed error changes sign near 20 steps, so a ratio there says nothing
    e = {n: _closed_form_error(process, n, 4, corrector=True) for n in (40, 80)}
    assert e[40] / e[80] > 2**2 * 0.9, e
    for n in (40, 80):
        assert e[n] < _closed_form_error(process, n, 4), n


PROCS = {"vp": VPSDE(0.1, 20.0), "ve": VESDE(0.01, 50.0)}
ORACLE = GMMOracle([[-2.0, 0.5], [1.5, -1.0], [0.0, 2.0]], [0.4, 0.7, 0.3], [0.3, 0.5, 0.2])


@pytest.mark.parametrize("pid", list(PROCS))
@pytest.mark.parametrize("to_zero", [False, True])
@pytest.mark.parametrize("grid", ["edm", "uniform_t"])
def test_matches_kdiffusion_sample_lms(pid, to_zero, grid):
    process, steps = PROCS[pid], 8
    ts = make_grid(process, steps, grid)
    alpha = process.alpha(ts)
    sigmas = torch.exp(-0.5 * process.log_snr(ts))
    if to_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    x_T = process.prior_sample((32, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    den_ours, den_kd = [], []
    out = sample(ORACLE.denoiser(process), process, (32, 2), "lms", steps, grid=ts, x_T=x_T, dtype=torch.float64,
                 to_zero=to_zero, callback=lambda d: den_ours.append(d["denoised"]))
    x_kd = kd.sample_lms(lambda x, s: ORACLE.posterior_mean(x, torch.ones_like(s), s), x_T / alpha[0], sigmas,
                         callback=lambda d: den_kd.append(d["denoised"]), disable=True)
    assert out.nfe == len(den_kd) == steps + int(to_zero)
    for i, (a, b) in enumerate(zip(den_ours, den_kd)):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8), f"step {i}: x̂ differs by {(a - b).abs().max():.2e}"
    torch.testing.assert_close(out.samples if to_zero else out.samples / alpha[-1], x_kd, atol=1e-8, rtol=1e-8)


def test_lms_rejects_bad_order():
    with pytest.raises(ValueError, match="order"):
        sample(ORACLE.denoiser(PROCS["vp"]), PROCS["vp"], (4, 2), "lms", 4, order=5)


def test_vp_uniform_t_is_the_vp_time_grid():
    process = VPSDE(0.1, 20.0)
    torch.testing.assert_close(make_grid(process, 17, "vp_uniform_t"), make_grid(process, 17, "uniform_t"))


@pytest.mark.parametrize("pid", PROCESS_IDS)
def test_vp_uniform_t_spans_every_process(pid):
    process = all_processes()[pid]
    ts = make_grid(process, 12, "vp_uniform_t")
    assert ts[0] == process.t_max and ts[-1] == process.t_min and bool((ts[1:] < ts[:-1]).all())


@pytest.mark.parametrize("pid", ["vp", "ve"])
def test_vp_uniform_t_below_sigma_max(pid):
    """First move t_max → σ̃ = sigma_max, then τ(σ̃) = (√(β_min² + 2 β_d log(1 + σ̃²)) − β_min)/β_d evenly spaced
    (Karras et al. 2022, Table 1, VP) down to σ̃(t_min)."""
    process, steps, cap = PROCS[pid], 9, 12.0
    ts = make_grid(process, steps, "vp_uniform_t", sigma_max=cap)
    sig = torch.exp(-0.5 * process.log_snr(ts))
    assert ts[0] == process.t_max and ts[-1] == process.t_min
    assert abs(float(sig[1]) - cap) < 1e-6 * cap
    tau = ((0.1**2 + 2 * 19.9 * torch.log1p(sig[1:] ** 2)).sqrt() - 0.1) / 19.9
    torch.testing.assert_close(tau.diff(), tau.diff().mean().expand(steps - 1), atol=1e-9, rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_max"):
        make_grid(process, steps, "vp_uniform_t", sigma_max=1e-4)
    # the same grid by name, as a sampler YAML writes it (grid: vp_uniform_t@12)
    torch.testing.assert_close(make_grid(process, steps, f"vp_uniform_t@{cap:g}"), ts, atol=0, rtol=0)


def test_a_sigma_cap_on_a_grid_without_one_is_refused():
    with pytest.raises(ValueError, match=r"only vp_uniform_t take a σ̃ cap.*use grid=uniform_t"):
        make_grid(PROCS["vp"], 5, "uniform_t@10")
    with pytest.raises(ValueError, match="must be a number"):
        make_grid(PROCS["vp"], 5, "vp_uniform_t@ten")
