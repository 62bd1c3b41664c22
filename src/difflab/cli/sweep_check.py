"""Refuse a multirun sweep whose jobs would repeat one another, before any job runs: every job
of the grid expanded (as Hydra's basic sweeper does) and composed with Hydra's compose API, then
checked by `difflab.studies.sweeps` (what a command reads, which jobs repeat, and why).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ..config_check import CONFIG_DIR, UsageError, one_line
from ..studies.sweeps import DIRNAME_KEYS, IGNORED, INSPECT, check_distinct, multirun_overrides, read_keys


def _compose(config_name: str, overrides: Sequence[str], config_dir: Path, hydra: bool = False):
    """compose() inside Hydra initialised on `config_dir` (see `check_sweep`); difflab's own
    configs join the search path when config_dir is another directory (a sweep file's)."""
    from hydra import compose

    extra = [] if _same(config_dir, CONFIG_DIR) else [f"hydra.searchpath=[file://{Path(CONFIG_DIR).resolve()}]"]
    return compose(config_name, overrides=[*extra, *overrides], return_hydra_config=hydra)


def _same(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


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
    check_distinct(config_name, jobs, cfgs, read_keys(_compose(config_name, [], config_dir)))
    return jobs


def dirname_override(jobs: Sequence[Sequence[str]]) -> str:
    """The override that names each job directory after its swept overrides only: Hydra's
    override_dirname with every key that takes one value in all jobs excluded (and output, the
    sweep's own directory). `schedule=linear,cosine weighting=elbo,simple experiment=gmm` →
    job directories `schedule=cosine,weighting=elbo`, ... (see `studies.overrides.job_dirname`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    values: dict[str, set[str]] = {}
    for job in jobs:
        parsed = {o.key_or_group: o.input_line for o in parser.parse_overrides(list(job))}
        for key in set(values) | set(parsed):
            values.setdefault(key, set()).add(parsed.get(key))
    fixed = sorted({k for k, v in values.items() if len(v) == 1} | set(IGNORED))
    return f"{DIRNAME_KEYS}=[{','.join(repr(k) for k in fixed)}]"


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
