"""DDP on 2 CPU processes (ddp_spawn, gloo) makes the same update as one process on the
same global batch: raw weights and EMA weights agree after a few steps.

Why they must agree: with `per_sample_noise` each example's (t, ε) depends only on
(seed, step, dataset index); the data module always samples through a step-indexed sampler
(difflab.data.base.StepSampler), whose epoch permutation does not depend on the number of
processes, and rank r takes its items r, r+2, ..., so the two local batches of 4 are
exactly the single-process batch of 8;
DDP averages the two local mean gradients = the global mean gradient; clipping, Adam and
the EMA then apply the same arithmetic on every rank.

One process that accumulates the two ranks' micro-batches (trainer.accumulate_grad_batches=2,
batch 4: micro-batch m reads rank m's items, the gradients are summed as DDP sums them, each
scaled by 1/2 then added) makes the same update bit for bit.

Tolerance against batch 8 in one process: only float32 summation order differs (local means then all-reduce vs one
mean), amplified by Adam's g/sqrt(v) for near-zero gradients (optim.eps=1e-4 bounds that
amplification; with eps=1e-8 a 256-wide MLP showed 6e-5). Each Adam
step moves a weight by ~lr = 1e-2, so a wrong example/noise assignment shows up ≥ 1e-3.
"""
from pathlib import Path

import pytest
import torch

from difflab.cli.train import train
from helpers.ddp import compose_train

pytestmark = pytest.mark.slow


def _load(out: Path):
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ck["global_step"], ck["state_dict"], ck["ema"]


def test_ddp_spawn_two_cpu_processes_equal_one_process(tmp_path):
    one, acc, two = tmp_path / "one", tmp_path / "acc", tmp_path / "two"
    train(compose_train(one, ["trainer=cpu", "data.batch_size=8"]), one)
    train(compose_train(acc, ["trainer=cpu", "data.batch_size=4", "trainer.accumulate_grad_batches=2"]), acc)
    train(compose_train(two, ["trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4"]), two)
    step1, sd1, ema1 = _load(one)
    step2, sd2, ema2 = _load(two)
    assert step1 == step2 == 3
    assert ema1["num_updates"] == ema2["num_updates"] == 3
    moved = 0.0
    for k, v in sd1.items():
        torch.testing.assert_close(sd2[k], v, rtol=0, atol=1e-5, msg=f"raw weight {k}")
    for k, v in ema1["shadow"].items():
        torch.testing.assert_close(ema2["shadow"][k], v, rtol=0, atol=1e-5, msg=f"EMA weight {k}")
        moved = max(moved, float((v - sd1["net." + k]).abs().max()))
    assert moved > 1e-4  # the EMA really differs from the raw weights (decay 0.5, 3 steps)
    step3, sd3, ema3 = _load(acc)
    assert step3 == 3 and ema3["num_updates"] == 3
    for k, v in sd3.items():
        assert torch.equal(sd2[k], v), f"raw weight {k}: max |diff| {(sd2[k] - v).abs().max():.3g}"
    for k, v in ema3["shadow"].items():
        assert torch.equal(ema2["shadow"][k], v), f"EMA weight {k}"
