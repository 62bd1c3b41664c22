"""FID, KID and IS on features, with the protocol in the name and a real-vs-real floor.

FID (Heusel et al. 2017) between Gaussians fitted to two feature sets:

    FID = ‖μ_r − μ_g‖² + tr Σ_r + tr Σ_g − 2 tr (Σ_r^{1/2} Σ_g Σ_r^{1/2})^{1/2}

(the last trace equals tr (Σ_r Σ_g)^{1/2}; the symmetric form keeps the eigenvalues real).
Statistics are accumulated in float64. KID (Bińkowski et al. 2018) and IS (Salimans et
al. 2016) are torch-fidelity's own functions applied to our features (cubic polynomial
kernel, 100 subsets of ≤ 1000; 10 splits).

Metric names carry the protocol: `fid_n2k` (Inception, 2 000 generated samples),
`fid_learned_n500` (the learned feature net, 500 samples), and beside every FID its
real-vs-real floor `<key>_floor`: an FID is only meaningful relative to that floor.

The floor is the FID a perfect model would score under the same protocol: n real examples
that are not in the reference set (fresh draws, a validation split), scored against the same
reference (statistics) as the n samples. Such examples are exchangeable with a perfect model's
samples, so E[FID − floor] = 0 for a perfect model (tests/test_metrics.py). FID's small-sample
bias grows like (1/N_ref + 1/n) per dimension, so a floor between two halves of the reference
(2/m) would sit above a perfect model's FID and flatter every model. Without held-out
examples the last k = min(n, N/2) reference vectors are held out for the floor; `num_real_floor`
gives the number of held-out examples. A floor from fewer examples than samples is too high (the
small-sample bias grows as the count falls), so none is reported: `<key>_floor` is None and
`<key>_floor_unavailable` says why ("only 197 held-out examples for 2048 samples"), with a warning.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

MIN_FID_SAMPLES = 2048


@dataclass
class FeatureStats:
    """Mean, covariance (unbiased, float64) and count of a feature set."""

    mean: Tensor
    cov: Tensor
    n: int

    @classmethod
    def from_features(cls, f: Tensor) -> "FeatureStats":
        f = f.detach().to(torch.float64).cpu()
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 feature vectors [N, F], got shape {tuple(f.shape)}")
        mu = f.mean(0)
        c = f - mu
        return cls(mu, c.T @ c / (f.shape[0] - 1), f.shape[0])

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # concurrent writers never share a file
        np.savez(tmp, mu=self.mean.numpy(), sigma=self.cov.numpy(), n=np.array(self.n))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        if not Path(path).is_file():
            raise FileNotFoundError(f"reference statistics {path} not found: compute them with "
                                    "difflab.metrics.reference_stats (difflab-eval does so on first use)")
        z = np.load(path)
        return cls(torch.from_numpy(z["mu"]), torch.from_numpy(z["sigma"]), int(z["n"]))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two Gaussians (module docstring), in float64."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)} "
                         "(reference statistics from a different feature network?)")
    evals, evecs = torch.linalg.eigh(a.cov)
    sqrt_a = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    m = sqrt_a @ b.cov @ sqrt_a
    tr_covmean = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    diff = a.mean - b.mean
    return float(diff @ diff + a.cov.trace() + b.cov.trace() - 2 * tr_covmean)


def protocol_key(metric: str, n: int, features: str = "inception") -> str:
    """`fid_n2k`, `kid_learned_n500`: metric, feature net (omitted for Inception) and the
    number of generated samples (k for thousands)."""
    count = f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
    feat = "" if features == "inception" else f"{features}_"
    return f"{metric}_{feat}n{count}"


def warn_few_samples(n: int, what: str = "FID") -> None:
    if n < MIN_FID_SAMPLES:
        warnings.warn(
            f"{what} from {n} samples (< {MIN_FID_SAMPLES}): the covariance is poorly estimated and the value "
            "is biased upwards; compare only numbers with the same sample count (it is in the metric name) "
            "and read it against the real-vs-real floor",
            stacklevel=3,
        )


def fid(real: Tensor | FeatureStats, fake: Tensor | FeatureStats) -> float:
    """FID between two feature sets (or precomputed statistics)."""
    a = real if isinstance(real, FeatureStats) else FeatureStats.from_features(real)
    b = fake if isinstance(fake, FeatureStats) else FeatureStats.from_features(fake)
    return frechet_distance(a, b)


def fid_floor(real_features: Tensor, n: int, real_stats: FeatureStats | None = None,
              held_features: Tensor | None = None) -> tuple[float, int]:
    """(floor, k): the FID of k = n real examples outside the reference against the reference
    the n samples are scored against (module docstring). `held_features` are such examples;
    without them the last k = min(n, N/2) of `real_features` are held out and the rest is the
    floor's reference. With k < n held-out examples the floor is NaN (not computed: it would sit
    above a perfect model's FID), with a warning; `floor_unavailable(k, n)` says why."""
    reference, held = floor_split(real_features, n, held_features)
    k = int(held.shape[0])
    if held_features is not None and held_features.shape[0] >= 2:
        if warn_few_held_out(k, n):
            return math.nan, k
        reference = real_stats if real_stats is not None else reference
    elif warn_few_held_out(k, n, "more reference examples (num_reference >= 2 x the samples)") or k < 2:
        return math.nan, k
    return fid(reference, held), k


def floor_split(real_features: Tensor, n: int, held_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(reference, held-out) features of a real-vs-real floor for n samples: the first n of
    `held_features` against all of `real_features`, or without them the last k = min(n, N/2) real
    features against the rest (module docstring)."""
    if held_features is not None and held_features.shape[0] >= 2:
        return real_features, held_features[:n]
    k = min(n, real_features.shape[0] // 2)
    return real_features[:-k], real_features[-k:]


def floor_unavailable(k: int, n: int) -> str | None:
    """Why no real-vs-real floor is reported for n samples with k held-out real examples (None: it is)."""
    return f"only {k} held-out examples for {n} samples" if k < n else None


HELD_OUT_REMEDY = ("more held-out real data (a larger validation split, data.num_val), reference_split=val "
                   "(the floor from training examples) or fewer samples")


def warn_few_held_out(k: int, n: int, remedy: str = HELD_OUT_REMEDY) -> bool:
    """The one warning of every real-vs-real floor (FID, swd) with k < n held-out examples, which
    is then not reported; returns whether it warned."""
    if k < n:
        warnings.warn(f"real-vs-real floor from {k} held-out real examples (< {n} samples) not reported "
                      f"(<key>_floor: null): a floor from fewer examples is higher than a perfect model's score at "
                      f"this sample count; give {remedy} for a floor", stacklevel=3)
    return k < n


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """KID mean and std over subsets (torch-fidelity's kid_features_to_metric)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, real.shape[0], fake.shape[0])
    out = kid_features_to_metric(real.double().cpu(), fake.double().cpu(), kid_subsets=subsets, kid_subset_size=size,
                                 rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_score(logits: Tensor, splits: int = 10, seed: int = 2020) -> tuple[float, float]:
    """IS mean and std over splits: exp E_x KL(p(y|x) ‖ p(y)) (torch-fidelity)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(logits.double().cpu(), splits=min(splits, logits.shape[0]), rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


# ----------------------------------------------------------------------------- references
def reference_stats(real_features: Tensor, name: str, split: str, feature_id: str,
                    cache: str | Path | None = None) -> FeatureStats:
    """FID statistics of a data set split, computed once and cached as
    <cache>/refstats/<name>-<split>-<feature_id>-n<N>.npz (feature_id names the feature net,
    so statistics of another net are never mixed in)."""
    from .features import cache_dir

    root = Path(cache) if cache else cache_dir()
    path = root / "refstats" / f"{name}-{split}-{feature_id}-n{real_features.shape[0]}.npz"
    if path.is_file():
        return FeatureStats.load(path)
    stats = FeatureStats.from_features(real_features)
    stats.save(path)
    return stats


def feature_id(net: torch.nn.Module) -> str:
    """A short fingerprint of a feature network's weights (for cache keys)."""
    h = hashlib.sha1()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return f"{getattr(net, 'name', type(net).__name__)}-{h.hexdigest()[:10]}"


def sample_quality(
    real_features: Tensor,
    fake_features: Tensor,
    metrics=("fid", "kid"),
    *,
    features: str = "inception",
    fake_logits: Tensor | None = None,
    real_stats: FeatureStats | None = None,
    floor: bool = True,
    kid_subsets: int = 100,
    held_features: Tensor | None = None,
) -> dict[str, float]:
    """FID / KID / IS of generated features against real ones, named by protocol.

    Returns e.g. {"fid_n2k": …, "fid_n2k_floor": …, "num_real_floor": …, "kid_n2k": …,
    "kid_n2k_std": …, "kid_n2k_floor": …, "kid_n2k_floor_std": …, "is_n2k": …, "is_n2k_std": …};
    with fewer held-out examples than samples "fid_n2k_floor": None and "fid_n2k_floor_unavailable":
    the reason (KID's floor alike). The floor is the FID of the first n of
    `held_features` (real examples outside the reference) against the same reference as the
    samples; without them, that of the last min(n, N/2) real features against the rest (module
    docstring). An FID within noise of its floor is as good as real data under this protocol.
    KID's floor is KID of the same held-out examples against the same reference (KID is unbiased,
    so for a perfect model both have the same expectation, ≈ 0).
    KID's and IS's spread over subsets/splits (torch-fidelity's protocol) is reported as
    `_std` (a standard deviation over subsets, not a standard error).
    """
    n = fake_features.shape[0]
    out: dict[str, float] = {}
    unknown = set(metrics) - {"fid", "kid", "is"}
    if unknown:
        raise ValueError(f"unknown sample-quality metrics {sorted(unknown)}; choose from fid, kid, is")
    if "fid" in metrics:
        warn_few_samples(n)
        key = protocol_key("fid", n, features)
        out[key] = fid(real_stats if real_stats is not None else real_features, fake_features)
        if floor:
            value, k = fid_floor(real_features, n, real_stats, held_features)
            out[key + "_floor"], out["num_real_floor"] = (None if math.isnan(value) else value), k
            if math.isnan(value):
                out[key + "_floor_unavailable"] = floor_unavailable(k, n) or "no real examples outside the reference"
    if "kid" in metrics:
        key = protocol_key("kid", n, features)
        out[key], out[key + "_std"] = kid(real_features, fake_features, subsets=kid_subsets)
        if floor:  # the same held-out examples as the FID floor, against the same reference features
            reference, held = floor_split(real_features, n, held_features)
            if held.shape[0] >= n and held.shape[0] >= 2:
                out[key + "_floor"], out[key + "_floor_std"] = kid(reference, held, subsets=kid_subsets)
            else:
                out[key + "_floor"] = None
                out[key + "_floor_unavailable"] = floor_unavailable(held.shape[0], n) or "no real examples outside the reference"
    if "is" in metrics:
        if fake_logits is None:
            raise ValueError("IS needs class logits of the generated samples (fake_logits)")
        key = protocol_key("is", n, features)
        out[key], out[key + "_std"] = inception_score(fake_logits)
    return out
