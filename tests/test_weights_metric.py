"""The `weights` metric: mixture weights recovered from samples by the exact responsibilities.

Theory: for x ~ p = Σ_k w_k N(μ_k, s_k² I), E_x[p(k | x)] = ∫ w_k N(x; μ_k, s_k²) dx = w_k, so the
mean responsibility is an unbiased estimate of w_k whatever the overlap, and its standard error
is the std of p(k | x) over √n. A sample set drawn with other weights w' recovers w' exactly
where the components are well separated (p(k | x) ∈ {0, 1}).
"""
import math

import pytest
import torch

from difflab.evaluation.metrics import METRICS, mixture_weights
from difflab.models import GMMOracle

MEANS = [[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]]


@pytest.mark.parametrize("stds", [[0.4, 0.4, 0.4], [1.5, 2.0, 1.0]], ids=["separated", "overlapping"])
def test_exact_samples_recover_the_weights_within_their_standard_error(stds):
    gmm = GMMOracle(MEANS, stds, [0.2, 0.5, 0.3])
    out = mixture_weights(gmm.sample(20_000, generator=torch.Generator().manual_seed(0)), gmm)
    w, se = torch.tensor(out["weights"]), torch.tensor(out["weights_se"])
    assert (se > 0).all() and (se < 0.01).all()
    assert ((w - gmm.weights.float()).abs() <= 4 * se).all(), (w, se)
    assert out["weight_tv"] <= 4 * out["weight_tv_se"] + 1e-3


def test_samples_with_other_weights_show_their_total_variation():
    gmm = GMMOracle(MEANS, [0.4, 0.4, 0.4], [0.2, 0.5, 0.3])
    wrong = GMMOracle(MEANS, [0.4, 0.4, 0.4], [0.6, 0.2, 0.2])
    out = mixture_weights(wrong.sample(20_000, generator=torch.Generator().manual_seed(1)), gmm)
    tv = 0.5 * sum(abs(a - b) for a, b in zip([0.6, 0.2, 0.2], [0.2, 0.5, 0.3]))  # 0.4
    assert abs(out["weight_tv"] - tv) <= 4 * out["weight_tv_se"], out
    assert out["weight_tv_se"] < 0.01
    assert all(math.isclose(a, b, abs_tol=0.02) for a, b in zip(out["weights"], [0.6, 0.2, 0.2]))


def test_weights_is_a_metric_and_needs_mixture_data():
    assert "weights" in METRICS
    with pytest.raises(ValueError, match="Gaussian-mixture"):
        mixture_weights(torch.zeros(4, 2), None)
