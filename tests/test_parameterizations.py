"""Parameterizations: every pair converts exactly through α, σ; denoiser output stays fp32."""
import itertools

import pytest
import torch
from torch import nn

from difflab.denoiser import Denoiser
from difflab.parameterizations import EDM, V, X0, Epsilon, FlowVelocity, Score
from difflab.processes import VESDE, VPSDE

PARAMS = {"eps": Epsilon(), "x0": X0(), "score": Score(), "score_scaled": Score(scale_by_sigma=True), "v": V(),
          "flow_velocity": FlowVelocity(), "edm": EDM(), "edm_sd1": EDM(sigma_data=1.0)}


@pytest.mark.parametrize("src,dst", list(itertools.product(PARAMS, PARAMS)))
def test_round_trip_every_pair(src, dst):
    g = torch.Generator().manual_seed(0)
    n, d = 64, 5
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    eps = torch.randn(n, d, dtype=torch.float64, generator=g)
    # random (α, σ): VP-like, VE-like (α = 1, σ up to 50) and arbitrary positive pairs
    alpha = torch.cat([torch.rand(n // 2, 1, dtype=torch.float64, generator=g) * 1.5 + 0.05, torch.ones(n // 2, 1, dtype=torch.float64)])
    sigma = torch.cat([torch.rand(n // 2, 1, dtype=torch.float64, generator=g) * 1.5 + 0.01, torch.logspace(-2, 1.7, n // 2, dtype=torch.float64)[:, None]])
    z = alpha * x + sigma * eps
    P, Q = PARAMS[src], PARAMS[dst]
    pred = P.predict(P.target(x, eps, alpha, sigma), z, alpha, sigma)
    torch.testing.assert_close(pred.x0, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pred.eps, eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pred.score, -eps / sigma, rtol=1e-9, atol=1e-9)  # ∇ log q(z|x)
    torch.testing.assert_close(Q.output_from(pred, z, alpha, sigma), Q.target(x, eps, alpha, sigma), rtol=1e-9, atol=1e-9)


def test_v_definition():
    x, eps = torch.randn(3, 2), torch.randn(3, 2)
    a, s = torch.tensor([[0.6]]), torch.tensor([[0.8]])
    torch.testing.assert_close(V().target(x, eps, a, s), 0.6 * eps - 0.8 * x)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.seen_dtype = None

    def forward(self, z, c):
        out = self.lin(torch.cat([z, c[:, None]], 1))
        self.seen_dtype = out.dtype
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("param", ["eps", "x0", "score", "v"])
def test_denoiser_output_fp32_under_autocast(dtype, param):
    net = _Net()
    den = Denoiser(net, VPSDE(), PARAMS[param], conditioning="log_snr")
    z, t = torch.randn(8, 2), torch.rand(8) * 0.9 + 0.05
    with torch.autocast("cpu", dtype=dtype):
        pred = den(z, t)
    assert net.seen_dtype == dtype, "the network itself should have run in low precision"
    for field in pred:
        assert field.dtype == torch.float32
        assert torch.isfinite(field).all()


@pytest.mark.parametrize("conditioning", ["t", "log_snr", "sigma", "log_sigma"])
def test_denoiser_conditioning_values(conditioning):
    seen = {}

    class Spy(nn.Module):
        def forward(self, z, c):
            seen["c"] = c
            return torch.zeros_like(z)

    p = VESDE()
    t = torch.tensor([0.2, 0.7])
    Denoiser(Spy(), p, Epsilon(), conditioning=conditioning, cond_scale=2.0)(torch.zeros(2, 3), t)
    expected = {"t": t, "log_snr": p.log_snr(t), "sigma": p.sigma(t), "log_sigma": 0.25 * p.sigma(t).log()}[conditioning]
    torch.testing.assert_close(seen["c"], 2.0 * expected)


def test_denoiser_rejects_unknown_conditioning():
    with pytest.raises(ValueError, match="conditioning"):
        Denoiser(nn.Identity(), VPSDE(), Epsilon(), conditioning="noise")


def test_prediction_computes_each_form_once_and_only_when_read():
    """A training step reads only ε̂; the other forms are computed on first access, then kept,
    and equal the conversion formulas x̂ = (z − σ ε̂)/α, score = −ε̂/σ (Tweedie)."""
    from difflab.parameterizations import Epsilon

    g = torch.Generator().manual_seed(0)
    z, out = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a, s = torch.rand(4, 1, generator=g) + 0.1, torch.rand(4, 1, generator=g) + 0.1
    calls = []
    pred = Epsilon().predict(out, z, a, s)
    assert pred.eps is out and not isinstance(pred._x0, torch.Tensor) and not isinstance(pred._score, torch.Tensor)
    cast = pred.map(lambda v: calls.append(1) or v.double())
    assert calls == [1]  # only the form already computed was cast
    torch.testing.assert_close(cast.x0, ((z - s * out) / a).double())
    assert cast.x0 is cast.x0 and calls == [1, 1]
    torch.testing.assert_close(pred.score, -out / s)
    x0, eps, score = pred
    assert x0 is pred.x0 and eps is out and score is pred.score and len(pred) == 3 and pred[1] is out


def test_conditioning_auto_is_the_parameterizations_own():
    """`conditioning="auto"` (difflab-train's default): EDM's c_noise = ¼ ln σ̃ (Karras et al. 2022,
    Table 1) for EDM, log-SNR otherwise; so `parameterization=edm` alone is EDM's preconditioning,
    c_in = 1/√(σ̃² + σ_d²) on x̃ included."""
    from difflab.parameterizations import EDM
    from difflab.processes import VESDE

    class Spy(nn.Module):
        def forward(self, z, c):
            self.z, self.c = z, c
            return torch.zeros_like(z)

    for param, expected in [(EDM(0.5), "log_sigma_tilde"), (Epsilon(), "log_snr")]:
        assert Denoiser(Spy(), VPSDE(), param, conditioning="auto").conditioning == expected
    spy, p, t = Spy(), VESDE(0.002, 80.0), torch.tensor([0.1, 0.9])
    z = torch.ones(2, 3)
    Denoiser(spy, p, EDM(0.5), conditioning="auto")(z, t)
    sigma = p.sigma(t)  # VE: alpha = 1, sigma~ = sigma
    torch.testing.assert_close(spy.c, 0.25 * sigma.log())
    torch.testing.assert_close(spy.z, z / (sigma**2 + 0.25).sqrt()[:, None])


def test_parameterization_edm_alone_composes_edms_denoiser():
    """difflab-train's config with parameterization=edm and no denoiser.* override builds EDM's
    conditioning; weighting=edm brings EDM's loss weight and log-normal noise levels with the
    parameterization's sigma_data."""
    from hydra import compose, initialize_config_dir

    from difflab.config_check import CONFIG_DIR
    from difflab.training import build_module

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=gmm", "model=mlp", "process=ve", "parameterization=edm",
                                          "parameterization.sigma_data=2.0", "weighting=edm"])
    module = build_module(cfg, (2,))
    assert module.net.conditioning == "log_sigma_tilde" and not module.net.scale_input
    assert module.loss_fn.weighting == "edm" and module.loss_fn.time_sampler.kind == "log_normal"
    assert module.loss_fn.weighting_options["sigma_data"] == 2.0
