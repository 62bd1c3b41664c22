"""Seeded, chunked sampling shared by every entry point (see `seeding` for the rule).

`SamplerChoice.from_config` reads a `sampler` config group node — either a registry name
(`name: ddim`) or a user function (`_target_: my_pkg.my_sampler`, the extension path) plus
`steps`, `grid` and the sampler's own options — and `draw_samples` runs it over chunks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..utils import locate, plain
from .seeding import SEED_CHUNK, chunk_generator, chunks_per_batch, num_chunks, rank_chunks

PRECISIONS = {"fp32": None, "float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SamplerChoice:
    """A sampler (registry name or function), its step count, time grid and options."""

    sampler: str | Callable
    steps: int
    grid: Any = None
    options: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, node: Mapping | str | None, default: str = "ode_heun", default_steps: int = 50) -> "SamplerChoice":
        """From a `sampler` group node ({name | _target_, steps, grid, **options}) or a name."""
        from ..samplers import check_sampler

        spec = {"name": node} if isinstance(node, str) else dict(plain(node) or {"name": default})
        target = spec.pop("_target_", None)
        name = spec.pop("name", None)
        steps = spec.pop("steps", default_steps)
        grid = spec.pop("grid", None)
        sampler = locate(target) if target else name
        if sampler is None:
            raise ValueError("the sampler config names no sampler: set sampler=<name> (e.g. sampler=ode_heun) or sampler._target_")
        check_sampler(sampler, steps, spec)  # unknown name, bad steps or option: fails before any work
        return cls(sampler, int(steps), grid, spec)

    @property
    def name(self) -> str:
        return self.sampler if isinstance(self.sampler, str) else getattr(self.sampler, "__name__", str(self.sampler))

    def run(self, denoiser, process, shape, generator, device, dtype):
        from ..samplers import sample

        return sample(denoiser, process, shape, self.sampler, self.steps, generator=generator, device=device, dtype=dtype,
                      grid=self.grid, **self.options)


def _progress(total: int, desc: str, enabled: bool | None):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", leave=False, disable=not (sys.stderr.isatty() if enabled is None else enabled))


def draw_chunks(denoiser, process, data_shape, chunks: list[int], seed: int, sampler: SamplerChoice, *,
                batch_size: int = 1024, device=None, dtype=torch.float32, precision: str = "fp32",
                sample_fn: Callable | None = None, progress: bool | None = None) -> tuple[dict[int, Tensor], int]:
    """Draw the given chunks (32 samples each) → ({chunk: samples on the CPU}, NFE per sample).

    Batches hold `batch_size // 32` chunks, each with its own generator. `precision`: bf16 or fp16
    run the network under autocast (the denoiser returns float32; the sampler's state stays in
    `dtype`). `sample_fn(denoiser, process, shape, generator=, device=)` replaces the sampler for
    one chunk at a time (callbacks and tests)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    device = torch.device(device or "cpu")
    amp = PRECISIONS[precision]
    per = 1 if sample_fn is not None else chunks_per_batch(batch_size)
    out: dict[int, Tensor] = {}
    nfe = 0
    with _progress(len(chunks) * SEED_CHUNK, f"sampling ({sampler.name}, {sampler.steps} steps)", progress) as bar:
        for first in range(0, len(chunks), per):
            group = chunks[first:first + per]
            gens = [chunk_generator(seed, c, device) for c in group]
            shape = (len(group) * SEED_CHUNK, *data_shape)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                if sample_fn is not None:
                    res = sample_fn(denoiser, process, shape, generator=gens[0], device=device)
                else:
                    res = sampler.run(denoiser, process, shape, gens, device, dtype)
            x = getattr(res, "samples", res).detach()
            nfe = max(nfe, int(getattr(res, "nfe", 0)))
            for k, c in enumerate(group):
                out[c] = x[k * SEED_CHUNK:(k + 1) * SEED_CHUNK].cpu()
            bar.update(x.shape[0])
    return out, nfe


def draw_samples(denoiser, process, data_shape, num_samples: int, seed: int, sampler: SamplerChoice, *,
                 rank: int = 0, world: int = 1, **kwargs) -> tuple[Tensor, int]:
    """All `num_samples` samples (world = 1), or the chunks of `rank` concatenated in chunk
    order; sample i is the same in every case. Returns (samples on the CPU, NFE per sample)."""
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    chunks = rank_chunks(num_samples, rank, world)
    drawn, nfe = draw_chunks(denoiser, process, tuple(data_shape), chunks, seed, sampler, **kwargs)
    if world == 1:
        return assemble(drawn, num_samples), nfe
    return (torch.cat([drawn[c] for c in chunks]) if chunks else torch.empty(0, *data_shape)), nfe


def assemble(drawn: Mapping[int, Tensor], num_samples: int) -> Tensor:
    """Chunks 0 … ⌈n/32⌉−1 in order, cut to num_samples (raises if a chunk is missing)."""
    missing = [c for c in range(num_chunks(num_samples)) if c not in drawn]
    if missing:
        raise ValueError(f"chunks {missing[:5]} were not drawn")
    return torch.cat([drawn[c] for c in range(num_chunks(num_samples))])[: int(num_samples)]
