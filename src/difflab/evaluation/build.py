"""What a command (difflab-sample, -eval, -tune-grid, a training job) runs on: the device and
CPU threads of its options, and the `EvalTarget` of its config (a checkpoint or an exact model)."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config_check import UsageError
from ..utils import instantiate, plain
from .target import from_checkpoint, from_exact_model, mixture_of


def resolve_device(name: str | None) -> torch.device:
    """The `device` option (auto: CUDA when present). On CUDA, cuDNN autotunes each convolution
    once (`cudnn.benchmark`, as trainer=gpu does): sampling calls the network at one shape."""
    if name in (None, "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device={name} asked for, but no CUDA device is available; use device=cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


SMALL_MODEL = 2_000_000  # parameters: below this, one CPU thread beats torch's default on a busy machine


def set_threads(n, model=None) -> None:
    """torch CPU threads: an integer, or "auto"/None — one thread for a small model (fewer than
    2M parameters, the MLP recipes and the oracle), torch's default otherwise. Measured on a busy
    2-core machine: 300 steps of the gmm MLP took 181 s with the default, 8 s with one thread."""
    if n in (None, "auto"):
        if model is not None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
            torch.set_num_threads(1)
        return
    try:
        count = int(n)
    except (TypeError, ValueError):
        count = 0
    if isinstance(n, bool) or count < 1:
        raise UsageError(f"threads must be a positive integer or auto, got {n}")
    torch.set_num_threads(count)


def build(node, what: str, **kwargs):
    """A `_target_` config node built (`utils.instantiate`), an error naming the config group."""
    try:
        return instantiate(plain(node), **kwargs)
    except UsageError:
        raise
    except Exception as e:  # a missing interpolation, a bad argument, an unknown _target_
        text = " ".join(str(e).strip().splitlines()[:1]) or type(e).__name__
        raise UsageError(f"could not build {what}: {text}") from e


def build_oracle(data_cfg):
    """The exact GMM of a data=gmm config (means/stds/weights)."""
    oracle = mixture_of(plain(data_cfg))
    if oracle is None:
        raise UsageError("model=oracle needs a Gaussian-mixture data set: add data=gmm (and data.means/stds/weights)")
    return oracle


def _data_name(spec) -> str:
    return str((spec or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def build_target(cfg, device, data_chosen: bool = False):
    """What sample/eval run on (an `EvalTarget`): the EMA denoiser of `ckpt_path` with its own
    process and data (`data_chosen`: data= was typed, and must name the same data set), or an
    exact model of the `model` group (model=oracle: the GMM's posterior mean)."""
    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path))
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={path} does not exist; give a checkpoint written by difflab-train "
                             "(<run dir>/checkpoints/last.ckpt)")
        target = from_checkpoint(path, device=device, use_ema=bool(cfg.get("use_ema", True)), compile=plain(cfg.get("compile", False)))
        if data_chosen:
            asked = plain(cfg.data)
            if _data_name(asked) != _data_name(target.data_spec):
                raise UsageError(
                    f"the checkpoint was trained on data {_data_name(target.data_spec)} but data={_data_name(asked)} was asked; "
                    "drop the data= override (the checkpoint's own data is used) or pass a checkpoint trained on that data")
            target.data_spec, target.mixture = asked, mixture_of(asked)
        if not target.data_spec:
            raise UsageError("the checkpoint holds no data config; pass data=... matching what it was trained on")
        return target
    node = cfg.get("model")
    if node is None or node.get("_target_") is None:
        raise UsageError("nothing to sample from: pass ckpt_path=<run>/checkpoints/last.ckpt (a difflab-train checkpoint) "
                         "or model=oracle (the exact denoiser of data=gmm)")
    model = build(node, "model")
    if not callable(getattr(model, "denoiser", None)):
        raise UsageError(f"model={_data_name(plain(node))} is an untrained network: pass ckpt_path=<run>/checkpoints/last.ckpt "
                         "(or model=oracle, the exact denoiser of data=gmm)")
    process, param = build(cfg.process, "process"), build(cfg.parameterization, "parameterization")
    dim = getattr(model, "dim", None)
    shape = tuple(cfg.data.get("shape") or (dim,))
    if dim is not None and math.prod(shape) != dim:
        raise UsageError(f"data.shape={list(shape)} has {math.prod(shape)} entries but the model has {dim} dims")
    return from_exact_model(model, process, param, plain(cfg.data), shape, device)
