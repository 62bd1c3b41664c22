"""Score matching objectives for a score network s_θ(x) ≈ ∇_x log p(x).

Denoising score matching (Vincent 2011) at noise level σ: the objective ℓ(θ; σ) of NCSN
(Song & Ermon 2019, Eq. 5), weighted by λ(σ) = σ² as in their Eq. 6. Sliced score matching
(Song, Garg, Shi & Ermon 2019): Hyvärinen's score matching with the Jacobian trace replaced by
random projections, each a Hessian-vector product by autograd.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..processes.base import append_dims
from .eps_error import noise_like, sum_dims


def denoising_score_matching_loss(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigma, *,
                                  generator: torch.Generator | None = None, weighting: str = "sigma2",
                                  reduce_dims: str = "sum") -> Tensor:
    """Denoising score matching at noise level(s) σ (Vincent 2011; Song & Ermon 2019, Eq. 5), per example [B]:

        λ(σ) · ½ ‖s_θ(x̃, σ) + (x̃ − x)/σ²‖²,   x̃ = x + σ ε,

    with λ(σ) = σ² (`weighting="sigma2"`, NCSN; makes every level O(1)) or 1 (`"none"`).
    `sigma`: a float or a [B] tensor (one level per example); `score_fn(x̃, sigma [B])` → score.
    Its minimiser is the score of the noised density p_σ = p * N(0, σ² I) (Vincent 2011).
    """
    if weighting not in ("sigma2", "none"):
        raise ValueError(f"weighting must be 'sigma2' or 'none', got {weighting!r}")
    sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
    if not bool((sig > 0).all()):
        raise ValueError("sigma must be > 0")
    s = append_dims(sig, x.ndim)
    noise = noise_like(x, generator)
    x_noisy = x + s * noise
    score = score_fn(x_noisy, sig)
    sq = (score + (x_noisy - x) / s**2).pow(2).flatten(1)
    sq = sq.sum(1) if reduce_dims == "sum" else sq.mean(1)
    return 0.5 * sq * (sig**2 if weighting == "sigma2" else 1.0)


def sliced_score_matching_loss(score_fn: Callable[[Tensor], Tensor], x: Tensor, num_projections: int = 1,
                               noise: str = "rademacher", generator: torch.Generator | None = None,
                               variance_reduction: bool = True) -> Tensor:
    """Sliced score matching (Song, Garg, Shi & Ermon 2019), per example [B]:

        J(θ) = E_v [ vᵀ ∇_x s_θ(x) v + ½ ‖s_θ(x)‖² ]            (variance reduced, E[v vᵀ] = I)
        J(θ) = E_v [ vᵀ ∇_x s_θ(x) v + ½ (vᵀ s_θ(x))² ]           (variance_reduction=False)

    averaged over `num_projections` vectors v (Rademacher or Gaussian). vᵀ∇s v is a
    Hessian-vector product: ∇_x (vᵀ s_θ(x)) by autograd (with create_graph, so J trains θ).
    Equals the Fisher divergence ½ E‖s_θ − ∇ log p‖² up to a constant (Hyvärinen 2005).
    `score_fn(x)` → score of the same shape.
    """
    if noise not in ("rademacher", "gaussian"):
        raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1, got {num_projections}")
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        score = score_fn(xr)
        total = torch.zeros(x.shape[0], dtype=score.dtype, device=x.device)
        for _ in range(num_projections):
            v = torch.randn(x.shape, generator=generator, device=x.device, dtype=score.dtype)
            if noise == "rademacher":
                v = v.sign()
            sv = sum_dims(score * v)
            (grad_sv,) = torch.autograd.grad(sv.sum(), xr, create_graph=True)
            total = total + sum_dims(grad_sv * v)
            total = total + (0.5 * sv**2 if not variance_reduction else 0.0)
        total = total / num_projections
        if variance_reduction:
            total = total + 0.5 * sum_dims(score.pow(2))
    return total
