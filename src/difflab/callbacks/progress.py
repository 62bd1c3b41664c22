"""Progress people can read: a rich bar counting optimiser steps (`step 325/3000`) on a terminal,
plain log lines when the output is a file (SLURM, nohup, CI)."""
from __future__ import annotations

import sys
import time

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from ..compat import train_bar_description


def _step_description(bar) -> str | None:
    t = bar.trainer
    if t is not None and t.max_steps and t.max_steps > 0:
        return f"step {t.global_step}/{t.max_steps}"
    return None  # no step limit: Lightning's own description


@train_bar_description(_step_description)
class StepRichProgressBar(RichProgressBar):
    """Lightning's rich bar, described by optimiser steps instead of "Epoch 999/-2"."""


class StepProgress(ProgressBar):
    """One plain line every `every` optimiser steps and at the end of training:
    `step 325/3000  loss 0.4123  45.3 steps/s  eta 59s`."""

    def __init__(self, every: int = 100, stream=None):
        super().__init__()
        self.every, self.stream, self._enabled = max(1, int(every)), stream, True
        self._t0 = self._step0 = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _line(self, trainer) -> str:
        step, total = trainer.global_step, trainer.max_steps
        rate = (step - self._step0) / max(time.perf_counter() - self._t0, 1e-9)
        parts = [f"step {step}/{total}" if total and total > 0 else f"step {step}"]
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4g}")
        parts.append(f"{rate:.1f} steps/s")
        if total and total > 0 and rate > 0:
            parts.append(f"eta {int((total - step) / rate)}s")
        return "  ".join(parts)

    def _print(self, trainer) -> None:
        if self._enabled and trainer.is_global_zero:
            print(self._line(trainer), file=self.stream or sys.stderr, flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self._print(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step % self.every:
            self._print(trainer)


def progress_bar(refresh_rate: int = 10, every: int = 100, plain: bool | None = None):
    """The rich step bar on a terminal, `StepProgress` lines otherwise (`plain` forces one)."""
    plain = not sys.stderr.isatty() if plain is None else bool(plain)
    return StepProgress(every=every) if plain else StepRichProgressBar(refresh_rate=refresh_rate)
