"""iPNDM (Zhang & Chen 2023; the fixed-weight form of Zhou et al. 2024) against theory and its definition.

- On a grid uniform in σ̃ (`edm` with ρ = 1) constant-step Adams–Bashforth *is* the variable-step one, so
  `ipndm` must equal `lms` (itself step for step k-diffusion's `sample_lms`, tests/test_samplers_lms.py).
- At order 1 both are Euler in (σ̃, x̃), which is DDIM with η = 0 (Song et al. 2021; Karras et al. 2022, Sec. 3):
  `ipndm` order 1 must equal `ddim` on every grid.
- On the ρ = 7 grid the weights are the constant-step ones, not lms's: a transcription of the papers' loop
  (x_{i+1} = x_i + (σ_{i+1} − σ_i)(55 d_i − 59 d_{i−1} + 37 d_{i−2} − 9 d_{i−3})/24 after a lower-order start),
  written here on the oracle in EDM variables, must agree, and must differ from lms.
- On one Gaussian the probability-flow ODE has a closed form (tests/test_samplers_lms.py): the error must fall
  with the step count.
"""
import pytest
import torch

from conftest import PROCESS_IDS, all_processes
from difflab.models import GMMOracle
from difflab.processes import VESDE, VPSDE
from difflab.samplers import make_grid, sample

ORACLE = GMMOracle([[-2.0, 0.0], [2.0, 0.5]], [0.5, 0.6], [0.4, 0.6])
N = 64


def _run(process, sampler, steps, grid, **opts):
    x_T = process.prior_sample((N, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ts = make_grid(process, steps, grid[0], **grid[1]) if isinstance(grid, tuple) else make_grid(process, steps, grid)
    return sample(ORACLE.denoiser(process), process, (N, 2), sampler, steps, grid=ts, x_T=x_T, dtype=torch.float64,
                  **opts)


@pytest.fixture(scope="module")
def procs():
    return all_processes()


@pytest.mark.parametrize("pid", PROCESS_IDS)
@pytest.mark.parametrize("steps", [3, 8])
def test_on_a_grid_uniform_in_sigma_tilde_ipndm_is_lms(procs, pid, steps):
    process = procs[pid]
    a = _run(process, "ipndm", steps, ("edm", {"rho": 1.0}))
    b = _run(process, "lms", steps, ("edm", {"rho": 1.0}))
    assert a.nfe == b.nfe == steps
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("pid", PROCESS_IDS)
@pytest.mark.parametrize("grid", ["edm", "uniform_log_snr", "uniform_t"])
def test_order_one_is_ddim(procs, pid, grid):
    process = procs[pid]
    a = _run(process, "ipndm", 7, grid, order=1)
    b = _run(process, "ddim", 7, grid, eta=0.0)
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-9, atol=1e-9)


def _papers_loop(process, steps, to_zero):
    """The published loop, in σ̃ and x̃ = z/α with the oracle's x̂ (written from the papers' equations)."""
    ts = make_grid(process, steps, "edm")
    alpha, sigma = process.alpha_sigma(ts)
    sig = (sigma / alpha).tolist() + ([0.0] if to_zero else [])
    x = process.prior_sample((N, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64) / alpha[0]
    den = ORACLE.denoiser(process)
    buf = []
    for i in range(len(sig) - 1):
        t = ts[i].expand(N)
        d = (x - den(alpha[i] * x, t).x0) / sig[i]
        h = sig[i + 1] - sig[i]
        k = min(4, i + 1)
        if k == 1:
            x = x + h * d
        elif k == 2:
            x = x + h * (3 * d - buf[-1]) / 2
        elif k == 3:
            x = x + h * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
        else:
            x = x + h * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24
        buf.append(d)
    return x if to_zero else alpha[-1] * x


@pytest.mark.parametrize("process", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("to_zero", [False, True])
def test_the_papers_loop_on_the_rho_7_grid_and_not_lms(process, to_zero):
    ours = _run(process, "ipndm", 9, "edm", to_zero=to_zero)
    assert ours.nfe == 9 + int(to_zero)
    torch.testing.assert_close(ours.samples, _papers_loop(process, 9, to_zero), rtol=1e-9, atol=1e-9)
    other = _run(process, "lms", 9, "edm", to_zero=to_zero)
    assert (ours.samples - other.samples).abs().max() > 1e-4  # constant-step weights are not lms's on ρ = 7


MU, S = 0.7, 0.3
GAUSS = GMMOracle([[MU]], [S], [1.0])


@pytest.mark.parametrize("process", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_error_falls_with_the_steps_on_the_exact_ode(process):
    def err(steps, order=4):
        x_T = process.prior_sample((64, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        ts = make_grid(process, steps, "edm")
        a, s = process.alpha_sigma(ts[[0, -1]])
        st = s / a
        exact = MU + (x_T / a[0] - MU) * torch.sqrt(S**2 + st[1] ** 2) / torch.sqrt(S**2 + st[0] ** 2)
        out = sample(GAUSS.denoiser(process), process, (64, 1), "ipndm", steps, grid=ts, x_T=x_T, dtype=torch.float64,
                     order=order).samples
        return float((out / a[1] - exact).abs().max())

    e = {n: err(n) for n in (10, 20, 40)}
    euler = {n: err(n, order=1) for n in (10, 20, 40)}
    # fixed weights on a non-uniform grid keep at least first order, and err less than Euler at every step count
    assert e[10] / e[20] > 2 * 0.9 and e[20] / e[40] > 2 * 0.9, e
    assert all(e[n] < euler[n] for n in e), (e, euler)


def test_bad_order_is_refused():
    with pytest.raises(ValueError, match="order must be an integer in 1..4"):
        _run(VPSDE(), "ipndm", 4, "edm", order=5)
