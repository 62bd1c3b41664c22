"""difflab.data.base.StepSampler: which items each rank and each accumulated micro-batch reads.

DistributedSampler's layout (rank r of W takes items r, r + W, ... of each global batch) extended
to gradient accumulation: micro-batch m of rank r is the virtual rank v = m·W + r of A·W. Then
- every step reads the same items, whatever W × A (the global batch k·G … (k+1)·G − 1 of the
  epoch's permutation, G = A·W·B), each exactly once;
- 1 process × A micro-batches reads in micro-batch m exactly what rank m of A processes reads,
  which makes its update equal DDP's bit for bit (tests/test_ddp.py, tests/test_ddp_torchrun.py);
- a run resumed after d micro-batches reads what an uninterrupted one reads from there on.
Flips on the device path are a function of (seed, epoch, item), not of where the item lands.
"""
import itertools

import pytest
import torch

from difflab.data.base import DeviceBatches, StepSampler

N, B = 96, 4


def micro_batches(world: int, rank: int, accumulate: int, shuffle: bool = True, seed: int = 3):
    s = StepSampler(N, B, world, rank, shuffle, seed, accumulate=accumulate)
    order = list(s)
    assert len(order) == len(s) == s.batches_per_epoch * B
    return [order[i:i + B] for i in range(0, len(order), B)]


@pytest.mark.parametrize("world,accumulate", [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3), (3, 2)])
def test_each_step_reads_the_global_batch_once(world, accumulate):
    g = world * accumulate * B
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3)).tolist()
    per_rank = [micro_batches(world, r, accumulate) for r in range(world)]
    steps = N // g
    assert all(len(mb) == steps * accumulate for mb in per_rank)
    for k in range(steps):
        read = [i for r in range(world) for m in range(accumulate) for i in per_rank[r][k * accumulate + m]]
        assert sorted(read) == sorted(perm[k * g:(k + 1) * g])  # the same items as one process with batch G


@pytest.mark.parametrize("world,accumulate", [(1, 2), (2, 2), (1, 4), (2, 3)])
def test_micro_batch_m_of_rank_r_is_rank_m_w_plus_r_of_a_times_w_processes(world, accumulate):
    wide = [micro_batches(world * accumulate, v, 1) for v in range(world * accumulate)]
    for r in range(world):
        mine = micro_batches(world, r, accumulate)
        for k, m in itertools.product(range(len(wide[0])), range(accumulate)):
            assert mine[k * accumulate + m] == wide[m * world + r][k]


def test_distributed_sampler_layout_without_accumulation():
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    for r in range(2):
        assert sum(micro_batches(2, r, 1), []) == perm[r::2].tolist()


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_after_d_micro_batches_reads_the_rest(accumulate):
    full = StepSampler(N, B, 2, 1, True, 3, accumulate=accumulate)
    order = list(full)
    per_epoch = full.batches_per_epoch
    for done in (0, 2, per_epoch - 1, per_epoch, per_epoch + 3):
        s = StepSampler(N, B, 2, 1, True, 3, batches_done=lambda d=done: d, accumulate=accumulate)
        epoch, offset = divmod(done, per_epoch)
        expected = order[offset * B:] if epoch == 0 else s.epoch_order(epoch)[offset * B:].tolist()
        assert list(s) == expected
    assert StepSampler(N, B, 2, 1, True, 3, accumulate=accumulate).epoch_order(1).tolist() != order  # a new permutation


def test_device_flips_follow_the_item_not_the_layout():
    """The same item is flipped (or not) in the same epoch under 1 process × batch 8, 2 ranks ×
    batch 4 and 1 process × 2 micro-batches of 4."""
    images = torch.arange(N * 4, dtype=torch.uint8).view(N, 1, 1, 4)  # each row distinct from its mirror image

    def seen(world, rank, batch, accumulate):
        s = StepSampler(N, batch, world, rank, True, 5, accumulate=accumulate)
        out = {}
        for x, index in DeviceBatches(images, s, flip=True, seed=5):
            for xi, i in zip(x, index.tolist()):
                out[i] = not torch.equal(xi, images[i].float().div(255) * 2 - 1)
        return out

    one = seen(1, 0, 8, 1)
    assert len(one) == N and 10 < sum(one.values()) < N - 10  # about half flipped
    two = {**seen(2, 0, 4, 1), **seen(2, 1, 4, 1)}
    acc = seen(1, 0, 4, 2)
    assert one == two == acc
