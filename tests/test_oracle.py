"""GMMOracle against independent references: torch.distributions, importance sampling, autograd."""
import math

import pytest
import torch

from difflab.models import GMMOracle
from difflab.parameterizations import V, X0, Epsilon, Score
from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR

MEANS = [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]
STDS = [0.3, 0.6, 0.4]
WEIGHTS = [0.2, 0.5, 0.3]


@pytest.fixture
def oracle():
    return GMMOracle(MEANS, STDS, WEIGHTS)


def torch_mixture(alpha=1.0, sigma=0.0):
    m = torch.tensor(MEANS, dtype=torch.float64) * alpha
    s = (alpha**2 * torch.tensor(STDS, dtype=torch.float64) ** 2 + sigma**2).sqrt()
    comp = torch.distributions.Independent(torch.distributions.Normal(m, s[:, None].expand_as(m)), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.tensor(WEIGHTS, dtype=torch.float64)), comp)


def test_log_prob_matches_torch_distributions(oracle):
    x = torch.randn(100, 2, dtype=torch.float64) * 3
    torch.testing.assert_close(oracle.log_prob(x).double(), torch_mixture().log_prob(x))
    torch.testing.assert_close(oracle.noisy_log_prob(x, 0.7, 0.5), torch_mixture(0.7, 0.5).log_prob(x))


def test_sample_moments(oracle):
    x, k = oracle.sample(200_000, generator=torch.Generator().manual_seed(0), return_labels=True)
    freq = torch.bincount(k, minlength=3).double() / len(k)
    torch.testing.assert_close(freq, torch.tensor(WEIGHTS, dtype=torch.float64), atol=0.005, rtol=0)
    mean_ref = (torch.tensor(WEIGHTS)[:, None] * torch.tensor(MEANS)).sum(0)
    torch.testing.assert_close(x.mean(0), mean_ref, atol=0.02, rtol=0)


@pytest.mark.parametrize("alpha,sigma", [(0.9, 0.5), (0.6, 0.8), (1.0, 2.0)])
def test_posterior_mean_matches_importance_sampling(oracle, alpha, sigma):
    """E[x | z] ≈ Σ w_i x_i / Σ w_i with x_i ~ p, w_i = N(z; α x_i, σ² I)."""
    g = torch.Generator().manual_seed(1)
    z = torch.tensor([[-1.5, 0.3], [1.0, 1.0], [0.2, -1.0]], dtype=torch.float64)
    xs = oracle.sample(400_000, generator=g).double()
    exact = oracle.posterior_mean(z, alpha, sigma)
    for i in range(len(z)):
        logw = -0.5 * ((z[i] - alpha * xs) ** 2).sum(1) / sigma**2
        w = torch.softmax(logw, 0)
        est = (w[:, None] * xs).sum(0)
        # delta-method standard error of the self-normalised estimator
        se = ((w[:, None] ** 2) * (xs - est) ** 2).sum(0).sqrt()
        assert ((est - exact[i]).abs() <= 5 * se + 1e-3).all(), (est, exact[i], se)


@pytest.mark.parametrize("process", [VPSDE(), VESDE(), DDPM(100), ContinuousSNR("cosine")], ids=["vp", "ve", "ddpm", "snr"])
def test_score_is_gradient_and_satisfies_tweedie(oracle, process):
    z = torch.randn(20, 2, dtype=torch.float64) * 2
    t = torch.linspace(process.t_min + 0.05, process.t_max, 20, dtype=torch.float64)
    a, s = process.alpha_sigma(t)
    score = oracle.score(z, a, s)
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.noisy_log_prob(zz, a, s).sum(), zz)
    torch.testing.assert_close(score, grad, rtol=1e-8, atol=1e-10)
    x0 = oracle.posterior_mean(z, a, s)
    torch.testing.assert_close(score, (a[:, None] * x0 - z) / s[:, None] ** 2, rtol=1e-8, atol=1e-10)  # Tweedie


@pytest.mark.parametrize("param", [Epsilon(), X0(), Score(), V()], ids=["eps", "x0", "score", "v"])
def test_oracle_as_model_is_the_same_denoiser_for_every_parameterization(oracle, param):
    process = VPSDE()
    z = torch.randn(16, 2)
    t = torch.rand(16) * 0.9 + 0.05
    pred = oracle.denoiser(process, param)(z, t)
    exact = oracle.prediction(z, t, process)
    for got, want in zip(pred, exact):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_image_shaped_mixture():
    o = GMMOracle(torch.randn(2, 1 * 4 * 4), [0.5, 0.5])
    z = torch.randn(3, 1, 4, 4)
    assert o.posterior_mean(z, 0.5, 0.5).shape == z.shape
    assert o.log_prob(z).shape == (3,)


def test_nll_matches_monte_carlo_of_log_prob(oracle):
    nll, se = oracle.nll(num_samples=100_000)
    assert se < 0.01 and math.isfinite(nll)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(means=MEANS, stds=[0.1, 0.2], weights=WEIGHTS), "one std"),
        (dict(means=MEANS, stds=STDS, weights=[1.0]), "one std and one weight"),
        (dict(means=MEANS, stds=[0.1, 0.0, 0.2], weights=WEIGHTS), "std must be > 0"),
        (dict(means=MEANS, stds=STDS, weights=[-1, 1, 1]), "weights"),
        (dict(means=[[0, 1], [1]], stds=[1, 1], weights=[1, 1]), "rectangular"),
    ],
)
def test_bad_mixture_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        GMMOracle(**kwargs)


def test_oracle_on_the_test_device_matches_the_cpu(device):
    """Every oracle quantity on `device` (buffers there, inputs there) equals the CPU one;
    a CPU generator gives the same draws wherever the oracle lives, and an oracle left on
    the CPU still answers for points on `device` (difflab-eval built one on each)."""
    cpu = GMMOracle(MEANS, STDS, WEIGHTS)
    dev = GMMOracle(MEANS, STDS, WEIGHTS).to(device)
    z = torch.randn(64, 2, dtype=torch.float64)
    for o in (dev, cpu):
        zd = z.to(device)
        torch.testing.assert_close(o.log_prob(zd).cpu(), cpu.log_prob(z))
        torch.testing.assert_close(o.posterior_mean(zd, 0.8, 0.6).cpu(), cpu.posterior_mean(z, 0.8, 0.6))
        torch.testing.assert_close(o.score(zd, torch.full((64,), 0.8, device=device), 0.6).cpu(), cpu.score(z, 0.8, 0.6))
    x_dev = dev.sample(100, generator=torch.Generator().manual_seed(3))
    assert x_dev.device.type == device.type
    torch.testing.assert_close(x_dev.cpu(), cpu.sample(100, generator=torch.Generator().manual_seed(3)))
    x_gen = dev.sample(10, generator=torch.Generator(device=device).manual_seed(3))  # a generator on the device
    assert x_gen.device.type == device.type and torch.isfinite(x_gen).all()
    proc = VPSDE().to(device)
    den = dev.denoiser(proc)
    pred = den(z.float().to(device), torch.full((64,), 0.5, device=device))
    ref = cpu.denoiser(VPSDE())(z.float(), torch.full((64,), 0.5))
    torch.testing.assert_close(pred.x0.cpu(), ref.x0)
    assert math.isfinite(dev.nll(num_samples=1000)[0])
