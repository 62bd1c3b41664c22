"""Likelihoods against the exact answer: the GMM oracle's log p(x) (the truth) and the
closed-form uniform density (exactly 8 bits/dim)."""
import math

import pytest
import torch

from difflab.likelihood import (
    _divergence_exact,
    _divergence_hutchinson,
    bits_per_dim,
    dequantize,
    draw_probes,
    nll_ode,
    ode_log_likelihood,
)
from difflab.models import GMMOracle
from difflab.processes import VPSDE, ContinuousSNR

from conftest import all_processes

MEANS = [[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]]
STDS = [0.5, 0.4, 0.6]
WEIGHTS = [0.3, 0.5, 0.2]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def oracle():
    return GMMOracle(MEANS, STDS, WEIGHTS)


def _data(oracle, n, seed=0):
    return oracle.sample(n, generator=torch.Generator().manual_seed(seed)).double()


# ----------------------------------------------------------------------------- PF-ODE
def test_ode_exact_divergence_matches_exact_nll(oracle):
    """Must show: nll_ode (exact divergence, tight tolerance) within 0.01 nats/dim of the
    exact NLL, on average and for every single example."""
    proc = ContinuousSNR("linear", -10, 10).double()
    x = _data(oracle, 256)
    exact = -oracle.log_prob(x)
    est = nll_ode(oracle.denoiser(proc), proc, x, divergence="exact", rtol=1e-7, atol=1e-7)
    d = x.shape[1]
    assert est.num_draws == 256 and est.dim == d
    assert abs(est.mean - float(exact.mean())) / d < 0.01
    assert float((est.values - exact).abs().max()) / d < 0.01


@pytest.mark.parametrize("name", ["ddpm_cosine", "snr_cosine", "vp", "subvp", "ve", "flow"])
def test_ode_exact_every_process(oracle, name):
    """The PF-ODE is built from f and g only, so it is right for every process."""
    proc = all_processes()[name].double()
    x = _data(oracle, 32, seed=1)
    r = ode_log_likelihood(oracle.denoiser(proc), proc, x, divergence="exact", rtol=1e-5, atol=1e-5)
    diff = (-r.log_prob - (-oracle.log_prob(x))) / x.shape[1]
    assert float(diff.abs().mean()) < 0.01, name
    assert r.nfe > 2


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_within_reported_se(oracle, probe):
    """Must show: the Hutchinson estimate lies within its reported standard error of the
    exact NLL (3 SE, seeded); paired with the exact value, its own noise is unbiased too."""
    proc = VPSDE(0.1, 20.0).double()
    x = _data(oracle, 1024, seed=2)
    exact = -oracle.log_prob(x)
    g = torch.Generator().manual_seed(3)
    est = nll_ode(oracle.denoiser(proc), proc, x, divergence="hutchinson", probe=probe, generator=g, rtol=1e-5, atol=1e-5)
    assert abs(est.mean - float(exact.mean())) < 3 * est.se
    diff = est.values - exact
    se_diff = float(diff.std() / math.sqrt(diff.numel()))
    assert abs(float(diff.mean())) < 3 * se_diff
    assert float(diff.std()) > 1e-3  # a stochastic estimate really was made
    # same seed → same estimate
    est2 = nll_ode(oracle.denoiser(proc), proc, x, divergence="hutchinson", probe=probe,
                   generator=torch.Generator().manual_seed(3), rtol=1e-5, atol=1e-5)
    assert est2.mean == est.mean


def test_divergence_estimators_against_jacobian_trace():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    v = net(z)
    jac = torch.stack([torch.autograd.functional.jacobian(net, z[i].detach()) for i in range(5)])
    trace = jac.diagonal(dim1=1, dim2=2).sum(1)
    torch.testing.assert_close(_divergence_exact(v, z), trace)
    probes = draw_probes(z.shape, 3000, "gaussian", torch.Generator().manual_seed(0), z.dtype, z.device)
    hutch = _divergence_hutchinson(v, z, probes)
    assert float((hutch - trace).abs().max()) < 0.15 * float(trace.abs().max()) + 0.05
    rad = draw_probes((4, 7), 3, "rademacher", torch.Generator().manual_seed(0), torch.float32, "cpu")
    assert set(rad.unique().tolist()) <= {-1.0, 1.0}


def test_bad_divergence_options(oracle):
    proc = VPSDE()
    x = torch.zeros(2, 300)
    with pytest.raises(ValueError, match="hutchinson"):
        ode_log_likelihood(None, proc, x, divergence="exact")
    with pytest.raises(ValueError, match="divergence must be one of"):
        ode_log_likelihood(None, proc, x, divergence="trace")
    with pytest.raises(ValueError, match="probe must be one of"):
        ode_log_likelihood(None, proc, x, probe="sphere")


# ----------------------------------------------------------------------------- bits/dim
def test_uniform_density_on_dequantized_8bit_data_is_exactly_8_bpd():
    """Must show: U[−1, 1)^D has log-density −D ln 2 everywhere on the dequantised data;
    in 8-bit space that is exactly 8 bits/dim."""
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (64, 3, 4, 4), generator=g)
    x = 2 * k.double() / 255 - 1  # the usual ToTensor()*2 - 1 images
    xd = dequantize(x, generator=g)
    assert float(xd.min()) >= -1 and float(xd.max()) < 1
    d = x[0].numel()
    log_uniform = torch.full((64,), -d * math.log(2.0), dtype=torch.float64)
    bpd = bits_per_dim(-log_uniform, d)
    assert torch.equal(bpd, torch.full_like(bpd, 8.0))
    # dequantisation keeps the integer: floor of the 8-bit coordinate gives k back
    assert torch.equal(torch.floor((xd + 1) * 128).long(), k)
    # a uniform density over integer bins scored by a discretised decoder: no offset
    assert bits_per_dim(d * math.log(256.0), d, data_range=256.0) == pytest.approx(8.0)


def test_dequantize_rejects_continuous_data():
    with pytest.raises(ValueError, match="8-bit grid"):
        dequantize(torch.tensor([[0.123456]]))


# ----------------------------------------------------------------------------- ELBO
def _elbo(oracle, proc, n, seed, **kw):
    from difflab.likelihood import nll_elbo

    return nll_elbo(oracle.denoiser(proc), proc, lambda m, g: oracle.sample(m, generator=g), num_draws=n,
                    generator=torch.Generator().manual_seed(seed), **kw)


@pytest.fixture(scope="module")
def exact_nll(oracle):
    return oracle.nll(num_samples=1_000_000, seed=123)  # (nats/dim, se)


def test_elbo_is_a_tight_bound(oracle, exact_nll):
    """Must show: nll_elbo ≥ exact NLL − its standard error (3 combined SE: the oracle's bound
    is nearly tight, so the estimate sits on the NLL ± noise), and with a wide log-SNR range
    the gap is under 0.05 nats/dim; 4M draws reach SE ≤ 0.005 nats/dim."""
    est = _elbo(oracle, ContinuousSNR("linear", -10, 10), 4_000_000, seed=0)
    mean, se = est.per_dim
    nll, nll_se = exact_nll
    assert se <= 0.005
    assert mean >= nll - 3 * math.hypot(se, nll_se)
    assert mean - nll < 0.05


def test_discrete_elbo_approaches_continuous(oracle):
    """Seed 000: the discrete ELBO with T steps is a looser bound that tends to the
    continuous one as T grows."""
    proc = ContinuousSNR("linear", -10, 10)
    cont = _elbo(oracle, proc, 1_000_000, seed=1).per_dim
    gaps = []
    for T in (10, 100, 1000):
        m, se = _elbo(oracle, proc, 1_000_000, seed=2, num_steps=T).per_dim
        gaps.append(m - cont[0])
        assert m > cont[0] - 3 * math.hypot(se, cont[1]), T
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[0] > 1.0 and abs(gaps[2]) < 0.1


def test_elbo_invariant_to_schedule_shape_not_endpoints(oracle):
    """Seed 000's invariance claim: linear and cosine log-SNR schedules with the same
    endpoints give the same continuous ELBO (within Monte Carlo error); other endpoints
    give another one."""
    lin = _elbo(oracle, ContinuousSNR("linear", -4, 4), 2_000_000, seed=3).per_dim
    cos = _elbo(oracle, ContinuousSNR("cosine", -4, 4), 2_000_000, seed=4).per_dim
    wide = _elbo(oracle, ContinuousSNR("linear", -10, 10), 2_000_000, seed=5).per_dim
    assert abs(lin[0] - cos[0]) < 3 * math.hypot(lin[1], cos[1])
    assert abs(lin[0] - wide[0]) > 5 * math.hypot(lin[1], wide[1])


def test_elbo_se_on_a_fixed_data_set_counts_examples_not_draws(oracle):
    """Cycling 64 points 1000 times must not pretend to be 64 000 independent x's."""
    from difflab.likelihood import nll_elbo

    proc = ContinuousSNR("linear", -10, 10)
    x = _data(oracle, 64, seed=9).float()
    fixed = nll_elbo(oracle.denoiser(proc), proc, x, num_draws=64_000, generator=torch.Generator().manual_seed(0))
    fresh = nll_elbo(oracle.denoiser(proc), proc, lambda n, g: oracle.sample(n, generator=g), num_draws=64_000,
                     generator=torch.Generator().manual_seed(0))
    exact = -oracle.log_prob(x).double()
    assert fixed.se > 1.5 * fresh.se  # the 64 points' own spread dominates
    assert abs(fixed.mean - float(exact.mean())) < 3 * fixed.se


def test_bpd_from_estimate_uses_the_one_conversion():
    """An estimate of D ln 2 nats (uniform on [−1, 1)^D) is 8 bits/dim; a discretised decoder's
    D ln 256 nats (uniform over 256 integer bins) is 8 bits/dim with no offset; the SE has no offset."""
    from difflab.likelihood import Estimate, bpd_from_estimate

    d = 12
    bpd, se = bpd_from_estimate(Estimate(d * math.log(2.0), d * math.log(2.0), 10, d))
    assert bpd == pytest.approx(8.0) and se == pytest.approx(1.0)
    bpd, se = bpd_from_estimate(Estimate(d * math.log(256.0), 0.0, 10, d), discrete_decoder=True)
    assert bpd == pytest.approx(8.0) and se == 0.0
