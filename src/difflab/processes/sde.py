"""Continuous SDE processes of score_sde (Song et al. 2021, Eqs. 9 and 11):
VP-SDE, sub-VP-SDE and VE-SDE, written through their marginals α_t, σ_t.

Each is built on a log-SNR schedule: by default its own (linear β for VP / sub-VP, geometric σ
for VE); `schedule=` puts another shape between the same endpoints λ(t_min), λ(1).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process, check_range, keeps
from .continuous import ScheduledProcess, VPProcess
from .schedules import GeometricSigma, LinearBeta, LogSNRSchedule, process_schedule


class VPSDE(VPProcess):
    """Variance-preserving SDE dz = −½ β(t) z dt + √β(t) dw (Song et al. 2021, Eq. 11).

    α_t = exp(−¼ t² (β_max − β_min) − ½ t β_min), σ_t² = 1 − α_t², dλ/dt = −β(t)/σ_t².
    DDPM with T → ∞ and β_i = β(i/T)/T is this process. schedule: None / "linear" /
    "linear_beta" keep this β(t); another name or a `LogSNRSchedule` replaces λ(t) (VP stays VP:
    β(t) = −2 d log α/dt follows from it).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5,
                 schedule: str | LogSNRSchedule | None = None):
        check_range("t_min", t_min, 0.0, 1.0)
        native = LinearBeta(beta_min, beta_max, t_min, 1.0)
        super().__init__(process_schedule(native, schedule, float(t_min), 1.0), t_min, 1.0)
        self.beta_min, self.beta_max = native.beta_min, native.beta_max

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = −2 d log α/dt."""
        return -2.0 * self.dlog_alpha_dt(t)

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, " + super().extra_repr()


class SubVPSDE(VPSDE):
    """Sub-VP SDE dz = −½ β z dt + √(β (1 − e^{−2∫β})) dw (Song et al. 2021, Eq. 29).

    α_t as for VP (on the same schedule), σ_t = 1 − α_t² (so σ_t² ≤ the VP variance);
    g² = β (1 − α⁴).
    """

    def log_sigma(self, t: Tensor) -> Tensor:
        return self._log_sigma_from(self.log_alpha(t))

    @staticmethod
    def _log_sigma_from(log_alpha: Tensor) -> Tensor:
        """log σ = log(1 − α²)."""
        return torch.log(-torch.expm1(2 * log_alpha))

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:  # not the VP family's σ
        if not keeps(self, SubVPSDE, "log_sigma"):
            return self.log_alpha(t), self.log_sigma(t)
        log_alpha = self.log_alpha(t)
        return log_alpha, self._log_sigma_from(log_alpha)

    log_snr = Process.log_snr  # 2 (log α − log σ): no longer the schedule's VP log-SNR

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 80) -> Tensor:
        return Process.t_from_log_snr(self, log_snr, iters)

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        """λ = 2 log α − 2 log(1 − α²) ⇒ dλ/dt = 2 (d log α/dt) (1 + α²)/(1 − α²)."""
        t = self.check_time(t)
        two_log_a = 2 * self.log_alpha(t)
        return 2 * self.dlog_alpha_dt(t) * (1 + two_log_a.exp()) / -torch.expm1(two_log_a)


class VESDE(ScheduledProcess):
    """Variance-exploding SDE dz = √(dσ²/dt) dw with σ_t = σ_min (σ_max/σ_min)^t, α_t = 1
    (Song et al. 2021, Eq. 9).

    g² = 2 σ_t² log(σ_max/σ_min). NCSN's geometric noise levels σ_1 > … > σ_L are this
    process at evenly spaced t (Song & Ermon 2019; Song et al. 2021, Eq. 9). The prior is N(0, σ_max² I). With another schedule,
    σ_t = e^{−λ_t/2} between the same endpoints.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 0.0,
                 schedule: str | LogSNRSchedule | None = None):
        check_range("t_min", t_min, 0.0, 1.0, lo_open=False)
        native = GeometricSigma(sigma_min, sigma_max)
        super().__init__(process_schedule(native, schedule, float(t_min), 1.0), t_min, 1.0)
        self.sigma_min, self.sigma_max = native.sigma_min, native.sigma_max

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def log_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * self.log_snr_schedule.log_snr(t)

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return torch.zeros_like(self.check_time(t))

    def prior_std(self) -> float:
        if isinstance(self.log_snr_schedule, GeometricSigma):
            return self.sigma_max
        return math.exp(-0.5 * self.log_snr_schedule.log_snr_min)

    def extra_repr(self) -> str:
        return (f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, " + super().extra_repr())
