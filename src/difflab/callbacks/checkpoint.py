"""`SaveLast`: the run's `last.ckpt`, written atomically every N optimiser steps and at the end."""
from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SaveLast(Callback):
    """Writes `<dirpath>/last.ckpt` every `every` optimiser steps and at the end of training, on
    every strategy (ddp_spawn included: it runs inside the workers). The file is written under a
    temporary name unique to the process and renamed onto last.ckpt, so a kill during the write
    leaves the previous checkpoint intact."""

    def __init__(self, dirpath: str | os.PathLike, every: int = 0):
        if int(every) < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only at the end), got {every}")
        self.dirpath, self.every, self._saved_step = Path(dirpath), int(every), -1

    def _save(self, trainer) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        self._saved_step = trainer.global_step
        path = self.dirpath / "last.ckpt"
        tmp = self.dirpath / f".last.ckpt.{os.getpid()}.tmp"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier()
        trainer.save_checkpoint(tmp, weights_only=False)  # full state, to resume
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)
