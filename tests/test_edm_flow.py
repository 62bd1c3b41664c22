"""Flow matching as a process and EDM as a recipe, against theory.

Flow (Lipman et al. 2023; Liu et al. 2023): α = 1 − t, σ = t; the flow-matching velocity u = ε − x is
dz/dt; the exact GMM oracle sampled on it reaches the sampling-noise floor like on VP.
EDM (Karras et al. 2022): Table 1's c_skip, c_out, c_in, c_noise; the loss of Eq. 2 with λ(σ) =
(σ² + σ_d²)/(σ σ_d)² under ln σ ~ N(P_mean, P_std²); the optimal denoiser of data with std σ_d has
unit loss per dimension at every σ (EDM App. B.6, the reason for λ). Every truth here is a
closed form or the oracle's exact posterior mean, computed in the test."""
import math

import pytest
import torch
from torch import nn

from difflab.denoiser import Denoiser
from difflab.losses import DiffusionLoss, TimeSampler, sample_times, weighted_diffusion_loss
from difflab.models import GMMOracle
from difflab.parameterizations import EDM, V, FlowVelocity
from difflab.processes import DDPM, VESDE, VPSDE, Flow
from difflab.samplers import sample
from helpers.oracle import N, ORACLE, reference_distance

f64 = torch.float64


@pytest.fixture(scope="module")
def distance():
    """The 4-reference distance and its noise floor (tests/helpers/oracle.py)."""
    return reference_distance()


MIXTURE = ORACLE  # data=gmm's default mixture
PROCESSES = {"flow": lambda: Flow(), "ve_edm": lambda: VESDE(0.002, 80.0), "vp": lambda: VPSDE(0.1, 20.0)}

pytestmark = pytest.mark.usefixtures("one_thread")


def _normal_mass(lo, hi, mean=-1.2, std=1.2):
    """P(lo ≤ ln σ ≤ hi) for ln σ ~ N(mean, std²), by math.erf (independent of torch.special)."""
    cdf = lambda v: 0.5 * (1 + math.erf((v - mean) / (std * math.sqrt(2))))  # noqa: E731
    return cdf(hi) - cdf(lo)


def _sigma_range(process):
    t = torch.tensor([process.t_min, process.t_max], dtype=f64)
    s = process.sigma(t) / process.alpha(t)
    return math.log(float(s[0])), math.log(float(s[1]))


# --------------------------------------------------------------------------- flow process
def test_flow_marginals_and_sde_closed_form():
    p = Flow()
    t = torch.linspace(p.t_min, p.t_max, 101, dtype=f64)
    torch.testing.assert_close(p.alpha(t), 1 - t, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p.sigma(t), t, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p.t_from_log_snr(p.log_snr(t)), t, rtol=1e-10, atol=1e-12)
    z = torch.randn(101, 3, dtype=f64)
    f, g = p.sde(z, t)
    torch.testing.assert_close(f, -z / (1 - t)[:, None])          # d log α/dt = −1/(1 − t)
    torch.testing.assert_close(g**2, 2 * t / (1 - t))              # dσ²/dt − 2 (d log α/dt) σ² = 2t + 2t²/(1 − t)
    assert p.prior_std() == pytest.approx(math.hypot(1e-3, 0.999), rel=1e-12)
    with pytest.raises(ValueError, match="t_max"):
        Flow(t_max=1.0)
    with pytest.raises(ValueError, match="schedule=linear"):
        Flow(schedule="cosine")


def test_flow_velocity_is_dz_dt_and_differs_from_v():
    """u = ε − x is d/dt [(1 − t) x + t ε] (central differences); v = α ε − σ x is not."""
    p, g = Flow(), torch.Generator().manual_seed(0)
    x, eps = torch.randn(64, 2, generator=g, dtype=f64), torch.randn(64, 2, generator=g, dtype=f64)
    t = torch.rand(64, generator=g, dtype=f64) * 0.8 + 0.1
    h = 1e-6
    dz_dt = (p.q_sample(x, t + h, eps) - p.q_sample(x, t - h, eps)) / (2 * h)
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    torch.testing.assert_close(FlowVelocity().target(x, eps, a, s), dz_dt, rtol=1e-7, atol=1e-7)
    assert float((V().target(x, eps, a, s) - dz_dt).abs().max()) > 0.1


@pytest.mark.parametrize("proc", list(PROCESSES))
def test_flow_velocity_and_edm_recover_the_posterior_mean(proc):
    """The Bayes-optimal raw outputs, written in the test from the oracle's E[x|z] alone —
    E[u|z] = E[ε|z] − E[x|z] and EDM's F* = (E[x|z] − c_skip x̃)/c_out with Table 1's c's — convert
    back to E[x|z] and E[ε|z] exactly."""
    p, g = PROCESSES[proc]().double(), torch.Generator().manual_seed(1)
    t = p.t_min + (p.t_max - p.t_min) * torch.rand(256, generator=g, dtype=f64)
    z = p.q_sample(MIXTURE.sample(256, generator=g).double(), t, torch.randn(256, 2, generator=g, dtype=f64))
    a, s = p.alpha(t)[:, None], p.sigma(t)[:, None]
    x_hat = MIXTURE.posterior_mean(z, a[:, 0], s[:, 0])
    eps_hat = (z - a * x_hat) / s
    u = FlowVelocity().predict(eps_hat - x_hat, z, a, s)
    torch.testing.assert_close(u.x0, x_hat, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(u.eps, eps_hat, rtol=1e-7, atol=1e-7)
    for sd in (0.5, 1.3):
        sig, xt = s / a, z / a
        c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / (sig**2 + sd**2).sqrt()
        edm = EDM(sd).predict((x_hat - c_skip * xt) / c_out, z, a, s)
        torch.testing.assert_close(edm.x0, x_hat, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(edm.eps, eps_hat, rtol=1e-6, atol=1e-6)


def test_flow_matching_weighting_is_the_flow_matching_loss():
    """On process=flow, weighting=flow_matching at a time scored as uniform is (t_max − t_min)·‖u − û‖²,
    u = ε − x and û = ε̂ − x̂ (Lipman et al. 2023, Eq. 9 with the OT path of Eq. 23)."""
    p, g = Flow().double(), torch.Generator().manual_seed(6)
    x = MIXTURE.sample(256, generator=g).double()
    noise = torch.randn(x.shape, generator=g, dtype=f64)
    t = p.t_min + (p.t_max - p.t_min) * torch.rand(256, generator=g, dtype=f64)
    den = MIXTURE.denoiser(p, FlowVelocity())
    pred = den(p.q_sample(x, t, noise), t)
    fm = ((noise - x) - (pred.eps - pred.x0)).pow(2).sum(1) * (p.t_max - p.t_min)
    loss = DiffusionLoss(p, FlowVelocity(), "flow_matching", reduce_dims="sum").loss(den, x, t=t, noise=noise)
    torch.testing.assert_close(loss, fm, rtol=1e-7, atol=1e-10)


class _Spy(nn.Module):
    def forward(self, z, c):
        self.seen = (z.clone(), c.clone())
        return torch.zeros_like(z)


def test_edm_denoiser_feeds_c_in_x_tilde_and_c_noise():
    """Karras et al. 2022, Table 1: the network sees c_in x̃ = x̃/√(σ̃² + σ_d²) and c_noise = ¼ ln σ̃,
    with x̃ = z/α, σ̃ = σ/α (VP here, so α ≠ 1 matters)."""
    p, spy = VPSDE(0.1, 20.0).double(), _Spy()
    den = Denoiser(spy, p, EDM(0.7), conditioning="log_sigma_tilde")
    z, t = torch.randn(8, 3, dtype=f64), torch.linspace(0.05, 1.0, 8, dtype=f64)
    pred = den(z, t)
    a, s = p.alpha(t), p.sigma(t)
    sig = s / a
    torch.testing.assert_close(spy.seen[0], (z / a[:, None]) / (sig**2 + 0.49).sqrt()[:, None])
    torch.testing.assert_close(spy.seen[1], 0.25 * sig.log())
    torch.testing.assert_close(pred.x0, 0.49 / (sig**2 + 0.49)[:, None] * z / a[:, None])  # F = 0: D = c_skip x̃
    with pytest.raises(ValueError, match="scale_input=false"):
        Denoiser(spy, p, EDM(), scale_input=True)


# --------------------------------------------------------------------------- EDM loss
@pytest.mark.parametrize("proc", ["ve_edm", "flow", "vp"])
def test_edm_weighted_loss_is_edms_loss(proc):
    """With time_sampling=log_normal each example's loss is EDM's λ(σ̃)‖D(x + σ̃ n; σ̃) − x‖²
    (Eq. 2, 8), times the normal's mass inside the process's σ̃ range; D is the oracle's E[x|x̃]."""
    p, g = PROCESSES[proc]().double(), torch.Generator().manual_seed(2)
    x = MIXTURE.sample(512, generator=g).double()
    noise = torch.randn(x.shape, generator=g, dtype=f64)
    den = MIXTURE.denoiser(p, EDM(0.5))
    loss, draw = weighted_diffusion_loss(den, p, x, TimeSampler("log_normal"), weighting="edm", noise=noise,
                                         generator=g, sigma_data=0.5, p_mean=-1.2, p_std=1.2)
    a, s = p.alpha(draw.t), p.sigma(draw.t)
    sig = (s / a)[:, None]
    D = MIXTURE.posterior_mean(a[:, None] * (x + sig * noise), a, s)  # E[x | x̃ = x + σ̃ n]
    lam = (sig**2 + 0.25) / (sig * 0.5) ** 2
    edm = _normal_mass(*_sigma_range(p)) * (lam * (D - x) ** 2).sum(1)
    torch.testing.assert_close(loss, edm, rtol=1e-6, atol=1e-9)


def test_log_normal_draws_follow_edm_distribution():
    """ln σ̃ of the drawn times is N(−1.2, 1.2²) (VE on EDM's range [0.002, 80]: the truncation
    keeps 1 − 1.5e-5 of the mass); on DDPM's discrete grid the draws are grid times."""
    g = torch.Generator().manual_seed(3)
    p = VESDE(0.002, 80.0)
    draw = sample_times(p, TimeSampler("log_normal"), 200_000, generator=g, dtype=f64)
    ls = torch.log(p.sigma(draw.t) / p.alpha(draw.t))
    assert abs(float(ls.mean()) + 1.2) < 0.01 and abs(float(ls.std()) - 1.2) < 0.01
    q = torch.quantile(ls, torch.tensor([0.1, 0.5, 0.9], dtype=f64))
    torch.testing.assert_close(q, torch.tensor([-1.2 - 1.2 * 1.2816, -1.2, -1.2 + 1.2 * 1.2816], dtype=f64), atol=0.02, rtol=0)
    ddpm = DDPM(1000)
    d = sample_times(ddpm, TimeSampler("log_normal"), 4096, generator=g, num_steps=1000, dtype=f64)
    steps = d.t * 1000
    torch.testing.assert_close(steps, steps.round(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("proc", ["vp", "ddpm"])
def test_log_normal_and_uniform_times_estimate_the_same_edm_objective(proc):
    """The proposal changes the variance, not the expectation (continuous and discrete)."""
    p = DDPM(1000) if proc == "ddpm" else VPSDE(0.1, 20.0)
    den, g = MIXTURE.denoiser(p, EDM()), torch.Generator().manual_seed(4)
    x = MIXTURE.sample(160_000, generator=g)
    res = {}
    for kind in ("uniform", "log_normal"):
        v = DiffusionLoss(p, EDM(), "edm", time_sampling=kind, reduce_dims="sum").eval().loss(den, x, generator=g).double()
        res[kind] = (float(v.mean()), float(v.std()) / math.sqrt(len(v)))
    (m1, s1), (m2, s2) = res["uniform"], res["log_normal"]
    assert abs(m1 - m2) < 4 * math.hypot(s1, s2) and max(s1, s2) < 0.01 * abs(m1), res


@pytest.mark.parametrize("proc", ["ve_edm", "flow"])
def test_optimal_denoiser_has_unit_edm_loss_on_data_of_std_sigma_data(proc):
    """For x ~ N(0, σ_d² I), E‖E[x|x̃] − x‖² = D σ̃²σ_d²/(σ̃² + σ_d²), so λ(σ̃) times it is D at every σ̃
    (EDM App. B.6): the mean EDM loss of the exact denoiser is the mass Z of the σ̃ range, per dim."""
    p, g = PROCESSES[proc]().double(), torch.Generator().manual_seed(5)
    gauss = GMMOracle([[0.0, 0.0, 0.0]], [0.5], [1.0])
    x = gauss.sample(100_000, generator=g).double()
    loss = DiffusionLoss(p, EDM(0.5), "edm", time_sampling="log_normal", reduce_dims="mean").eval()
    v = loss.loss(gauss.denoiser(p, EDM(0.5)), x, generator=g).double()
    mean, se = float(v.mean()), float(v.std()) / math.sqrt(len(v))
    assert abs(mean - _normal_mass(*_sigma_range(p))) < 4 * se and se < 0.01, (mean, se)


# --------------------------------------------------------------------------- samplers on flow
FLOW_STEPS = {"ode_heun": 25, "dpm_solver": 25, "unipc": 20, "ddim": 50, "euler_maruyama": 200}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", list(FLOW_STEPS))
def test_oracle_on_flow_reaches_the_noise_floor(distance, sampler):
    """Every sampler runs on process=flow unchanged: the exact oracle's samples are within 1.5× of
    the sampling-noise floor at the step counts docs/samplers.md names for VP (test_samplers_quality)."""
    torch.set_num_threads(1)
    d, floor = distance
    p = Flow()
    den = MIXTURE.denoiser(p)
    vals = [d(sample(den, p, (N, 2), sampler, FLOW_STEPS[sampler], generator=torch.Generator().manual_seed(s)).samples)
            for s in (1, 2, 3)]
    mean = sum(vals) / 3
    assert mean <= 1.5 * floor, f"{sampler} on flow: {mean:.4f} > 1.5 x floor {floor:.4f}"
