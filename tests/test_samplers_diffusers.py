"""Step-for-step agreement with diffusers' schedulers (test-only peer), float64, the GMM oracle
as the model and our DDPM process's β (ᾱ tables overwritten with our float64 values so the
two libraries see the same numbers)."""
import pytest
import torch

from difflab.models import GMMOracle
from difflab.processes import DDPM
from difflab.samplers import sample

diffusers = pytest.importorskip("diffusers")

B, SHAPE = 64, (64, 2)


@pytest.fixture(scope="module")
def setup():
    process = DDPM(1000, "linear")
    oracle = GMMOracle([[-2.0, 0.5], [1.5, -1.0]], [0.4, 0.7], [0.35, 0.65])
    return process, oracle.denoiser(process)


def _eps(denoiser, z, k):
    """The oracle's ε̂ at diffusers timestep k (↔ t = (k + 1)/T)."""
    t = torch.full((z.shape[0],), (int(k) + 1) / 1000.0, dtype=torch.float64)
    return denoiser(z, t).eps


def _ours(denoiser, process, sampler, steps, grid, x_T, seed, **opts):
    traj, den = [], []
    out = sample(denoiser, process, SHAPE, sampler, steps, grid=grid, x_T=x_T, dtype=torch.float64,
                 generator=torch.Generator().manual_seed(seed),
                 callback=lambda d: (traj.append(d["x"].clone()), den.append(d["denoised"])), **opts)
    return out, traj, den


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("spacing,steps", [("trailing", 50), ("leading", 20)])
def test_ddim_matches_diffusers(setup, eta, spacing, steps):
    process, denoiser = setup
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, traj, _ = _ours(denoiser, process, "ddim", steps, f"ddpm_{spacing}", x_T, seed=7, eta=eta)
    assert out.nfe == steps

    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False, set_alpha_to_one=False, timestep_spacing=spacing, steps_offset=0)
    sch.alphas_cumprod = process.alphas_cumprod.clone()
    sch.final_alpha_cumprod = sch.alphas_cumprod[0]
    sch.set_timesteps(steps)
    noise_gen = torch.Generator().manual_seed(7)  # our sampler draws one N(0, I) per non-final step
    z = x_T.clone()
    for i, k in enumerate(sch.timesteps):
        last = i == len(sch.timesteps) - 1
        noise = torch.zeros_like(z) if (last or eta == 0) else torch.randn(SHAPE, generator=noise_gen, dtype=torch.float64)
        z = sch.step(_eps(denoiser, z, k), k, z, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(traj[i], z, atol=1e-5, rtol=0), f"step {i}: {(traj[i] - z).abs().max():.2e}"
    assert (out.samples - z).abs().max() < 1e-5


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_matches_diffusers(setup, steps):
    process, denoiser = setup
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out, traj, _ = _ours(denoiser, process, "dpm_solver", steps, "ddpm_trailing", x_T, seed=0)
    sch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                                beta_end=0.02, algorithm_type="dpmsolver++", solver_order=2,
                                                final_sigmas_type="sigma_min", timestep_spacing="trailing")
    sch.alphas_cumprod = process.alphas_cumprod.clone()
    sch.set_timesteps(steps)
    ac = process.alphas_cumprod
    idx = torch.cat([sch.timesteps.long(), torch.tensor([0])])
    sch.sigmas = ((1 - ac[idx]) / ac[idx]).sqrt()  # float64 instead of diffusers' float32 table
    z = x_T.clone()
    for i, k in enumerate(sch.timesteps):
        z = sch.step(_eps(denoiser, z, k), k, z).prev_sample
        assert torch.allclose(traj[i], z, atol=1e-5, rtol=0), f"step {i}: {(traj[i] - z).abs().max():.2e}"
    assert out.nfe == steps


def test_ancestral_matches_ddpm_scheduler(setup):
    """DDPM ancestral sampling = diffusers' DDPMScheduler (fixed_small posterior variance), same noise.
    Our last move (t_min → t_min) is empty; diffusers' last returns x̂, our last `denoised`."""
    process, denoiser = setup
    steps = 100
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out, traj, den = _ours(denoiser, process, "ancestral", steps, "ddpm_leading", x_T, seed=11)
    sch = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                  clip_sample=False, variance_type="fixed_small", timestep_spacing="leading")
    sch.alphas_cumprod = process.alphas_cumprod.clone()
    sch.betas = process.betas.clone()
    sch.alphas = 1 - sch.betas
    sch.set_timesteps(steps)
    gen = torch.Generator().manual_seed(11)
    z = x_T.clone()
    for i, k in enumerate(sch.timesteps):
        z = sch.step(_eps(denoiser, z, k), k, z, generator=gen).prev_sample
        if i < steps - 1:
            assert torch.allclose(traj[i], z, atol=1e-5, rtol=0), f"step {i}: {(traj[i] - z).abs().max():.2e}"
    assert torch.allclose(den[-1], z, atol=1e-5, rtol=0)


@pytest.mark.parametrize("order,steps", [(2, 10), (3, 12), (2, 20)])
def test_unipc_matches_diffusers(setup, order, steps):
    """UniPC (bh2, data prediction, lower_order_final) = diffusers' UniPCMultistepScheduler."""
    process, denoiser = setup
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out, traj, _ = _ours(denoiser, process, "unipc", steps, "ddpm_trailing", x_T, seed=0, order=order)
    sch = diffusers.UniPCMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                            beta_end=0.02, solver_order=order, solver_type="bh2", predict_x0=True,
                                            lower_order_final=True, final_sigmas_type="sigma_min",
                                            timestep_spacing="trailing")
    sch.alphas_cumprod = process.alphas_cumprod.clone()
    sch.set_timesteps(steps)
    ac = process.alphas_cumprod
    idx = torch.cat([sch.timesteps.long(), torch.tensor([0])])
    sch.sigmas = ((1 - ac[idx]) / ac[idx]).sqrt()
    z = x_T.clone()
    for i, k in enumerate(sch.timesteps):
        z = sch.step(_eps(denoiser, z, k), k, z).prev_sample
        # both report the predictor's result; UniC corrects it in the next step, with the next x̂
        assert torch.allclose(traj[i], z, atol=1e-5, rtol=0), f"step {i}: {(traj[i] - z).abs().max():.2e}"
    assert torch.equal(out.samples, traj[-1]) and out.nfe == steps
