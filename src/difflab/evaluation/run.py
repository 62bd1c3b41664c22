"""`evaluate()`: likelihoods and sample quality of an `EvalTarget` in one call — what
difflab-eval writes to metrics.json and what a training job's `eval_at_end` reports."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from .metrics import LIKELIHOOD_METRICS, SAMPLE_METRICS, check_metrics, likelihood_metrics, score_samples
from .sampling import SamplerChoice, draw_samples


def generate(target, num_samples: int, seed: int, sampler: SamplerChoice, *, batch_size: int = 1024, device=None,
             dtype=torch.float32, precision: str = "fp32", progress: bool | None = None) -> tuple[Tensor, int]:
    """`num_samples` samples of the target by the seeding rule (sample i from (seed, i))."""
    return draw_samples(target.denoiser, target.process, target.data_shape, num_samples, seed, sampler, batch_size=batch_size,
                        device=device, dtype=dtype, precision=precision, progress=progress)


def sample_metrics(target, metrics: Sequence[str], *, seed: int = 0, sampler: SamplerChoice | None = None,
                   num_samples: int = 2048, batch_size: int = 1024, num_reference: int = 10_000, num_projections: int = 512,
                   features="learned", inception_weights=None, device=None, dtype=torch.float32, precision: str = "fp32",
                   samples: Tensor | None = None, nfe: int | None = None, progress: bool | None = None) -> tuple[dict, Tensor]:
    """Sample metrics and the samples they scored: `samples` when given (already drawn, e.g. a
    samples.npz), else `num_samples` drawn with `sampler` by the seeding rule."""
    wanted = [m for m in SAMPLE_METRICS if m in metrics]
    if samples is None:
        sampler = sampler or SamplerChoice.from_config(None)
        samples, nfe = generate(target, num_samples, seed, sampler, batch_size=batch_size, device=device, dtype=dtype,
                                precision=precision, progress=progress)
    samples = samples.float().cpu()
    if tuple(samples.shape[1:]) != tuple(target.data_shape):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])} per example, the model's data {tuple(target.data_shape)}")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("the samples contain NaN or inf; use more sampler steps or another sampler")
    out: dict = {"nfe": nfe} if nfe is not None else {}
    if not wanted:
        return out, samples
    n = samples.shape[0]
    real = target.real(max(n, int(num_reference)), seed + 5, split="train").float().cpu()
    # real examples not in `real`, for the floors (swd_floor, fid_*_floor: a perfect model's scores)
    other = target.held_out(n, seed + 6, real.shape[0]) if {"swd", "fid"} & set(wanted) else None
    other = other.float().cpu() if other is not None else None
    out.update(score_samples(samples, real, wanted, seed=seed, num_projections=num_projections, features=features,
                             inception_weights=inception_weights, real_other=other, cache_name=target.data_name, device=device,
                             mixture=target.mixture))
    return out, samples


def evaluate(target, metrics: Sequence[str], *, seed: int = 0, likelihood: Mapping | None = None,
             sampling: Mapping | None = None, device=None) -> tuple[dict, Tensor | None]:
    """All requested metrics → (metrics dict, the samples scored or None).

    likelihood: keyword options of `likelihood_metrics` (num_eval, split, mc_samples,
    mc_batch_size, bits, ode, elbo); sampling: those of `sample_metrics` (sampler,
    num_samples, batch_size, num_reference, num_projections, features, inception_weights,
    dtype, precision, samples, nfe)."""
    check_metrics(metrics)
    torch.manual_seed(int(seed))
    out: dict = {"data_shape": list(target.data_shape)}
    out.update(likelihood_metrics(target, [m for m in metrics if m in LIKELIHOOD_METRICS], seed=seed, device=device,
                                  **dict(likelihood or {})))
    samples = None
    sampling = dict(sampling or {})
    if any(m in SAMPLE_METRICS for m in metrics) or sampling.get("samples") is not None:
        q, samples = sample_metrics(target, metrics, seed=seed, device=device, **sampling)
        out.update(q)
    return out, samples
