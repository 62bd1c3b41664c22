"""`DivergenceStop`: stop a run whose logged training loss explodes, before a checkpoint of the
diverged state can replace the last sound one."""
from __future__ import annotations

import math
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class DivergenceStop(Callback):
    """Raises FloatingPointError (difflab-train: one line, exit status 2) when a logged training
    loss is not finite or exceeds `factor` × the median of the earlier logged ones (once five
    are known). Checked between optimiser steps and at the end of training.

    Put it before the checkpoint callback (difflab-train puts it before `SaveLast`): callbacks run
    in list order, so the run stops before last.ckpt is overwritten and keeps the last sound
    state. `checkpoint` (the `SaveLast`, optional) names that file and its step in the message."""

    def __init__(self, factor: float = 1000.0, checkpoint=None):
        if not float(factor) > 1:
            raise ValueError(f"divergence_factor must be > 1, got {factor}")
        self.factor, self.checkpoint = float(factor), checkpoint
        self._losses: list[float] = []
        self._seen: int | None = None

    def check(self, trainer) -> None:
        """A new logged loss (one per optimiser step at most) against the running median."""
        value = trainer.callback_metrics.get("train/loss")
        if value is None or trainer.global_step == self._seen:
            return
        self._seen, value = trainer.global_step, float(value)
        history = sorted(self._losses)
        median = history[len(history) // 2] if len(history) >= 5 else None
        self._losses.append(value)
        if not math.isfinite(value) or (median is not None and value > self.factor * max(median, 1e-12)):
            raise FloatingPointError(
                f"training diverged: loss {value:.3g} at step {trainer.global_step} (running median {median if median is not None else float('nan'):.3g}, "
                f"divergence_factor={self.factor:g}); the learning rate is likely too high: lower optim.lr "
                f"(or set trainer.gradient_clip_val){self._kept()}")

    def _kept(self) -> str:
        if self.checkpoint is None:
            return ""
        return f"; {Path(self.checkpoint.dirpath) / 'last.ckpt'} keeps step {max(self.checkpoint.saved_step, 0)}"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.check(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.check(trainer)
