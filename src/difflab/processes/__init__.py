"""Gaussian diffusion processes: every one a `Process` (see `base.py` for the interface)."""
from .base import Process, append_dims
from .continuous import ContinuousSNR, MonotoneNet, ScheduledProcess, VPProcess
from .ddpm import DDPM, ddpm_betas
from .flow import Flow
from .schedules import Cosine, GeometricSigma, Learned, Linear, LinearBeta, LogSNRSchedule, make_schedule
from .sde import SubVPSDE, VESDE, VPSDE

__all__ = ["Process", "DDPM", "Flow", "ContinuousSNR", "VPSDE", "SubVPSDE", "VESDE", "append_dims", "ddpm_betas", "MonotoneNet",
           "ScheduledProcess", "VPProcess", "LogSNRSchedule", "Linear", "Cosine", "Learned", "LinearBeta", "GeometricSigma",
           "make_schedule"]
