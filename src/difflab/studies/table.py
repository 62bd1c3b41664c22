"""A study at a glance: collect every job of a multirun directory into one table and plots.

`difflab-report --wandb ENTITY/PROJECT --group G` builds the same report from W&B runs
(`report_wandb.py`): both sources give a list of `Job` records (overrides, metrics with `_se`
standard errors, loss curves) and `study` / `write_study` do the rest.

Each job directory holds what difflab's commands write: `config.yaml`, Lightning's CSV log
`logs/metrics.csv`, `metrics.json` (difflab-eval's numbers, `<metric>_se` its standard error;
also looked for in `<job>/eval/`), `sample.json` (sampler, steps, nfe) and Hydra's
`.hydra/overrides.yaml`. A job's overrides come from `.hydra/overrides.yaml`, else from its
directory name (`schedule=cosine,weighting=elbo`, Hydra's override_dirname), else from the
leaves of `config.yaml` that differ between jobs. Keys with one value across jobs are the
study's fixed settings; the others are its columns.

Columns say whose number they are: the model's, or the data's (`nll (data)`: for a Gaussian
mixture the data's exact NLL, which the model's nll_elbo / nll_ode estimate; `<metric>_floor (data)`:
real examples scored like the samples), with a note under the table. The job record and the
helpers the plots share live in `report_common` (a leaf module: no import cycle with `report_plots`).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from .progress import Progress
from .runs import FAILED, job_state
from .utils import write_text
from .report_common import Job, data_metric, header, label, plotted, slug, varies
from .report_plots import plot_eval_curves, plot_losses, plot_vs_nfe, plot_vs_weighting

__all__ = ["Job", "SKIP_KEYS", "add_last_validation", "expand_lists", "label", "load_study", "metric_names", "plotted",
           "slug", "split_overrides", "study", "table", "varies", "write_report", "write_study"]

#: metric keys that are bookkeeping, not results
SKIP_SUFFIXES = ("_se", "_seconds")
SKIP_KEYS = ("data_shape", "warnings", "weights_true", "provenance")
MARKERS = ("config.yaml", "metrics.json", "sample.json", "logs/metrics.csv", ".hydra/overrides.yaml", FAILED)


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
    jobs = sorted(jobs, key=lambda j: tuple(_order_key(j.overrides.get(k, "–")) for k in swept))
    return jobs, swept, fixed


def metric_names(jobs: list[Job]) -> list[str]:
    names: list[str] = []
    for j in jobs:
        names += [k for k in j.metrics if j.value(k) is not None and not k.endswith(SKIP_SUFFIXES) and k not in names]
    order = ("nll", "bpd", "swd", "mmd", "weight", "fid", "kid", "is", "nfe", "val/")
    return sorted(names, key=lambda n: (next((i for i, p in enumerate(order) if n.startswith(p)), len(order)), n))


def fmt(value: float | None, se: float | None = None) -> str:
    """4 significant digits, ± the standard error to 2."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e6:
        text = str(int(value))
    else:
        text = f"{value:.4g}"
    return f"{text} ± {se:.2g}" if se is not None and math.isfinite(se) else text


def table(jobs: list[Job], swept: list[str], metrics: list[str]) -> str:
    """One row per job; a `state` column (done / failed / unfinished) when not every job is done."""
    states = any(j.state != "done" for j in jobs)
    head = swept + (["state"] if states else []) + [header(m) for m in metrics]
    lines = ["| " + " | ".join(head or ["job"]) + " |", "|" + "---|" * max(1, len(head))]
    for j in jobs:
        cells = ([j.overrides.get(k, "–") for k in swept] + ([_state_cell(j)] if states else [])
                 + [fmt(j.value(m), j.se(m)) for m in metrics])
        lines.append("| " + " | ".join(cells or [j.path.name]) + " |")
    return "\n".join(lines)


def _state_cell(job: Job) -> str:
    if job.state == "unfinished" and job.state_note:
        return f"unfinished ({job.state_note})"
    return job.state


def not_done(jobs: list[Job]) -> list[str]:
    """Under the table: each failed job's error, each unfinished job's progress, and what to do."""
    failed = [j for j in jobs if j.state == "failed"]
    unfinished = [j for j in jobs if j.state == "unfinished"]
    if not failed and not unfinished:
        return []
    lines = [f"**{len(failed)} failed, {len(unfinished)} unfinished** (rerunning the sweep's command runs only these):", ""]
    lines += [f"- `{j.path.name}`: failed: {j.state_note}".replace("|", "\\|") for j in failed]
    lines += [f"- `{j.path.name}`: unfinished ({j.state_note})" for j in unfinished]
    return lines + [""]


def whose_numbers(metrics: list[str]) -> str:
    """The note under the table: which columns are the data's numbers, not the model's."""
    data = [m for m in metrics if data_metric(m)]
    if not data:
        return ""
    notes = list(dict.fromkeys(data_metric(m) for m in data))
    return ("Every column is the model's number except those marked (data): " + "; ".join(
        f"{', '.join(f'`{m}`' for m in data if data_metric(m) == note)}: {note}" for note in notes) + ".")


def write_report(root: Path, out: Path | None = None) -> Path:
    """Write `report.md` and the PNGs of a multirun directory into `out` (default: root); returns
    report.md's path."""
    root = Path(root)
    return write_study(load_study(root), Path(out or root), root.name, f"under `{root}`")


def _order_key(v) -> tuple:
    """Numbers first, in numeric order, then the rest alphabetically."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _order(values) -> list[str]:
    return sorted(values, key=_order_key)


def pivot(jobs: list[Job], row: str, col: str, metric: str) -> str:
    """`metric` (± SE) in a `row` × `col` grid: a two-key sweep at a glance."""
    rows = _order({j.overrides.get(row, "–") for j in jobs})
    cols = _order({j.overrides.get(col, "–") for j in jobs})
    cell = {(j.overrides.get(row, "–"), j.overrides.get(col, "–")): fmt(j.value(metric), j.se(metric)) for j in jobs}
    lines = [f"| {row} \\ {col} | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    lines += ["| " + r + " | " + " | ".join(cell.get((r, c), "–") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def pivots(jobs: list[Job], swept: list[str], metrics: list[str]) -> list[str]:
    """For a sweep over exactly two keys, one grid per metric (rows: the key with more values)."""
    if len(swept) != 2:
        return []
    a, b = swept
    row, col = (a, b) if len({j.overrides.get(a) for j in jobs}) >= len({j.overrides.get(b) for j in jobs}) else (b, a)
    out, same = [], []
    for m in [m for m in plotted(metrics) if m != "nfe" and any(j.value(m) is not None for j in jobs)]:
        whose = " (the data's exact NLL, not a model's)" if m == "nll" else " (data)" if data_metric(m) else ""
        if not varies(jobs, m):  # a reference value (the exact nll), not a result
            same.append(f"{m} = {fmt(jobs[0].value(m), jobs[0].se(m))}{whose}")
        else:
            out += [f"**{m}**{whose}", "", pivot(jobs, row, col, m), ""]
    return (["The same in every job: " + ", ".join(same) + ".", ""] if same else []) + out


def write_study(loaded: tuple[list[Job], list[str], dict[str, str]], out: Path, title: str, source: str) -> Path:
    """report.md (the table) and the PNGs of a study's jobs (`load_study`, `study`) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    jobs, swept, fixed = loaded
    metrics = metric_names(jobs)
    with Progress(f"plots of {len(jobs)} jobs"):
        pngs = (plot_vs_nfe(jobs, swept, metrics, out) + plot_vs_weighting(jobs, swept, metrics, out) + plot_losses(jobs, swept, out)
                + plot_eval_curves(jobs, swept, out))
    lines = [f"# Study: {title}", "", f"{len(jobs)} jobs {source}."]
    if fixed:
        lines += ["", "Fixed: " + ", ".join(f"`{k}={v}`" for k, v in fixed.items())]
    lines += ["", "Mean ± standard error where the job reports one (`<metric>_se`).", "", table(jobs, swept, metrics), ""]
    note = whose_numbers(metrics)
    if note:
        lines += [note, ""]
    lines += not_done(jobs)
    grids = pivots(jobs, swept, metrics)
    if grids:
        lines += [f"## By {' × '.join(swept)}", ""] + grids
    lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in pngs]
    return write_text(out / "report.md", "\n".join(lines) + "\n")
