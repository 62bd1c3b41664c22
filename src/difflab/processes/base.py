"""The `Process` interface: a Gaussian forward process z_t = α_t x + σ_t ε.

Everything a sampler, loss or likelihood needs is derived here from four functions of
continuous time t ∈ [t_min, t_max] (t = t_min ≈ data, t = t_max ≈ prior):

    alpha(t), sigma(t), log_snr(t) = log(α_t² / σ_t²),  d log α / dt,  d λ / dt.

The SDE view (score_sde, Song et al. 2021) follows from the marginals alone:

    dz = f(z, t) dt + g(t) dw,   f = (d log α/dt) z,   g² = dσ²/dt − 2 (d log α/dt) σ²,

and since σ² = α² e^{−λ}, the second identity simplifies to g² = −σ² dλ/dt (used below),
valid for every process (VP, sub-VP, VE, discrete DDPM, learned VDM schedules).

Subclasses implement `log_alpha` and `log_sigma` (and, where a closed form exists, their
time derivatives); no sampler or loss ever branches on the process type.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from ..compat import tensor_version


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a [B] tensor broadcasts against a [B, ...] tensor
    (k-diffusion's helper: the same code then runs on 2-D points and on images)."""
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims, target ndim {ndim} is smaller")
    return x.reshape(x.shape + (1,) * missing) if missing else x  # one view op (indexing with None is one per dim)


def keeps(obj, owner: type, *names: str) -> bool:
    """Whether `obj` still uses `owner`'s own methods `names` (no subclass replaced them): a
    shortcut that computes those methods' results together is then valid for it."""
    cls = type(obj)
    return all(getattr(cls, n) is getattr(owner, n) for n in names)


def _float(t: Tensor) -> Tensor:
    """Time as a floating tensor of at least float32 precision."""
    if not torch.is_floating_point(t) or t.dtype in (torch.float16, torch.bfloat16):
        return t.to(torch.float32)
    return t


class Process(nn.Module):
    """A Gaussian diffusion process defined by its marginals q(z_t | x) = N(α_t x, σ_t² I).

    Subclasses set `t_min`, `t_max` and implement `log_alpha(t)` and `log_sigma(t)`;
    they may override `dlog_alpha_dt` and `dlog_snr_dt` with closed forms (the defaults
    differentiate the schedule with autograd, which is exact but slower).
    """

    t_min: float = 0.0
    t_max: float = 1.0
    #: check every time argument against [t_min, t_max] (costs a device sync per call)
    validate_time: bool = True

    # ---------------------------------------------------------------- schedule (override)
    def log_alpha(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_sigma(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        """d log α_t / dt (autograd default)."""
        return self._time_derivative(self.log_alpha, t)

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        """dλ/dt, negative for a valid process (autograd default)."""
        return self._time_derivative(self.log_snr, t)

    # ---------------------------------------------------------------- public interface
    def alpha(self, t: Tensor) -> Tensor:
        return self.log_alpha(self.check_time(t)).exp()

    def sigma(self, t: Tensor) -> Tensor:
        return self.log_sigma(self.check_time(t)).exp()

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = log(α_t² / σ_t²) = 2 (log α_t − log σ_t) (Kingma et al. 2021, Sec. 2)."""
        t = self.check_time(t)
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log α_t, log σ_t) of checked times; processes whose σ is computed from α (or both
        from λ) override it to compute the shared part once, where `keeps` says the methods it
        stands for are still their own."""
        return self.log_alpha(t), self.log_sigma(t)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        memo = self.__dict__.get("_alpha_sigma_memo")
        if memo and memo[0] is t and memo[1] == tensor_version(t):
            return memo[2]
        log_alpha, log_sigma = self.log_alpha_sigma(self.check_time(t))
        out = log_alpha.exp(), log_sigma.exp()
        if memo is not None and isinstance(t, Tensor):
            self.__dict__["_alpha_sigma_memo"] = (t, tensor_version(t), out)
        return out

    def problem(self) -> str | None:
        """Why this process cannot be used as it stands (a learned schedule gone wrong), or None;
        read on the host, once, where a per-call check would cost a sync (see `Learned`)."""
        return None

    @contextlib.contextmanager
    def times_unchecked(self):
        """Inside the block `check_time` trusts its input: for callers that made their times
        inside [t_min, t_max] themselves (the loss's draws; a checked sampling grid on a GPU,
        where each range check costs two host syncs per network call)."""
        checking = self.validate_time
        self.__dict__["validate_time"] = False  # (nn.Module.__setattr__'s checks cost more than a small op)
        try:
            yield self
        finally:
            self.__dict__["validate_time"] = checking

    @contextlib.contextmanager
    def reusing_alpha_sigma(self):
        """Inside the block, `alpha_sigma(t)` of one (unmodified) tensor t is computed once: a
        training step asks for it three times (z_t, the denoiser, the ε error) with the same t.
        Scoped to a block because a learned schedule changes between optimiser steps."""
        self.__dict__["_alpha_sigma_memo"] = ()
        try:
            yield self
        finally:
            self.__dict__.pop("_alpha_sigma_memo", None)

    def q_sample(self, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = α_t x + σ_t ε (Kingma et al. 2021, Eq. 1)."""
        alpha, sigma = self.alpha_sigma(t)
        return append_dims(alpha, x.ndim).to(x.dtype) * x + append_dims(sigma, x.ndim).to(x.dtype) * noise

    def diffusion_squared(self, t: Tensor) -> Tensor:
        """g(t)² = dσ²/dt − 2 (d log α/dt) σ² = −σ_t² dλ/dt (see module docstring)."""
        t = self.check_time(t)
        return -(2.0 * self.log_sigma(t)).exp() * self.dlog_snr_dt(t)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) = (d log α/dt) x and scalar diffusion g(t) of dz = f dt + g dw."""
        t = self.check_time(t)
        f = append_dims(self.dlog_alpha_dt(t), x.ndim).to(x.dtype) * x
        g = self.diffusion_squared(t).clamp_min(0.0).sqrt()
        return f, g

    # ---------------------------------------------------------------- dynamics (derived once)
    def reverse_sde_drift(self, z: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE dz = [f(z, t) − g(t)² ∇log p_t(z)] dt + g(t) dw̄
        (Anderson 1982; Song et al. 2021, Eq. 6), from `sde`'s f and g."""
        f, g = self.sde(z, t)
        return f - append_dims(g**2, z.ndim).to(z.dtype) * score

    def probability_flow_velocity(self, z: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Velocity of the probability-flow ODE dz/dt = f(z, t) − ½ g(t)² ∇log p_t(z)
        (Song et al. 2021, Eq. 13), from `sde`'s f and g."""
        f, g = self.sde(z, t)
        return f - 0.5 * append_dims(g**2, z.ndim).to(z.dtype) * score

    def transition(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(α_{t|s}, σ²_{t|s}) of q(z_t | z_s) = N(α_{t|s} z_s, σ²_{t|s} I) for s ≤ t
        (Kingma et al. 2021, Sec. 2): α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α²_{t|s} σ_s²,
        computed as σ_t² (1 − e^{λ_t − λ_s}) to stay accurate when s and t are close."""
        s, t = self.check_time(s), self.check_time(t)
        alpha_ts = (self.log_alpha(t) - self.log_alpha(s)).exp()
        var_ts = (2 * self.log_sigma(t)).exp() * -torch.expm1(self.log_snr(t) - self.log_snr(s))
        return alpha_ts, var_ts

    def posterior_coefficients(self, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(coef_z, coef_x, std) of q(z_s | z_t, x) = N(coef_z z_t + coef_x x, std² I), s < t
        (Ho et al. 2020, Eq. 6–7; Kingma et al. 2021, Sec. 2):
            coef_z = α_{t|s} σ_s² / σ_t²,  coef_x = α_s σ²_{t|s} / σ_t²,  std² = σ²_{t|s} σ_s² / σ_t²."""
        alpha_ts, var_ts = self.transition(s, t)
        s, t = self.check_time(s), self.check_time(t)
        var_s, var_t = (2 * self.log_sigma(s)).exp(), (2 * self.log_sigma(t)).exp()
        coef_z = alpha_ts * var_s / var_t
        coef_x = self.log_alpha(s).exp() * var_ts / var_t
        return coef_z, coef_x, (var_ts * var_s / var_t).clamp_min(0.0).sqrt()

    def q_posterior(self, x: Tensor, z_t: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of q(z_s | z_t, x) for s < t (`posterior_coefficients`)."""
        coef_z, coef_x, std = self.posterior_coefficients(s, t)
        mean = append_dims(coef_z, z_t.ndim) * z_t + append_dims(coef_x, x.ndim) * x
        return mean, std

    # ---------------------------------------------------------------- prior
    def prior_std(self) -> float:
        """Std of the prior N(0, s² I) at t_max: sqrt(α² + σ²) (1 for variance preserving)."""
        t = torch.tensor([self.t_max], dtype=torch.float64)
        with torch.no_grad():
            a, s = self.alpha_sigma(t)
        return float((a**2 + s**2).sqrt())

    def prior_sample(self, shape, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> Tensor:
        if generator is not None and device is None:
            device = generator.device
        return self.prior_std() * torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, s² I), summed over all but the batch dim → [B]."""
        s = self.prior_std()
        d = z[0].numel()
        sq = z.flatten(1).pow(2).sum(1)
        return -0.5 * sq / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    # ---------------------------------------------------------------- time utilities
    def check_time(self, t: Tensor) -> Tensor:
        t = _float(torch.as_tensor(t))
        if self.validate_time and t.numel() and not torch.jit.is_tracing():
            lo, hi = torch.stack([t.min(), t.max()]).tolist()  # one host sync, not two
            tol = 1e-6
            if lo < self.t_min - tol or hi > self.t_max + tol or math.isnan(lo) or math.isnan(hi):
                raise ValueError(
                    f"{type(self).__name__}: time t must lie in [t_min, t_max] = "
                    f"[{self.t_min:g}, {self.t_max:g}], got values in [{lo:g}, {hi:g}]"
                )
        return t

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 80) -> Tensor:
        """Inverse of λ(t) on [t_min, t_max] by bisection (λ is decreasing). Closed-form
        overrides exist where the schedule allows; this default serves any process."""
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        lo = torch.full_like(lam, self.t_min)
        hi = torch.full_like(lam, self.t_max)
        with torch.no_grad():
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                above = self.log_snr(mid) > lam  # λ(mid) > target → target lies later
                lo = torch.where(above, mid, lo)
                hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(torch.as_tensor(log_snr).dtype if torch.is_tensor(log_snr) else torch.float64)

    @staticmethod
    def _time_derivative(fn, t: Tensor) -> Tensor:
        # Keep the graph when the caller tracks gradients, so dλ/dt of a learned schedule
        # (VDM) passes gradients to the schedule's parameters in the ELBO's −λ'(t) factor.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            y = fn(tt)
            if not y.requires_grad:  # constant in t
                return torch.zeros_like(tt).detach()
            (dy,) = torch.autograd.grad(y.sum(), tt, create_graph=create_graph)
        return dy

    def extra_repr(self) -> str:
        return f"t_min={self.t_min:g}, t_max={self.t_max:g}"


def check_range(name: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = True, hi_open: bool = True) -> None:
    """Raise a ValueError naming the argument and its allowed range."""
    bad = (
        (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and (value >= hi if hi_open else value > hi))
        or math.isnan(value)
    )
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        raise ValueError(f"{name} must lie in {rng}, got {value}")
