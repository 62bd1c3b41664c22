"""Continuous SDE processes of score_sde (Song et al. 2021; seed 001 and 002):
VP-SDE, sub-VP-SDE and VE-SDE, written through their marginals α_t, σ_t."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process, check_range


class _LinearBeta(Process):
    """Shared β(t) = β_min + t (β_max − β_min) and ∫₀ᵗ β = β_min t + ½ t² (β_max − β_min)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-5):
        super().__init__()
        check_range("beta_min", beta_min, 0.0, None)
        check_range("beta_max", beta_max, 0.0, None)
        if beta_max < beta_min:
            raise ValueError(f"beta_max must be >= beta_min = {beta_min}, got {beta_max}")
        check_range("t_min", t_min, 0.0, 1.0)
        self.beta_min, self.beta_max, self.t_min, self.t_max = float(beta_min), float(beta_max), float(t_min), 1.0

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        """log α_t = −¼ t² (β_max − β_min) − ½ t β_min."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(self.check_time(t))

    def extra_repr(self) -> str:
        return f"beta_min={self.beta_min:g}, beta_max={self.beta_max:g}, " + super().extra_repr()


class VPSDE(_LinearBeta):
    """Variance-preserving SDE dz = −½ β(t) z dt + √β(t) dw.

    α_t = exp(−¼ t² (β_max − β_min) − ½ t β_min), σ_t² = 1 − α_t², dλ/dt = −β(t)/σ_t².
    DDPM with T → ∞ and β_i = β(i/T)/T is this process.
    """

    def log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2 * self.log_alpha(t)))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        t = self.check_time(t)
        return -self.beta(t) / -torch.expm1(2 * self.log_alpha(t))

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 0) -> Tensor:
        """Solve ½ t² Δβ + t β_min = softplus(−λ) for t (since 1/α² = 1 + e^{−λ})."""
        c = torch.nn.functional.softplus(-torch.as_tensor(log_snr, dtype=torch.float64))
        d = self.beta_max - self.beta_min
        if d == 0:
            t = c / self.beta_min
        else:
            t = (-self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * c)) / d
        return t.clamp(self.t_min, self.t_max).to(torch.as_tensor(log_snr).dtype)


class SubVPSDE(_LinearBeta):
    """Sub-VP SDE dz = −½ β z dt + √(β (1 − e^{−2∫β})) dw (Song et al. 2021, Eq. 29).

    α_t as for VP, σ_t = 1 − α_t² (so σ_t² ≤ the VP variance); g² = β (1 − α⁴).
    """

    def log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(2 * self.log_alpha(t)))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        t = self.check_time(t)
        a2 = (2 * self.log_alpha(t)).exp()
        return -self.beta(t) * (1 + a2) / -torch.expm1(2 * self.log_alpha(t))


class VESDE(Process):
    """Variance-exploding SDE dz = √(dσ²/dt) dw with σ_t = σ_min (σ_max/σ_min)^t, α_t = 1.

    g² = 2 σ_t² log(σ_max/σ_min). NCSN's geometric noise levels σ_1 > … > σ_L are this
    process at evenly spaced t (seed 002). The prior is N(0, σ_max² I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 0.0):
        super().__init__()
        check_range("sigma_min", sigma_min, 0.0, None)
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
        check_range("t_min", t_min, 0.0, 1.0, lo_open=False)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.t_min, self.t_max = float(t_min), 1.0
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + t * self._log_ratio

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return torch.zeros_like(self.check_time(t))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return torch.full_like(self.check_time(t), -2 * self._log_ratio)

    def prior_std(self) -> float:
        return self.sigma_max

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 0) -> Tensor:
        lam = torch.as_tensor(log_snr)
        return ((-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio).clamp(self.t_min, self.t_max)

    def extra_repr(self) -> str:
        return f"sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g}, " + super().extra_repr()
