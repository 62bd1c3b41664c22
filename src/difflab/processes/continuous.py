"""Variance-preserving process parameterised by its log-SNR schedule (VDM, Kingma et al. 2021).

α_t² = sigmoid(λ_t), σ_t² = sigmoid(−λ_t), so α² + σ² = 1. Seed 000 shows that the
continuous-time ELBO depends on the schedule only through its endpoints λ_min, λ_max;
the shape in between changes only the variance of the Monte Carlo estimate.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Process


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


class ContinuousSNR(Process):
    """Continuous-time VP process with λ decreasing from log_snr_max (t=0) to log_snr_min (t=1).

    schedule:
      linear  — λ(t) = λ_max + t (λ_min − λ_max)
      cosine  — λ(t) = −2 log tan(a + t (b − a)), a = atan(e^{−λ_max/2}), b = atan(e^{−λ_min/2})
                (the cosine schedule of Nichol & Dhariwal with exact endpoints)
      learned — λ(t) = λ_max − (λ_max − λ_min) (γ̃(t) − γ̃(0)) / (γ̃(1) − γ̃(0)), with γ̃ a
                monotone network and both endpoints trainable (VDM, Appendix on γ_η)
    """

    SCHEDULES = ("linear", "cosine", "learned")

    def __init__(self, schedule: str = "linear", log_snr_min: float = -10.0, log_snr_max: float = 10.0, hidden: int = 1024):
        super().__init__()
        if schedule not in self.SCHEDULES:
            raise ValueError(f"schedule must be one of {self.SCHEDULES}, got {schedule!r}")
        if not (math.isfinite(log_snr_min) and math.isfinite(log_snr_max)) or not log_snr_min < log_snr_max:
            raise ValueError(
                f"log_snr_min must be < log_snr_max (both finite) for a decreasing schedule, "
                f"got log_snr_min={log_snr_min}, log_snr_max={log_snr_max}"
            )
        self.schedule = schedule
        self.t_min, self.t_max = 0.0, 1.0
        if schedule == "learned":
            self.net = MonotoneNet(hidden)
            self.log_snr_min_param = nn.Parameter(torch.tensor(float(log_snr_min)))
            self.log_snr_max_param = nn.Parameter(torch.tensor(float(log_snr_max)))
        else:
            self._lmin, self._lmax = float(log_snr_min), float(log_snr_max)

    @property
    def log_snr_min(self) -> float:
        return float(self.log_snr_min_param.detach()) if self.schedule == "learned" else self._lmin

    @property
    def log_snr_max(self) -> float:
        return float(self.log_snr_max_param.detach()) if self.schedule == "learned" else self._lmax

    def _lambda(self, t: Tensor) -> Tensor:
        if self.schedule == "linear":
            return self._lmax + t * (self._lmin - self._lmax)
        if self.schedule == "cosine":
            a, b = math.atan(math.exp(-0.5 * self._lmax)), math.atan(math.exp(-0.5 * self._lmin))
            return -2.0 * torch.log(torch.tan(a + t * (b - a)))
        lmin, lmax = self.log_snr_min_param, self.log_snr_max_param
        if not bool(lmin < lmax):
            raise ValueError(
                f"learned schedule is no longer decreasing: log_snr_min={float(lmin.detach()):.4g} >= "
                f"log_snr_max={float(lmax.detach()):.4g}; lower the schedule's learning rate"
            )
        ends = torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device)
        g = self.net(torch.cat([t.reshape(-1).to(lmin.dtype), ends.to(lmin.dtype)]))
        g_t, g0, g1 = g[:-2].reshape(t.shape), g[-2], g[-1]
        return (lmax - (lmax - lmin) * (g_t - g0) / (g1 - g0)).to(t.dtype)

    def log_snr(self, t: Tensor) -> Tensor:
        return self._lambda(self.check_time(t))

    def log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(self._lambda(t))

    def log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * F.logsigmoid(-self._lambda(t))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        t = self.check_time(t)
        if self.schedule == "linear":
            return torch.full_like(t, self._lmin - self._lmax)
        if self.schedule == "cosine":
            a, b = math.atan(math.exp(-0.5 * self._lmax)), math.atan(math.exp(-0.5 * self._lmin))
            return -4.0 * (b - a) / torch.sin(2 * (a + t * (b - a)))
        return self._time_derivative(self._lambda, t)

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        """d log α/dt = ½ sigmoid(−λ) dλ/dt."""
        t = self.check_time(t)
        return 0.5 * torch.sigmoid(-self._lambda(t)) * self.dlog_snr_dt(t)

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 80) -> Tensor:
        lam = torch.as_tensor(log_snr)
        if self.schedule == "linear":
            return ((lam - self._lmax) / (self._lmin - self._lmax)).clamp(0, 1)
        if self.schedule == "cosine":
            a, b = math.atan(math.exp(-0.5 * self._lmax)), math.atan(math.exp(-0.5 * self._lmin))
            return ((torch.atan(torch.exp(-0.5 * lam)) - a) / (b - a)).clamp(0, 1)
        return super().t_from_log_snr(lam, iters)

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, log_snr_min={self.log_snr_min:g}, log_snr_max={self.log_snr_max:g}"
