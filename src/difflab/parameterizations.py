"""What the network predicts: ε, x₀, the score, or v (DESIGN.md).

Every conversion is written in α and σ alone, never by branching on the process:

    z = α x + σ ε,   x̂ = (z − σ ε̂)/α,   ε̂ = (z − α x̂)/σ,   score = −ε̂/σ
    (Tweedie's formula ∇ log p_t(z) = (α E[x|z] − z)/σ², Efron 2011)
    v = α ε − σ x    (Salimans & Ho 2022), so  x̂ = (α z − σ v̂)/(α² + σ²),  ε̂ = (σ z + α v̂)/(α² + σ²)

(the v formulas hold for any α, σ; for variance-preserving processes α² + σ² = 1).
α and σ arrive already broadcast to z's shape.

Each parameterization also owns the one quantity every objective is built from, the
ε-error ε − ε̂ (`eps_error`): ‖ε − ε̂‖² = SNR ‖x − x̂‖² (Kingma et al. 2021, Eq. 13 vs 17), computed
in the form that is exact for what the network outputs.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Prediction(NamedTuple):
    """A denoiser's output in all three forms: E[x|z], E[ε|z] and ∇_z log p_t(z)."""

    x0: Tensor
    eps: Tensor
    score: Tensor


def _from_eps(eps: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Prediction:
    return Prediction(x0=(z - sigma * eps) / alpha, eps=eps, score=-eps / sigma)


class Parameterization:
    """Maps raw network output to a `Prediction` and gives the matching regression target."""

    name: str = ""

    def predict(self, out: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Prediction:
        raise NotImplementedError

    def target(self, x: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def eps_error(self, pred: Prediction, x: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """ε − ε̂ elementwise, for z = α x + σ ε (α, σ broadcast to x's shape). From ε̂ by
        default: exact for ε, score and v networks."""
        return noise - pred.eps

    def output_from(self, pred: Prediction, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """The raw output that would produce `pred` (for oracles and conversions):
        the target evaluated at x = pred.x0, ε = pred.eps."""
        return self.target(pred.x0, pred.eps, alpha, sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Epsilon(Parameterization):
    """ε-prediction (DDPM): out = ε̂."""

    name = "eps"

    def predict(self, out, z, alpha, sigma):
        return _from_eps(out, z, alpha, sigma)

    def target(self, x, noise, alpha, sigma):
        return noise


class X0(Parameterization):
    """x₀-prediction (the x̂ of Kingma et al. 2021's ELBO, Eq. 13): out = x̂."""

    name = "x0"

    def predict(self, out, z, alpha, sigma):
        eps = (z - alpha * out) / sigma
        return Prediction(x0=out, eps=eps, score=-eps / sigma)

    def eps_error(self, pred, x, noise, alpha, sigma):
        """ε − ε̂ = (α/σ)(x̂ − x), from x̂ itself: going through ε̂ = (z − α x̂)/σ would subtract
        two nearly equal numbers when σ ≪ α and lose the digits the network got right."""
        return (alpha / sigma) * (pred.x0 - x)

    def target(self, x, noise, alpha, sigma):
        return x


class Score(Parameterization):
    """Score prediction (NCSN, score SDE): out = ŝ ≈ ∇_z log p_t(z), ε̂ = −σ ŝ.

    With `scale_by_sigma=True` the network output is divided by σ (NCSNv2's
    s_θ(z, σ) = net(z)/σ), which keeps the output O(1) across noise levels.
    """

    name = "score"

    def __init__(self, scale_by_sigma: bool = False):
        self.scale_by_sigma = scale_by_sigma

    def predict(self, out, z, alpha, sigma):
        score = out / sigma if self.scale_by_sigma else out
        return _from_eps(-sigma * score, z, alpha, sigma)

    def target(self, x, noise, alpha, sigma):
        score = -noise / sigma  # ∇ log q(z | x) = −(z − α x)/σ² = −ε/σ
        return score * sigma if self.scale_by_sigma else score

    def __repr__(self):
        return f"Score(scale_by_sigma={self.scale_by_sigma})"


class V(Parameterization):
    """v-prediction (Salimans & Ho 2022): out = v̂ with v = α ε − σ x."""

    name = "v"

    def predict(self, out, z, alpha, sigma):
        norm = alpha**2 + sigma**2
        eps = (sigma * z + alpha * out) / norm
        x0 = (alpha * z - sigma * out) / norm
        return Prediction(x0=x0, eps=eps, score=-eps / sigma)

    def target(self, x, noise, alpha, sigma):
        return alpha * noise - sigma * x


PARAMETERIZATIONS = {"eps": Epsilon, "epsilon": Epsilon, "x0": X0, "score": Score, "v": V}


def get_parameterization(name: str) -> Parameterization:
    try:
        return PARAMETERIZATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown parameterization {name!r}; choose one of {sorted(set(PARAMETERIZATIONS))}") from None
