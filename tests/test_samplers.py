"""Sampler API: every sampler with every process, NFE, callback, errors, no noise at the end."""
import math

import pytest
import torch

from conftest import PROCESS_IDS, all_processes
from difflab.models import GMMOracle
from difflab.samplers import SAMPLERS, SampleOutput, sample

ORACLE = GMMOracle([[-2.0, 0.0], [2.0, 0.5]], [0.5, 0.6], [0.4, 0.6])
STOCHASTIC = ["ancestral", "ddim", "euler_maruyama", "pc", "annealed_langevin", "dpm_solver_sde", "dpm_solver_3m_sde"]
EXPECTED_NFE_PER_STEP = {"ancestral": 1, "ddim": 1, "euler_maruyama": 1, "pc": 2, "annealed_langevin": 5,
                         "ode_euler": 1, "ode_heun": 2, "dpm_solver": 1, "edm_stochastic": 2, "dpm_solver_3m": 1,
                         "dpm_solver_sde": 1, "dpm_solver_3m_sde": 1, "unipc": 1, "lms": 1, "ipndm": 1}


@pytest.fixture(scope="module")
def procs():
    return all_processes()


def test_registry_names():
    assert set(SAMPLERS) == {"ancestral", "ddim", "euler_maruyama", "pc", "annealed_langevin", "ode_euler",
                             "ode_heun", "ode_rk45", "dpm_solver", "edm_stochastic", "dpm_solver_3m", "dpm_solver_sde",
                             "dpm_solver_3m_sde", "unipc", "lms", "ipndm"}


@pytest.mark.parametrize("pid", PROCESS_IDS)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_with_every_process(procs, pid, sampler):
    process = procs[pid]
    cb = []
    out = sample(ORACLE.denoiser(process), process, (16, 2), sampler, 6, generator=torch.Generator().manual_seed(0),
                 callback=cb.append)
    assert isinstance(out, SampleOutput)
    assert out.samples.shape == (16, 2) and out.samples.dtype == torch.float32
    assert torch.isfinite(out.samples).all()
    assert [c["i"] for c in cb] == list(range(6))
    assert torch.equal(cb[-1]["x"], out.samples)
    if sampler in EXPECTED_NFE_PER_STEP:
        assert out.nfe == 6 * EXPECTED_NFE_PER_STEP[sampler]
    else:
        assert out.nfe > 0


def test_images_and_float64(procs):
    """The same code runs on [B, C, H, W] (append_dims, no hard-coded dims)."""
    process = procs["vp"]
    oracle = GMMOracle(torch.randn(2, 12, generator=torch.Generator().manual_seed(0)) * 0.5, [0.3, 0.3], [0.5, 0.5])
    for s in SAMPLERS:
        out = sample(oracle.denoiser(process), process, (4, 3, 2, 2), s, 3, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(0))
        assert out.samples.shape == (4, 3, 2, 2) and out.samples.dtype == torch.float64
        assert torch.isfinite(out.samples).all()


@pytest.mark.parametrize("sampler", STOCHASTIC)
def test_last_step_injects_no_noise(procs, sampler):
    """With one step (the last), the result cannot depend on the generator."""
    process = procs["vp"]
    den = ORACLE.denoiser(process)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    # (pc's corrector runs *before* the predictor at each t and is noisy by design: check the predictor)
    opts = {"annealed_langevin": {"steps_each": 1}, "pc": {"corrector_steps": 0}}.get(sampler, {})
    a = sample(den, process, (32, 2), sampler, 1, x_T=x_T, generator=torch.Generator().manual_seed(2), **opts)
    b = sample(den, process, (32, 2), sampler, 1, x_T=x_T, generator=torch.Generator().manual_seed(3), **opts)
    assert torch.equal(a.samples, b.samples)
    # while earlier steps do inject noise
    a = sample(den, process, (32, 2), sampler, 3, x_T=x_T, generator=torch.Generator().manual_seed(2), **opts)
    b = sample(den, process, (32, 2), sampler, 3, x_T=x_T, generator=torch.Generator().manual_seed(3), **opts)
    if sampler != "ddim":
        assert not torch.allclose(a.samples, b.samples)


@pytest.mark.parametrize("pid", ["ddpm_linear", "vp", "ve", "snr_cosine"])
def test_ddim_eta1_is_ancestral(procs, pid):
    """DDIM with η = 1 is the DDPM posterior step (docs/pitfalls.md: N = T DDIM(η=1) steps reproduce
    ancestral sampling); same noise, float64."""
    process = procs[pid]
    den = ORACLE.denoiser(process)
    kw = dict(x_T=torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dtype=torch.float64)
    grid = "ddpm_trailing" if pid.startswith("ddpm") else "uniform_t"
    steps = 200 if pid == "ddpm_linear" else 40
    a = sample(den, process, (64, 2), "ddim", steps, eta=1.0, grid=grid, generator=torch.Generator().manual_seed(5), **kw)
    b = sample(den, process, (64, 2), "ancestral", steps, grid=grid, generator=torch.Generator().manual_seed(5), **kw)
    assert (a.samples - b.samples).abs().max() < 1e-9


def test_generator_list_seeds_each_chunk(procs):
    """A list of generators seeds each chunk of rows: a chunk's samples don't depend on its batch."""
    process = procs["vp"]
    den = ORACLE.denoiser(process)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    both = sample(den, process, (16, 2), "euler_maruyama", 10, generator=[g(1), g(2)])
    first = sample(den, process, (8, 2), "euler_maruyama", 10, generator=[g(1)])
    second = sample(den, process, (8, 2), "euler_maruyama", 10, generator=[g(2)])
    assert torch.allclose(both.samples, torch.cat([first.samples, second.samples]), atol=1e-6)
    pc_both = sample(den, process, (16, 2), "pc", 5, generator=[g(1), g(2)])
    pc_second = sample(den, process, (8, 2), "pc", 5, generator=[g(2)])
    assert torch.allclose(pc_both.samples[8:], pc_second.samples, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(sampler="nope"), "unknown sampler 'nope'"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(steps=2.5), "steps must be an integer >= 1"),
    (dict(sampler="ddim", temperature=1.0), "has no option temperature; its options are: eta"),
    (dict(sampler="ddim", eta=1.5), "eta must lie in"),
    (dict(sampler="pc", snr=-0.1), "snr must be > 0"),
    (dict(sampler="ode_rk45", rtol=0.0), "rtol and atol must be > 0"),
    (dict(sampler="annealed_langevin", steps_each=0), "steps_each must be an integer >= 1"),
    (dict(grid="ddpm_trailing"), "needs a discrete process"),
    (dict(grid="cubic"), "unknown grid 'cubic'"),
    (dict(x_T=torch.zeros(3, 2)), "x_T has shape"),
])
def test_bad_input_says_what_to_change(procs, kwargs, match):
    process = procs["vp"]
    kw = dict(sampler="ddim", steps=4)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample(ORACLE.denoiser(process), process, (8, 2), **kw)


def test_annealed_langevin_needs_distinct_levels(procs):
    process = procs["ddpm_linear"]
    with pytest.raises(ValueError, match="score at every noise level"):
        sample(ORACLE.denoiser(process), process, (8, 2), "annealed_langevin", 10, grid="ddpm_leading")
    with pytest.raises(ValueError, match="steps=2000 exceeds"):
        sample(ORACLE.denoiser(process), process, (8, 2), "ddim", 2000, grid="ddpm_trailing")


def test_callback_sees_denoised_estimates(procs):
    """callback gets the x̂ of each step; for the oracle on a one-point 'mixture' x̂ → the point."""
    process = procs["vp"]
    point = GMMOracle([[1.0, -1.0]], [1e-3], [1.0])
    seen = []
    out = sample(point.denoiser(process), process, (8, 2), "dpm_solver", 10, callback=seen.append)
    assert len(seen) == 10 and all(d["denoised"].shape == (8, 2) for d in seen)
    assert torch.allclose(out.samples, torch.tensor([1.0, -1.0]).expand(8, 2), atol=2e-2)
    assert math.isclose(seen[0]["t"], process.t_max) and math.isclose(seen[-1]["t_next"], process.t_min)


@pytest.mark.parametrize("pid", PROCESS_IDS)
def test_euler_in_edm_variables_is_ddim(procs, pid):
    """Euler on dx̃/dσ̃ = (x̃ − x̂)/σ̃ (x̃ = z/α, σ̃ = σ/α) gives z_s = α_s x̂ + σ_s ε̂, DDIM's η = 0 update
    (Song et al. 2021a, Eq. 12; Karras et al. 2022, Sec. 3), for every process and grid."""
    process = procs[pid]
    den = ORACLE.denoiser(process)
    x_T = process.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for grid in ("uniform_t", "edm"):
        a = sample(den, process, x_T.shape, "ode_euler", 7, x_T=x_T, dtype=torch.float64, grid=grid)
        b = sample(den, process, x_T.shape, "ddim", 7, x_T=x_T, dtype=torch.float64, grid=grid)
        torch.testing.assert_close(a.samples, b.samples, rtol=1e-9, atol=1e-9)


def test_edm_stochastic_without_churn_is_heun(procs):
    """EDM Alg. 2 with S_churn = 0 is Alg. 1 (Heun), and churn makes it stochastic."""
    process = procs["vp"]
    den = ORACLE.denoiser(process)
    x_T = process.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = dict(x_T=x_T, dtype=torch.float64, grid="edm")
    heun = sample(den, process, x_T.shape, "ode_heun", 6, **kw).samples
    no_churn = sample(den, process, x_T.shape, "edm_stochastic", 6, s_churn=0.0, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(heun, no_churn.samples) and no_churn.nfe == 12
    churn = [sample(den, process, x_T.shape, "edm_stochastic", 6, s_churn=20.0, s_tmax=100.0,
                    generator=torch.Generator().manual_seed(s), **kw).samples for s in (1, 2)]
    assert not torch.allclose(churn[0], churn[1])
    with pytest.raises(ValueError, match="s_churn must be >= 0"):
        sample(den, process, x_T.shape, "edm_stochastic", 6, s_churn=-1.0, **kw)
    with pytest.raises(ValueError, match="order must be an integer in 1..4"):
        sample(den, process, x_T.shape, "unipc", 6, order=7, **kw)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        sample(den, process, x_T.shape, "dpm_solver_sde", 6, eta=-1.0, **kw)
