"""The one codec of a job's override string, `schedule=cosine,weighting=elbo` (Hydra's
override_dirname): `join_overrides` builds it from {key: value}, `split_overrides` reads it back
(commas inside brackets stay in their value: `model.ch_mult=[1,2,2],lr=1e-3`), and `job_dirname`
makes a job directory's name of it (`hydra.sweep.subdir`). For keys without a leading `+`/`~` and
values that open no bracket they leave unclosed, `split_overrides(join_overrides(d)) == d`.

A leaf module (no difflab import): `cli` names job directories with it, `studies.jobs` and
`studies.wandb` read them. Which keys make the name (Hydra's exclusion list) is
`cli.sweep_check.dirname_override`, which needs Hydra's own parser.
"""
from __future__ import annotations

import hashlib
from typing import Mapping

__all__ = ["MAX_DIRNAME", "job_dirname", "join_overrides", "split_overrides"]

#: a job directory name longer than this (bytes) is replaced by a hash (file systems allow 255)
MAX_DIRNAME = 200


def join_overrides(overrides: Mapping[str, object]) -> str:
    """{a: 1, b: [2,3]} → `a=1,b=[2,3]`, in the mapping's order (the inverse of `split_overrides`)."""
    return ",".join(f"{k}={v}" for k, v in overrides.items())


def split_overrides(name: str) -> dict[str, str]:
    """`a=1,b=[2,3],c=x` → {a: 1, b: [2,3], c: x} (commas inside brackets stay); {} if not k=v."""
    parts, depth, cur = [], 0, ""
    for ch in name:
        depth += 1 if ch in "[{(" else -1 if ch in "]})" else 0
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if not all("=" in p for p in parts):
        # a value with a bare comma: glue segments without '=' onto the previous one
        glued: list[str] = []
        for p in parts:
            if "=" in p or not glued:
                glued.append(p)
            else:
                glued[-1] += "," + p
        parts = glued
    if not parts or not all("=" in p and p.split("=", 1)[0] for p in parts):
        return {}
    return {k.lstrip("+~"): v for k, v in (p.split("=", 1) for p in parts)}


def job_dirname(overrides: str) -> str:
    """A -m job's directory name (`hydra.sweep.subdir`): its swept overrides, as Hydra's
    override_dirname gives them (`schedule=cosine,weighting=elbo`); `overrides-<sha1>` of them when
    they hold a '/' (a path as value) or exceed MAX_DIRNAME bytes. "" (nothing swept): the job
    writes into the sweep's output directory itself."""
    if "/" in overrides or len(overrides.encode()) > MAX_DIRNAME:
        return "overrides-" + hashlib.sha1(overrides.encode()).hexdigest()[:12]
    return overrides
