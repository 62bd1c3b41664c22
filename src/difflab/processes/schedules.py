"""Log-SNR schedules λ(t): the axis every process is built on (Kingma et al. 2021, VDM, Sec. 3).

A schedule is a decreasing function λ(t) = log(α_t² / σ_t²) on the process's time range
[t_min, t_max]. A process family turns it into marginals (VP: α² = sigmoid(λ), σ² = sigmoid(−λ),
VDM Eq. 3–4; VE: α = 1, σ = e^{−λ/2}), so process × schedule is a real grid.

Each schedule has a native parameterisation and `from_endpoints(log_snr_min, log_snr_max,
t_min, t_max)`: the same shape between the endpoints of another process. Seed 000 shows the
continuous-time ELBO depends on the schedule only through those endpoints (VDM Eq. 17), so
"same endpoints, another shape" is the comparison a study wants.

A new schedule is one subclass with a `name` (it registers itself) and one
`conf/schedule/<name>.yaml` holding `name: <name>`.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Process, check_range, keeps


class LogSNRSchedule(nn.Module):
    """λ(t), decreasing on [t_min, t_max]. Subclasses implement `log_snr`; closed forms of
    dλ/dt and of the inverse t(λ) are optional (autograd and bisection are the defaults)."""

    name: ClassVar[str] = ""
    registry: ClassVar[dict[str, type["LogSNRSchedule"]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            LogSNRSchedule.registry[cls.name] = cls

    t_min: float = 0.0
    t_max: float = 1.0

    @classmethod
    def from_endpoints(cls, log_snr_min: float, log_snr_max: float, t_min: float = 0.0, t_max: float = 1.0, **options):
        """This shape with λ(t_min) = log_snr_max and λ(t_max) = log_snr_min."""
        raise NotImplementedError  # pragma: no cover - abstract

    def log_snr(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return Process._time_derivative(self.log_snr, t)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor | None:
        """Closed-form inverse of λ, or None (the process then inverts by bisection)."""
        return None

    def problem(self) -> str | None:
        """Why this schedule cannot be used as it stands, or None (fixed schedules: never)."""
        return None

    @property
    def log_snr_min(self) -> float:
        with torch.no_grad():
            return float(self.log_snr(torch.tensor([self.t_max], dtype=torch.float64)))

    @property
    def log_snr_max(self) -> float:
        with torch.no_grad():
            return float(self.log_snr(torch.tensor([self.t_min], dtype=torch.float64)))

    # The VP family (VDM Eq. 3-4): α² = sigmoid(λ), σ² = sigmoid(−λ). Schedules with exact
    # closed forms in α (linear β) override these three for full precision.
    def vp_log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(self.log_snr(t))

    def vp_log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(-self.log_snr(t))

    def vp_log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log α, log σ) of the VP family with λ(t) computed once."""
        if not keeps(self, LogSNRSchedule, "vp_log_alpha", "vp_log_sigma"):
            return self.vp_log_alpha(t), self.vp_log_sigma(t)  # a subclass with its own closed forms
        lam = self.log_snr(t)
        return 0.5 * F.logsigmoid(lam), 0.5 * F.logsigmoid(-lam)

    def vp_dlog_alpha_dt(self, t: Tensor) -> Tensor:
        """d log α/dt = ½ sigmoid(−λ) dλ/dt."""
        return 0.5 * torch.sigmoid(-self.log_snr(t)) * self.dlog_snr_dt(t)

    def extra_repr(self) -> str:
        return f"log_snr_min={self.log_snr_min:.4g}, log_snr_max={self.log_snr_max:.4g}"


def check_endpoints(log_snr_min: float, log_snr_max: float) -> None:
    if not (math.isfinite(log_snr_min) and math.isfinite(log_snr_max)) or not log_snr_min < log_snr_max:
        raise ValueError(
            f"log_snr_min must be < log_snr_max (both finite) for a decreasing schedule, "
            f"got log_snr_min={log_snr_min}, log_snr_max={log_snr_max}"
        )


class _Endpoints(LogSNRSchedule):
    """Shapes given by their endpoints on [t_min, t_max], through u = (t − t_min)/(t_max − t_min)."""

    def __init__(self, log_snr_min: float = -10.0, log_snr_max: float = 10.0, t_min: float = 0.0, t_max: float = 1.0):
        super().__init__()
        check_endpoints(log_snr_min, log_snr_max)
        if not t_min < t_max:
            raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
        self._lmin, self._lmax, self.t_min, self.t_max = float(log_snr_min), float(log_snr_max), float(t_min), float(t_max)

    @classmethod
    def from_endpoints(cls, log_snr_min, log_snr_max, t_min=0.0, t_max=1.0, **options):
        return cls(log_snr_min, log_snr_max, t_min, t_max, **options)

    def _u(self, t: Tensor) -> Tensor:
        return (t - self.t_min) / (self.t_max - self.t_min)

    def _t(self, u: Tensor) -> Tensor:
        return self.t_min + u.clamp(0, 1) * (self.t_max - self.t_min)


class Linear(_Endpoints):
    """λ(t) = λ_max + u (λ_min − λ_max): VDM's fixed linear log-SNR (σ/α geometric in t)."""

    name = "linear"

    def log_snr(self, t: Tensor) -> Tensor:
        return self._lmax + self._u(t) * (self._lmin - self._lmax)

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return torch.full_like(t, (self._lmin - self._lmax) / (self.t_max - self.t_min))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return self._t((torch.as_tensor(log_snr) - self._lmax) / (self._lmin - self._lmax))


class Cosine(_Endpoints):
    """λ(t) = −2 log tan(a + u (b − a)), a = atan(e^{−λ_max/2}), b = atan(e^{−λ_min/2}): the cosine
    schedule α_t = cos(π t / 2) of Nichol & Dhariwal (2021, Eq. 17) with exact endpoints."""

    name = "cosine"

    def _ab(self) -> tuple[float, float]:
        return math.atan(math.exp(-0.5 * self._lmax)), math.atan(math.exp(-0.5 * self._lmin))

    def log_snr(self, t: Tensor) -> Tensor:
        a, b = self._ab()
        return -2.0 * torch.log(torch.tan(a + self._u(t) * (b - a)))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        a, b = self._ab()
        return -4.0 * (b - a) / torch.sin(2 * (a + self._u(t) * (b - a))) / (self.t_max - self.t_min)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        a, b = self._ab()
        return self._t((torch.atan(torch.exp(-0.5 * torch.as_tensor(log_snr))) - a) / (b - a))


class PositiveLinear(nn.Linear):
    """Linear layer with weights softplus(W) > 0, so it is increasing in every input (VDM)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.softplus(self.weight), self.bias)


class MonotoneNet(nn.Module):
    """VDM's monotone network γ̃(t) = l1(t) + l3(sigmoid(l2(l1(t)))), increasing in t."""

    def __init__(self, hidden: int = 1024):
        super().__init__()
        self.l1 = PositiveLinear(1, 1)
        self.l2 = PositiveLinear(1, hidden)
        self.l3 = PositiveLinear(hidden, 1)
        with torch.no_grad():  # start near a straight line
            self.l1.weight.fill_(math.log(math.e - 1))
            self.l1.bias.zero_()
            self.l3.weight.fill_(-6.0)

    def forward(self, t: Tensor) -> Tensor:
        h = self.l1(t[:, None])
        return (h + self.l3(torch.sigmoid(self.l2(h))))[:, 0]


class Learned(_Endpoints):
    """λ(t) = λ_max − (λ_max − λ_min) (γ̃(u) − γ̃(0)) / (γ̃(1) − γ̃(0)), γ̃ a monotone network and
    both endpoints trainable (Kingma et al. 2021, VDM, Sec. 3.4 and App. H)."""

    name = "learned"

    def __init__(self, log_snr_min: float = -10.0, log_snr_max: float = 10.0, t_min: float = 0.0, t_max: float = 1.0,
                 hidden: int = 1024):
        super().__init__(log_snr_min, log_snr_max, t_min, t_max)
        self.net = MonotoneNet(hidden)
        self.log_snr_min_param = nn.Parameter(torch.tensor(float(log_snr_min)))
        self.log_snr_max_param = nn.Parameter(torch.tensor(float(log_snr_max)))

    @property
    def log_snr_min(self) -> float:
        return float(self.log_snr_min_param.detach())

    @property
    def log_snr_max(self) -> float:
        return float(self.log_snr_max_param.detach())

    # Crossed endpoints (λ_min ≥ λ_max, the schedule no longer decreasing): on the CPU a clear
    # error at once; on a GPU that check would cost a host sync per call (several per training
    # step and per sampling step), so λ turns NaN instead and training's non-finite guard raises,
    # giving `problem()` as the reason. None: decide by the weights' device.
    check_on_host: bool | None = None

    def problem(self) -> str | None:
        """Why this schedule cannot be used, or None."""
        lmin, lmax = float(self.log_snr_min_param.detach()), float(self.log_snr_max_param.detach())
        if lmin < lmax:
            return None
        return (f"learned schedule is no longer decreasing: log_snr_min={lmin:.4g} >= log_snr_max={lmax:.4g}; "
                "lower the schedule's learning rate")

    def log_snr(self, t: Tensor) -> Tensor:
        lmin, lmax = self.log_snr_min_param, self.log_snr_max_param
        on_host = self.check_on_host if self.check_on_host is not None else lmin.device.type == "cpu"
        if on_host and (reason := self.problem()):
            raise ValueError(reason)
        # Times may come from anywhere (grids and prior_std build theirs on the CPU): evaluate on
        # the parameters' device and answer on t's, as the closed-form schedules do.
        ends = torch.tensor([0.0, 1.0], dtype=lmin.dtype, device=lmin.device)
        g = self.net(torch.cat([self._u(t).reshape(-1).to(device=lmin.device, dtype=lmin.dtype), ends]))
        g_t, g0, g1 = g[:-2].reshape(t.shape), g[-2], g[-1]
        lam = lmax - (lmax - lmin) * (g_t - g0) / (g1 - g0)
        if not on_host:
            lam = torch.where(lmin < lmax, lam, torch.nan)
        return lam.to(device=t.device, dtype=t.dtype)


class LinearBeta(LogSNRSchedule):
    """The VP-SDE's linear β(t) = β_min + t (β_max − β_min) (Song et al. 2021, Eq. 11; Ho et al.
    2020 as T → ∞): α_t² = e^{−B(t)}, B(t) = ∫₀ᵗ β = β_min t + ½ t² (β_max − β_min), so
    λ(t) = −log(e^{B(t)} − 1) and dλ/dt = −β(t)/σ_t². Defined on absolute time t ∈ (0, 1]."""

    name = "linear_beta"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5, t_max: float = 1.0):
        super().__init__()
        check_range("beta_min", beta_min, 0.0, None)
        check_range("beta_max", beta_max, 0.0, None)
        if beta_max < beta_min:
            raise ValueError(f"beta_max must be >= beta_min = {beta_min}, got {beta_max}")
        self.beta_min, self.beta_max, self.t_min, self.t_max = float(beta_min), float(beta_max), float(t_min), float(t_max)

    @classmethod
    def from_endpoints(cls, log_snr_min, log_snr_max, t_min=0.0, t_max=1.0, **options):
        """Solve B(t_min) = softplus(−λ_max), B(t_max) = softplus(−λ_min) for (β_min, β_max)."""
        check_endpoints(log_snr_min, log_snr_max)
        if not t_min > 0:
            raise ValueError("schedule=linear_beta reaches log-SNR +inf at t=0, so it needs a process with t_min > 0 "
                             "(process=vp, subvp or ddpm); on this process use schedule=linear or cosine")
        b0, b1 = F.softplus(torch.tensor(-log_snr_max, dtype=torch.float64)), F.softplus(torch.tensor(-log_snr_min, dtype=torch.float64))
        A = torch.tensor([[t_min, 0.5 * t_min**2], [t_max, 0.5 * t_max**2]], dtype=torch.float64)
        beta_min, delta = torch.linalg.solve(A, torch.stack([b0, b1])).tolist()
        if beta_min <= 0 or delta < 0:
            raise ValueError(f"no linear beta(t) >= 0 has log-SNR {log_snr_max:g} at t={t_min:g} and {log_snr_min:g} at "
                             f"t={t_max:g}; use schedule=linear or cosine for these endpoints")
        return cls(beta_min, beta_min + delta, t_min, t_max)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def vp_log_alpha(self, t: Tensor) -> Tensor:
        """log α_t = −½ B(t) = −¼ t² (β_max − β_min) − ½ t β_min."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def vp_log_sigma(self, t: Tensor) -> Tensor:
        return self._vp_log_sigma_from(self.vp_log_alpha(t))

    @staticmethod
    def _vp_log_sigma_from(log_alpha: Tensor) -> Tensor:
        """log σ = ½ log(1 − α²) (variance preserving)."""
        return 0.5 * torch.log(-torch.expm1(2 * log_alpha))

    def vp_log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if not keeps(self, LinearBeta, "vp_log_sigma"):
            return self.vp_log_alpha(t), self.vp_log_sigma(t)
        log_alpha = self.vp_log_alpha(t)
        return log_alpha, self._vp_log_sigma_from(log_alpha)

    def vp_dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return 2.0 * (self.vp_log_alpha(t) - self.vp_log_sigma(t))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return -self.beta(t) / -torch.expm1(2 * self.vp_log_alpha(t))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        """Solve ½ t² Δβ + t β_min = softplus(−λ) for t (since 1/α² = 1 + e^{−λ})."""
        lam = torch.as_tensor(log_snr)
        c = F.softplus(-lam.to(torch.float64))
        d = self.beta_max - self.beta_min
        t = c / self.beta_min if d == 0 else (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * c)) / d
        return t.to(lam.dtype if lam.is_floating_point() else torch.float64)

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}"


class GeometricSigma(LogSNRSchedule):
    """σ̃_t = σ_t/α_t = σ_min (σ_max/σ_min)^t, i.e. λ(t) = −2 log σ̃_t, linear in t: NCSN's
    geometric noise levels (Song & Ermon 2019) and the VE-SDE (Song et al. 2021, Eq. 9)."""

    name = "geometric_sigma"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        super().__init__()
        check_range("sigma_min", sigma_min, 0.0, None)
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    @classmethod
    def from_endpoints(cls, log_snr_min, log_snr_max, t_min=0.0, t_max=1.0, **options):
        check_endpoints(log_snr_min, log_snr_max)
        log_ratio = 0.5 * (log_snr_max - log_snr_min) / (t_max - t_min)
        log_sigma_min = -0.5 * log_snr_max - t_min * log_ratio
        return cls(math.exp(log_sigma_min), math.exp(log_sigma_min + log_ratio))

    def log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + t * self._log_ratio

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * self.log_sigma(t)

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -2 * self._log_ratio)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return (-0.5 * torch.as_tensor(log_snr) - math.log(self.sigma_min)) / self._log_ratio

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}"


def make_schedule(spec, log_snr_min: float, log_snr_max: float, t_min: float, t_max: float, **options) -> LogSNRSchedule:
    """A schedule object as is, or the named shape between the given endpoints."""
    if isinstance(spec, LogSNRSchedule):
        return spec
    cls = LogSNRSchedule.registry.get(spec)
    if cls is None:
        raise ValueError(f"schedule must be one of {tuple(LogSNRSchedule.registry)}, got {spec!r}")
    return cls.from_endpoints(log_snr_min, log_snr_max, t_min, t_max, **(options if cls is Learned else {}))


def process_schedule(native: LogSNRSchedule, spec, t_min: float, t_max: float, native_names=("linear",)) -> LogSNRSchedule:
    """A process's schedule: its `native` one for spec None (or one of `native_names`), else the
    shape `spec` between the native schedule's endpoints λ(t_min), λ(t_max) (same ELBO, VDM Eq. 17)."""
    if spec is None or (isinstance(spec, str) and spec in (native.name, *native_names)):
        return native
    with torch.no_grad():
        lam = native.log_snr(torch.tensor([t_min, t_max], dtype=torch.float64))
    return make_schedule(spec, float(lam[1]), float(lam[0]), t_min, t_max)
