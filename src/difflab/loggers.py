"""Experiment loggers built from config (`conf/logger/`)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


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
