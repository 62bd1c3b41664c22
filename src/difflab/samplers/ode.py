"""Deterministic samplers of the probability-flow ODE (Song et al. 2021; seed 001):

    dz/dt = f(z, t) − ½ g(t)² ∇log p_t(z),   f = (d log α/dt) z,

solved from ts[0] down to ts[-1] by Euler (order 1), Heun (order 2), torchdiffeq's adaptive
Dormand–Prince RK45, and DPM-Solver++(2M) (Lu et al. 2022), which integrates the same ODE
exactly in its linear part, in λ = log SNR. Same signature as the stochastic samplers.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import GridConstants, report, times


def _velocity(process, c: GridConstants, i: int, x: Tensor, score: Tensor) -> Tensor:
    """dz/dt of the probability-flow ODE at grid time ts[i] (`Process.probability_flow_velocity`)."""
    return process.probability_flow_velocity(x, times(c.t[i], x), score)


def ode_euler(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """Explicit Euler on the probability-flow ODE: z_s = z_t + (s − t) v(z_t, t). NFE = steps."""
    c = GridConstants.of(process, ts)
    for i in range(len(ts) - 1):
        pred = model(x, c.t[i])
        x = x + (c.t[i + 1] - c.t[i]) * _velocity(process, c, i, x, pred.score)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


def ode_heun(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """Heun's method (explicit trapezoid, EDM Alg. 1 without churn) on the probability-flow ODE:
    z̃ = z_t + h v(z_t, t), z_s = z_t + (h/2)(v(z_t, t) + v(z̃, s)), h = s − t. NFE = 2 · steps."""
    c = GridConstants.of(process, ts)
    for i in range(len(ts) - 1):
        h = c.t[i + 1] - c.t[i]
        pred = model(x, c.t[i])
        v1 = _velocity(process, c, i, x, pred.score)
        x_euler = x + h * v1
        v2 = _velocity(process, c, i + 1, x_euler, model(x_euler, c.t[i + 1]).score)
        x = x + 0.5 * h * (v1 + v2)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


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
    keep = torch.cat([torch.tensor([True]), ts[1:] < ts[:-1]])
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


def dpm_solver(model, process, x: Tensor, ts: Tensor, callback=None, generator=None,
               lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data-prediction multistep solver in λ = log SNR:

        h = λ_s − λ_t,  r = h_prev / h,  D = (1 + 1/(2r)) x̂_t − (1/(2r)) x̂_prev,
        z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D,

    first order (D = x̂_t, which is DDIM) at the first step and, with lower_order_final and
    fewer than 15 steps, at the last one (as diffusers does, for stability). NFE = steps."""
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    x0_prev, h_prev = None, None
    for i in range(n):
        pred = model(x, c.t[i])
        h = c.log_snr[i + 1] / 2 - c.log_snr[i] / 2  # λ in DPM-Solver is log(α/σ) = ½ log SNR
        first_order = x0_prev is None or h == 0 or h_prev == 0 or (lower_order_final and n < 15 and i == n - 1)
        if first_order:
            d = pred.x0
        else:
            r = h_prev / h
            d = (1 + 0.5 / r) * pred.x0 - (0.5 / r) * x0_prev
        x = (c.sigma[i + 1] / c.sigma[i]) * x - c.alpha[i + 1] * math.expm1(-h) * d
        x0_prev, h_prev = pred.x0, h
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x
