"""Seed 002's Langevin experiment: on a well-separated two-component mixture with weights
0.2 / 0.8, plain Langevin dynamics with the *true* score keeps the proportions of its
initialisation (≈ 0.5 / 0.5: the modes barely communicate), while annealed Langevin (NCSN)
and predictor–corrector sampling recover the weights. Plot: bench/langevin_weights.py."""
import pytest
import torch

from difflab.models import GMMOracle
from difflab.processes import VESDE, VPSDE
from difflab.samplers import langevin, sample

ORACLE = GMMOracle([[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0], [0.2, 0.8])
N = 3000


def frac_first(x):
    """Share of samples on the (−5, −5) side of the midline x + y = 0."""
    return float((x.sum(1) < 0).double().mean())


def test_plain_langevin_gets_the_weights_wrong():
    x0 = 16 * torch.rand(N, 2, generator=torch.Generator().manual_seed(0)) - 8  # uniform on [−8, 8]²
    score = lambda x: ORACLE.score(x, 1.0, 0.0)  # noqa: E731  the exact data score
    x = langevin(score, x0, step_size=0.1, num_steps=1000, generator=torch.Generator().manual_seed(1))
    assert abs(frac_first(x) - 0.5) < 0.05  # the proportions of the uniform start
    assert abs(frac_first(x) - 0.2) > 0.25  # far from the true weight 0.2


@pytest.mark.parametrize("process,sampler,steps", [
    (VESDE(0.01, 50.0), "annealed_langevin", 200),  # NCSN: geometric σ levels, 5 steps each
    (VESDE(0.01, 50.0), "pc", 100),
    (VPSDE(0.1, 20.0), "pc", 100),
], ids=["ve-annealed_langevin", "ve-pc", "vp-pc"])
def test_annealed_langevin_and_pc_recover_the_weights(process, sampler, steps):
    out = sample(ORACLE.denoiser(process), process, (N, 2), sampler, steps, generator=torch.Generator().manual_seed(2))
    assert abs(frac_first(out.samples) - 0.2) < 0.03, f"{sampler}: share {frac_first(out.samples):.3f}, want 0.2"
