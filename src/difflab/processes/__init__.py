"""Gaussian diffusion processes: every one a `Process` (see `base.py` for the interface)."""
from .base import Process, append_dims
from .continuous import ContinuousSNR, MonotoneNet
from .ddpm import DDPM, ddpm_betas
from .sde import SubVPSDE, VESDE, VPSDE

__all__ = ["Process", "DDPM", "ContinuousSNR", "VPSDE", "SubVPSDE", "VESDE", "append_dims", "ddpm_betas", "MonotoneNet"]
