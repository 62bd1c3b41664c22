"""What the study report's table (`studies.table`) and its plots (`studies.plots`) share: the job record,
the labels and file names made from it, which metrics are results, and whose number a column is.

A leaf module (it imports nothing of difflab), so `table`, `plots` and `jobs` import it and
never each other's private names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    #: "done", "failed" or "unfinished" (difflab.runs.job_state), and what to say of it (the error)
    state: str = "done"
    state_note: str = ""

    def value(self, metric: str) -> float | None:
        v = self.metrics.get(metric)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def se(self, metric: str) -> float | None:
        v = self.metrics.get(metric + "_se")
        return float(v) if isinstance(v, (int, float)) else None


def slug(text: str) -> str:
    """A file-name-safe form of a metric name (`val/loss` → `val_loss`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def label(job: Job, keys: list[str]) -> str:
    """`k=v, k2=v2` of a job's values of `keys` (its directory name without keys)."""
    return ", ".join(f"{k}={job.overrides.get(k, '–')}" for k in keys) or job.path.name


def varies(jobs: list[Job], metric: str) -> bool:
    """Whether `metric` (± SE) differs between jobs; one that does not is a reference, not a result."""
    return len({(j.value(metric), j.se(metric)) for j in jobs}) > 1


def plotted(metrics: list[str]) -> list[str]:
    """The metrics worth a plot: results, not reference values (swd_floor) or counts."""
    return [m for m in metrics if not m.endswith(("_floor", "_floor_std", "num_samples")) and m not in ("data_shape", "num_real_floor")]


#: the columns that are the data's numbers, not the model's, and what each is
DATA_METRICS = {
    "nll": "the data's exact NLL (nats/dim, of the Gaussian mixture the jobs model), a reference that the "
           "model's nll_elbo (an upper bound) and nll_ode estimate",
    "num_real_floor": "the number of real examples the floors scored",
    "real_confident": "the classifier's confident fraction on real images",
}
FLOOR_NOTE = "real-vs-real floor: real examples outside the reference scored like the samples (a perfect model's score)"


def data_metric(metric: str) -> str | None:
    """What a data column holds (the exact data NLL, a real-vs-real floor; their `_se` alike), None
    for a model's number."""
    metric = metric[:-3] if metric.endswith("_se") else metric
    if metric in DATA_METRICS:
        return DATA_METRICS[metric]
    return FLOOR_NOTE if metric.endswith("_floor") else None


def header(metric: str) -> str:
    """A table column's heading: the metric's name, `(data)` after a number that is not the model's."""
    return f"{metric} (data)" if data_metric(metric) else metric
