"""Time grids: shape, endpoints, monotone, finite log-SNR on every process; the defining
property of each spacing; DDPM spacings equal diffusers' timesteps."""
import math

import pytest
import torch

from conftest import PROCESS_IDS, all_processes
from difflab.processes import DDPM
from difflab.samplers import grids

CONTINUOUS = ["uniform_t", "uniform_log_snr", "edm"]


@pytest.fixture(scope="module")
def procs():
    return all_processes()


@pytest.mark.parametrize("pid", PROCESS_IDS)
@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_grid_shape_ends_and_finite_log_snr(procs, pid, name, steps):
    p = procs[pid]
    ts = grids.GRIDS[name](p, steps)
    assert ts.shape == (steps + 1,) and ts.dtype == torch.float64
    assert ts[0] == p.t_max and ts[-1] == p.t_min
    assert bool((ts[1:] < ts[:-1]).all())
    with torch.no_grad():
        assert torch.isfinite(p.log_snr(ts)).all()


@pytest.mark.parametrize("pid", ["snr_cosine", "vp", "subvp", "ve", "snr_learned"])
def test_uniform_log_snr_spacing(procs, pid):
    p = procs[pid]
    with torch.no_grad():
        lam = p.log_snr(grids.uniform_log_snr(p, 20)).double()
    d = lam[1:] - lam[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pid", ["snr_linear", "vp", "ve"])
def test_edm_rho_spacing(procs, pid):
    """σ̃ = σ/α = e^{−λ/2}; σ̃^{1/ρ} is evenly spaced (Karras et al. 2022, Eq. 5)."""
    p = procs[pid]
    with torch.no_grad():
        s = torch.exp(-0.5 * p.log_snr(grids.edm(p, 16, rho=7.0)).double()) ** (1 / 7)
    d = s[1:] - s[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-4)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ddpm_spacings_match_diffusers(spacing, steps):
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, steps_offset=0)
    sch.set_timesteps(steps)
    p = DDPM(1000)
    ts = grids.GRIDS[f"ddpm_{spacing}"](p, steps)
    assert ts.shape == (steps + 1,)
    assert torch.allclose(ts[:-1] * 1000, sch.timesteps.double() + 1)
    assert ts[-1] == p.t_min
    with torch.no_grad():
        assert torch.isfinite(p.log_snr(ts)).all()


@pytest.mark.parametrize("name", ["ddpm_trailing", "ddpm_leading"])
def test_ddpm_grids_need_a_discrete_process(procs, name):
    with pytest.raises(ValueError, match="needs a discrete process"):
        grids.GRIDS[name](procs["vp"], 10)


def test_bad_steps_and_explicit_grids(procs):
    p = procs["vp"]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        grids.uniform_t(p, 0)
    with pytest.raises(ValueError, match="non-increasing"):
        grids.make_grid(p, 2, [0.1, 0.5, 1.0])
    ts = grids.make_grid(p, 2, [1.0, 0.5, 1e-5])
    assert ts.tolist() == [1.0, 0.5, 1e-5]
    assert math.isclose(float(grids.make_grid(p, 3, lambda proc, n: grids.uniform_t(proc, n))[1]), 1 - (1 - 1e-5) / 3)
