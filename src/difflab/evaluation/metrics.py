"""Likelihood and sample-quality metrics of an `EvalTarget`, the same numbers from every
entry point (difflab-eval, EvalCallback, eval_at_end).

Names (metrics.json, docs/evaluation.md): nll_ode / nll_elbo in nats/dim, bpd_ode / bpd_elbo in bits/dim
of 8-bit data, each with `<name>_se`; swd / mmd (+ swd_floor, two real sets) for low-dimensional
data; FID / KID / IS named by protocol (`fid_<features>_n<N>`) with the real-vs-real floor; `nfe`;
for a Gaussian mixture the exact `nll`, the paired gap `nll_ode_gap`, and (metric `weights`) the
mixture weights recovered from the samples with `weight_tv`, their total variation from the truth.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..progress import Progress, count
from ..registry import Registry
from .target import real_examples

#: every metric by name, each with its kind: "likelihood" (of the model, `likelihood_metrics`) or
#: "sample" (of samples against real data, `score_samples`); a live tuple of the registered names
METRICS = Registry("metric", defaults={"kind": "sample", "held_out": False})
LIKELIHOOD_METRICS = METRICS.view(kind="likelihood")
SAMPLE_METRICS = METRICS.view(kind="sample")
#: groups of built-in metrics computed together (one function each, registered below)
DISTANCE_METRICS = ("swd", "mmd")
FEATURE_METRICS = ("fid", "kid", "is")
MIXTURE_METRICS = ("weights",)
#: labelled image data (data=mnist): `confidence` (the classifier's confident fraction and class
#: coverage) and `copying` (nearest-training-image distances over those of unseen real images)
CLASSIFIER_METRICS = ("confidence", "copying")
FEATURES = ("learned", "inception", "classifier")
REFERENCE_SPLITS = ("train", "val")
KINDS = ("likelihood", "sample")


def register_metric(*names: str, kind: str = "sample", held_out: bool | Sequence[str] = False):
    """Decorator: register a function as the metric(s) `names` of `kind` ("sample" or "likelihood");
    `held_out`: the metric (True, or those of `names`) needs `real_other`, real examples outside
    the reference (drawn only when a metric asked for needs them: the floors of swd, FID).

    The function takes, by name, what it needs: a sample metric any of `samples` (the samples
    scored, on the CPU), `real` (the reference), `real_other` (real examples outside it, or None),
    `seed`, `mixture` (the data's exact GMM or None), `datamodule`, `device`, `metrics` (those of
    its names asked for); a likelihood metric any of `target` (the `EvalTarget`: denoiser, process,
    real data), `seed`, `device`, `metrics` and the likelihood options (`num_eval`, `split`, ...).
    It returns a number (the metric's value, under its name) or a dict (several numbers, merged
    into metrics.json). Its warnings are recorded under `warnings`. A user's metric is one such
    function plus `metric/<name>.yaml` (`_target_`, `kind`, options) in a config directory
    (`discover_metrics`), or its dotted path in `metrics=[...]`."""
    if kind not in KINDS:
        raise ValueError(f"a metric's kind must be one of {KINDS}, got {kind!r}")

    def wrap(fn):
        for name in names or (fn.__name__,):
            METRICS.register(name, fn, kind=kind, held_out=held_out if isinstance(held_out, bool) else name in held_out)
        return fn
    return wrap


def discover_metrics(config_dirs) -> list[str]:
    """Register every `<dir>/metric/<name>.yaml` of the config directories (a user's, as
    `hydra.searchpath` gives them): `_target_` the function, `kind`, the rest its options."""
    added = METRICS.discover(config_dirs, "metric")
    for name in added:
        if METRICS.get(name).info["kind"] not in KINDS:
            raise ValueError(f"metric/{name}.yaml: kind must be one of {KINDS}, got {METRICS.get(name).info['kind']!r}")
    return added


def check_metrics(metrics: Sequence[str], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """`metrics` if each is registered (a dotted path registers its function first) and not in `exclude`."""
    for m in metrics:
        METRICS.find(m)  # a dotted path: imports (and so registers) its function
    allowed = [m for m in METRICS if m not in exclude]
    unknown = sorted(set(metrics) - set(allowed))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {allowed}")
    return tuple(metrics)


def compute(metrics: Sequence[str], kind: str, available: Mapping) -> dict:
    """The registered metrics of `kind` among `metrics`, in registration order: each function
    once, with the arguments it names from `available` and `metrics` = its names asked for. A
    sample metric's warnings are recorded (returned under "warnings", once each)."""
    for m in metrics:
        METRICS.find(m)
    out: dict = {}
    warned: list[str] = []
    done = set()
    for name in METRICS.view(kind=kind):
        entry = METRICS.get(name)
        if name not in metrics or id(entry.fn) in done:
            continue
        done.add(id(entry.fn))
        mine = [n for n in METRICS.view(kind=kind) if n in metrics and METRICS.get(n).fn is entry.fn]
        with warnings.catch_warnings(record=kind == "sample") as caught:
            if caught is not None:
                warnings.simplefilter("always")
            value = entry.call(available, metrics=mine)
        warned += [str(w.message) for w in caught or ()]
        if isinstance(value, Mapping):
            out.update(value)
        else:
            out[name] = float(value)
    if warned:
        out["warnings"] = list(dict.fromkeys(warned))
    return out


def data_classifier(datamodule):
    """The protocol's classifier of a labelled image data set (`metrics.classifier`): trained with
    its fixed seed on the data module's labelled training split, cached."""
    from ..metrics.classifier import train_classifier

    if datamodule is None or not hasattr(datamodule, "labelled_images"):
        name = type(datamodule).__name__ if datamodule is not None else "no data set"
        raise ValueError(f"features=classifier and the metrics confidence/copying need a labelled image data set "
                         f"(data=mnist), got {name}; use features=learned")
    return train_classifier(*datamodule.labelled_images("train"))


def feature_network(kind, real: Tensor, seed: int = 0, inception_weights=None, device=None, datamodule=None):
    """The feature net of FID/KID/IS: "learned" (a small classifier trained on the real data,
    cached, offline), "inception" (the standard weights from a local path), "classifier" (a
    convolutional classifier of a labelled image data set such as MNIST, `data_classifier`), or a module."""
    from ..metrics.features import InceptionFeatures, train_feature_net

    if isinstance(kind, torch.nn.Module):
        net = kind
    elif kind == "learned":
        net = train_feature_net(real, seed=seed)
    elif kind == "inception":
        net = InceptionFeatures(inception_weights)
    elif kind == "classifier":
        net = data_classifier(datamodule)
    else:
        raise ValueError(f"features must be one of {FEATURES} or an nn.Module, got {kind!r}")
    return net.to(device or "cpu").eval()


def classifier_metrics(fake: Tensor, metrics: Sequence[str], net, *, unseen: Tensor | None, datamodule=None) -> dict:
    """`confidence`: the classifier's scores of the samples (`classifier_confident` = the fraction
    labelled with p ≥ 0.9, `classes_covered`, `class_histogram`, `class_fraction_min/max`) beside
    those of `unseen` real images (`real_confident`); `copying`: median distance from each sample
    to its nearest training image over the same median for `unseen` real images (`nearest_train_ratio`:
    ≈ 1 as novel as fresh real images, near 0 copies)."""
    from ..metrics.classifier import classifier_scores, nearest_neighbour_ratio, predict

    out: dict = {}
    if "confidence" in metrics:
        s = classifier_scores(predict(net, fake))
        out.update({"classifier_confident": s.pop("confident"), **s})
        if unseen is not None:
            out["real_confident"] = classifier_scores(predict(net, unseen))["confident"]
    if "copying" in metrics:
        if unseen is None or datamodule is None:
            raise ValueError("metric copying needs real images the model never saw (a validation split) and the training set")
        train = datamodule.labelled_images("train")[0] if hasattr(datamodule, "labelled_images") else real_examples(datamodule, 10**9)
        k = min(fake.shape[0], unseen.shape[0], 2000)
        out["nearest_train_ratio"] = nearest_neighbour_ratio(fake[:k], train, unseen[:k])
        out["nearest_train_num"] = k
    return out


def features_name(kind, net) -> str:
    return kind if isinstance(kind, str) else getattr(net, "name", "custom")


def distances(fake: Tensor, real: Tensor, metrics: Sequence[str], *, seed: int = 0, num_projections: int = 512,
              real_other: Tensor | None = None) -> dict[str, float]:
    """swd / mmd of fake vs real (flattened, float64). swd_floor, when `real_other` (real
    examples not in `real`: fresh draws, a validation split) holds as many as there are samples:
    the swd of n of them against the same `real`, i.e. a perfect model's swd
    (`difflab.metrics.quality`'s floor rule); `num_real_floor` says how many there were. With
    fewer, swd_floor is None and `swd_floor_unavailable` says why (a floor from fewer examples
    is too high); with none, there is no swd_floor and `swd_floor_unavailable` says so."""
    from ..metrics.distances import mmd, sliced_wasserstein
    from ..metrics.quality import floor_unavailable, warn_few_held_out

    out: dict = {}
    n = fake.shape[0]
    fake, real = fake.flatten(1).double(), real.flatten(1).double()
    if "swd" in metrics:
        out["swd"] = float(sliced_wasserstein(fake, real, int(num_projections), torch.Generator().manual_seed(seed)))
        if real_other is not None and real_other.shape[0] >= 1:
            held = real_other[:n].flatten(1).double()
            out["num_real_floor"] = int(held.shape[0])
            if warn_few_held_out(held.shape[0], n):
                out["swd_floor"], out["swd_floor_unavailable"] = None, floor_unavailable(held.shape[0], n)
            else:
                out["swd_floor"] = float(sliced_wasserstein(held, real, int(num_projections), torch.Generator().manual_seed(seed)))
        else:
            out["swd_floor_unavailable"] = "no real examples outside the reference"
    if "mmd" in metrics:
        out["mmd"] = float(mmd(fake, real))
    return out


def mixture_weights(fake: Tensor, mixture) -> dict:
    """Mixture weights recovered from samples: ŵ_k = mean_i p(k | x_i) under the true mixture
    (exact responsibilities). For exact samples E_x[p(k | x)] = w_k, so ŵ is unbiased whatever the
    overlap; `weights_se` is std_i p(k | x_i) / √n. `weight_tv` = ½ Σ_k |ŵ_k − w_k| with the SE of
    its per-sample terms ½ Σ_k sign(ŵ_k − w_k)(p(k | x_i) − w_k) (delta method)."""
    if mixture is None or not hasattr(mixture, "responsibilities"):
        raise ValueError("metric 'weights' needs Gaussian-mixture data (data=gmm, or model=oracle): the samples are "
                         "assigned to components by the mixture's exact responsibilities")
    x = fake.flatten(1).double()
    r = mixture.responsibilities(x.to(mixture.means.device), 1.0, 0.0).double().cpu()  # p(k | x), [N, K]
    n, w = r.shape[0], mixture.weights.double().cpu()
    est = r.mean(0)
    sign = torch.sign(est - w)
    terms = 0.5 * ((r - w) * sign).sum(1)
    se = lambda v: float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan  # noqa: E731
    return {"weights": [round(float(v), 6) for v in est], "weights_se": [se(r[:, k]) for k in range(r.shape[1])],
            "weights_true": [round(float(v), 6) for v in w], "weight_tv": float(terms.mean()), "weight_tv_se": se(terms)}


def feature_metrics(fake_features: Tensor, real_features: Tensor, metrics: Sequence[str], *, features: str,
                    fake_logits: Tensor | None = None, real_stats=None,
                    held_features: Tensor | None = None) -> tuple[dict, list[str]]:
    """FID / KID / IS by protocol name, plus the warnings raised (small-sample FID, …).
    `held_features`: features of real examples outside the reference, for the FID floor."""
    from ..metrics import sample_quality

    chosen = [m for m in metrics if m in FEATURE_METRICS]
    if not chosen:
        return {}, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sample_quality(real_features, fake_features, chosen, features=features, fake_logits=fake_logits,
                             real_stats=real_stats, held_features=held_features)
    return out, [str(w.message) for w in caught]


def score_samples(fake: Tensor, real: Tensor, metrics: Sequence[str], *, seed: int = 0, num_projections: int = 512,
                  features="learned", inception_weights=None, net=None, real_other: Tensor | None = None,
                  cache_name: str | None = None, device=None, mixture=None, datamodule=None,
                  reference_split: str = "train") -> dict:
    """Every sample metric of `fake` against `real` (both on the CPU). `real_other`: real
    examples not in `real` (fresh draws, a validation split), for the real-vs-real floors
    (swd_floor, fid_*_floor: a perfect model's score under the same protocol). `net`: a feature
    net already built (callbacks keep theirs between epochs); `cache_name`: cache the real
    features' FID statistics under that data-set name and `reference_split`; `mixture`: the data's
    exact GMM (metric `weights`); `datamodule`: the labelled data of features=classifier and of the
    metrics confidence / copying (images unseen in training: `real` when it is the val split, else `real_other`)."""
    n = int(fake.shape[0])
    held = real_other[:n] if real_other is not None and real_other.shape[0] else None  # as many as the samples, at most
    available = dict(samples=fake, real=real, real_other=held, seed=seed, num_projections=num_projections, features=features,
                     inception_weights=inception_weights, net=net, cache_name=cache_name, device=device, mixture=mixture,
                     datamodule=datamodule, reference_split=reference_split)
    available["context"] = available  # what one metric leaves for the next (the feature net)
    return {"num_samples": n, **compute(metrics, "sample", available)}


def _bpd(est, discrete: bool, bits: int) -> tuple[float, float]:
    from ..likelihood import bpd_from_estimate

    return bpd_from_estimate(est, discrete_decoder=discrete, bits=bits)


def _dequantizer(bits: int):
    from ..likelihood import dequantize

    def deq(x, g):
        try:
            return dequantize(x, generator=g, bits=bits)
        except ValueError as e:
            raise ValueError(f"bpd_* metrics need {bits}-bit image data ({e}); use nll_ode / nll_elbo for continuous data") from None

    return deq


def likelihood_metrics(target, metrics: Sequence[str], *, seed: int = 0, num_eval: int = 1024, split: str = "val",
                       mc_samples: int = 4_000_000, mc_batch_size: int = 65_536, bits: int = 8,
                       ode: Mapping | None = None, elbo: Mapping | None = None, device=None) -> dict:
    """nll_ode / bpd_ode on `num_eval` real examples, nll_elbo / bpd_elbo from `mc_samples`
    (x, t, ε) draws (fresh exact samples for a mixture), each with its standard error, and for
    a mixture the exact nll. `ode`: options of `likelihood.nll_ode` (+ batch_size); `elbo`:
    options of `likelihood.nll_elbo` (num_steps, time_sampling, decoder)."""
    return compute(metrics, "likelihood", dict(target=target, seed=seed, num_eval=num_eval, split=split, mc_samples=mc_samples,
                                               mc_batch_size=mc_batch_size, bits=bits, ode=ode, elbo=elbo, device=device))


# ---- the built-in metrics, one function per group computed together, registered in this order
@register_metric("nll_ode", "nll_elbo", "bpd_ode", "bpd_elbo", kind="likelihood")
def _likelihoods(target, metrics: Sequence[str], seed: int, num_eval: int, split: str, mc_samples: int, mc_batch_size: int,
                 bits: int, ode: Mapping | None, elbo: Mapping | None, device) -> dict:
    """nll by the probability-flow ODE (Song et al. 2021, Sec. 4.3) and by the ELBO (Kingma et al.
    2021, Eq. 17), in nats/dim or bits/dim (`likelihood_metrics`)."""
    from ..likelihood import estimate_from_values, nll_elbo, nll_ode

    out: dict = {}
    wanted = metrics
    device = torch.device(device or "cpu")
    if any(m.startswith("bpd") for m in wanted) and int((target.data_spec or {}).get("pad") or 0) > 0:
        raise ValueError(f"bits/dim of padded images (data.pad={target.data_spec['pad']}) would count the constant border "
                         "as pixels; published numbers are per original pixel: train and evaluate with data.pad=0")
    ode, elbo = dict(ode or {}), {k: v for k, v in dict(elbo or {}).items() if v is not None or k == "num_steps"}
    ode_batch = int(ode.pop("batch_size", 1024))
    num_steps = elbo.pop("num_steps", None)
    discrete = elbo.get("decoder") == "discretized"
    dtype = torch.float64 if target.exact else torch.float32
    if target.exact:
        target.to(device, dtype)
    deq = _dequantizer(bits)

    if "nll_ode" in wanted or "bpd_ode" in wanted:
        x = target.real(int(num_eval), seed + 1, split=split).to(device, dtype)
        for name in ("nll_ode", "bpd_ode"):
            if name not in wanted:
                continue
            g = torch.Generator(device=device).manual_seed(seed + 2)
            t0 = time.perf_counter()
            with Progress(f"{name} (probability-flow ODE)", x.shape[0], "examples") as bar:
                est = nll_ode(target.denoiser, target.process, deq(x, g) if name == "bpd_ode" else x, batch_size=ode_batch,
                              generator=g, on_batch=bar.update, **ode)
            mean, se = est.per_dim if name == "nll_ode" else _bpd(est, False, bits)
            out.update({name: mean, name + "_se": se, name + "_seconds": time.perf_counter() - t0, name + "_num_samples": est.num_draws})
            if name == "nll_ode" and target.mixture is not None:
                exact = -target.mixture.log_prob(x).to(est.values)  # on the estimate's device (cuda when sampling there)
                out["nll_ode_gap"], out["nll_ode_gap_se"] = estimate_from_values(est.values - exact, target.dim).per_dim

    for name in ("nll_elbo", "bpd_elbo"):
        if name not in wanted:
            continue
        g = torch.Generator(device=device).manual_seed(seed + 3)
        if target.mixture is not None:
            def data(n, gen, _t=target):  # fresh exact samples for every draw
                return _t.mixture.sample(n, generator=gen).to(device, dtype).reshape(n, *_t.data_shape)
        else:
            data = target.real(int(num_eval), seed + 1, split=split).to(device)
        if name == "bpd_elbo" and not discrete:
            def data(n, gen, _b=data):  # fresh dequantisation noise for every draw
                xb = _b(n, gen) if callable(_b) else _b[torch.randint(0, _b.shape[0], (n,), generator=gen, device=gen.device).to(_b.device)]
                return deq(xb, gen)
        opts = dict(elbo, **({"bits": bits} if name == "bpd_elbo" else {}))
        t0 = time.perf_counter()
        with Progress(f"{name} (ELBO)", int(mc_samples), "draws") as bar:
            est = nll_elbo(target.denoiser, target.process, data, num_draws=int(mc_samples), batch_size=int(mc_batch_size),
                           num_steps=num_steps, generator=g, on_batch=bar.update, **opts)
        mean, se = est.per_dim if name == "nll_elbo" else _bpd(est, discrete, bits)
        out.update({name: mean, name + "_se": se, name + "_seconds": time.perf_counter() - t0, name + "_num_samples": est.num_draws})

    if target.mixture is not None and any(m.startswith("nll") for m in wanted):
        draws = int(min(mc_samples, 2_000_000))
        with Progress(f"nll: the data's exact NLL ({count(draws)} draws)"):
            out["nll"], out["nll_se"] = target.mixture.nll(num_samples=draws, seed=seed + 4)
    return out


@register_metric("swd", "mmd", held_out=("swd",))
def _distances(samples: Tensor, real: Tensor, real_other: Tensor | None, metrics: Sequence[str], seed: int,
               num_projections: int) -> dict:
    return distances(samples, real[: samples.shape[0]], metrics, seed=seed, num_projections=num_projections, real_other=real_other)


@register_metric("fid", "kid", "is", held_out=("fid",))
def _features(samples: Tensor, real: Tensor, real_other: Tensor | None, metrics: Sequence[str], seed: int, features,
              inception_weights, net, cache_name, device, datamodule, reference_split: str, context: dict) -> dict:
    """FID (Heusel et al. 2017), KID (Bińkowski et al. 2018), IS (Salimans et al. 2016) of the samples: the feature net (built once, left
    in `context` for the classifier metrics), the features, the scores by protocol name."""
    from ..metrics import extract, feature_id, reference_stats

    n, held = samples.shape[0], real_other
    name = features_name(features, net if net is not None else features)
    if net is None:
        with Progress(f"{name} feature network for FID/KID/IS"):
            net = context["net"] = feature_network(features, real, seed, inception_weights, device, datamodule)
    total = real.shape[0] + n * (2 if "is" in metrics else 1) + (held.shape[0] if held is not None else 0)
    with Progress(f"{name} features", total, "examples") as bar:
        real_f = extract(net, real, on_batch=bar.update)
        stats = reference_stats(real_f, cache_name, reference_split, feature_id(net)) if cache_name else None
        logits = extract(net, samples, logits=True, on_batch=bar.update) if "is" in metrics else None
        fake_f = extract(net, samples, on_batch=bar.update)
        held_f = extract(net, held, on_batch=bar.update) if held is not None else None
    with Progress(f"{'/'.join(m.upper() for m in metrics)} of {n} samples"):
        q, more = feature_metrics(fake_f, real_f, metrics, features=features_name(features, net), fake_logits=logits,
                                  real_stats=stats, held_features=held_f)
    for message in more:
        warnings.warn(message)  # recorded under "warnings" by `compute`
    return q


@register_metric("weights")
def _weights(samples: Tensor, mixture) -> dict:
    return mixture_weights(samples, mixture)


@register_metric("confidence", "copying", held_out=True)
def _classifier(samples: Tensor, real: Tensor, real_other: Tensor | None, metrics: Sequence[str], net, device, datamodule,
                reference_split: str) -> dict:
    clf = net if getattr(net, "name", None) == "classifier" else data_classifier(datamodule).to(device or "cpu")
    unseen = real if reference_split == "val" else real_other
    return classifier_metrics(samples, metrics, clf, unseen=unseen, datamodule=datamodule)
