"""Reading difflab-train checkpoints safely: `torch.load(weights_only=True)` (no pickle code runs),
and a clear one-line error for a missing, truncated, corrupt or foreign file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch

IDENTITY_KEYS = ("model", "process", "parameterization", "data_shape")
SPEED_ONLY = ("model.compile", "model.channels_last")  # how the network runs, not what it is


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict of a difflab-train run, or FileNotFoundError / ValueError saying why not."""
    path = Path(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it, ...
        reason = type(e).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated, corrupt or not saved by difflab-train: {reason})") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    if not isinstance(hp, Mapping) or any(k not in hp for k in ("model", "process")) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a difflab-train checkpoint (no model/process hyper-parameters or weights)")
    return ckpt


def _norm(v):
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def mismatched_keys(hparams: Mapping, wanted: Mapping, keys=IDENTITY_KEYS) -> list[str]:
    """The dotted keys among `keys` whose values differ between a checkpoint's hyper-parameters
    and the hyper-parameters a config would give (e.g. `process._target_`, `model.hidden`)."""
    diff: list[str] = []

    def walk(a, b, prefix):
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}")
        elif _norm(a) != _norm(b) and prefix not in SPEED_ONLY:
            diff.append(prefix)

    for k in keys:
        walk(hparams.get(k), wanted.get(k), k)
    return diff
