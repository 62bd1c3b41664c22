"""Discrete-time DDPM (Ho et al. 2020, Eqs. 2–4): T steps of q(x_i | x_{i−1}) = N(√(1−β_i) x_{i−1}, β_i I)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Process, check_range, keeps
from .schedules import LogSNRSchedule, make_schedule

#: beta_schedule names that are DDPM's own published β tables (the rest are log-SNR shapes)
BETA_TABLES = {"linear": "linear", "linear_beta": "linear", "cosine": "cosine"}


def ddpm_betas(num_steps: int, beta_schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_1..β_T in float64.

    linear: evenly spaced from beta_start to beta_end (Ho et al. 2020).
    cosine: β_i = min(1 − ᾱ(i/T)/ᾱ((i−1)/T), 0.999) with ᾱ(u) = cos²((u + 0.008)/1.008 · π/2)
    (Nichol & Dhariwal 2021; diffusers' "squaredcos_cap_v2"). The 0.999 cap keeps ᾱ_T > 0,
    so the log-SNR stays finite at the last step.
    """
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if beta_schedule == "cosine":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor(
            [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), 0.999) for i in range(num_steps)],
            dtype=torch.float64,
        )
    raise ValueError(f"beta_schedule must be one of 'linear', 'cosine', got {beta_schedule!r}")


class DDPM(Process):
    """DDPM's discrete chain seen as a process on t ∈ [1/T, 1], with t = i/T for step i.

    At grid points α(i/T)² = ᾱ_i = ∏_{j≤i} (1 − β_j) exactly (the `alphas_cumprod[i−1]` of
    other libraries). beta_schedule: "linear" (= "linear_beta", Ho et al. 2020) and "cosine"
    (Nichol & Dhariwal 2021) are the published β tables; any other schedule name (or a
    `LogSNRSchedule`) sets ᾱ_i = sigmoid(λ(i/T)) with that shape between the linear table's
    endpoints λ(1/T), λ(1) (VDM Eq. 3 at the grid points).

    Between grid points log ᾱ is interpolated linearly, so on ((i−1)/T, i/T] the drift is
    constant: d log α/dt = ½ T log(1 − β_i), the VP-SDE with β(t) = −T log(1 − β_i) ≈ T β_i.
    σ² = 1 − ᾱ.
    """

    def __init__(self, num_steps: int = 1000, beta_schedule: str | LogSNRSchedule = "linear", beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps}")
        check_range("beta_start", beta_start, 0.0, 1.0)
        check_range("beta_end", beta_end, 0.0, 1.0)
        if beta_end < beta_start:
            raise ValueError(f"beta_end must be >= beta_start = {beta_start}, got {beta_end}")
        self.num_steps = int(num_steps)
        if isinstance(beta_schedule, str) and beta_schedule in BETA_TABLES:
            betas = ddpm_betas(self.num_steps, BETA_TABLES[beta_schedule], beta_start, beta_end)
            log1m_beta = torch.log1p(-betas)
        else:
            log1m_beta = self._log1m_beta_of(beta_schedule, beta_start, beta_end)
            betas = -torch.expm1(log1m_beta)
        self.beta_schedule = self.schedule = getattr(beta_schedule, "name", beta_schedule)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("log1m_beta", log1m_beta, persistent=False)
        # log ᾱ_i for i = 0..T (ᾱ_0 = 1)
        self.register_buffer("log_alphas_cumprod", torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(log1m_beta, 0)]), persistent=False)
        self.t_min, self.t_max = 1.0 / self.num_steps, 1.0

    def _log1m_beta_of(self, schedule, beta_start: float, beta_end: float) -> Tensor:
        """log(1 − β_i) = log ᾱ_i − log ᾱ_{i−1} with log ᾱ_i = logsigmoid(λ(i/T)), ᾱ_0 = 1."""
        if schedule == "learned":
            raise ValueError("beta_schedule='learned' needs a continuous process: use process=continuous_snr "
                             "(DDPM's discrete table cannot be trained)")
        T = self.num_steps
        try:
            table = torch.cumsum(torch.log1p(-ddpm_betas(T, "linear", beta_start, beta_end)), 0)
            lam = table - torch.log(-torch.expm1(table))  # λ_i = log ᾱ_i − log(1 − ᾱ_i)
            sched = make_schedule(schedule, float(lam[-1]), float(lam[0]), 1.0 / T, 1.0)
        except ValueError as e:
            raise ValueError(f"beta_schedule must be 'linear', 'cosine' or a log-SNR schedule: {e}") from None
        with torch.no_grad():
            lab = torch.nn.functional.logsigmoid(sched.log_snr(torch.arange(1, T + 1, dtype=torch.float64) / T))
        return torch.diff(lab, prepend=torch.zeros(1, dtype=torch.float64))

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_1..ᾱ_T (float64), the table other libraries index as alphas_cumprod[i − 1]."""
        return self.log_alphas_cumprod[1:].exp()

    def _locate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Interval index i ∈ 1..T with t ∈ ((i−1)/T, i/T] and the position u − (i−1) ∈ (0, 1]."""
        u = t.to(torch.float64) * self.num_steps
        ur = torch.round(u)
        u = torch.where((u - ur).abs() < 1e-4, ur, u)  # snap float32 grid times to the grid
        i = torch.ceil(u).clamp(1, self.num_steps).long()
        return i, u - (i - 1)

    def log_alpha(self, t: Tensor) -> Tensor:
        i, frac = self._locate(t)
        lab = self.log_alphas_cumprod.to(t.device)[i - 1] + frac * self.log1m_beta.to(t.device)[i - 1]
        return (0.5 * lab).to(t.dtype)

    def log_sigma(self, t: Tensor) -> Tensor:
        return self._log_sigma_from(self.log_alpha(t), t.dtype)

    @staticmethod
    def _log_sigma_from(log_alpha: Tensor, dtype: torch.dtype) -> Tensor:
        """log σ = ½ log(1 − ᾱ), ᾱ = α², in float64."""
        return (0.5 * torch.log(-torch.expm1(2 * log_alpha.to(torch.float64)))).to(dtype)

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if not keeps(self, DDPM, "log_sigma"):
            return self.log_alpha(t), self.log_sigma(t)
        log_alpha = self.log_alpha(t)
        return log_alpha, self._log_sigma_from(log_alpha, t.dtype)

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        t = self.check_time(t)
        i, _ = self._locate(t)
        return (0.5 * self.num_steps * self.log1m_beta.to(t.device)[i - 1]).to(t.dtype)

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        """λ = log ᾱ − log(1 − ᾱ) ⇒ dλ/dt = (d log ᾱ/dt) / (1 − ᾱ)."""
        t = self.check_time(t)
        dlab = 2 * self.dlog_alpha_dt(t).to(torch.float64)
        return (dlab / -torch.expm1(2 * self.log_alpha(t).to(torch.float64))).to(t.dtype)

    def timesteps(self, device=None, dtype=torch.float64) -> Tensor:
        """The T grid times i/T, i = 1..T."""
        return torch.arange(1, self.num_steps + 1, device=device, dtype=dtype) / self.num_steps

    def extra_repr(self) -> str:
        return f"num_steps={self.num_steps}, beta_schedule={self.beta_schedule!r}"
