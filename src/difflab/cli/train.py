"""`difflab-train`: compose the config, build data + DiffusionModule + Trainer, fit.

    difflab-train experiment=digits output=runs/digits
    difflab-train resume=runs/digits trainer.max_steps=20000    # resume, with the run's own config

Writes `<output>/config.yaml` (the resolved config) and `<output>/checkpoints/last.ckpt`
(every `checkpoint_every` steps and at the end). Every check that can fail on user input
(unknown option, data root, model/data shape, an existing run directory) runs before
anything is written; failures print one line and exit with status 2. The work is
`difflab.training.train`.
"""
from __future__ import annotations

from pathlib import Path

from ..runs import secondary_process  # noqa: F401 - imported from here by the DDP tests
from .common import sweep_dir, task_overrides
from .entry import hydra_entry


def train(cfg, out: Path):
    """`training.train` with this command line's overrides and -m sweep (none under the compose API).
    torch and Lightning are imported here, in the process that trains, not in a `-m` sweep's
    submitting process (hydra.launcher.wait=false on SLURM; its cost: docs/studies.md)."""
    from .. import training

    sweep = sweep_dir()
    return training.train(cfg, out, overrides=task_overrides(), sweep=sweep.name if sweep else None)


def run(cfg, out: Path) -> None:
    import torch

    torch.set_float32_matmul_precision("high")
    train(cfg, out)


main = hydra_entry("train", "difflab-train")(run)

if __name__ == "__main__":
    main()
