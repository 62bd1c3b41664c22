"""Samplers of the probability-flow ODE (Song et al. 2021, Eq. 13)

    dz/dt = f(z, t) − ½ g(t)² ∇log p_t(z)  ⇔  dx̃/dσ̃ = (x̃ − x̂)/σ̃,  x̃ = z/α, σ̃ = σ/α,

solved from ts[0] down to ts[-1]: Euler and Heun in the EDM variables (Karras et al. 2022, whose
form holds for every process through α and σ), EDM's stochastic sampler (Alg. 2, churn), and
torchdiffeq's RK45 in t. The exponential integrators (DPM-Solver++, UniPC) are in `exponential.py`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import GridConstants, randn_like, report


def _karras(model, process, x: Tensor, ts: Tensor, callback, generator, heun: bool, s_churn: float = 0.0,
            s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> Tensor:
    """Karras et al. 2022 (EDM), Alg. 2, in the variables x̃ = z/α and σ̃ = σ/α = e^{−λ/2}, where the
    probability-flow ODE of every process reads dx̃/dσ̃ = (x̃ − x̂(x̃, σ̃))/σ̃ (EDM Eq. 4 with s = 1).
    At each step, with γ = min(s_churn/N, √2 − 1) for σ̃_i ∈ [s_tmin, s_tmax] (else 0), noise raises
    σ̃_i to σ̂ = (1 + γ) σ̃_i (capped at σ̃(t_max)), then an Euler step to σ̃_{i+1} and, with `heun`,
    the trapezoidal correction. s_churn = 0 is EDM Alg. 1. Written in α, σ only: x̂(x̃, σ̃) is the
    denoiser at z = α_t x̃, t = t(σ̃). Noise is drawn at every step when s_churn > 0 (as k-diffusion)."""
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    sig = c.sigma_tilde
    sig_top = math.exp(-0.5 * float(process.log_snr(torch.tensor([process.t_max], dtype=torch.float64))))
    x = x / c.alpha[0]
    for i in range(n):
        t_hat, s_hat, a_hat = c.t[i], sig[i], c.alpha[i]
        if s_churn > 0:
            gamma = min(s_churn / n, 2**0.5 - 1, sig_top / sig[i] - 1) if s_tmin <= sig[i] <= s_tmax else 0.0
            eps = s_noise * randn_like(x, generator)
            if gamma > 0:
                s_hat = sig[i] * (1 + gamma)
                tt = process.t_from_log_snr(torch.tensor([-2 * math.log(s_hat)], dtype=torch.float64))
                t_hat, a_hat = float(tt), float(process.alpha(tt))
                x = x + math.sqrt(s_hat**2 - sig[i] ** 2) * eps
        denoised = model(a_hat * x, t_hat).x0
        d = (x - denoised) / s_hat
        x_next = x + (sig[i + 1] - s_hat) * d
        if heun:
            d2 = (x_next - model(c.alpha[i + 1] * x_next, c.t[i + 1]).x0) / sig[i + 1]
            x_next = x + (sig[i + 1] - s_hat) * 0.5 * (d + d2)
        x = x_next
        report(callback, i, c.t[i], c.t[i + 1], c.alpha[i + 1] * x, denoised)
    return c.alpha[-1] * x


def ode_euler(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """Euler on the probability-flow ODE in x̃ = z/α, σ̃ = σ/α (Karras et al. 2022, Alg. 1 with
    Euler steps; k-diffusion's `sample_euler`): x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i)(x̃_i − x̂_i)/σ̃_i.
    For α = 1 this is exactly DDIM. NFE = steps."""
    return _karras(model, process, x, ts, callback, generator, heun=False)


def ode_heun(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """Heun's method (Karras et al. 2022, Alg. 1; k-diffusion's `sample_heun`) on the probability-flow
    ODE in x̃ = z/α, σ̃ = σ/α. NFE = 2 · steps (the last step is Heun too: σ̃(t_min) > 0)."""
    return _karras(model, process, x, ts, callback, generator, heun=True)


def edm_stochastic(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, s_churn: float = 40.0,
                   s_tmin: float = 0.05, s_tmax: float = 50.0, s_noise: float = 1.003) -> Tensor:
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): Heun steps with churn, noise that lifts
    σ̃_i by a factor 1 + γ, γ = min(s_churn/N, √2 − 1) inside [s_tmin, s_tmax], scaled by s_noise.
    Defaults: the paper's ImageNet-64 settings (Table 5). NFE = 2 · steps."""
    for name, v in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
        if not v >= 0:
            raise ValueError(f"edm_stochastic: {name} must be >= 0, got {v}")
    return _karras(model, process, x, ts, callback, generator, True, s_churn, s_tmin, s_tmax, s_noise)


def ode_rk45(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, rtol: float = 1e-5,
             atol: float = 1e-5, adaptive: bool = True) -> Tensor:
    """The probability-flow ODE by torchdiffeq: adaptive Dormand–Prince 5(4) ("dopri5") with
    tolerances rtol/atol, reporting the state at every grid time; with adaptive=False, the
    classical fixed-step RK4 on the grid (4 NFE per step). NFE is whatever the solver used.

    The adaptive step size depends on the error of the whole batch, so a sample can differ
    (within the tolerance) with the batch it was solved in."""
    from torchdiffeq import odeint

    if not (rtol > 0 and atol > 0):
        raise ValueError(f"ode_rk45: rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    c = GridConstants.of(process, ts)

    def velocity(t: Tensor, z: Tensor) -> Tensor:
        tb = t.to(torch.float64).clamp(process.t_min, process.t_max).expand(z.shape[0])
        return process.probability_flow_velocity(z, tb, model(z, tb).score)

    # torchdiffeq needs strictly monotone times; collapse repeated grid points
    keep = torch.cat([torch.ones(1, dtype=torch.bool, device=ts.device), ts[1:] < ts[:-1]])
    t_solve = ts[keep].to(x.dtype if x.dtype == torch.float64 else torch.float32).to(x.device)
    if t_solve.numel() < 2:
        return x
    if adaptive:
        traj = odeint(velocity, x, t_solve, method="dopri5", rtol=rtol, atol=atol)
    else:
        traj = odeint(velocity, x, t_solve, method="rk4")
    idx = torch.cumsum(keep.long(), 0) - 1
    for i in range(len(ts) - 1):
        report(callback, i, c.t[i], c.t[i + 1], traj[int(idx[i + 1])], None)
    return traj[-1]
