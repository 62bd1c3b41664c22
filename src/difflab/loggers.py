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


def has_wandb_key() -> bool:
    """Whether W&B has credentials: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc (or $NETRC)
    for the W&B host (WANDB_BASE_URL, default api.wandb.ai)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str = "difflab", entity=None, name=None, tags=(), offline=None, group=None, save_dir: str = ".", **kwargs):
    """A Lightning `WandbLogger` with its files under `<save_dir>/wandb`: offline (`wandb sync
    <save_dir>/wandb/offline-run-*` later) when W&B has no key (`has_wandb_key`). The run id is kept
    in `<save_dir>/wandb_run_id`, so a resumed run continues the same W&B run; under `wandb agent`
    the agent's run (WANDB_RUN_ID) is used. `group` groups the runs of one sweep."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ValueError("logger=wandb needs the wandb package (pip install wandb), or use logger=csv") from None
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not has_wandb_key()
    if offline and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    id_file = Path(save_dir) / "wandb_run_id"
    run_id = os.environ.get("WANDB_RUN_ID") or (id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4))
    id_file.parent.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id + "\n")
    return WandbLogger(project=project, entity=entity, name=name, tags=list(tags or []), offline=bool(offline), group=group,
                       save_dir=str(save_dir), id=run_id, resume="allow", **kwargs)


def start_run(logger, config: dict, module) -> None:
    """The resolved config as the W&B run's config (rank 0), instead of the module's constructor
    arguments Lightning would log over it (same names, other contents). Other loggers: nothing."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        module._log_hyperparams = False
        logger.log_hyperparams(config)


def end_run(logger, summary: dict | None = None) -> None:
    """Put the job's final numbers (eval_at_end's metrics.json) into the W&B run's summary and
    finish the run, so the next job of a sweep run in the same process (Hydra's basic launcher)
    starts its own run instead of logging into this one. Other loggers: nothing."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    if not isinstance(logger, WandbLogger) or rank_zero_only.rank != 0:
        return
    if logger._experiment is None and not summary:
        return  # no run was started in this process (e.g. ddp_spawn's workers held it)
    run = logger.experiment
    if summary:
        run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
    run.finish()
    logger._experiment = None


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
