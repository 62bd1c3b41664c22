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
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .utils import write_json

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
