"""What every diffusion objective is built from: the ε-error ‖ε − ε̂(z_t, t)‖², and the
precision rule under which it is computed.

    z_t = α_t x + σ_t ε,   ‖ε − ε̂‖² = SNR(t) ‖x − x̂‖²

(the identity between Kingma et al. 2021's Eq. 13/15, in x̂, and Eq. 17, in ε̂). The network's
`Parameterization` decides how ε − ε̂ is formed exactly (`Parameterization.eps_error`); a
denoiser without a `.parameterization` (a plain callable, e.g. a test oracle) is read in the
ε form.

Precision: the network runs under the caller's autocast (bf16 / 16-mixed), everything else (the
schedule's λ(t) and λ'(t), a learned schedule included, the weights, the ELBO's other terms) in
float32 or float64 with autocast off (`float32_outside_network`).
"""
from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from ..denoiser import autocast_off
from ..parameterizations import Epsilon, Parameterization
from ..processes.base import Process, append_dims

_EPSILON = Epsilon()


def sum_dims(v: Tensor) -> Tensor:
    """Sum over all but the batch dimension → [B]."""
    return v.flatten(1).sum(1)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def at_least_f32(x: Tensor) -> Tensor:
    """float64 stays; anything else becomes float32."""
    return x if x.dtype == torch.float64 else x.to(torch.float32)


def parameterization_of(denoiser, default: Parameterization = _EPSILON) -> Parameterization:
    """The denoiser's `.parameterization` (a `Denoiser` has one), else `default` (ε form)."""
    return getattr(denoiser, "parameterization", None) or default


def eps_squared_error(pred, x: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor,
                      parameterization: Parameterization | None = None) -> Tensor:
    """‖ε − ε̂‖² per example [B] for z = α x + σ ε (α, σ of shape [B]), formed by
    `parameterization.eps_error` (ε form when None)."""
    p = parameterization or _EPSILON
    a, s = append_dims(alpha, x.ndim).to(x.dtype), append_dims(sigma, x.ndim).to(x.dtype)
    return sum_dims(p.eps_error(pred, x, noise, a, s).pow(2))


def eps_error_at(denoiser, process: Process, x: Tensor, t: Tensor, noise: Tensor,
                 parameterization: Parameterization | None = None) -> Tensor:
    """‖ε − ε̂(z_t, t)‖² [B] with z_t = α_t x + σ_t ε: the network's one call in every objective."""
    pred = denoiser(process.q_sample(x, t, noise), t)
    alpha, sigma = process.alpha_sigma(t)
    return eps_squared_error(pred, x, noise, alpha, sigma, parameterization or parameterization_of(denoiser))


class _InCallerPrecision:
    """`denoiser`, called under the autocast state that was active when the objective began."""

    def __init__(self, denoiser, device_type: str, dtype):
        self.denoiser, self.device_type, self.dtype = denoiser, device_type, dtype

    @property
    def parameterization(self):
        return getattr(self.denoiser, "parameterization", None)

    def __call__(self, z: Tensor, t: Tensor):
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=True):
            return self.denoiser(z, t)


def _in_caller_precision(denoiser, device_type: str):
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except TypeError:  # older torch: no per-device query
        return denoiser
    return _InCallerPrecision(denoiser, device_type, dtype) if enabled else denoiser


def float32_outside_network(objective):
    """Decorator for an objective with arguments named `denoiser` and `x`: it runs with autocast
    off, and the denoiser under the caller's autocast (captured before it is turned off)."""
    names = list(inspect.signature(objective).parameters)
    i_den, i_x = names.index("denoiser"), names.index("x")

    @functools.wraps(objective)
    def run(*args, **kwargs):  # (no inspect.bind per call: it costs more than a small model's loss)
        x = args[i_x] if len(args) > i_x else kwargs["x"]
        device_type = x.device.type
        if len(args) > i_den:
            args = (*args[:i_den], _in_caller_precision(args[i_den], device_type), *args[i_den + 1:])
        else:
            kwargs["denoiser"] = _in_caller_precision(kwargs["denoiser"], device_type)
        with autocast_off(device_type):
            return objective(*args, **kwargs)

    return run
