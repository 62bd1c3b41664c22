"""A newcomer's console: default train / sample / eval runs print no warning, no
advertisement and no deprecation notice; the model summary is one line; `--help` names the command.

The commands are the defaults with small sizes only (steps, sample counts, Monte Carlo draws).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"warn|litlogger|deprecat", re.IGNORECASE)


def _cmd(script: str, module: str) -> list[str]:
    """The installed console script (what a user types), or `python -m` where it is not installed."""
    exe = Path(sys.executable).parent / script
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", f"difflab.cli.{module}"]


def _run(script: str, module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HYDRA_FULL_ERROR")}
    env["WANDB_MODE"] = "disabled"
    return subprocess.run([*_cmd(script, module), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _quiet(r: subprocess.CompletedProcess) -> str:
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    noisy = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy)
    return text


@pytest.mark.slow  # three processes, ~40 s on a busy 2-core machine
def test_default_train_sample_eval_print_no_warning(tmp_path):
    run = tmp_path / "gmm"
    text = _quiet(_run("difflab-train", "train", "experiment=gmm", "trainer.max_steps=50", f"output={run}", cwd=tmp_path))
    summary = [line for line in text.splitlines() if "model:" in line]
    assert len(summary) == 1 and re.search(r"model: Denoiser\(MLP\) [\d.]+K parameters", summary[0]), text
    assert "┃" not in text and "Total params" not in text  # no Lightning summary table
    # a resume mid-epoch: difflab's StepSampler continues exactly, so Lightning's "not resumable" is wrong here
    text = _quiet(_run("difflab-train", "train", f"resume={run}", "trainer.max_steps=60", cwd=tmp_path))
    assert "resuming" in text
    _quiet(_run("difflab-sample", "sample", "model=oracle", "num_samples=256", f"output={tmp_path / 's'}", cwd=tmp_path))
    assert (tmp_path / "s" / "samples.npz").is_file()
    _quiet(_run("difflab-eval", "evaluate", "mc_samples=20000", "num_eval=256", "num_samples=256",
                f"output={tmp_path / 'e'}", cwd=tmp_path))
    assert (tmp_path / "e" / "metrics.json").is_file()


@pytest.mark.parametrize("script,module", [("difflab-train", "train"), ("difflab-sample", "sample"),
                                           ("difflab-eval", "evaluate"), ("difflab-tune-grid", "tune_grid")])
def test_help_names_the_command(tmp_path, script, module):
    r = _run(script, module, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = r.stdout.lstrip().splitlines()[:2]
    assert first and first[0].startswith(f"{script}:"), r.stdout[:300]
    assert "common" not in " ".join(first)
