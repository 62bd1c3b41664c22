"""What the network predicts: ε, x₀, the score, v, flow matching's velocity u, or EDM's F (docs/concepts.md).

Every conversion is written in α and σ alone, never by branching on the process:

    z = α x + σ ε,   x̂ = (z − σ ε̂)/α,   ε̂ = (z − α x̂)/σ,   score = −ε̂/σ
    (Tweedie's formula ∇ log p_t(z) = (α E[x|z] − z)/σ², Efron 2011)
    v = α ε − σ x    (Salimans & Ho 2022), so  x̂ = (α z − σ v̂)/(α² + σ²),  ε̂ = (σ z + α v̂)/(α² + σ²)
    u = ε − x        (flow matching's velocity, Lipman et al. 2023), so  x̂ = (z − σ û)/(α + σ),  ε̂ = (z + α û)/(α + σ)
    EDM (Karras et al. 2022, Eq. 7): x̂ = c_skip x̃ + c_out F̂ in x̃ = z/α, σ̃ = σ/α (`EDM`)

(the v and u formulas hold for any α, σ; for variance-preserving processes α² + σ² = 1).
α and σ arrive already broadcast to z's shape.

Each parameterization also owns the one quantity every objective is built from, the
ε-error ε − ε̂ (`eps_error`): ‖ε − ε̂‖² = SNR ‖x − x̂‖² (Kingma et al. 2021, Eq. 13 vs 17), computed
in the form that is exact for what the network outputs.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor


class Prediction:
    """A denoiser's output in all three forms: E[x|z] (`x0`), E[ε|z] (`eps`) and ∇_z log p_t(z)
    (`score`). Each may be given as a tensor or as a zero-argument function computing it, which
    runs on first access and is kept: a training step reads only the ε-error and never pays for
    the other two forms, a DDIM step never for the score. Iterates as (x0, eps, score)."""

    __slots__ = ("_x0", "_eps", "_score")
    _fields = ("x0", "eps", "score")

    def __init__(self, x0: "Tensor | Callable[[], Tensor]", eps: "Tensor | Callable[[], Tensor]",
                 score: "Tensor | Callable[[], Tensor]"):
        self._x0, self._eps, self._score = x0, eps, score

    def _get(self, slot: str) -> Tensor:
        v = getattr(self, slot)
        if not isinstance(v, Tensor):  # a pending computation
            v = v()
            setattr(self, slot, v)
        return v

    @property
    def x0(self) -> Tensor:
        return self._get("_x0")

    @property
    def eps(self) -> Tensor:
        return self._get("_eps")

    @property
    def score(self) -> Tensor:
        return self._get("_score")

    def __iter__(self):
        return iter((self.x0, self.eps, self.score))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i):
        return tuple(self)[i]

    def map(self, fn: "Callable[[Tensor], Tensor]") -> "Prediction":
        """fn applied to each form, lazily where the form is not computed yet (e.g. a cast)."""
        def lazy(slot):
            v = getattr(self, slot)
            return fn(v) if isinstance(v, Tensor) else (lambda: fn(self._get(slot)))
        return Prediction(lazy("_x0"), lazy("_eps"), lazy("_score"))

    def __repr__(self) -> str:
        return f"Prediction(x0={self.x0!r}, eps={self.eps!r}, score={self.score!r})"


def _from_eps(eps: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Prediction:
    return Prediction(x0=lambda: (z - sigma * eps) / alpha, eps=eps, score=lambda: -eps / sigma)


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

    def input_scale(self, alpha: Tensor, sigma: Tensor) -> Tensor | None:
        """The factor the `Denoiser` multiplies z by before the network ([B] from [B] α, σ), or
        None to leave the input to the denoiser's own `scale_input` (all but EDM)."""
        return None

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
        return Prediction(x0=out, eps=eps, score=lambda: -eps / sigma)

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
        return Prediction(x0=lambda: (alpha * z - sigma * out) / norm, eps=eps, score=lambda: -eps / sigma)

    def target(self, x, noise, alpha, sigma):
        return alpha * noise - sigma * x


class FlowVelocity(Parameterization):
    """Flow-matching velocity (Lipman et al. 2023, Eq. 23; Liu et al. 2023, Eq. 1): out = û with
    u = ε − x, the conditional velocity dz/dt = α'x + σ'ε of `processes.Flow` (α = 1 − t, σ = t).

    From z = α x + σ ε and u = ε − x (so ε = x + u): z = (α + σ) x + σ u, hence
        x̂ = (z − σ û)/(α + σ),   ε̂ = x̂ + û = (z + α û)/(α + σ),
    exact for any α, σ > 0. On the flow process it is the rectified-flow velocity; elsewhere the same
    combination of ε and x (not that process's dz/dt). It differs from v = α ε − σ x (`V`): on the
    flow process v = (1 − t) ε − t x, which equals u only where (1 − t − 1) ε = (t − 1) x, i.e. t = 0."""

    name = "flow_velocity"

    def predict(self, out, z, alpha, sigma):
        norm = alpha + sigma
        eps = (z + alpha * out) / norm
        return Prediction(x0=lambda: (z - sigma * out) / norm, eps=eps, score=lambda: -eps / sigma)

    def target(self, x, noise, alpha, sigma):
        return noise - x


class EDM(X0):
    """EDM's preconditioning (Karras et al. 2022, Eq. 7 and Table 1), for any process through its
    EDM variables x̃ = z/α and σ̃ = σ/α (z = α (x + σ̃ ε), so x̃ = x + σ̃ ε is EDM's noisy y + n):

        D(x̃; σ̃) = c_skip x̃ + c_out F(c_in x̃; c_noise),   c_skip = σ_d²/(σ̃² + σ_d²),
        c_out = σ̃ σ_d/√(σ̃² + σ_d²),   c_in = 1/√(σ̃² + σ_d²),   c_noise = ¼ ln σ̃,

    with σ_d = `sigma_data`. out = F̂; x̂ = D. The network sees c_in x̃ = z/√(σ² + α² σ_d²)
    (`input_scale`, applied by the `Denoiser`); c_noise is `Denoiser(conditioning="log_sigma_tilde")`,
    which `conditioning="auto"` (difflab-train's default) picks from `conditioning` below.
    The regression target (EDM Eq. 8, F = (x − c_skip x̃)/c_out) is written without cancellation:
        F = (σ̃ x/σ_d − σ_d ε)/√(σ̃² + σ_d²).
    ε − ε̂ = (x̂ − x)/σ̃ is formed from x̂ as for `X0`; EDM's loss λ(σ̃)‖D − x‖², λ = (σ̃² + σ_d²)/(σ̃ σ_d)²,
    is `weighting=edm`."""

    #: the noise conditioning of EDM's Table 1 (c_noise = ¼ ln σ̃) that `Denoiser(conditioning="auto")` uses
    conditioning = "log_sigma_tilde"

    name = "edm"

    def __init__(self, sigma_data: float = 0.5):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data (EDM's data std σ_d) must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def coefficients(self, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) of Karras et al. 2022, Table 1, at σ̃ = σ/α (c_in acts on x̃)."""
        s, sd2 = sigma / alpha, self.sigma_data**2
        root = (s**2 + sd2).sqrt()
        return sd2 / (s**2 + sd2), s * self.sigma_data / root, 1.0 / root, 0.25 * s.log()

    def input_scale(self, alpha, sigma):
        return 1.0 / (sigma**2 + alpha**2 * self.sigma_data**2).sqrt()  # c_in / α

    def predict(self, out, z, alpha, sigma):
        c_skip, c_out, _, _ = self.coefficients(alpha, sigma)
        x0 = c_skip * (z / alpha) + c_out * out
        eps = (z - alpha * x0) / sigma
        return Prediction(x0=x0, eps=eps, score=lambda: -eps / sigma)

    def target(self, x, noise, alpha, sigma):
        s = sigma / alpha
        return (s * x / self.sigma_data - self.sigma_data * noise) / (s**2 + self.sigma_data**2).sqrt()

    def __repr__(self):
        return f"EDM(sigma_data={self.sigma_data:g})"


def input_scale_of(parameterization, alpha: Tensor, sigma: Tensor) -> Tensor | None:
    """The factor a parameterization applies to the network input (EDM's c_in/α), or None."""
    fn = getattr(parameterization, "input_scale", None)
    return None if fn is None else fn(alpha, sigma)
