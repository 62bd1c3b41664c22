"""The job records of a study from W&B: every run of `ENTITY/PROJECT` in group `G` (difflab-train
-m logger=wandb names the group after the sweep's output directory and each run after its job
directory, e.g. `schedule=cosine,weighting=elbo`).

A run gives a `studies.common.Job`: its overrides from the run's name (else the leaves of its config that
differ between runs), its metrics from the run summary (eval_at_end's numbers with their `_se`;
what the history also holds, the logged training values, is left out), and its loss curves from
the run history.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..loggers import has_wandb_key
from .common import Job
from .jobs import SKIP_KEYS, add_last_validation, expand_lists
from .overrides import split_overrides


class WandbUnavailable(ValueError):
    """No W&B key, or W&B could not be reached: one line saying what to do."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_job(run) -> Job:
    """One W&B run (a `wandb.apis.public.Run`, or anything with name, id, config, summary and
    scan_history()) as a report `Job`."""
    rows = list(run.scan_history())
    curves: dict[str, list[tuple[int, float]]] = {}
    logged: set[str] = set()
    for row in rows:
        logged.update(row)
        step = row.get("trainer/global_step", row.get("_step"))
        for k, v in row.items():
            if "loss" in k and _number(v) and _number(step):
                curves.setdefault(k, []).append((int(step), float(v)))
    summary = dict(getattr(run.summary, "_json_dict", None) or run.summary)
    metrics = {k: v for k, v in expand_lists({k: v for k, v in summary.items() if k not in SKIP_KEYS}).items()
               if not k.startswith("_") and k not in logged and (_number(v) or isinstance(v, str))}
    job = Job(path=Path(run.name or run.id), overrides=split_overrides(run.name or ""), metrics=metrics, curves=curves,
              config=dict(run.config))
    add_last_validation(job)
    # W&B's run state: finished, failed, crashed (killed without a word), running, ...
    state = str(getattr(run, "state", None) or "finished")
    if state in ("failed", "crashed"):
        job.state, job.state_note = "failed", f"W&B run {state}"
    elif state != "finished":
        job.state, job.state_note = "unfinished", f"W&B run {state}"
    return job


def wandb_jobs(path: str, group: str, api=None) -> list[Job]:
    """The job records of the runs of `path` (ENTITY/PROJECT) in `group`, oldest first."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise ValueError(f"--wandb {path}: expected ENTITY/PROJECT")
    if api is None:
        if not has_wandb_key():
            raise WandbUnavailable("no W&B key: set WANDB_API_KEY or run `wandb login` (or report from the sweep's directory: "
                                   "difflab-report <multirun dir>)")
        import wandb

        api = wandb.Api()
    try:
        runs = list(api.runs(path, filters={"group": group}))
        jobs = [run_job(r) for r in runs]
    except Exception as e:  # noqa: BLE001 - network, auth, unknown project: one line
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise WandbUnavailable(f"could not read W&B runs of {path} (group {group}) from "
                               f"{os.environ.get('WANDB_BASE_URL', 'api.wandb.ai')}: {text}") from None
    if not jobs:
        raise FileNotFoundError(f"no W&B runs in {path} with group {group}; the group of a difflab-train -m sweep is its "
                                "output directory's name")
    return jobs
