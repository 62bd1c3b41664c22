"""Variance-preserving processes on a log-SNR schedule (VDM, Kingma et al. 2021).

α_t² = sigmoid(λ_t), σ_t² = sigmoid(−λ_t), so α² + σ² = 1 (VDM Eq. 3–4). Seed 000 shows that the
continuous-time ELBO depends on the schedule only through its endpoints λ_min, λ_max;
the shape in between changes only the variance of the Monte Carlo estimate.
"""
from __future__ import annotations

from torch import Tensor

from ..compat import add_load_state_dict_pre_hook
from .base import Process, keeps
from .schedules import Learned, LogSNRSchedule, MonotoneNet, make_schedule

__all__ = ["ScheduledProcess", "VPProcess", "ContinuousSNR", "MonotoneNet"]


class ScheduledProcess(Process):
    """A process whose log-SNR is a `LogSNRSchedule`; subclasses give α and σ in terms of it.
    `schedule` (the name) and `log_snr_schedule` (the module) say which one."""

    def __init__(self, schedule: LogSNRSchedule, t_min: float = 0.0, t_max: float = 1.0):
        super().__init__()
        self.log_snr_schedule = schedule
        self.schedule = schedule.name
        self.t_min, self.t_max = float(t_min), float(t_max)

    def problem(self) -> str | None:
        return self.log_snr_schedule.problem()

    def log_snr(self, t: Tensor) -> Tensor:
        return self.log_snr_schedule.log_snr(self.check_time(t))

    def dlog_snr_dt(self, t: Tensor) -> Tensor:
        return self.log_snr_schedule.dlog_snr_dt(self.check_time(t))

    def t_from_log_snr(self, log_snr: Tensor, iters: int = 80) -> Tensor:
        t = self.log_snr_schedule.t_from_log_snr(log_snr)
        return super().t_from_log_snr(log_snr, iters) if t is None else t.clamp(self.t_min, self.t_max)

    @property
    def log_snr_min(self) -> float:
        return self.log_snr_schedule.log_snr_min

    @property
    def log_snr_max(self) -> float:
        return self.log_snr_schedule.log_snr_max

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, " + super().extra_repr()


class VPProcess(ScheduledProcess):
    """The VP family on any `LogSNRSchedule`: α² = sigmoid(λ), σ² = sigmoid(−λ) (VDM Eq. 3–4)."""

    def log_alpha(self, t: Tensor) -> Tensor:
        return self.log_snr_schedule.vp_log_alpha(t)

    def log_sigma(self, t: Tensor) -> Tensor:
        return self.log_snr_schedule.vp_log_sigma(t)

    def log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if keeps(self, VPProcess, "log_alpha", "log_sigma"):
            return self.log_snr_schedule.vp_log_alpha_sigma(t)
        return self.log_alpha(t), self.log_sigma(t)  # a subclass with its own α or σ

    def dlog_alpha_dt(self, t: Tensor) -> Tensor:
        return self.log_snr_schedule.vp_dlog_alpha_dt(self.check_time(t))


class ContinuousSNR(VPProcess):
    """Continuous-time VP process with λ decreasing from log_snr_max (t=0) to log_snr_min (t=1).

    schedule: a name of `LogSNRSchedule.registry` — linear, cosine, learned (VDM's monotone
    network with trainable endpoints), geometric_sigma (= linear here) — or a schedule object.
    """

    def __init__(self, schedule: str | LogSNRSchedule = "linear", log_snr_min: float = -10.0, log_snr_max: float = 10.0,
                 hidden: int = 1024):
        super().__init__(make_schedule(schedule, log_snr_min, log_snr_max, 0.0, 1.0, hidden=hidden))
        add_load_state_dict_pre_hook(self, _move_legacy_schedule_keys)

    # VDM's learned schedule: its network and trainable endpoints, under the names they always had
    def _learned(self) -> Learned:
        if not isinstance(self.log_snr_schedule, Learned):
            raise AttributeError(f"schedule={self.schedule!r} has no trainable parameters; use schedule='learned'")
        return self.log_snr_schedule

    @property
    def net(self):
        return self._learned().net

    @property
    def log_snr_min_param(self):
        return self._learned().log_snr_min_param

    @property
    def log_snr_max_param(self):
        return self._learned().log_snr_max_param

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, log_snr_min={self.log_snr_min:g}, log_snr_max={self.log_snr_max:g}"


def _move_legacy_schedule_keys(module, state_dict, prefix, *args) -> None:
    """Checkpoints from before schedules were modules kept the learned schedule's weights on the
    process itself (`net.*`, `log_snr_*_param`): move them to their new place (a load_state_dict
    pre-hook of `ContinuousSNR`)."""
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].split(".")[0] in
                ("net", "log_snr_min_param", "log_snr_max_param")]:
        state_dict[prefix + "log_snr_schedule." + key[len(prefix):]] = state_dict.pop(key)
