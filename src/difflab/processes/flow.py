"""Flow matching / rectified flow as a Gaussian process (Lipman et al. 2023; Liu et al. 2023).

The conditional optimal-transport path of flow matching (Lipman et al. 2023, Eq. 20–23) and the
straight interpolation of rectified flow (Liu et al. 2023, Eq. 1) are the same marginals

    z_t = (1 − t) x + t ε,   i.e.  α_t = 1 − t,  σ_t = t,

so λ_t = 2 log((1 − t)/t), dλ/dt = −2/(t (1 − t)), σ̃ = σ/α = t/(1 − t), and the inverse is
t(λ) = sigmoid(−λ/2) = σ̃/(1 + σ̃). The SDE view follows from the contract (`base.py`):
f = −z/(1 − t), g² = −σ² dλ/dt = 2t/(1 − t).

Both ends are excluded: at t = 0, λ = +∞; at t = 1, α = 0 and σ̃ = ∞ (the EDM variables of
every sampler divide by α). So t ∈ [t_min, t_max] with defaults t_min = 1e-5 (λ ≈ 23) and
t_max = 1 − 1e-3 (λ ≈ −13.8, α = 1e-3, σ̃ ≈ 999): the data's trace left at t_max is 1e-3·x, below
that of the VP-SDE at t = 1 (α ≈ 6.6e-3), and the prior N(0, (α² + σ²) I) is N(0, 0.998² I) ≈ N(0, I).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Process, check_range


class Flow(Process):
    """Rectified flow / flow matching: α_t = 1 − t, σ_t = t on [t_min, t_max] (module docstring).

    Its flow-matching velocity dz/dt = ε − x is `parameterizations.FlowVelocity`; every sampler,
    loss and likelihood runs on it through α and σ alone."""

    #: α and σ are linear in t (the schedule group's "linear" means a process's own schedule)
    schedule = "linear"

    def __init__(self, t_min: float = 1e-5, t_max: float = 1.0 - 1e-3, schedule: str | None = None):
        check_range("t_min", t_min, 0.0, 1.0)
        check_range("t_max", t_max, t_min, 1.0)
        if schedule not in (None, "linear"):
            raise ValueError(f"process=flow has its own schedule (alpha = 1 - t, sigma = t), got schedule={schedule!r}; "
                             f"use schedule=linear, or another process for other log-SNR schedules")
        super().__init__()
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)

    def log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(t)

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        """d log(1 − t)/dt = −1/(1 − t)."""
        return -1.0 / (1.0 - self.check_time(t))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        """λ = 2 log(1 − t) − 2 log t ⇒ dλ/dt = −2/(t (1 − t))."""
        t = self.check_time(t)
        return -2.0 / (t * (1.0 - t))

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 80) -> Tensor:
        """t = sigmoid(−λ/2), from e^{λ/2} = (1 − t)/t."""
        lam = torch.as_tensor(log_snr)
        t = torch.sigmoid(-0.5 * lam.to(torch.float64)).clamp(self.t_min, self.t_max)
        return t.to(lam.dtype if lam.is_floating_point() else torch.float64)
