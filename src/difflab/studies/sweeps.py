"""Refuse a multirun sweep whose jobs would repeat one another, before any job runs.

A sweep over a config group (or value) that the composed config does not read gives jobs that
differ only in their names: `difflab-train -m process=vp +sampler=ddim,pc` would train the same
model twice. `difflab.cli.sweep_check` composes every job of the grid with Hydra's compose API
(no training); `check_distinct` keeps what the command reads and refuses, naming the override,
if two jobs agree.

What a command reads (`read_keys`): the top-level keys of its own default config, except the
groups that exist only to be interpolated into others (a node without `_target_` that another
node references, like `schedule` in `process.schedule: ${schedule.name}`). Such a group is read
when, and only when, the nodes that interpolate it change.
"""
from __future__ import annotations

import json
import re
from typing import Iterable, Sequence

from ..config_check import UsageError, one_line
from ..utils import instantiate, plain

#: keys that differ between jobs without making them different jobs (timestamped output dir)
IGNORED = ("output",)
#: Hydra flags that only print (help, config, info) and launch nothing
INSPECT = ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p", "--package", "-sc", "--shell-completion",
           "--resolve")
#: nodes built for every job, so a combination that cannot work is refused before the sweep
BUILT = ("process",)
#: (config, key) read only under a condition on the composed config: difflab-train samples (the
#: `sampler` group, the `evaluation` options) only for eval_at_end or the EvalCallback
READ_WHEN = {
    ("train", "sampler"): lambda cfg: bool(cfg.get("eval_at_end")) or "eval" in (cfg.get("callbacks") or {}),
    ("train", "evaluation"): lambda cfg: bool(cfg.get("eval_at_end")),
}
#: where a job directory's name is set; a command line that sets it keeps its own
DIRNAME_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def read_keys(cfg) -> set[str]:
    """Top-level keys a command reads itself (see the module docstring)."""
    from omegaconf import OmegaConf

    raw = {k: json.dumps(OmegaConf.to_container(cfg[k], resolve=False)) if OmegaConf.is_config(cfg[k]) else str(cfg[k])
           for k in cfg if k != "hydra"}
    keys = set(raw)
    for k in list(keys):
        pattern = re.compile(r"\$\{(?:oc\.select:)?\s*" + re.escape(k) + r"[.}\s,]")
        interpolated = any(pattern.search(v) for other, v in raw.items() if other != k)
        if interpolated and not (OmegaConf.is_dict(cfg[k]) and "_target_" in cfg[k]):
            keys.discard(k)
    return keys - set(IGNORED)


def check_distinct(config_name: str, jobs: Sequence[Sequence[str]], cfgs: Sequence, keys: set[str]) -> None:
    """Raise `UsageError` if a job's process cannot be built or two jobs (override lists `jobs`,
    composed into `cfgs`) read the same config (`keys`: `read_keys` of the default config)."""
    from omegaconf import OmegaConf

    seen: dict[str, Sequence[str]] = {}
    for job, cfg in zip(jobs, cfgs):
        _build(cfg, job)
        used = {k for k in keys if READ_WHEN.get((config_name, k), lambda c: True)(cfg)}
        read = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in sorted(used) if k in cfg}
        key = json.dumps(read, sort_keys=True, default=str)
        if key in seen:
            raise UsageError(_repeat_message(seen[key], job))
        seen[key] = job


def _build(cfg, job: Sequence[str]) -> None:
    from omegaconf import OmegaConf

    for node in BUILT:
        if node in cfg and OmegaConf.is_dict(cfg[node]) and cfg[node].get("_target_") is not None:
            try:
                instantiate(plain(cfg[node]))
            except Exception as e:
                raise UsageError(f"job {','.join(job)}: {one_line(str(e))}") from None


def _repeat_message(a: Sequence[str], b: Sequence[str]) -> str:
    differ = [o for o in b if o not in a]
    keys = sorted({o.split("=", 1)[0].lstrip("+~") for o in differ})
    shared = [o for o in b if o in a]
    return (f"the sweep repeats a job: {','.join(differ)} and {','.join(o for o in a if o not in b)} compose the "
            f"same config{' with ' + ','.join(shared) if shared else ''}, because {', '.join(keys)} is not read there; "
            f"drop {', '.join(keys)} from the sweep or add an override that uses it")


def multirun_overrides(argv: Iterable[str]) -> tuple[bool, list[str], str | None, str | None]:
    """(multirun?, overrides, --config-name, --config-dir) from a console script's argv."""
    argv = list(argv)
    multirun, overrides, name, cdir = False, [], None, None
    it = iter(argv)
    for a in it:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in ("-cn", "--config-name", "-cd", "--config-dir", "-cp", "--config-path"):
            value = next(it, None)
            name = value if a in ("-cn", "--config-name") else name
            cdir = value if a in ("-cd", "--config-dir") else cdir
        elif a.startswith(("--config-name=", "--config-dir=")):
            key, value = a.split("=", 1)
            name, cdir = (value, cdir) if key == "--config-name" else (name, value)
        elif not a.startswith("-"):
            overrides.append(a)
    return multirun, overrides, name, cdir
