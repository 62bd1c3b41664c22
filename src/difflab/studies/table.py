"""A study at a glance: the table (report.md) and the plots of a study's jobs.

`difflab-report <multirun dir>` reads the jobs of a directory (`studies.jobs`);
`difflab-report --wandb ENTITY/PROJECT --group G` builds the same report from W&B runs
(`studies.wandb`): both sources give a list of `Job` records (overrides, metrics with `_se`
standard errors, loss curves) and `study` / `write_study` do the rest.

Columns say whose number they are: the model's, or the data's (`nll (data)`: for a Gaussian
mixture the data's exact NLL, which the model's nll_elbo / nll_ode estimate; `<metric>_floor (data)`:
real examples scored like the samples), with a note under the table. The job record and the
helpers the plots share live in `studies.common` (a leaf module: no import cycle with `studies.plots`).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..progress import Progress
from ..utils import write_text
from .common import Job, data_metric, header, plotted, varies
from .jobs import SKIP_SUFFIXES, load_study, order_key
from .plots import plot_eval_curves, plot_losses, plot_vs_nfe, plot_vs_weighting

__all__ = ["fmt", "metric_names", "not_done", "pivot", "pivots", "table", "whose_numbers", "write_report", "write_study"]


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



def _order(values) -> list[str]:
    return sorted(values, key=order_key)


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
