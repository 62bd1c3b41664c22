"""`SaveLast`: the run's `last.ckpt`, written atomically every N optimiser steps, at the end, and
when the run is interrupted (SIGTERM, SIGUSR1 — SLURM's warning signal — or Ctrl-C)."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from ..compat import realign_logging_step
from .divergence import DivergenceStop

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
    requeued (`scontrol requeue`) and resumes from this checkpoint in its own directory.

    Divergence: a diverged state never replaces last.ckpt. difflab-train puts a `DivergenceStop`
    before this callback (`divergence_factor=None` here); used on its own, SaveLast runs one
    (`divergence_factor`) before each save."""

    def __init__(self, dirpath: str | os.PathLike, every: int = 0, requeue: bool = True,
                 divergence_factor: float | None = 1000.0):
        if int(every) < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: only at the end), got {every}")
        self.dirpath, self.every, self.requeue = Path(dirpath), int(every), bool(requeue)
        self.saved_step = -1  # the step last.ckpt holds (-1: none written by this run)
        self.divergence = DivergenceStop(divergence_factor, checkpoint=self) if divergence_factor is not None else None
        self.interrupted_by: int | None = None
        self._previous: dict = {}
        self._trainer = None

    def _save(self, trainer) -> None:
        if trainer.global_step == self.saved_step or trainer.sanity_checking:
            return
        self.saved_step = trainer.global_step
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
        realign_logging_step(trainer)  # a resumed run logs the same steps under the same numbers
        self._check_divergence(trainer)
        signum = self._agreed_interrupt(trainer)
        if signum is not None:
            self._save(trainer)
            raise Interrupted(signum, trainer.global_step)
        if self.every and trainer.global_step and trainer.global_step % self.every == 0:
            self._save(trainer)

    #: DDP: the steps at which the ranks compare signals (global_step a multiple of this)
    AGREE_EVERY = 10

    def _agreed_interrupt(self, trainer) -> int | None:
        """The signal to stop on now, or None. One process: the signal it received. DDP: every rank
        stops at the same step. SLURM signals each task of a job on its own (scancel --signal,
        scontrol requeue), so one rank may see the signal a step before another; stopping alone, it
        would wait in `_save`'s barrier while the other waits in the step's gradient all-reduce (a
        hang until SIGKILL). So the ranks share what they received (one tiny all-reduce of the
        signal number, max) every `AGREE_EVERY` steps — the same step on every rank — and all stop
        there: a rank that was signalled trains on until then (at most AGREE_EVERY - 1 steps, well
        inside SLURM's grace time), and on a GPU the all-reduce's host sync costs one step in ten,
        not every step."""
        if getattr(trainer, "world_size", 1) <= 1:  # one process (or a trainer stand-in without one)
            return self.interrupted_by
        if trainer.global_step % self.AGREE_EVERY:
            return None
        import torch

        mine = torch.tensor([self.interrupted_by or 0], device=trainer.strategy.root_device)
        signum = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if not signum:
            return None
        if self.interrupted_by is None:
            self.interrupted_by = signum
        return signum

    def _check_divergence(self, trainer) -> None:
        if self.divergence is not None:
            self.divergence.check(trainer)

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
