"""`evaluate()`: likelihoods and sample quality of an `EvalTarget` in one call — what
difflab-eval writes to metrics.json and what a training job's `eval_at_end` reports."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from .metrics import LIKELIHOOD_METRICS, METRICS, REFERENCE_SPLITS, SAMPLE_METRICS, check_metrics, likelihood_metrics, score_samples
from .sampling import SamplerChoice, draw_samples


def generate(target, num_samples: int, seed: int, sampler: SamplerChoice, *, batch_size: int | str = 1024, device=None,
             dtype=torch.float32, precision: str = "fp32", progress: bool | None = None) -> tuple[Tensor, int]:
    """`num_samples` samples of the target by the seeding rule (sample i from (seed, i))."""
    return draw_samples(target.denoiser, target.process, target.data_shape, num_samples, seed, sampler, batch_size=batch_size,
                        device=device, dtype=dtype, precision=precision, progress=progress)


def sample_metrics(target, metrics: Sequence[str], *, seed: int = 0, sampler: SamplerChoice | None = None,
                   num_samples: int = 2048, batch_size: int | str = 1024, num_reference: int = 10_000, num_projections: int = 512,
                   features="learned", inception_weights=None, device=None, dtype=torch.float32, precision: str = "fp32",
                   samples: Tensor | None = None, nfe: int | None = None, progress: bool | None = None,
                   reference_split: str = "train") -> tuple[dict, Tensor]:
    """Sample metrics and the samples they scored: `samples` when given (already drawn, e.g. a
    samples.npz), else `num_samples` drawn with `sampler` by the seeding rule.

    reference_split: where the reference of FID/KID/swd comes from. "train": up to
    `num_reference` training examples, the floors from real examples outside them (fresh draws, the
    validation split, else the training examples after them). "val": the validation split (MNIST's
    10,000 test images), the floors from the first `num_samples` training examples."""
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
    if reference_split not in REFERENCE_SPLITS:
        raise ValueError(f"reference_split must be one of {list(REFERENCE_SPLITS)}, got {reference_split!r}")
    n = samples.shape[0]
    real = target.real(max(n, int(num_reference)), seed + 5, split=reference_split).float().cpu()
    # real examples not in `real`, for the floors (swd_floor, fid_*_floor: a perfect model's scores)
    other = None
    if any(METRICS.get(m).info["held_out"] for m in wanted):
        other = target.held_out(n, seed + 6, real.shape[0]) if reference_split == "train" else target.real(n, seed + 6, "train")
    other = other.float().cpu() if other is not None else None
    dm = target.get_datamodule() if target.mixture is None and target.data_spec.get("_target_") else None
    out.update(score_samples(samples, real, wanted, seed=seed, num_projections=num_projections, features=features,
                             inception_weights=inception_weights, real_other=other, cache_name=target.data_name, device=device,
                             mixture=target.mixture, datamodule=dm, reference_split=reference_split))
    out["reference_split"] = reference_split
    return out, samples


def options(node, sampler: SamplerChoice) -> tuple[dict, dict]:
    """(likelihood, sampling) keyword options of `evaluate` from an evaluation config node (the
    `evaluation` group: difflab-eval's top level, a training job's `evaluation.`)."""
    from ..utils import plain

    likelihood = dict(num_eval=int(node.num_eval), split=str(node.split), mc_samples=int(node.mc_samples),
                      mc_batch_size=int(node.mc_batch_size), bits=int(node.bits), ode=plain(node.ode), elbo=plain(node.elbo))
    sampling = dict(sampler=sampler, num_samples=int(node.num_samples), batch_size=node.batch_size if str(node.batch_size) == "auto" else int(node.batch_size),
                    num_reference=int(node.num_reference), num_projections=int(node.num_projections), features=str(node.features),
                    inception_weights=node.get("inception_weights"), precision=str(node.get("precision", "fp32")),
                    reference_split=str(node.get("reference_split", "train")))
    return likelihood, sampling


def evaluate(target, metrics: Sequence[str], *, seed: int = 0, likelihood: Mapping | None = None,
             sampling: Mapping | None = None, device=None) -> tuple[dict, Tensor | None]:
    """All requested metrics → (metrics dict, the samples scored or None).

    likelihood: keyword options of `likelihood_metrics` (num_eval, split, mc_samples,
    mc_batch_size, bits, ode, elbo); sampling: those of `sample_metrics` (sampler,
    num_samples, batch_size, num_reference, num_projections, features, inception_weights,
    dtype, precision, samples, nfe, reference_split). Every draw comes from generators seeded by
    `seed`; anything that still reaches torch's global generator sees it seeded by `seed` too, inside
    a forked RNG state: the caller's global RNG is left as it was."""
    check_metrics(metrics)
    devices = [torch.device(device)] if device is not None and torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
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
