"""`SaveLast`: the run's `last.ckpt`, written atomically every N optimiser steps, at the end, and
when the run is interrupted (SIGTERM, SIGUSR1 — SLURM's warning signal — or Ctrl-C)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGINT", None), getattr(signal, "SIGUSR1", None)) if s)


class Interrupted(BaseException):
    """Raised between optimiser steps after SIGTERM / SIGUSR1 / SIGINT, once last.ckpt holds the
    state at `step`; difflab-train turns it into exit status 128 + signal (or a SLURM requeue)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step = int(signum), int(step)


class SaveLast(Callback):
    """Writes `<dirpath>/last.ckpt` every `every` optimiser steps and at the end of training, on
    every strategy (ddp_spawn included: it runs inside the workers). The file is written under a
    temporary name unique to the process and renamed onto last.ckpt, so a kill during the write
    leaves the previous checkpoint intact.

    Interrupts: SIGTERM, SIGINT and SIGUSR1 let the current optimiser step finish (its EMA update
    and logged row included), save last.ckpt at that step and raise `Interrupted`; difflab-train
    exits with status 128 + signal. Under SLURM (`SLURM_JOB_ID` set) with `requeue=True` the job is
    requeued (`scontrol requeue`) and resumes from this checkpoint in its own directory."""

    def __init__(self, dirpath: str | os.PathLike, every: int = 0, requeue: bool = True, divergence_factor: float = 1000.0):
        if int(every) < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only at the end), got {every}")
        if not float(divergence_factor) > 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
        self.dirpath, self.every, self.requeue, self._saved_step = Path(dirpath), int(every), bool(requeue), -1
        self.divergence_factor, self._losses, self._seen = float(divergence_factor), [], None
        self.interrupted_by: int | None = None
        self._previous: dict = {}
        self._trainer = None

    def _save(self, trainer) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        self._saved_step = trainer.global_step
        for logger in trainer.loggers:  # the rows up to this step reach the disk with the checkpoint
            logger.save()
        path = self.dirpath / "last.ckpt"
        tmp = self.dirpath / f".last.ckpt.{os.getpid()}.tmp"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier()
        trainer.save_checkpoint(tmp, weights_only=False)  # full state, to resume
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier()

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer, self.interrupted_by = trainer, None
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        """Note the signal; the run stops before its next optimiser step (`on_train_batch_start`)."""
        if self.interrupted_by is not None and signum == getattr(signal, "SIGINT", None):
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.interrupted_by = signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        """Checkpoints are taken between optimiser steps, once the previous step is complete: its
        weights, EMA update and logged row (flushed first) are all in it, so a resumed run repeats
        and loses nothing."""
        # A checkpoint taken between steps restores Lightning's logging counter one ahead of the
        # optimiser step (it counts the batch that was about to start): re-align it, so a resumed
        # run logs the same steps, under the same step numbers, as an uninterrupted run.
        loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
        if getattr(trainer, "accumulate_grad_batches", 1) == 1 and getattr(loop, "_batches_that_stepped", None) not in (None, trainer.global_step):
            loop._batches_that_stepped = trainer.global_step
        self._check_divergence(trainer)
        if self.interrupted_by is not None:
            self._save(trainer)
            raise Interrupted(self.interrupted_by, trainer.global_step)
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self._save(trainer)

    def _check_divergence(self, trainer) -> None:
        """A logged training loss above `divergence_factor` × the median of the earlier logged ones
        (or not finite) stops the run before last.ckpt is overwritten: it keeps the last sound state."""
        value = trainer.callback_metrics.get("train/loss")
        if value is None or trainer.global_step == self._seen:
            return
        self._seen, value = trainer.global_step, float(value)
        history = sorted(self._losses)
        median = history[len(history) // 2] if len(history) >= 5 else None
        self._losses.append(value)
        if not math.isfinite(value) or (median is not None and value > self.divergence_factor * max(median, 1e-12)):
            raise FloatingPointError(
                f"training diverged: loss {value:.3g} at step {trainer.global_step} (running median {median if median is not None else float('nan'):.3g}, "
                f"divergence_factor={self.divergence_factor:g}); the learning rate is likely too high: lower optim.lr "
                f"(or set trainer.gradient_clip_val); {self.dirpath / 'last.ckpt'} keeps step {max(self._saved_step, 0)}")

    def on_train_end(self, trainer, pl_module) -> None:
        self._check_divergence(trainer)
        self._save(trainer)
        self._restore_handlers()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_handlers()
        if isinstance(exception, Interrupted) and self.requeue and os.environ.get("SLURM_JOB_ID") and trainer.is_global_zero:
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        self._previous = {}
