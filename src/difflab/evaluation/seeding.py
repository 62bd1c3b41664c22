"""The one seeding rule of every sampling path (difflab-sample, difflab-eval, EvalCallback,
eval_at_end): sample i depends only on (seed, i).

Samples are cut into fixed chunks of `SEED_CHUNK` = 32; chunk c = i // 32 draws its prior noise
and every later noise from its own generator, seeded by a hash of (seed, c) (numpy's
SeedSequence, so nearby seeds give unrelated streams). A batch is a whole number of chunks and
under DDP chunk c belongs to rank c mod world, so neither the batch size, nor the number of
processes, nor `num_samples` changes sample i (the last chunk is drawn whole and cut). This is
EDM's "sample i from seed i" at a granularity that keeps batched noise draws cheap.
Generators live on the sampling device: CUDA and CPU random streams differ, so samples agree
between runs on the same device type.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SEED_CHUNK = 32


def chunk_generator(seed: int, chunk: int, device=None) -> torch.Generator:
    """The generator of chunk `chunk` (samples 32·chunk … 32·chunk + 31)."""
    state = int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device or "cpu").manual_seed(state & 0x7FFF_FFFF_FFFF_FFFF)


def num_chunks(num_samples: int) -> int:
    return math.ceil(int(num_samples) / SEED_CHUNK)


def rank_chunks(num_samples: int, rank: int = 0, world: int = 1) -> list[int]:
    """The chunks rank `rank` of `world` draws: c ≡ rank (mod world), each chunk exactly once."""
    return list(range(int(rank), num_chunks(num_samples), int(world)))


def chunks_per_batch(batch_size: int) -> int:
    """Whole chunks per batch (at least one): batch_size is rounded down to a multiple of 32."""
    return max(1, int(batch_size) // SEED_CHUNK)


def chunk_sizes(num_samples: int, chunk_size: int = SEED_CHUNK) -> list[int]:
    """Sizes of the fixed chunks that make up num_samples (the last may be smaller)."""
    full, rest = divmod(int(num_samples), int(chunk_size))
    return [int(chunk_size)] * full + ([rest] if rest else [])
