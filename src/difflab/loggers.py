"""Experiment loggers built from config (`conf/logger/`)."""
from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from .utils import atomic_write


def wandb_logger(project: str = "difflab", entity=None, name=None, tags=(), offline=None, save_dir: str = ".", **kwargs):
    """A Lightning `WandbLogger`, offline (files under `<save_dir>/wandb`, `wandb sync` later)
    when no WANDB_API_KEY is set. The run id is kept in `<save_dir>/wandb_run_id`, so a resumed
    run continues the same W&B run."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ValueError("logger=wandb needs the wandb package (pip install wandb), or use logger=csv") from None
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not os.environ.get("WANDB_API_KEY")
    if offline and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    id_file = Path(save_dir) / "wandb_run_id"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    return WandbLogger(project=project, entity=entity, name=name, tags=list(tags or []), offline=bool(offline),
                       save_dir=str(save_dir), id=run_id, resume="allow", **kwargs)


class _AppendingWriter(ExperimentWriter):
    """Keeps the rows of an existing metrics.csv (Lightning's writer deletes them), minus those at
    or after `keep_before_step` (a resumed run logs those steps again)."""

    def __init__(self, log_dir: str, keep_before_step: int | None):
        self._keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            header, rows = list(reader.fieldnames or []), list(reader)
        if self._keep_before_step is not None:
            rows = [r for r in rows if not r.get("step") or float(r["step"]) < self._keep_before_step]
        with atomic_write(self.metrics_file_path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = header


class CSVLogger(_CSVLogger):
    """Lightning's CSVLogger, append-only across resumes: `<save_dir>/<name>/metrics.csv` keeps every
    earlier row; `keep_before_step` (set by difflab-train when it resumes from a checkpoint at that
    step) drops the rows the killed run logged after its last checkpoint."""

    keep_before_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.keep_before_step)
        return self._experiment
