"""`Denoiser`: a network + a process + a parameterization → `Prediction` in float32."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .parameterizations import Parameterization, Prediction, input_scale_of
from .processes.base import Process, append_dims

CONDITIONINGS = ("t", "log_snr", "sigma", "log_sigma", "log_sigma_tilde", "auto")


def autocast_off(device_type: str):
    """A context with autocast off for this device type; no context at all where autocast is
    already off (entering one costs more than a small training step's op). On a torch too old
    to say per device, always the real context."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4 has no per-device query
        on = True
    return torch.autocast(device_type=device_type, enabled=False) if on else contextlib.nullcontext()


class Denoiser(nn.Module):
    """denoiser(z, t) → Prediction(x0, eps, score).

    The network is called as `model(z_in, c)` with c of shape [B], the noise conditioning:
      t          — the time itself (scaled by `cond_scale`, e.g. 1000 for DDPM recipes)
      log_snr    — λ_t, the same input for every process (VDM)
      sigma      — σ_t (NCSN's noise level)
      log_sigma  — ¼ log σ_t (EDM's c_noise where α = 1)
      log_sigma_tilde — ¼ log σ̃, σ̃ = σ_t/α_t (EDM's c_noise, Karras et al. 2022 Table 1, on any process)
      auto       — the parameterization's own (`Parameterization.conditioning`: EDM's c_noise for
                   `EDM`), else log_snr; so parameterization=edm alone is EDM's whole preconditioning
    With `scale_input=True` the network sees z / sqrt(α² + σ²), unit scale even for VE. A
    parameterization with its own input scale (EDM's c_in: `Parameterization.input_scale`)
    applies that one instead, so the two cannot be combined.

    The network may run under autocast (bf16/fp16); its output is cast to float32 (or
    float64 if z is float64) and the conversion to x0/eps/score is done with autocast
    off, so mixed precision never leaks into the prediction (docs/architecture.md, "Precision").
    """

    def __init__(self, model: nn.Module, process: Process, parameterization: Parameterization,
                 conditioning: str = "t", cond_scale: float = 1.0, scale_input: bool = False):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if conditioning == "auto":
            conditioning = getattr(parameterization, "conditioning", None) or "log_snr"
        if scale_input and input_scale_of(parameterization, torch.ones(1), torch.ones(1)) is not None:
            raise ValueError(f"{parameterization!r} scales the network input itself (c_in); set denoiser.scale_input=false")
        self.model = model
        self.process = process
        self.parameterization = parameterization
        self.conditioning = conditioning
        self.cond_scale = float(cond_scale)
        self.scale_input = scale_input

    def with_network(self, model: nn.Module) -> "Denoiser":
        """The same denoiser (process, parameterization, conditioning) around another network."""
        return Denoiser(model, self.process, self.parameterization, self.conditioning, self.cond_scale, self.scale_input)

    def condition(self, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        if self.conditioning == "t":
            c = t
        elif self.conditioning == "log_snr":
            c = 2 * (alpha.log() - sigma.log())
        elif self.conditioning == "sigma":
            c = sigma
        elif self.conditioning == "log_sigma":
            c = 0.25 * sigma.log()
        else:
            c = 0.25 * (sigma.log() - alpha.log())
        return c * self.cond_scale

    def forward(self, z: Tensor, t: Tensor) -> Prediction:
        out_dtype = torch.promote_types(z.dtype, torch.float32)
        if t.ndim == 0:
            t = t.expand(z.shape[0])
        alpha, sigma = self.process.alpha_sigma(t)
        alpha, sigma = alpha.to(out_dtype), sigma.to(out_dtype)
        z_in = z
        scale = input_scale_of(self.parameterization, alpha, sigma)
        if scale is not None:
            z_in = z * append_dims(scale, z.ndim).to(z.dtype)
        elif self.scale_input:
            z_in = z / append_dims((alpha**2 + sigma**2).sqrt(), z.ndim).to(z.dtype)
        out = self.model(z_in, self.condition(t, alpha, sigma).to(z.dtype if z.is_floating_point() else out_dtype))
        with autocast_off(z.device.type):
            a, s = append_dims(alpha, z.ndim), append_dims(sigma, z.ndim)
            return self.parameterization.predict(out.to(out_dtype), z.to(out_dtype), a, s)
