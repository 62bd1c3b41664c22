"""Sliced Wasserstein and MMD against closed forms."""
import math

import pytest
import torch

from difflab.metrics.distances import mmd, sliced_wasserstein


def g(s):
    return torch.Generator().manual_seed(s)


def test_sw_in_one_dimension_is_exact_w2():
    """In 1-D every projection is ±1: SW₂ = W₂ of the sorted samples."""
    x, y = torch.randn(500, 1, generator=g(0)), 2 + 0.5 * torch.randn(500, 1, generator=g(1))
    w2 = ((x.double().sort(0)[0] - y.double().sort(0)[0]) ** 2).mean().sqrt()
    assert math.isclose(sliced_wasserstein(x, y, 8, g(2)), float(w2), rel_tol=1e-9)


def test_sw_of_shifted_gaussians():
    """SW₂²(N(0, I), N(m, I)) = E_θ (θᵀm)² = ‖m‖²/D."""
    d, m = 4, torch.tensor([3.0, 0.0, 0.0, 4.0])
    x = torch.randn(8000, d, generator=g(0))
    y = torch.randn(8000, d, generator=g(1)) + m
    assert math.isclose(sliced_wasserstein(x, y, 1000, g(3)), 5.0 / math.sqrt(d), rel_tol=0.05)
    assert sliced_wasserstein(x, x, 16, g(3)) == 0.0
    # sets of different sizes: quantile matching
    assert math.isclose(sliced_wasserstein(x[:3000], y, 1000, g(3)), 2.5, rel_tol=0.06)


def test_mmd_closed_form_for_gaussians():
    """For k = exp(−‖a−b‖²/2h²), N(μ₁, s²I) vs N(μ₂, s²I) in D dims:
    MMD² = 2 c (1 − exp(−‖Δ‖² / (2 (h² + 2 s²)))), c = (h² / (h² + 2 s²))^{D/2}."""
    d, s, h = 2, 1.0, 1.5
    delta = torch.tensor([1.0, 0.5])
    x = s * torch.randn(3000, d, generator=g(0))
    y = s * torch.randn(3000, d, generator=g(1)) + delta
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-float(delta.pow(2).sum()) / (2 * (h**2 + 2 * s**2))))
    assert math.isclose(mmd(x, y, bandwidths=h), exact, rel_tol=0.08)
    same = mmd(x, s * torch.randn(3000, d, generator=g(2)), bandwidths=h)
    assert abs(same) < 0.1 * exact
    assert mmd(x, y) > 0  # median-heuristic default


def test_bad_inputs():
    with pytest.raises(ValueError, match="features"):
        sliced_wasserstein(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="bandwidths must be > 0"):
        mmd(torch.zeros(4, 2), torch.ones(4, 2), bandwidths=0.0)
