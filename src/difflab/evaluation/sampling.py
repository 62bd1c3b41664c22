"""Seeded, chunked sampling shared by every entry point (see `seeding` for the rule).

`SamplerChoice.from_config` reads a `sampler` config group node — either a registry name
(`name: ddim`) or a user function (`_target_: my_pkg.my_sampler`, the extension path) plus
`steps`, `grid` and the sampler's own options — and `draw_samples` runs it over chunks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from ..progress import Progress
from ..utils import locate, plain
from .seeding import SEED_CHUNK, chunk_generator, chunks_per_batch, num_chunks, rank_chunks

#: sampling precision → (network dtype, how). "autocast" (bf16 = bf16-mixed): the float32 network
#: runs under autocast, which keeps normalisations and softmax in float32. "weights" (bf16-true,
#: as Lightning names it): a copy of the network with bf16 weights runs on bf16 inputs, every
#: layer in bf16 (as diffusers' pipelines run a bf16 UNet); faster, and less accurate. In every
#: mode the network's output is cast to float32 and the sampler's state stays in `dtype`.
PRECISIONS: dict[str, tuple[torch.dtype | None, str | None]] = {
    "fp32": (None, None), "float32": (None, None), "32-true": (None, None),
    "bf16": (torch.bfloat16, "autocast"), "bf16-mixed": (torch.bfloat16, "autocast"),
    "bf16-true": (torch.bfloat16, "weights"),
    "fp16": (torch.float16, "autocast"), "16-mixed": (torch.float16, "autocast"),
    "fp16-true": (torch.float16, "weights"), "16-true": (torch.float16, "weights"),
}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


class _CastInput(torch.nn.Module):
    """A network with low-precision weights called on the sampler's float32 state: model(z, c)
    with z cast to the weights' dtype (c, the noise level, stays float32: bf16 would round
    t = 999 to 1000; the networks embed it in float32 and cast the embedding themselves)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.net(z.to(self.dtype), c)


def in_precision(denoiser, precision: str):
    """(the denoiser to sample with, the autocast dtype or None) for a sampling `precision`.

    "-true" modes wrap a copy of the network cast to that dtype (compiled again if the network
    was); the trained network, its EMA and checkpoints are untouched. A network without
    floating-point weights (the GMM oracle) is used as it is."""
    from ..denoiser import Denoiser
    from ..models.options import network_copy

    check_precision(precision)
    dtype, how = PRECISIONS[precision]
    if how != "weights":
        return denoiser, dtype
    if not isinstance(denoiser, Denoiser):
        mixed = next(k for k, v in PRECISIONS.items() if v == (dtype, "autocast") and k.endswith("-mixed"))
        raise ValueError(f"precision={precision} casts the network of a difflab Denoiser, got {type(denoiser).__name__}; "
                         f"use precision={mixed} (autocast) for other callables")
    if not any(p.is_floating_point() for p in denoiser.model.parameters()):
        return denoiser, None
    return denoiser.with_network(_CastInput(network_copy(denoiser.model, dtype), dtype)), None


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

    def run(self, denoiser, process, shape, generator, device, dtype, callback=None):
        from ..samplers import sample

        return sample(denoiser, process, shape, self.sampler, self.steps, generator=generator, device=device, dtype=dtype,
                      grid=self.grid, callback=callback, **self.options)


#: `batch_size=auto` on a CPU: about this many input values per network batch. Measured (UNet of
#: experiment=mnist, 28x28, forward only, one thread): batch 64 ran 91 samples/s, 256 ran 67 and
#: 1024 ran 47, half of it system time (each batch's activations are mmapped and page-faulted
#: afresh); low-dimensional data keep large batches, where Python overhead per step dominates.
CPU_BATCH_VALUES = 65_536


def resolve_batch_size(batch_size, data_shape, device) -> int:
    """An int, or "auto": 1024 on an accelerator; on a CPU, a multiple of 32 in [32, 1024] with
    about `CPU_BATCH_VALUES` input values per batch (784-pixel MNIST: 64; 64-dim digits: 1024)."""
    if str(batch_size) != "auto":
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1 or auto, got {batch_size}")
        return int(batch_size)
    if torch.device(device or "cpu").type != "cpu":
        return 1024
    dim = max(1, math.prod(int(s) for s in data_shape))
    return int(min(1024, max(SEED_CHUNK, CPU_BATCH_VALUES // dim // SEED_CHUNK * SEED_CHUNK)))


def draw_chunks(denoiser, process, data_shape, chunks: list[int], seed: int, sampler: SamplerChoice, *,
                batch_size: int | str = 1024, device=None, dtype=torch.float32, precision: str = "fp32",
                sample_fn: Callable | None = None, progress: bool | None = None) -> tuple[dict[int, Tensor], int]:
    """Draw the given chunks (32 samples each) → ({chunk: samples on the CPU}, NFE per sample).

    Batches hold `batch_size // 32` chunks, each with its own generator. `precision`: see
    `PRECISIONS` (bf16 / fp16: the network under autocast; bf16-true / fp16-true: a copy of the
    network in that dtype); the denoiser returns float32 and the sampler's state stays in
    `dtype`. `sample_fn(denoiser, process, shape, generator=, device=)` replaces the sampler for
    one chunk at a time (callbacks and tests). `batch_size`: an int or "auto" (`resolve_batch_size`).
    `progress`: lines on stderr while sampling runs past a few seconds (`difflab.progress`;
    None or True: on, False: off)."""
    device = torch.device(device or "cpu")
    denoiser, amp = in_precision(denoiser, precision)
    per = 1 if sample_fn is not None else chunks_per_batch(resolve_batch_size(batch_size, data_shape, device))
    out: dict[int, Tensor] = {}
    nfe = 0
    with Progress(f"sampling ({sampler.name}, {sampler.steps} steps)", len(chunks) * SEED_CHUNK, "samples",
                  enabled=progress) as bar:
        for first in range(0, len(chunks), per):
            group = chunks[first:first + per]
            gens = [chunk_generator(seed, c, device) for c in group]
            shape = (len(group) * SEED_CHUNK, *data_shape)
            before = bar.done

            def step(info, _n=shape[0], _at=before):  # a batch's samples counted step by step as the sampler goes
                bar.set(_at + _n * min((int(info.get("i", 0)) + 1) / max(sampler.steps, 1), 1.0))

            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                if sample_fn is not None:
                    res = sample_fn(denoiser, process, shape, generator=gens[0], device=device)
                else:
                    res = sampler.run(denoiser, process, shape, gens, device, dtype, callback=step)
            x = getattr(res, "samples", res).detach()
            nfe = max(nfe, int(getattr(res, "nfe", 0)))
            for k, c in enumerate(group):
                out[c] = x[k * SEED_CHUNK:(k + 1) * SEED_CHUNK].cpu()
            bar.set(before + x.shape[0])
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
