"""What is evaluated (`EvalTarget`): a denoiser, its process, the data shape and where real
data come from — built from a difflab-train checkpoint, from an exact model (the GMM oracle),
or from a training module in memory (EvalCallback, eval_at_end). `real_examples` is the one
place real data are fetched from a data module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor

from ..utils import instantiate, plain


def real_examples(datamodule, n: int, split: str = "train") -> Tensor:
    """Up to n real examples of a data module's split: difflab's `train_tensor` for train (the
    first n training examples, no augmentation), else the split's loader, batch by batch."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    if split == "train" and hasattr(datamodule, "train_tensor"):
        return datamodule.train_tensor(n)
    loader = datamodule.val_dataloader() if split == "val" else datamodule.train_dataloader()
    xs, total = [], 0
    for batch in loader or []:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch["x"] if isinstance(batch, dict) else batch
        xs.append(x.detach().cpu())
        total += x.shape[0]
        if total >= n:
            break
    if not xs:
        raise ValueError(f"the data module's {split} split is empty; use split=train")
    return torch.cat(xs)[:n]


def held_out_examples(datamodule, n: int, reference: int) -> Tensor | None:
    """Up to n real examples of a data module outside its first `reference` training examples
    (the reference of the sample metrics), for the real-vs-real floors: its validation split,
    else the training examples after the reference; None when there are none."""
    try:
        return real_examples(datamodule, int(n), "val")
    except ValueError:  # no validation split
        rest = real_examples(datamodule, int(reference) + int(n), "train")[int(reference):]
        return rest if rest.shape[0] else None


def mixture_of(data_spec: Mapping | None):
    """The exact `GMMOracle` of a Gaussian-mixture data config (means/stds/weights), else None."""
    if not data_spec or "means" not in data_spec:
        return None
    from ..models import GMMOracle

    return GMMOracle(data_spec["means"], data_spec["stds"], data_spec.get("weights"))


@dataclass
class EvalTarget:
    """denoiser(z, t) → Prediction, its process, the data shape and the data config it models.

    `mixture` is the data's exact GMM when the data are one (then `real` draws fresh exact
    samples and likelihoods are compared with the exact NLL); `exact` says the denoiser *is*
    that mixture's posterior mean (computed in float64)."""

    denoiser: Any
    process: Any
    data_shape: tuple
    data_spec: dict = field(default_factory=dict)
    mixture: Any = None
    exact: bool = False
    datamodule: Any = None

    def __post_init__(self):
        self.data_shape = tuple(int(s) for s in self.data_shape)
        if self.mixture is not None and self.mixture.dim != math.prod(self.data_shape):
            raise ValueError(f"the model's data shape {self.data_shape} does not fit the mixture's {self.mixture.dim} dims")

    @property
    def dim(self) -> int:
        return math.prod(self.data_shape)

    @property
    def data_name(self) -> str:
        return str(self.data_spec.get("_target_", "data")).rsplit(".", 1)[-1].lower()

    def get_datamodule(self):
        if self.datamodule is None:
            if not self.data_spec.get("_target_"):
                raise ValueError("no data config to take real examples from; pass data=... matching the model")
            self.datamodule = instantiate(self.data_spec)
            if hasattr(self.datamodule, "prepare_data"):
                self.datamodule.prepare_data()
        return self.datamodule

    def real(self, n: int, seed: int, split: str = "train") -> Tensor:
        """n real examples: fresh mixture samples (seeded, on the mixture's device) for a GMM,
        else the data set's split."""
        if self.mixture is not None:
            dev = self.mixture.means.device
            g = torch.Generator(device=dev).manual_seed(int(seed))
            return self.mixture.sample(int(n), generator=g).reshape(int(n), *self.data_shape)
        return real_examples(self.get_datamodule(), int(n), split)

    def held_out(self, n: int, seed: int, reference: int) -> Tensor | None:
        """Up to n real examples outside the reference (the first `reference` training examples,
        what `real` returns), for the real-vs-real floors: fresh mixture draws (seeded), else the
        data set's validation split, else the training examples after the reference; None when
        there are none."""
        if self.mixture is not None:
            return self.real(n, seed)
        return held_out_examples(self.get_datamodule(), n, reference)

    def to(self, device=None, dtype=None) -> "EvalTarget":
        for name in ("denoiser", "process", "mixture"):
            obj = getattr(self, name)
            if obj is not None and hasattr(obj, "to"):
                obj = obj.to(device) if device is not None else obj
                setattr(self, name, obj.to(dtype) if dtype is not None and name != "mixture" else obj)
        return self


def from_checkpoint(path, device=None, use_ema: bool = True, data_spec: Mapping | None = None, compile=False) -> EvalTarget:
    """The EMA (or raw) denoiser of a difflab-train checkpoint with the data it was trained on
    (`data_spec` replaces the checkpoint's own data config). `compile`: as `model.compile`
    (false | true | auto = on a GPU | torch.compile options), for the sampling network."""
    from ..lit_module import load_denoiser

    loaded = load_denoiser(str(path), device=device, use_ema=use_ema, compile=compile)
    spec = dict(plain(data_spec) if data_spec else loaded.data_config or {})
    den = loaded.denoiser.eval()
    return EvalTarget(den, loaded.process, loaded.data_shape, spec, mixture_of(spec)).to(device)


def from_exact_model(model, process, parameterization, data_spec: Mapping, data_shape=None, device=None) -> EvalTarget:
    """An exact model — an object with `.denoiser(process, parameterization)` such as
    `GMMOracle` — evaluated in float64."""
    spec = dict(plain(data_spec) or {})
    shape = tuple(data_shape or (getattr(model, "dim", None),))
    if None in shape:
        raise ValueError("give data_shape for a model without a `dim`")
    den = model.to(device).denoiser(process.to(device), parameterization)
    return EvalTarget(den, process, shape, spec, model if hasattr(model, "log_prob") else mixture_of(spec), exact=True)


def from_module(module, datamodule=None, use_ema: bool = True) -> EvalTarget:
    """A training module in memory (`DiffusionModule` or anything with `.denoiser(use_ema)`,
    `.process`): its EMA denoiser; real data from `datamodule` or its data config."""
    hp = getattr(module, "hparams", {}) or {}
    spec = dict(plain(hp.get("data_config") or {}))
    shape = tuple(getattr(module, "data_shape", None) or hp.get("data_shape") or ())
    den = module.denoiser(use_ema=use_ema) if use_ema else module.denoiser(use_ema=False)
    return EvalTarget(den, module.process, shape, spec, mixture_of(spec), datamodule=datamodule)
