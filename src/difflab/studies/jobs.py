"""The jobs of a study: find the job directories of a multirun directory, read each one into a
`Job` record (its overrides, metrics, loss curves, state), and the swept keys and fixed settings of
the lot (`study`, also for job records from W&B runs, `studies.wandb`).

Each job directory holds what difflab's commands write: `config.yaml`, Lightning's CSV log
`logs/metrics.csv`, `metrics.json` (difflab-eval's numbers, `<metric>_se` its standard error;
also looked for in `<job>/eval/`), `sample.json` (sampler, steps, nfe) and Hydra's
`.hydra/overrides.yaml`. A job's overrides come from `.hydra/overrides.yaml`, else from its
directory name (`schedule=cosine,weighting=elbo`, Hydra's override_dirname, `studies.overrides`),
else from the leaves of `config.yaml` that differ between jobs. Keys with one value across jobs
are the study's fixed settings; the others are its columns.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

from ..runs import FAILED, job_state
from .common import Job
from .overrides import split_overrides

__all__ = ["MARKERS", "SKIP_KEYS", "SKIP_SUFFIXES", "add_last_validation", "command_settings", "expand_lists", "find_jobs",
           "load_job", "load_study", "order_key", "read_curves", "study"]

#: metric keys that are bookkeeping, not results
SKIP_SUFFIXES = ("_se", "_seconds")
SKIP_KEYS = ("data_shape", "warnings", "weights_true", "provenance")
MARKERS = ("config.yaml", "metrics.json", "sample.json", "logs/metrics.csv", ".hydra/overrides.yaml", FAILED)

def find_jobs(root: Path) -> list[Path]:
    """Job directories under root: the shallowest directories holding any of MARKERS."""
    root = Path(root)
    found = set()
    for marker in MARKERS:
        depth = marker.count("/") + 1
        for p in root.rglob(Path(marker).name):
            if p.as_posix().endswith(marker):
                found.add(p.parents[depth - 1])
    jobs = sorted(d for d in found if not any(o != d and o in d.parents for o in found) and d.name != "eval")
    if len(jobs) > 1 and root in jobs:
        jobs.remove(root)
    return jobs


def read_curves(csv_path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning CSVLogger rows → {column: [(step, value), ...]} for every loss-like column and every
    `eval/` column (the EvalCallback's metrics during training and `eval/seconds`, each evaluation's cost)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not csv_path.is_file():
        return curves
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step")
            if not step:
                continue
            for k, v in row.items():
                if k in ("epoch", "step") or not v or ("loss" not in k and not k.startswith("eval/")):
                    continue
                try:
                    curves.setdefault(k, []).append((int(float(step)), float(v)))
                except ValueError:
                    continue
    return curves


def _read_yaml(path: Path):
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def expand_lists(metrics: dict) -> dict:
    """A list of numbers (the `weights` metric's per-component values) as one column per entry:
    weights → weights[0], weights[1], …; weights_se → weights[0]_se, …"""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, list) and v and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
            base, suffix = (k[:-3], "_se") if k.endswith("_se") else (k, "")
            out.update({f"{base}[{i}]{suffix}": e for i, e in enumerate(v)})
        else:
            out[k] = v
    return out


def load_job(path: Path, root: Path) -> Job:
    job = Job(path=path)
    hydra_over = _read_yaml(path / ".hydra" / "overrides.yaml")
    if hydra_over:
        job.overrides = split_overrides(",".join(str(o) for o in hydra_over))
    elif path != root:
        job.overrides = split_overrides(path.relative_to(root).as_posix().replace("/", ","))
    job.config = _read_yaml(path / "config.yaml") or {}
    for name in ("sample.json", "metrics.json", "eval/metrics.json"):
        if (path / name).is_file():
            data = json.loads((path / name).read_text())
            job.metrics.update(expand_lists({k: v for k, v in data.items() if k not in SKIP_KEYS}))
    if isinstance(job.metrics.get("sampler"), str):  # sample.json: the sampler is a setting
        job.overrides.setdefault("sampler", job.metrics.pop("sampler"))
    job.curves = read_curves(path / "logs" / "metrics.csv")
    add_last_validation(job)
    job.state, job.state_note = job_state(path)
    return job


def add_last_validation(job: Job) -> None:
    """Each validation curve's and EvalCallback metric's last value as a metric (`val/loss (last)`,
    `eval/fid_classifier_n1000 (last)`), and the mean cost of an evaluation (`eval/seconds (mean)`)."""
    for k, pts in job.curves.items():
        if not pts:
            continue
        if k == "eval/seconds":
            job.metrics.setdefault(f"{k} (mean)", sum(v for _, v in pts) / len(pts))
        elif k.startswith(("val/", "eval/")) and not k.endswith("_se") and "num_" not in k:
            job.metrics.setdefault(f"{k} (last)", pts[-1][1])


def _flatten(d, prefix="") -> dict[str, str]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(d) if isinstance(d, (list, dict)) else str(d)}


def load_study(root: Path) -> tuple[list[Job], list[str], dict[str, str]]:
    """(jobs, swept keys in order, fixed settings) of a multirun directory."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass a multirun output directory (the -m run's output=...)")
    jobs = [load_job(p, root) for p in find_jobs(root)]
    if not jobs:
        raise FileNotFoundError(f"no jobs under {root}: expected directories with config.yaml, metrics.json or logs/metrics.csv")
    jobs, swept, fixed = study(jobs)
    return jobs, swept, {**command_settings(root, jobs), **fixed}


def command_settings(root: Path, jobs: list[Job]) -> dict[str, str]:
    """The -m command's overrides that every job shares (`<root>/multirun.yaml`, Hydra's record of
    the sweep): job directories are named after the swept overrides only, so these are read here."""
    record = _read_yaml(Path(root) / "multirun.yaml") or {}
    task = ((record.get("hydra") or {}).get("overrides") or {}).get("task") or []
    named = {k for j in jobs for k in j.overrides}
    settings = {}
    for o in task:
        for k, v in split_overrides(str(o)).items():
            if k not in named and k != "output":
                settings[k] = v
    return settings


def study(jobs: list[Job]) -> tuple[list[Job], list[str], dict[str, str]]:
    """(jobs, swept keys in order, fixed settings) of job records from any source (a multirun
    directory, W&B runs): the keys whose value differs between jobs are the swept ones."""
    if not any(j.overrides for j in jobs) and len(jobs) > 1:  # numbered job dirs: what differs in config.yaml
        for j in jobs:
            j.overrides = _flatten(j.config)
    keys: list[str] = []
    for j in jobs:
        keys += [k for k in j.overrides if k not in keys]
    swept = [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]
    fixed = {k: jobs[0].overrides[k] for k in keys if k not in swept and k in jobs[0].overrides}
    # rows by the swept values (directories sort as text: steps=10 < steps=20 < steps=5)
    jobs = sorted(jobs, key=lambda j: tuple(order_key(j.overrides.get(k, "–")) for k in swept))
    return jobs, swept, fixed



def order_key(v) -> tuple:
    """Numbers first, in numeric order, then the rest alphabetically."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))

