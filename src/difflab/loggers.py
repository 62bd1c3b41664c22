"""Experiment loggers built from config (`conf/logger/`)."""
from __future__ import annotations

import csv
import os
import secrets
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from .compat import forget_experiment, started_experiment
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
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # rank 0 only: torchrun/SLURM start every rank at once, and another
        # rank's fresh random id written over rank 0's would make a resume continue the wrong W&B run
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n")
    return WandbLogger(project=project, entity=entity, name=name, tags=list(tags or []), offline=bool(offline), group=group,
                       save_dir=str(save_dir), id=run_id, resume="allow", **kwargs)


def start_run(logger, config: dict, module) -> None:
    """The resolved config as the W&B run's config (rank 0), instead of the module's constructor
    arguments Lightning would log over it (same names, other contents). Other loggers: nothing."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        module.save_hyperparameters(module.hparams, logger=False)  # the same hyper-parameters, not sent to the logger
        logger.log_hyperparams(config)


def end_run(logger, summary: dict | None = None) -> None:
    """Put the job's final numbers (eval_at_end's metrics.json) into the W&B run's summary and
    finish the run, so the next job of a sweep run in the same process (Hydra's basic launcher)
    starts its own run instead of logging into this one. Other loggers: nothing."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    if not isinstance(logger, WandbLogger) or rank_zero_only.rank != 0:
        return
    if started_experiment(logger) is None and not summary:
        return  # no run was started in this process (e.g. ddp_spawn's workers held it)
    run = logger.experiment
    if summary:
        run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
    run.finish()
    forget_experiment(logger)


class CSVLogger(_CSVLogger):
    """Lightning's CSVLogger, append-only across resumes: `<save_dir>/<name>/metrics.csv` keeps every
    earlier row; `keep_before_step` (set by difflab-train when it resumes from a checkpoint at that
    step) drops the rows the killed run logged after its last checkpoint."""

    keep_before_step: int | None = None
    _difflab_kept_rows: bool = False  # the earlier rows are back in metrics.csv

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._difflab_kept_rows:
            return super().experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        header, rows = None, []
        if path.is_file():  # Lightning's writer deletes it when it starts: read it first
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header, rows = list(reader.fieldnames or []), list(reader)
            if self.keep_before_step is not None:
                rows = [r for r in rows if not r.get("step") or float(r["step"]) < self.keep_before_step]
        with warnings.catch_warnings():  # "Previous log files in this directory will be deleted": not here
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            writer = super().experiment
        if header is not None:
            with atomic_write(path, "w") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = header  # new rows are appended under this header (or rewrite it)
        self._difflab_kept_rows = True
        return writer
