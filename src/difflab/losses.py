"""Training objectives and likelihood bounds (DESIGN.md "Losses and weightings").

One weighted form covers every diffusion objective (Kingma & Gao 2023; seed 000 Eq. 8.43):

    L_w(x) = ½ ∫_{t_min}^{t_max} w(λ_t) · (−dλ/dt) · E_ε ‖ε − ε̂(z_t, t)‖² dt,   z_t = α_t x + σ_t ε,

estimated with one t per example drawn from a density p(t) (uniform, antithetic or
importance sampled) as  ½ w(λ_t) (−λ'(t)) ‖ε − ε̂‖² / p(t).  Every weighting is a function of
λ = log SNR (so ε, x₀, v and score networks train on the *same* objective, diffusers#5654):

    elbo        w(λ) = 1                     VDM's continuous-time ELBO diffusion term
    likelihood  w(λ) = 1                     score SDE's λ(t) = g(t)²:  ½ g² ‖ŝ − ∇log q(z|x)‖²
    simple      ½ w(λ)(−λ') = 1/(t_max−t_min)   DDPM's L_simple = E_{t~U} ‖ε − ε̂‖²
    snr         ½ w(λ)(−λ') = SNR·e^{−λ}/(t_max−t_min)  Hang et al.'s "SNR" baseline:
                                             E_{t~U} SNR(t)‖x − x̂‖²  (= L_simple in value)
    min_snr     ½ w(λ)(−λ') = min(1, γ e^{−λ})/(t_max−t_min)  Min-SNR-γ (Hang et al. 2023):
                                             E_{t~U} min(SNR(t), γ)‖x − x̂‖²
    sigma2      ½ w(λ)(−λ') = ½/(t_max−t_min)   NCSN's λ(σ) = σ²:  E_{t~U} ½σ²‖ŝ − ∇log q‖²

(the "uniform-t" weightings are functions of λ through t(λ): w(λ) = 2ω(λ)/((t_max−t_min)(−λ'(t(λ))))
with ω their per-unit-time weight; for the likelihood weighting g² = −σ² dλ/dt, see processes.base).

Also here: the continuous-time ELBO (VDM) and the discrete-time ELBO (seed 000, Eq. 8.41) per
example in nats with named prior / diffusion / reconstruction terms, denoising score matching
and sliced score matching (seed 002).
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from .processes.base import Process, append_dims

WEIGHTINGS = ("elbo", "simple", "snr", "min_snr", "likelihood", "sigma2")
TIME_SAMPLINGS = ("uniform", "antithetic", "importance", "log_snr", "log_snr_antithetic")


# ============================================================================ weightings
def weighting_factor(name: str, log_snr: Tensor, dlog_snr_dt: Tensor, span: float, gamma: float = 5.0) -> Tensor:
    """½ w(λ) (−dλ/dt): the factor multiplying ‖ε − ε̂‖² per unit of time in L_w (module doc).

    `span` = t_max − t_min (the length of the time interval), which turns the textbook
    "expectation over uniform t" weightings into integrals over t.
    """
    if name in ("elbo", "likelihood"):
        return 0.5 * -dlog_snr_dt
    if name in ("simple", "snr"):
        # snr: SNR · ‖x − x̂‖² = SNR · e^{−λ} ‖ε − ε̂‖² (exactly 1 · ‖ε − ε̂‖²; written out for clarity)
        per_t = torch.ones_like(log_snr) if name == "simple" else torch.exp(log_snr) * torch.exp(-log_snr)
        return per_t / span
    if name == "min_snr":
        # min(SNR, γ) ‖x − x̂‖² = min(SNR, γ)/SNR ‖ε − ε̂‖² = min(1, γ e^{−λ}) ‖ε − ε̂‖²
        return torch.clamp(gamma * torch.exp(-log_snr), max=1.0) / span
    if name == "sigma2":
        return torch.full_like(log_snr, 0.5) / span
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {name!r}")


def weight_of_log_snr(name: str, log_snr: Tensor, dlog_snr_dt: Tensor, span: float = 1.0, gamma: float = 5.0) -> Tensor:
    """w(λ) itself, in DESIGN.md's form L = ½ E_t[w(λ)(−dλ/dt)‖ε − ε̂‖²]."""
    return 2.0 * weighting_factor(name, log_snr, dlog_snr_dt, span, gamma) / -dlog_snr_dt


# ============================================================================ time sampling
class TimeSampler(nn.Module):
    """Draws u ∈ [0, 1) per example and returns (u, q(u)), q the density of u (1 for uniform).

    uniform     u_i ~ U[0, 1) independently.
    antithetic  one u ~ U[0, 1); u_i = (u + i/B) mod 1 (VDM's low-discrepancy sampler): every
                u_i is still uniform, so estimates stay unbiased, with much lower variance.
    importance  u from a histogram over `num_bins` equal bins with p(bin) ∝ √(E[L²]) of the
                per-example loss seen in that bin (running average, improved-DDPM's
                loss-aware sampler), mixed with `uniform_mix` of the uniform density; uniform
                until every bin has `warmup` observations. The estimate is divided by q(u),
                so it stays unbiased; the histogram is a buffer (saved in checkpoints).
    log_snr, log_snr_antithetic
                u uniform (or antithetic) as above, but mapped to times uniform in λ rather than
                in t (see `sample_times`): the lowest-variance choice for the elbo/likelihood
                weightings and for ELBO evaluation on VP/sub-VP (−λ' ~ 1/t near t = 0).
    """

    def __init__(self, kind: str = "uniform", num_bins: int = 50, uniform_mix: float = 0.1,
                 decay: float = 0.99, warmup: int = 10):
        super().__init__()
        if kind not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
        if not 0.0 < uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix must lie in (0, 1], got {uniform_mix}")
        self.kind, self.num_bins, self.uniform_mix, self.decay, self.warmup = kind, int(num_bins), float(uniform_mix), float(decay), int(warmup)
        self.variable = "log_snr" if kind.startswith("log_snr") else "t"
        self.register_buffer("loss_sq", torch.zeros(self.num_bins, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(self.num_bins, dtype=torch.float64))

    def bin_probs(self) -> Tensor:
        """Probability of each histogram bin (uniform until warm)."""
        if self.kind != "importance" or bool((self.counts < self.warmup).any()):
            return torch.full((self.num_bins,), 1.0 / self.num_bins, dtype=torch.float64, device=self.counts.device)
        p = self.loss_sq.clamp_min(0).sqrt()
        p = p / p.sum() if float(p.sum()) > 0 else torch.full_like(p, 1.0 / self.num_bins)
        return (1 - self.uniform_mix) * p + self.uniform_mix / self.num_bins

    def forward(self, batch: int, device=None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if generator is not None:
            device = generator.device
        if self.kind in ("uniform", "log_snr"):
            u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            return u, torch.ones_like(u)
        if self.kind in ("antithetic", "log_snr_antithetic"):
            u0 = torch.rand(1, generator=generator, device=device, dtype=torch.float64)
            u = torch.remainder(u0 + torch.arange(batch, device=device, dtype=torch.float64) / batch, 1.0)
            return u, torch.ones_like(u)
        probs = self.bin_probs().to(device)
        b = torch.multinomial(probs, batch, replacement=True, generator=generator)
        r = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        u = (b.to(torch.float64) + r) / self.num_bins
        return u, probs[b] * self.num_bins

    @torch.no_grad()
    def update(self, u: Tensor, loss: Tensor) -> None:
        """Feed the per-example losses (as estimated, i.e. after dividing by q) back."""
        if self.kind != "importance":
            return
        b = (u.detach().to(self.counts.device) * self.num_bins).long().clamp(0, self.num_bins - 1)
        sq = loss.detach().to(torch.float64).to(self.counts.device) ** 2
        sums = torch.zeros_like(self.loss_sq).index_add_(0, b, sq)
        n = torch.zeros_like(self.counts).index_add_(0, b, torch.ones_like(sq))
        seen = n > 0
        mean = sums[seen] / n[seen]
        first = self.counts[seen] == 0
        self.loss_sq[seen] = torch.where(first, mean, self.decay * self.loss_sq[seen] + (1 - self.decay) * mean)
        self.counts += n


def as_time_sampler(time_sampling) -> TimeSampler:
    return time_sampling if isinstance(time_sampling, TimeSampler) else TimeSampler(time_sampling)


class TimeDraw(NamedTuple):
    """Times t [B] drawn by a `TimeSampler`, their u ∈ [0,1) and 1/p(t) (so ∫ f dt ≈ f(t)/p(t))."""

    t: Tensor
    u: Tensor
    inv_density: Tensor


def grid_span(process: Process, num_steps: int | None) -> float:
    """Length of time the draws stand for: t_max − t_min, or T·h for a grid of T cells of width h."""
    lo, hi = float(process.t_min), float(process.t_max)
    if num_steps is None:
        return hi - lo
    T = int(num_steps)
    return T * ((hi - lo) / (T - 1)) if T > 1 else (hi - lo)


def sample_times(process: Process, sampler: TimeSampler, batch: int, device=None, generator: torch.Generator | None = None,
                 num_steps: int | None = None, dtype=torch.float32) -> TimeDraw:
    """Draw one time per example and its inverse density.

    Continuous: t = t_min + u (t_max − t_min), 1/p(t) = span / q(u).
    Discrete (num_steps = T): the T grid times t_k = t_min + (k−1) h, h = (t_max − t_min)/(T − 1),
      k = ⌊u T⌋ + 1 (for DDPM's process exactly its steps i/T); each stands for a cell of width
      h, so 1/p = T h / q(u).
    log_snr samplers: λ = λ_max + u (λ_min − λ_max) uniform in log-SNR (seed 000, Eq. 8.43's change
      of variables), t = t(λ) by `process.t_from_log_snr`, 1/p(t) = (λ_max − λ_min)/(−λ'(t)). The
      weight −λ' of the ELBO is then constant: finite variance even where −λ' ~ 1/t (VP near 0).
    """
    u, q = sampler(batch, device=device, generator=generator)
    lo, hi = float(process.t_min), float(process.t_max)
    if sampler.variable == "log_snr":
        if num_steps is not None:
            raise ValueError("time_sampling='log_snr*' draws continuous times; use uniform/antithetic/importance "
                             "for a discrete process (or discrete=False)")
        ends = process.log_snr(torch.tensor([lo, hi], dtype=torch.float64, device=u.device))
        lam = ends[0] + u * (ends[1] - ends[0])
        t = process.t_from_log_snr(lam.detach()).to(torch.float64).clamp(lo, hi).to(dtype)
        inv_p = (ends[0] - ends[1]).to(dtype) / -process.dlog_snr_dt(t)
        return TimeDraw(t, u, inv_p)
    if num_steps is None:
        t = lo + u * (hi - lo)
    else:
        T = int(num_steps)
        k = torch.floor(u * T).clamp(0, T - 1)
        t = lo + k * ((hi - lo) / (T - 1)) if T > 1 else torch.full_like(u, hi)
    return TimeDraw(t.to(dtype), u, (grid_span(process, num_steps) / q).to(dtype))


# ============================================================================ helpers
def _sum_dims(v: Tensor) -> Tensor:
    return v.flatten(1).sum(1)


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def eps_squared_error(pred, x: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, from_x0: bool = False) -> Tensor:
    """‖ε − ε̂‖² per example (float32 or better).

    ε − ε̂ = (α/σ)(x̂ − x) (seed 000: ‖ε − ε̂‖² = SNR ‖x − x̂‖²). `from_x0=True` computes it from
    x̂, which is the exact quantity for an x₀-predicting network (going through ε̂ loses digits
    when σ ≪ α); otherwise from ε̂ (exact for ε, score and v networks).
    """
    if from_x0:
        a, s = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
        err = (a / s) * (pred.x0 - x)
    else:
        err = pred.eps - noise
    return _sum_dims(err.pow(2))


def _with_caller_autocast(denoiser, device_type: str):
    """Wrap `denoiser` so it runs under the autocast state active now (captured before the loss
    turns autocast off for its own float32 arithmetic)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except TypeError:  # older torch: no per-device query
        return denoiser
    if not enabled:
        return denoiser

    def run(z, t):
        with torch.autocast(device_type, dtype=dtype, enabled=True):
            return denoiser(z, t)

    run.parameterization = getattr(denoiser, "parameterization", None)
    return run


def _predicts_x0(denoiser) -> bool:
    """Whether the network behind `denoiser` predicts x₀ (then ‖ε − ε̂‖² is computed from x̂)."""
    return getattr(getattr(denoiser, "parameterization", None), "name", "") == "x0"


def _f32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.to(torch.float32)


# ============================================================================ the weighted loss
class DiffusionLoss(nn.Module):
    """The weighted diffusion loss L_w (module docstring), per example, in float32.

    Args:
      process, parameterization: as in `Denoiser` (the denoiser passed to `loss` must use
        the same process; the parameterization only decides how ‖ε − ε̂‖² is computed
        exactly: from x̂ for x₀ networks).
      weighting: one of `WEIGHTINGS`; gamma: Min-SNR's γ.
      time_sampling: uniform | antithetic | importance (see `TimeSampler`); num_bins,
        uniform_mix: the importance histogram's options.
      discrete: sample t on a grid of `num_steps` times instead of continuously; None (auto)
        uses the process's own `num_steps` where it has one (DDPM trains on its T steps i/T).
      reduce_dims: "mean" averages the squared error over data dimensions (DDPM / score_sde
        `reduce_mean`, keeps gradient clipping meaningful for images); "sum" gives the
        per-example value in nats for the elbo weighting.

    `loss(denoiser, x, generator=None)` → [B] float32; reduce (mean) late.
    """

    def __init__(self, process: Process, parameterization, weighting: str = "simple", time_sampling: str = "uniform",
                 gamma: float = 5.0, reduce_dims: str = "mean", discrete: bool | None = None, num_steps: int | None = None,
                 num_bins: int = 50, uniform_mix: float = 0.1):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if reduce_dims not in ("mean", "sum"):
            raise ValueError(f"reduce_dims must be 'mean' or 'sum', got {reduce_dims!r}")
        if not gamma > 0:
            raise ValueError(f"gamma (Min-SNR γ) must be > 0, got {gamma}")
        # kept unregistered: the process belongs to the denoiser (avoids duplicate parameters)
        self.__dict__["process"] = process
        self.parameterization = parameterization
        self.weighting, self.gamma, self.reduce_dims = weighting, float(gamma), reduce_dims
        steps = num_steps if num_steps is not None else getattr(process, "num_steps", None)
        self.num_steps = int(steps) if (discrete or (discrete is None and steps is not None)) and steps is not None else None
        if discrete and self.num_steps is None:
            raise ValueError("discrete=True needs num_steps (the process has no num_steps of its own)")
        self.time_sampler = TimeSampler(time_sampling, num_bins=num_bins if self.num_steps is None else _aligned_bins(num_bins, self.num_steps),
                                        uniform_mix=uniform_mix)
        if weighting in ("elbo", "likelihood") and self.num_steps is None and self.time_sampler.kind in ("uniform", "antithetic"):
            spread = _dlog_snr_spread(process)
            if spread > 100:
                warnings.warn(f"weighting={weighting} with time_sampling={time_sampling}: -dλ/dt varies {spread:.0f}x over "
                              f"[t_min, t_max] on this process, so the loss estimate has a huge variance (training "
                              f"stalls); set weighting.time_sampling=log_snr_antithetic (or importance)", stacklevel=2)

    @property
    def time_sampling(self) -> str:
        return self.time_sampler.kind

    def forward(self, denoiser, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.loss(denoiser, x, generator)

    def loss(self, denoiser, x: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None,
             noise: Tensor | None = None) -> Tensor:
        """Per-example loss [B]. `t` and `noise` may be given (tests); else they are drawn.

        Everything but the network runs in float32 with autocast off (a learned schedule's λ(t)
        and λ'(t) included); the denoiser runs under the caller's autocast (bf16/16-mixed)."""
        network = _with_caller_autocast(denoiser, x.device.type)  # before autocast is turned off
        with torch.autocast(x.device.type, enabled=False):
            return self._loss(network, x, generator, t, noise)

    def _loss(self, denoiser, x, generator, t, noise) -> Tensor:
        x = _f32(x)
        span = grid_span(self.process, self.num_steps)
        if t is None:
            draw = sample_times(self.process, self.time_sampler, x.shape[0], device=x.device, generator=generator,
                                num_steps=self.num_steps, dtype=x.dtype)
            t, inv_p = draw.t, draw.inv_density
        else:  # given times: the integrand as if t had been drawn uniformly (1/p = span)
            draw, t = None, t.to(x.device)
            inv_p = torch.full((x.shape[0],), span, dtype=x.dtype, device=x.device)
        noise = _noise_like(x, generator) if noise is None else _f32(noise)
        z = self.process.q_sample(x, t, noise)
        pred = denoiser(z, t)
        alpha, sigma = self.process.alpha_sigma(t)
        log_snr = 2 * (alpha.log() - sigma.log())
        factor = weighting_factor(self.weighting, log_snr, self.process.dlog_snr_dt(t), span, self.gamma)
        sq = eps_squared_error(pred, x, noise, alpha.to(x.dtype), sigma.to(x.dtype),
                               from_x0=getattr(self.parameterization, "name", "") == "x0")
        if self.reduce_dims == "mean":
            sq = sq / x[0].numel()
        loss = (factor * inv_p).to(sq.dtype) * sq  # ∫ f dt ≈ f(t) / p(t)
        if draw is not None and self.training:
            self.time_sampler.update(draw.u, loss / inv_p.to(loss.dtype))  # the integrand f itself
        return loss

    def extra_repr(self) -> str:
        return (f"weighting={self.weighting!r}, time_sampling={self.time_sampling!r}, gamma={self.gamma:g}, "
                f"reduce_dims={self.reduce_dims!r}, num_steps={self.num_steps}")


def _dlog_snr_spread(process: Process) -> float:
    """max/min of −dλ/dt at t_min and t_max (1 where it cannot be evaluated)."""
    try:
        with torch.no_grad():
            t = torch.tensor([float(process.t_min), float(process.t_max)])
            d = (-process.dlog_snr_dt(t)).abs().double()
        return float(d.max() / d.min().clamp_min(1e-300))
    except Exception:  # pragma: no cover - a schedule without a closed-form derivative
        return 1.0


def _aligned_bins(num_bins: int, num_steps: int) -> int:
    """Largest bin count ≤ num_bins dividing num_steps, so each grid time lies in one bin and
    its probability is q(u)/T exactly."""
    for b in range(min(num_bins, num_steps), 0, -1):
        if num_steps % b == 0:
            return b
    return 1


# ============================================================================ ELBO
class ElboTerms(NamedTuple):
    """Per-example terms of −ELBO in nats, each [B]: total = prior + diffusion + reconstruction."""

    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.reconstruction


def prior_kl(process: Process, x: Tensor) -> Tensor:
    """KL(q(z_{t_max} | x) ‖ N(0, s² I)) in nats [B], s = process.prior_std():
    Σ_d ½ [(σ² + α² x_d²)/s² − 1 − log(σ²/s²)]."""
    x = _f32(x)
    t = torch.full((x.shape[0],), float(process.t_max), device=x.device, dtype=x.dtype)
    alpha, sigma = process.alpha_sigma(t)
    a, s = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
    var_p = process.prior_std() ** 2
    kl = 0.5 * ((s**2 + (a * x) ** 2) / var_p - 1.0 - torch.log(s**2 / var_p))
    return _sum_dims(kl)


def _std_normal_cdf(v: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0)))


def reconstruction_nll(process: Process, x: Tensor, noise: Tensor, decoder: str = "gaussian", bits: int = 8) -> Tensor:
    """−log p(x | z_{t_min}) in nats [B], z_{t_min} = α₀ x + σ₀ ε, decoder mean z/α₀, std σ₀/α₀ (VDM).

    gaussian:     density N(x; z/α₀, σ₀²/α₀² I) (continuous data)
    discretized:  8-bit data in [−1, 1] (levels k/(2^bits − 1)·2 − 1): probability of x's bin
                  [x − Δ, x + Δ], Δ = 1/(2^bits − 1), with the outer bins extended to ±∞
                  (DDPM's discretised Gaussian decoder, Ho et al. 2020 Eq. 13). This is a
                  probability, so the bound is on the discrete data's −log P (nats).
    """
    x, noise = _f32(x), _f32(noise)
    t = torch.full((x.shape[0],), float(process.t_min), device=x.device, dtype=x.dtype)
    alpha, sigma = process.alpha_sigma(t)
    a, s = append_dims(alpha, x.ndim).to(x.dtype), append_dims(sigma, x.ndim).to(x.dtype)
    z = a * x + s * noise
    mean, std = z / a, s / a
    if decoder == "gaussian":
        nll = 0.5 * ((x - mean) / std) ** 2 + torch.log(std) + 0.5 * math.log(2 * math.pi)
        return _sum_dims(nll)
    if decoder == "discretized":
        half = 1.0 / (2**bits - 1)
        upper = torch.where(x > 1 - half, torch.ones_like(x), _std_normal_cdf((x + half - mean) / std))
        lower = torch.where(x < -1 + half, torch.zeros_like(x), _std_normal_cdf((x - half - mean) / std))
        # in the far tail compute the bin mass from the log-density to avoid 0 − 0
        prob = (upper - lower).clamp_min(0)
        log_prob = torch.where(prob > 1e-12, prob.clamp_min(1e-30).log(),
                               math.log(2 * half) - 0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi))
        return -_sum_dims(log_prob)
    raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")


def continuous_elbo(denoiser, process: Process, x: Tensor, *, generator: torch.Generator | None = None,
                    time_sampling="uniform", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    """Continuous-time negative ELBO (VDM, Kingma et al. 2021, Eq. 17; seed 000 Eq. 8.43), per example in nats.

        diffusion      = ½ ∫ −λ'(t) ‖ε − ε̂(z_t, t)‖² dt = ½ ∫ −λ'(t) e^{λ_t} ‖x − x̂‖² dt
                         (one t per example, t ~ `time_sampling` on [t_min, t_max])
        prior          = KL(q(z_{t_max} | x) ‖ p(z_{t_max}))
        reconstruction = −log p(x | z_{t_min})   (see `reconstruction_nll`)

    Differentiable (a learned log-SNR schedule trains on it). Inputs in float32 or float64.
    """
    network = _with_caller_autocast(denoiser, x.device.type)  # network under the caller's autocast,
    with torch.autocast(x.device.type, enabled=False):  # everything else in float32
        return _continuous_elbo(network, process, x, generator=generator, time_sampling=time_sampling, decoder=decoder, bits=bits)


def _continuous_elbo(denoiser, process: Process, x: Tensor, *, generator: torch.Generator | None = None,
                    time_sampling="uniform", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    x = _f32(x)
    draw = sample_times(process, as_time_sampler(time_sampling), x.shape[0], device=x.device, generator=generator,
                        dtype=x.dtype)
    t = draw.t
    noise = _noise_like(x, generator)
    z = process.q_sample(x, t, noise)
    pred = denoiser(z, t)
    alpha, sigma = process.alpha_sigma(t)
    sq = eps_squared_error(pred, x, noise, alpha, sigma, from_x0=_predicts_x0(denoiser))
    diffusion = (0.5 * -process.dlog_snr_dt(t) * draw.inv_density).to(sq.dtype) * sq
    rec_noise = _noise_like(x, generator)
    return ElboTerms(prior=prior_kl(process, x), diffusion=diffusion,
                     reconstruction=reconstruction_nll(process, x, rec_noise, decoder, bits))


def discrete_elbo(denoiser, process: Process, x: Tensor, num_steps: int, *, generator: torch.Generator | None = None,
                  time_sampling="uniform", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    """Discrete-time negative ELBO with T = num_steps steps (seed 000, Eq. 8.41), per example in nats.

        diffusion = (T/2) E_{i~U{1..T}} [(SNR(s) − SNR(t)) ‖x − x̂(z_t, t)‖²],
                    s = t_min + (i−1)/T·(t_max − t_min),  t = t_min + i/T·(t_max − t_min)
                  = (T/2) E_i [expm1(λ_s − λ_t) ‖ε − ε̂‖²]     (since ‖x − x̂‖² = e^{−λ_t}‖ε − ε̂‖²),

    plus the same prior and reconstruction terms as `continuous_elbo`; it decreases towards the
    continuous ELBO as T grows (VDM, Appendix). For DDPM's own chain (t_min = 1/T', t_max = 1)
    num_steps = T' − 1 puts s, t on its steps. `time_sampling`: uniform or antithetic over i.
    """
    network = _with_caller_autocast(denoiser, x.device.type)  # network under the caller's autocast,
    with torch.autocast(x.device.type, enabled=False):  # everything else in float32
        return _discrete_elbo(network, process, x, num_steps, generator=generator, time_sampling=time_sampling, decoder=decoder, bits=bits)


def _discrete_elbo(denoiser, process: Process, x: Tensor, num_steps: int, *, generator: torch.Generator | None = None,
                  time_sampling="uniform", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x = _f32(x)
    sampler = as_time_sampler(time_sampling)
    if sampler.kind == "importance":
        raise ValueError("discrete_elbo: time_sampling must be 'uniform' or 'antithetic'")
    u, _ = sampler(x.shape[0], device=x.device, generator=generator)
    i = torch.floor(u * T).clamp(0, T - 1) + 1
    lo, hi = float(process.t_min), float(process.t_max)
    s = (lo + (i - 1) / T * (hi - lo)).to(x.dtype if x.dtype == torch.float64 else torch.float32)
    t = (lo + i / T * (hi - lo)).to(s.dtype)
    noise = _noise_like(x, generator)
    z = process.q_sample(x, t, noise)
    pred = denoiser(z, t)
    alpha, sigma = process.alpha_sigma(t)
    sq = eps_squared_error(pred, x, noise, alpha, sigma, from_x0=_predicts_x0(denoiser))
    diffusion = (0.5 * T * torch.expm1(process.log_snr(s) - process.log_snr(t))).to(sq.dtype) * sq
    rec_noise = _noise_like(x, generator)
    return ElboTerms(prior=prior_kl(process, x), diffusion=diffusion,
                     reconstruction=reconstruction_nll(process, x, rec_noise, decoder, bits))


# ============================================================================ score matching
def denoising_score_matching_loss(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma, *,
                                  generator: torch.Generator | None = None, weighting: str = "sigma2",
                                  reduce_dims: str = "sum") -> Tensor:
    """Denoising score matching at noise level(s) σ (Vincent 2011; seed 002, NCSN's ℓ(θ; σ)), per example [B]:

        λ(σ) · ½ ‖s_θ(x̃, σ) + (x̃ − x)/σ²‖²,   x̃ = x + σ ε,

    with λ(σ) = σ² (`weighting="sigma2"`, NCSN; makes every level O(1)) or 1 (`"none"`).
    `sigma`: a float or a [B] tensor (one level per example); `score_fn(x̃, sigma [B])` → score.
    Its minimiser is the score of the noised density p_σ = p * N(0, σ² I) (seed 000, Eq. 8.45).
    """
    if weighting not in ("sigma2", "none"):
        raise ValueError(f"weighting must be 'sigma2' or 'none', got {weighting!r}")
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
    if not bool((sig > 0).all()):
        raise ValueError("sigma must be > 0")
    s = append_dims(sig, x.ndim)
    noise = _noise_like(x, generator)
    x_noisy = x + s * noise
    score = score_fn(x_noisy, sig)
    sq = (score + (x_noisy - x) / s**2).pow(2).flatten(1)
    sq = sq.sum(1) if reduce_dims == "sum" else sq.mean(1)
    return 0.5 * sq * (sig**2 if weighting == "sigma2" else 1.0)


def sliced_score_matching_loss(score_fn: Callable[[Tensor], Tensor], x: Tensor, num_projections: int = 1,
                               noise: str = "rademacher", generator: torch.Generator | None = None,
                               variance_reduction: bool = True) -> Tensor:
    """Sliced score matching (Song et al. 2019; seed 002), per example [B]:

        J(θ) = E_v [ vᵀ ∇_x s_θ(x) v + ½ ‖s_θ(x)‖² ]            (variance reduced, E[v vᵀ] = I)
        J(θ) = E_v [ vᵀ ∇_x s_θ(x) v + ½ (vᵀ s_θ(x))² ]           (variance_reduction=False)

    averaged over `num_projections` vectors v (Rademacher or Gaussian). vᵀ∇s v is a
    Hessian-vector product: ∇_x (vᵀ s_θ(x)) by autograd (with create_graph, so J trains θ).
    Equals the Fisher divergence ½ E‖s_θ − ∇ log p‖² up to a constant (Hyvärinen 2005).
    `score_fn(x)` → score of the same shape.
    """
    if noise not in ("rademacher", "gaussian"):
        raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        score = score_fn(xr)
        total = torch.zeros(x.shape[0], dtype=score.dtype, device=x.device)
        for _ in range(num_projections):
            v = torch.randn(x.shape, generator=generator, device=x.device, dtype=score.dtype)
            if noise == "rademacher":
                v = v.sign()
            sv = _sum_dims(score * v)
            (grad_sv,) = torch.autograd.grad(sv.sum(), xr, create_graph=True)
            total = total + _sum_dims(grad_sv * v)
            total = total + (0.5 * sv**2 if not variance_reduction else 0.0)
        total = total / num_projections
        if variance_reduction:
            total = total + 0.5 * _sum_dims(score.pow(2))
    return total
