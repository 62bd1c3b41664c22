"""Helpers shared by the sampler functions: the counting model wrapper, noise, per-grid constants."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..parameterizations import Prediction


class CountingModel:
    """denoiser(z, t) with t a scalar time: expands t to [B], casts the Prediction to z's
    dtype and counts network evaluations (one call on a batch = one NFE)."""

    def __init__(self, denoiser: Callable):
        self.denoiser = denoiser
        self.nfe = 0

    def __call__(self, x: Tensor, t) -> Prediction:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        self.nfe += 1
        pred = self.denoiser(x, t)
        return Prediction(*(p.to(x.dtype) for p in pred))


def randn_like(x: Tensor, generator=None) -> Tensor:
    """Standard normal noise shaped like x. `generator` may be one torch.Generator or a list
    of them, one per equal chunk of rows (per-chunk seeding: a sample's noise then does not
    depend on which batch it was drawn in)."""
    if isinstance(generator, Sequence):
        rows = x.shape[0] // len(generator)
        if rows * len(generator) != x.shape[0]:
            raise ValueError(f"a list of {len(generator)} generators needs a batch that is a multiple of it, got {x.shape[0]}")
        return torch.cat([torch.randn((rows,) + tuple(x.shape[1:]), generator=g, device=x.device, dtype=x.dtype) for g in generator])
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@dataclass
class GridConstants:
    """α, σ, λ, d log α/dt and g² at every grid time, as Python floats (float64 math)."""

    t: list
    alpha: list
    sigma: list
    log_snr: list
    dlog_alpha: list
    g2: list

    @classmethod
    def of(cls, process, ts: Tensor) -> "GridConstants":
        ts = ts.to(torch.float64).cpu()
        with torch.no_grad():
            a, s = process.alpha_sigma(ts)
            lam = process.log_snr(ts)
            dla = process.dlog_alpha_dt(ts)
            g2 = process.diffusion_squared(ts)
        return cls(*(v.to(torch.float64).tolist() for v in (ts, a, s, lam, dla, g2)))

    def posterior(self, i: int, j: int) -> tuple[float, float, float]:
        """q(z_s | z_t, x) for t = ts[i] > s = ts[j] (seed 000, Eq. 8.38): returns
        (coef_z, coef_x, std) with mean = coef_z z_t + coef_x x,
        σ²_{t|s} = σ_t² (1 − e^{λ_t − λ_s}), coef_z = α_{t|s} σ_s²/σ_t², coef_x = α_s σ²_{t|s}/σ_t²,
        var = σ²_{t|s} σ_s²/σ_t²."""
        import math

        a_t, a_s, s_t, s_s = self.alpha[i], self.alpha[j], self.sigma[i], self.sigma[j]
        var_ts = s_t**2 * -math.expm1(self.log_snr[i] - self.log_snr[j])
        coef_z = (a_t / a_s) * s_s**2 / s_t**2
        coef_x = a_s * var_ts / s_t**2
        return coef_z, coef_x, math.sqrt(max(var_ts * s_s**2 / s_t**2, 0.0))


def report(callback, i: int, t: float, t_next: float, x: Tensor, denoised: Tensor | None) -> None:
    """Per-step callback (k-diffusion style): a dict with the step index, the times, the new
    state and the current denoised estimate."""
    if callback is not None:
        callback({"i": i, "t": t, "t_next": t_next, "x": x, "denoised": denoised})
