"""Fault injection through the real CLIs: helpers shared by tests/reliability/."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# a small gmm run: 1 thread, tiny MLP, frequent logging, periodic checkpoints
TINY = ["experiment=gmm", "data.num_train=2048", "data.num_val=64", "data.batch_size=32", "model.hidden=16", "model.depth=1",
        "model.emb_dim=16", "callbacks=none", "threads=1", "trainer.val_check_interval=100000", "trainer.log_every_n_steps=5",
        "+trainer.enable_progress_bar=false"]
# how many random kill points per fault kind (the issue asks >= 10 / >= 20; CI runs fewer, see docs)
REPEATS = int(os.environ.get("DIFFLAB_FAULT_REPEATS", "2"))


def env():
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", WANDB_MODE="disabled")


MODULES = {"train": "train", "sample": "sample", "eval": "evaluate"}


def cli(module: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"difflab.cli.{MODULES[module]}", *args], capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=timeout)


def run_main(prog: str, args, capsys, monkeypatch) -> tuple[int, str]:
    """A console script in this process (no interpreter start-up): (exit status, stderr)."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    module = importlib.import_module(f"difflab.cli.{MODULES[prog]}")
    monkeypatch.setattr(sys, "argv", [f"difflab-{prog}", *args])
    capsys.readouterr()
    try:
        module.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def start(module: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"difflab.cli.{MODULES[module]}", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=ROOT)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def error_line(stderr: str) -> list[str]:
    """The non-empty stderr lines that are not library warnings."""
    return [ln for ln in stderr.strip().splitlines() if ln.strip() and "Warning" not in ln and not ln.startswith("  ")]


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


@pytest.fixture(scope="session")
def gmm_run(tmp_path_factory):
    """One finished tiny gmm run (20 steps), shared read-only by the tests."""
    out = tmp_path_factory.mktemp("gmm") / "run"
    r = cli("train", *TINY, "trainer.max_steps=20", "checkpoint_every=10", f"output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out
