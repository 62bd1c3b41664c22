"""Sample distances: sliced Wasserstein-2 and the kernel MMD (used for `metrics=[swd, mmd]`
and by the sampler tests and benchmark against exact GMM samples)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 512, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance SW₂(x, y) = ( E_θ W₂²(θᵀx, θᵀy) )^{1/2}, θ uniform on the
    unit sphere (Rabin et al. 2011; Bonneel et al. 2015), estimated with `num_projections`
    random directions. Each 1-D W₂ is exact from sorted projections; sets of different sizes are
    compared at common quantile levels. Inputs [N, ...] are flattened to [N, D]."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: x has {x.shape[1]} features, y has {y.shape[1]}")
    if num_projections < 1 or x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("sliced_wasserstein needs num_projections >= 1 and non-empty x and y")
    theta = torch.randn(x.shape[1], num_projections, dtype=torch.float64, generator=generator, device=generator.device if generator is not None else "cpu")
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta.to(y.device), dim=0)
    if px.shape[0] != py.shape[0]:
        n = max(px.shape[0], py.shape[0])
        q = (torch.arange(n, dtype=torch.float64, device=px.device) + 0.5) / n
        px = _quantile_sorted(px, q)
        py = _quantile_sorted(py.to(px.device), q)
    return float(((px - py.to(px.device)) ** 2).mean().sqrt())


def _quantile_sorted(s: Tensor, q: Tensor) -> Tensor:
    """Empirical quantile function (step function) of sorted columns s [N, P] at levels q."""
    idx = torch.clamp((q * s.shape[0]).floor().long(), max=s.shape[0] - 1)
    return s[idx]


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


def mmd(x: Tensor, y: Tensor, bandwidths=None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy MMD²(x, y) (Gretton et al. 2012) with the Gaussian kernel
    k(a, b) = mean_h exp(−‖a − b‖² / (2h²)) over `bandwidths` (default: the median pairwise
    distance of the pooled sample times (0.5, 1, 2)). Unbiased U-statistic by default (can be
    slightly negative when x and y come from the same law)."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd: x has {x.shape[1]} features, y has {y.shape[1]}")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd needs at least 2 samples in each set")
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        pooled = torch.cat([x, y])[:2048]
        med = _sq_dists(pooled, pooled)
        med = med[torch.triu(torch.ones_like(med, dtype=torch.bool), 1)].median().sqrt().item()
        bandwidths = [0.5 * med, med, 2 * med]
    bandwidths = [float(b) for b in (bandwidths if isinstance(bandwidths, (list, tuple)) else [bandwidths])]
    if any(not (b > 0 and math.isfinite(b)) for b in bandwidths):
        raise ValueError(f"mmd: bandwidths must be > 0, got {bandwidths}")

    def k(d2):
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths) / len(bandwidths)

    kxx, kyy, kxy = k(dxx), k(dyy), k(dxy)
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return float(sxx + syy - 2 * kxy.mean())
