"""Refuse a multirun sweep whose jobs would repeat one another, before any job runs.

A sweep over a config group (or value) that the composed config does not read gives jobs that
differ only in their names: `difflab-train -m process=vp +sampler=ddim,pc` would train the same
model twice. `check_sweep` composes every job of the grid with Hydra's compose API (no
training), keeps what the command reads, and refuses, naming the override, if two jobs agree.

What a command reads: the top-level keys of its own default config, except the groups that
exist only to be interpolated into others (a node without `_target_` that another node
references, like `schedule` in `process.schedule: ${schedule.name}`). Such a group is read
when, and only when, the nodes that interpolate it change.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .common import CONFIG_DIR, UsageError, one_line

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


def _compose(config_name: str, overrides: Sequence[str], config_dir: Path, hydra: bool = False):
    """compose() inside Hydra initialised on `config_dir` (see `check_sweep`); difflab's own
    configs join the search path when config_dir is another directory (a sweep file's)."""
    from hydra import compose

    extra = [] if _same(config_dir, CONFIG_DIR) else [f"hydra.searchpath=[file://{Path(CONFIG_DIR).resolve()}]"]
    return compose(config_name, overrides=[*extra, *overrides], return_hydra_config=hydra)


def _same(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


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


def sweep_jobs(overrides: Sequence[str], params: dict | None = None) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper expands them (params first): the
    product of the values of each key, a later override of a key replacing an earlier one, in the
    order the keys first appear (tests/test_compat.py holds this equal to `BasicSweeper`'s own
    expansion, which is Hydra-private)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    values: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(args):
        key = o.get_key_element()
        if not o.is_sweep_override():
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise HydraException(f"BasicSweeper does not support sweep type : {o.value_type.name}")
    return [list(job) for job in itertools.product(*values.values())]


def fixed_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that are not sweeps (a single value each)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.input_line for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_sweep_override()]


def check_sweep(config_name: str, overrides: Sequence[str], config_dir: str | Path = CONFIG_DIR) -> int:
    """Compose every job of `-m <overrides>` and raise `UsageError` (one line, naming the
    override to drop) if two jobs read the same config or a job's process cannot be built.
    Returns the number of jobs."""
    return len(checked_jobs(config_name, overrides, config_dir))


def checked_jobs(config_name: str, overrides: Sequence[str], config_dir: str | Path = CONFIG_DIR) -> list[list[str]]:
    """`check_sweep`'s checks; returns every job's override list."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    backup = get_gh_backup()  # called from inside a Hydra app or a test: leave it as it was
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
            return _check(config_name, overrides, config_dir)
    finally:
        restore_gh_from_backup(backup)


def _check(config_name: str, overrides: Sequence[str], config_dir) -> list[list[str]]:
    from omegaconf import OmegaConf

    task = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        base = _compose(config_name, fixed_overrides(task), config_dir, hydra=True)
        params = base.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
        jobs = sweep_jobs(task, params)
        cfgs = [_compose(config_name, job, config_dir) for job in jobs]
    except Exception as e:  # an unknown option or key: Hydra's message as one line
        raise UsageError(one_line(str(e))) from None
    keys = read_keys(_compose(config_name, [], config_dir))
    seen: dict[str, list[str]] = {}
    for job, cfg in zip(jobs, cfgs):
        _build(cfg, job)
        used = {k for k in keys if READ_WHEN.get((config_name, k), lambda c: True)(cfg)}
        read = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in sorted(used) if k in cfg}
        key = json.dumps(read, sort_keys=True, default=str)
        if key in seen:
            raise UsageError(_repeat_message(seen[key], job))
        seen[key] = job
    return jobs


#: where a job directory's name is set; a command line that sets it keeps its own
DIRNAME_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def dirname_override(jobs: Sequence[Sequence[str]]) -> str:
    """The override that names each job directory after its swept overrides only: Hydra's
    override_dirname with every key that takes one value in all jobs excluded (and output, the
    sweep's own directory). `schedule=linear,cosine weighting=elbo,simple experiment=gmm` →
    job directories `schedule=cosine,weighting=elbo`, ... (see `common.job_dirname`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    values: dict[str, set[str]] = {}
    for job in jobs:
        parsed = {o.key_or_group: o.input_line for o in parser.parse_overrides(list(job))}
        for key in set(values) | set(parsed):
            values.setdefault(key, set()).add(parsed.get(key))
    fixed = sorted({k for k, v in values.items() if len(v) == 1} | set(IGNORED))
    return f"{DIRNAME_KEYS}=[{','.join(repr(k) for k in fixed)}]"


def _build(cfg, job: Sequence[str]) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    for node in BUILT:
        if node in cfg and OmegaConf.is_dict(cfg[node]) and cfg[node].get("_target_") is not None:
            try:
                instantiate(cfg[node])
            except Exception as e:
                cause = e.__cause__ or e
                raise UsageError(f"job {','.join(job)}: {one_line(str(cause))}") from None


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


def check_sweep_argv(config_name: str, prog: str, argv: Sequence[str] | None = None) -> str | None:
    """For `hydra_entry`: under -m, refuse a repeating or impossible sweep with one line on
    stderr and exit status 2, before Hydra launches any job; else return the override that names
    the job directories after the swept overrides (`dirname_override`; None when the command line
    sets those names itself). Does nothing without -m."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=")[0] in INSPECT for a in argv):  # printing help or config: no job runs
        return None
    multirun, overrides, name, cdir = multirun_overrides(argv)
    if not multirun:
        return None
    try:
        jobs = checked_jobs(name or config_name, overrides, cdir or CONFIG_DIR)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    return None if any(o.lstrip("+~").startswith(DIRNAME_KEYS) for o in overrides) else dirname_override(jobs)
