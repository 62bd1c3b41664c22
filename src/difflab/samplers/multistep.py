"""Linear multistep (Adams–Bashforth) integration of the probability-flow ODE in the EDM variables

    dx̃/dσ̃ = d(x̃, σ̃) = (x̃ − x̂(x̃, σ̃))/σ̃,   x̃ = z/α, σ̃ = σ/α   (Karras et al. 2022, Eq. 4 with s = 1),

the "LMS" sampler of k-diffusion (`sample_lms`) and of diffusers (`LMSDiscreteScheduler`): each move
σ̃_i → σ̃_{i+1} integrates the Lagrange polynomial through the last `order` slopes d_i, d_{i−1}, …
exactly (Adams–Bashforth of variable step; Hairer, Nørsett & Wanner, Solving ODEs I, Sec. III.5).
Written in α and σ only, so it runs with every process.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor

from ._util import GridConstants, report


def lms_coefficients(nodes: list, a: float, b: float) -> list:
    """∫_a^b ℓ_j(s) ds for the Lagrange basis ℓ_j of `nodes` (most recent first): the weights of the
    slopes at the nodes in the Adams–Bashforth move a → b. ℓ_j has degree ≤ 3, so 3-point
    Gauss–Legendre quadrature (exact to degree 5) on the product form gives them exactly."""
    gx, gw = np.polynomial.legendre.leggauss(3)
    s = 0.5 * (a + b) + 0.5 * (b - a) * gx
    out = []
    for j, nj in enumerate(nodes):
        ell = np.ones_like(s)
        for k, nk in enumerate(nodes):
            if k != j:
                ell = ell * (s - nk) / (nj - nk)
        out.append(float(0.5 * (b - a) * (gw * ell).sum()))
    return out


def lms(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, order: int = 4,
        to_zero: bool = False, corrector: bool = False) -> Tensor:
    """Linear multistep of `order` 1–4 in σ̃ (k-diffusion's `sample_lms`; diffusers'
    `LMSDiscreteScheduler`): x̃_{i+1} = x̃_i + Σ_j c_{ij} d_{i−j}, c_{ij} = ∫_{σ̃_i}^{σ̃_{i+1}} ℓ_j, the
    order warming up from 1 (Euler) at the first move. to_zero: after the last grid time t_min one
    more move to σ̃ = 0 (k-diffusion's trailing zero noise level), and the result is x̃(σ̃ = 0) = x,
    the data itself, not the slightly noisy z at t_min; NFE = steps + 1, else NFE = steps.
    corrector: Adams–Bashforth–Moulton in PEC mode (Hairer et al., III.1): once x̂ has been evaluated at
    the predicted x̃_{i+1}, the move x̃_i → x̃_{i+1} is redone with the Adams–Moulton weights of the nodes
    σ̃_{i+1}, σ̃_i, … (`order` of them), without a new evaluation (the idea of UniC, Zhao et al. 2023);
    the slope kept for the next moves is (x̃_{i+1} − x̂)/σ̃_{i+1} at the corrected x̃. Same NFE."""
    return _multistep(model, process, x, ts, callback, order, to_zero, corrector, lms_coefficients, "lms")


def _multistep(model, process, x: Tensor, ts: Tensor, callback, order, to_zero: bool, corrector: bool, weights,
               name: str) -> Tensor:
    """The Adams loop of `lms` and `ipndm` in (σ̃, x̃): `weights(nodes, a, b)` gives the slopes' weights of the move
    a → b from the σ̃ nodes of the last `order` slopes (most recent first)."""
    if int(order) != order or not 1 <= order <= 4:
        raise ValueError(f"{name}: order must be an integer in 1..4, got {order}")
    c = GridConstants.of(process, ts)
    levels = c.sigma_tilde + ([0.0] if to_zero else [])
    x = x / c.alpha[0]
    ds: list = []  # (d, σ̃) of the last moves, most recent first
    prev = None  # (x̃ before the last move, its σ̃)
    for i in range(len(levels) - 1):
        denoised = model(c.alpha[i] * x, c.t[i]).x0
        if corrector and prev is not None:
            nodes = [((x - denoised) / levels[i], levels[i])] + ds[: int(order) - 1]
            coeffs = weights([s for _, s in nodes], prev[1], levels[i])
            x = prev[0] + sum(cf * d for cf, (d, _) in zip(coeffs, nodes))
        if levels[i + 1] != levels[i]:  # a repeated grid time (ddpm_leading) is no move
            ds = [((x - denoised) / levels[i], levels[i])] + ds[: int(order) - 1]
            coeffs = weights([s for _, s in ds], levels[i], levels[i + 1])
            prev = (x, levels[i])
            x = x + sum(cf * d for cf, (d, _) in zip(coeffs, ds))
        t_next = c.t[i + 1] if i + 1 < len(c.t) else 0.0
        report(callback, i, c.t[i], t_next, x if to_zero and i == len(c.t) - 1 else c.alpha[i + 1] * x, denoised)
    return x if to_zero else c.alpha[-1] * x


#: Adams–Bashforth weights of a constant step h, most recent slope first: x_{i+1} = x_i + h Σ_j b_j d_{i−j}
#: (Hairer, Nørsett & Wanner, Solving ODEs I, Sec. III.1, Table 1.1).
AB_CONSTANT_STEP = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def constant_step_weights(nodes: list, a: float, b: float) -> list:
    """iPNDM's weights of the move a → b: (b − a) times the constant-step Adams–Bashforth weights of as many
    slopes as `nodes` holds, whatever the nodes' spacing."""
    return [(b - a) * w for w in AB_CONSTANT_STEP[len(nodes)]]


def ipndm(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, order: int = 4,
          to_zero: bool = False) -> Tensor:
    """iPNDM, the improved pseudo-numerical method of Zhang & Chen (2023, DEIS, Sec. 4 and App. "iPNDM"),
    in the form Zhou et al. (2024, AMED, App. "iPNDM") found the strongest training-free solver at 5–10 NFE:
    Adams–Bashforth in σ̃ on dx̃/dσ̃ = (x̃ − x̂)/σ̃ with the weights of a *constant* step whatever the grid,

        x̃_{i+1} = x̃_i + (σ̃_{i+1} − σ̃_i) Σ_j b_j d_{i−j},   b = (55, −59, 37, −9)/24 at order 4,

    the order warming up from 1 (Euler) over the first moves (`AB_CONSTANT_STEP`). On a grid uniform in σ̃
    this is `lms` exactly; on the ρ = 7 grid (`edm`, the default) the fixed weights extrapolate the slope
    less than the variable-step ones, which the papers found better at low NFE. to_zero: one more move to
    σ̃ = 0 after t_min (NFE = steps + 1), returning x̃(0) = x. NFE = steps otherwise."""
    return _multistep(model, process, x, ts, callback, order, to_zero, False, constant_step_weights, "ipndm")
