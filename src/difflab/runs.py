"""A run directory's state, as the commands that write it and the report that reads it agree on.

A job of a `-m` sweep that fails (a bad data root, a diverged loss, an error in training, a
SLURM job killed) leaves `<job>/failed.json`: the error's last line (`error`), the whole text
when there is more (`detail`) and the time. The sweep goes on with its other jobs and ends with
a non-zero exit status and one line per failed job (`summary_lines`); `difflab-report` shows the
job as a row with its state; rerunning the same command runs it again (and removes the record
as it starts), while finished jobs are skipped.

A job's state (`job_state`):
- ``failed``: `failed.json` is there;
- ``done``: its results are there (`metrics.json` or `sample.json`), or, for a training job
  without `eval_at_end`, `last.ckpt` has reached `trainer.max_steps`;
- ``unfinished``: none of these — queued, running, or killed without a word (a rerun resumes it
  from its last.ckpt).

A training run's life (`difflab.training.train` calls these, in this order): `rerun_state` (a
rerun -m job is skipped, resumed or started again), `check_same_run_config` (a run directory
belongs to one config), `checkpoint_to_resume` + `resume_config` (resume=<dir> trains with the
run's own config.yaml), `check_same_model` (a checkpoint resumes only into the same model). They
take the command line's overrides and whether the run is a -m job as plain arguments.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .config_check import UsageError, group_overrides
from .utils import flatten, plain, resolved_config, write_json

#: the record a failed job leaves in its directory
FAILED = "failed.json"
#: files that say a job has its results
RESULTS = ("metrics.json", "sample.json")


def last_line(text: str) -> str:
    """The last non-empty line of an error's text (a traceback's exception line)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed (no message)"


def record_failure(out: str | Path, error: str, detail: str | None = None) -> Path:
    """Write `<out>/failed.json` (atomically; the directory is created if the job failed before it was)."""
    record = {"error": last_line(error), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if detail and detail.strip() != record["error"]:
        record["detail"] = detail
    return write_json(Path(out) / FAILED, record)


def clear_failure(out: str | Path) -> None:
    """A job that starts again is no longer failed."""
    with contextlib.suppress(FileNotFoundError):
        (Path(out) / FAILED).unlink()


def failure(out: str | Path) -> dict | None:
    """The failure record of a job directory, or None."""
    path = Path(out) / FAILED
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint holds (None if it cannot be read)."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a half-written or foreign file: no step
        return None
    step = ck.get("global_step") if isinstance(ck, dict) else None
    return int(step) if step is not None else None


def _max_steps(out: Path) -> int | None:
    import yaml

    try:
        cfg = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return None
    steps = (cfg.get("trainer") or {}).get("max_steps")
    return int(steps) if isinstance(steps, int) and steps > 0 else None


def job_state(out: str | Path) -> tuple[str, str]:
    """(state, what to say of it): ("failed", the error), ("done", ""), ("unfinished", "step N of M")."""
    out = Path(out)
    record = failure(out)
    if record is not None:
        return "failed", str(record.get("error", ""))
    if any((out / name).is_file() for name in RESULTS) or (out / "eval" / "metrics.json").is_file():
        return "done", ""
    last, total = out / "checkpoints" / "last.ckpt", _max_steps(out)
    step = checkpoint_step(last) if last.is_file() else None
    if step is not None and total is not None and step >= total and not _asks_for_eval(out):
        return "done", ""
    if step is None:
        return "unfinished", "no checkpoint yet"
    return "unfinished", f"last.ckpt at step {step}" + (f" of {total}" if total else "")


def _asks_for_eval(out: Path) -> bool:
    import yaml

    try:
        cfg = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return False
    return bool(cfg.get("eval_at_end"))


def failed_jobs(root: str | Path, since: float | None = None) -> list[tuple[Path, str]]:
    """(job directory, error) of every failed job under a sweep directory (the submitit folder
    left out), those recorded at or after `since` (a time.time()) when given, sorted by directory."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob(FAILED)):
        if ".submitit" in path.parts:
            continue
        if since is not None and path.stat().st_mtime < since - 1:
            continue
        record = failure(path.parent) or {}
        found.append((path.parent, str(record.get("error", ""))))
    return found


def summary_lines(prog: str, failed: list[tuple[Path, str]], total: int | None = None) -> list[str]:
    """One line per failed job (its directory and the error's last line), after a line that counts them."""
    if not failed:
        return []
    of = f" of {total}" if total else ""
    lines = [f"{prog}: {len(failed)}{of} job{'s' if len(failed) != 1 else ''} failed; rerun the same command to run "
             "only the failed and unfinished ones"]
    lines += [f"{prog}: failed: {path}: {error}" for path, error in failed]
    return lines


def run_dir(resume) -> str:
    """`output`'s default: the run being resumed (`resume=DIR`), else runs/<timestamp with
    microseconds>. (`${oc.select:resume,...}` returned the null of an unset `resume`, and Hydra
    refused a null run directory.)"""
    from datetime import datetime

    return str(resume) if resume is not None else f"runs/{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"


def secondary_process() -> bool:
    """A process that Lightning's `ddp` launcher, torchrun or SLURM started beside rank 0: it re-runs
    this script, and must neither re-check, lock nor write the run directory rank 0 holds.
    Lightning's launcher sets LOCAL_RANK/NODE_RANK, SLURM SLURM_PROCID; torchrun sets RANK and
    GROUP_RANK (the node), and its process on node 1 has LOCAL_RANK=0, so RANK is read too."""
    import os

    return any(int(os.environ.get(k, "0") or 0) > 0
               for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"))


def has_results(out: Path) -> bool:
    return (out / "config.yaml").exists() or any((out / "checkpoints").glob("*.ckpt"))


def rerun_state(cfg, out: Path, multirun: bool) -> str:
    """For a job of a rerun `-m` sweep (hydra#3328): "done" when its results exist (metrics.json,
    or a final checkpoint when it asks for no eval_at_end), "resume" when it has a last.ckpt, "new"
    otherwise. Outside a sweep (or with an explicit ckpt_path/resume) always "new"."""
    import torch

    if not multirun or cfg.get("ckpt_path") or cfg.get("resume"):
        return "new"
    last = out / "checkpoints" / "last.ckpt"
    if (out / "metrics.json").is_file():
        return "done"
    if not last.is_file():
        return "new"
    if not cfg.get("eval_at_end"):
        step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
        if cfg.trainer.get("max_steps") not in (None, -1) and step >= int(cfg.trainer.max_steps):
            return "done"
    return "resume"


#: keys a continued run may change (where to write, how to run), never compared with the saved run
RESUME_KEYS = ("output", "ckpt_path", "resume", "threads", "device", "fail_fast")


def check_same_run_config(cfg, out: Path, overrides, resume_keys=RESUME_KEYS) -> None:
    """A run directory belongs to one config. Training into one that holds another run's config.yaml
    (output= + ckpt_path=, or a rerun -m job) with group choices (experiment=, data=, model=...) that
    compose a different config is refused, naming the differing keys; key=value overrides
    (trainer.max_steps=...) are what a continued run may change. A command of key=value overrides
    alone (resume=<dir> trainer.max_steps=...) continues the run with its own config.yaml."""
    import yaml

    saved_path = out / "config.yaml"
    overrides = [o for o in overrides if not o.startswith("hydra")]
    groups = group_overrides(overrides)
    if cfg.get("resume"):  # a group of the config (model=, process=...): resume_config names it in its own words
        groups = [g for g in groups if g.lstrip("+").partition("=")[0] not in cfg]
    if not saved_path.is_file() or not groups:
        return
    changed = {o.lstrip("+~").partition("=")[0] for o in overrides} - {g.lstrip("+").partition("=")[0] for g in group_overrides(overrides)}
    skip = tuple(changed) + tuple(resume_keys) + ("hydra",)
    now, saved = flatten(resolved_config(cfg)), flatten(yaml.safe_load(saved_path.read_text()) or {})
    diff = sorted(k for k in now.keys() | saved.keys()
                  if now.get(k) != saved.get(k) and not any(k == s or k.startswith(s + ".") for s in skip))
    if diff:
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise UsageError(f"{out} holds a run of another config ({', '.join(diff[:6])}{more} differ); choose a new output=, "
                         f"or continue that run with resume={out} and key=value overrides")


def checkpoint_to_resume(cfg):
    """(path, checkpoint dict) of `ckpt_path` (or `resume`'s last.ckpt), read and checked, or (None, None)."""
    import os

    from .checkpoints import read_checkpoint

    path = cfg.get("ckpt_path") or (Path(str(cfg.resume)) / "checkpoints" / "last.ckpt" if cfg.get("resume") else None)
    requeued = Path(str(cfg.output)) / "checkpoints" / "last.ckpt"
    if not path and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and requeued.is_file():
        path = requeued  # a requeued SLURM job continues its own run
    if not path:
        return None, None
    if not Path(str(path)).is_file():
        raise UsageError(f"ckpt_path={path} does not exist; resume from <run dir>/checkpoints/last.ckpt (or resume=<run dir>)")
    return Path(str(path)), read_checkpoint(path)


def resume_config(cfg, out: Path, overrides):
    """The config a resumed run trains with: the run's own config.yaml, with the command line's
    key=value `overrides` applied (e.g. trainer.max_steps=...), so no option has to be repeated.
    A group choice (model=..., process=...) that differs from the saved run is refused."""
    from omegaconf import OmegaConf, open_dict

    saved_path = out / "config.yaml"
    if not saved_path.is_file() or not overrides:
        return cfg  # a checkpoint from elsewhere, or composed by a caller: the given config
    saved = OmegaConf.load(saved_path)
    groups = []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in RESUME_KEYS or key.startswith("hydra") or ("." not in key and key not in cfg):
            continue  # where to write, or a recipe name (experiment=): the saved config already holds it
        if "." not in key and OmegaConf.is_dict(cfg[key]):
            groups.append((key, value))
            continue
        with open_dict(saved):
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    for key, value in groups:  # a group choice must be the saved run's (with the key=value overrides applied)
        if plain(cfg[key]) != plain(saved.get(key)):
            raise UsageError(f"resuming {out} uses its own config.yaml, and {key}={value} changes it; drop {key}= "
                             "or start a new run with another output=")
    with open_dict(saved):
        for key in RESUME_KEYS:
            if key in cfg:
                saved[key] = cfg[key]
    return saved


def check_same_model(ckpt: dict, module, path: Path) -> None:
    """Refuse to resume a checkpoint into a run with another model, process, parameterization or data shape."""
    from .checkpoints import mismatched_keys

    diff = mismatched_keys(ckpt["hyper_parameters"], module.hparams)
    if diff:
        raise UsageError(f"{path} was trained with another configuration ({', '.join(diff[:6])} differ); resume with "
                         "the run's own config (resume=<run dir>) or start a new run with another output=")
