"""Helpers shared by the sampler functions: the counting model wrapper, noise, per-grid constants."""
from __future__ import annotations

import math
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
        return pred.map(lambda p: p.to(x.dtype)) if isinstance(pred, Prediction) else Prediction(*(p.to(x.dtype) for p in pred))


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
    """α, σ, λ, d log α/dt and g² at every grid time, and the constants of every move
    ts[i] → ts[i+1] (forward transition and posterior, from `Process.transition` and
    `Process.posterior_coefficients`), as Python floats (float64 math)."""

    t: list
    alpha: list
    sigma: list
    log_snr: list
    dlog_alpha: list
    g2: list
    alpha_ts: list  # α_{t|s} of q(z_t | z_s), t = ts[i], s = ts[i+1]
    var_ts: list    # σ²_{t|s}
    post: list      # (coef_z, coef_x, std) of q(z_s | z_t, x)

    @classmethod
    def of(cls, process, ts: Tensor) -> "GridConstants":
        ts = ts.to(torch.float64).cpu()
        with torch.no_grad():
            a, s = process.alpha_sigma(ts)
            lam = process.log_snr(ts)
            dla = process.dlog_alpha_dt(ts)
            g2 = process.diffusion_squared(ts)
            alpha_ts, var_ts = process.transition(ts[1:], ts[:-1])
            post = torch.stack(process.posterior_coefficients(ts[1:], ts[:-1]), 1)
        lists = (v.to(torch.float64).tolist() for v in (ts, a, s, lam, dla, g2, alpha_ts, var_ts))
        return cls(*lists, [tuple(p) for p in post.to(torch.float64).tolist()])

    @property
    def sigma_tilde(self) -> list:
        """σ̃ = σ/α = e^{−λ/2}, the noise level of x̃ = z/α (Karras et al. 2022, Eq. 4 with s = α)."""
        return [math.exp(-0.5 * lam) for lam in self.log_snr]

    def posterior(self, i: int) -> tuple[float, float, float]:
        """(coef_z, coef_x, std) of q(z_s | z_t, x) for the move t = ts[i] → s = ts[i+1]."""
        return self.post[i]


def times(t: float, x: Tensor) -> Tensor:
    """The grid time t as a [B] float64 tensor on x's device (the `Process` methods' time argument)."""
    return torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)


def report(callback, i: int, t: float, t_next: float, x: Tensor, denoised: Tensor | None) -> None:
    """Per-step callback (k-diffusion style): a dict with the step index, the times, the new
    state and the current denoised estimate."""
    if callback is not None:
        callback({"i": i, "t": t, "t_next": t_next, "x": x, "denoised": denoised})
