"""Logs people can read: without a terminal (SLURM, nohup) progress is plain lines counting
optimiser steps, never "Epoch 999/-2"; the rich bar on a terminal counts steps too."""
import re
from types import SimpleNamespace

import pytest

from difflab.callbacks.progress import StepProgress, StepRichProgressBar, progress_bar

from .conftest import TINY, cli


@pytest.mark.slow
def test_plain_step_lines_when_not_a_terminal(tmp_path):
    r = cli("train", *[a for a in TINY if "enable_progress_bar" not in a], "callbacks=default", "trainer.max_steps=250",
            "callbacks.progress.every=100", f"output={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    steps = re.findall(r"^step (\d+)/250  loss [0-9.e+-]+  [0-9.]+ steps/s  eta \d+s$", r.stderr, flags=re.M)
    assert steps == ["100", "200", "250"], r.stderr[-2000:]
    assert "Epoch" not in r.stderr


def test_the_terminal_bar_counts_steps():
    bar = StepRichProgressBar()
    bar._trainer = SimpleNamespace(global_step=325, max_steps=3000)
    assert bar._get_train_description(999) == "step 325/3000"
    assert isinstance(progress_bar(plain=True), StepProgress) and isinstance(progress_bar(plain=False), StepRichProgressBar)
