"""Runs that lose nothing: SIGTERM, SIGUSR1 (SLURM's warning signal) and Ctrl-C save last.ckpt at
the current step and exit 128 + signal; SIGKILL loses only the steps since the last periodic
checkpoint. Resuming with the one documented command (resume=<run dir>) then ends bit-identical
to an uninterrupted run: weights, EMA with its update count, optimiser, LR schedule, step, and
the logged rows. Kill points are drawn uniformly over the whole run (the signal is sent once
the run's own checkpoint has passed the drawn step), and the resume must start from the step the
interrupted run saved; DIFFLAB_FAULT_REPEATS sets how many per signal."""
import random
import signal
import time

import pytest
import torch

from helpers import checkpoints
from helpers.checkpoints import WORKERS, rows

from .conftest import REPEATS, TINY, cli, start, wait_for

pytestmark = pytest.mark.slow
STEPS = 1500
RUN = [*TINY, "checkpoint_every=25"]


def final_state(run):
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ck


def assert_same_state(a, b, steps=STEPS):
    checkpoints.assert_same_state(a, b, steps)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = cli("train", *RUN, f"trainer.max_steps={STEPS}", f"output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def saved_step(path) -> int:
    """The step of a last.ckpt (written atomically: a reader sees the old or the new file)."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def wait_for_step(path, proc, step: int, timeout: float = 120) -> None:
    """Until the run's checkpoint holds `step` or later (or the run has ended)."""
    t0 = time.time()
    while proc.poll() is None and saved_step(path) < step:
        assert time.time() - t0 < timeout, f"step {step} not reached in {timeout} s"
        time.sleep(0.02)


def interrupt_and_resume(tmp_path, reference, sig, seed):
    rng = random.Random(seed)
    out = tmp_path / f"run{seed}"
    kill_at = rng.randrange(25, STEPS - 100)  # anywhere in the run, not just after its first checkpoint
    proc = start("train", *RUN, f"trainer.max_steps={STEPS}", f"output={out}")
    wait_for(out / "checkpoints" / "last.ckpt", proc)  # training runs (and the signal handlers are in place)
    wait_for_step(out / "checkpoints" / "last.ckpt", proc, kill_at)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    ck = final_state(out)
    if ck["global_step"] == STEPS:  # it finished before the signal arrived: nothing to resume
        return None
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, err[-2000:]
        assert f"resume={out}" in err
        assert ck["ema"]["num_updates"] == ck["global_step"] > 0  # the EMA update of the saved step is in it
    step = ck["global_step"]
    assert step >= kill_at  # the signal came after a checkpoint at the drawn step or later
    if sig == signal.SIGKILL:
        assert step % 25 == 0  # only the periodic checkpoints survive a SIGKILL
    r = cli("train", f"resume={out}")  # the one documented command: no option repeated
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {out} from step {step} " in r.stderr, r.stderr[-2000:]  # from the saved step, no other
    assert_same_state(final_state(out), final_state(reference))
    assert rows(out) == rows(reference)  # every logged row once, none lost, none repeated
    return step


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_interrupt_then_resume_is_exact(tmp_path, reference, sig):
    steps = [interrupt_and_resume(tmp_path, reference, sig, seed) for seed in range(REPEATS)]
    assert any(s is not None and 0 < s < STEPS for s in steps), steps  # at least one real interruption


@pytest.fixture(scope="module")
def reference_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref_workers") / "run"
    r = cli("train", *WORKERS, f"output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: signal.Signals(s).name)
def test_signal_to_the_whole_process_group_with_loader_workers(tmp_path, reference_workers, sig):
    """SLURM (at preemption, time limit, scancel) and `timeout` signal every process of the job,
    DataLoader workers included: the run must still save at the signal's step and exit 128 + signal
    (not die in 'DataLoader worker is killed by signal'), and resume bit-identical."""
    import os
    import subprocess
    import sys

    from .conftest import MODULES, ROOT, env

    out = tmp_path / "run"
    kill_at = random.Random(int(sig)).randrange(50, 300)
    proc = subprocess.Popen([sys.executable, "-m", f"difflab.cli.{MODULES['train']}", *WORKERS, f"output={out}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, start_new_session=True)
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    wait_for_step(out / "checkpoints" / "last.ckpt", proc, kill_at)
    assert proc.poll() is None, "the run ended before the signal"
    os.killpg(proc.pid, sig)  # every process of the group, as `timeout` and SLURM deliver it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "killed by signal" not in err and "Traceback" not in err, err[-2000:]
    step = saved_step(out / "checkpoints" / "last.ckpt")
    assert kill_at <= step < 400 and f"resume={out}" in err
    r = cli("train", f"resume={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {out} from step {step} " in r.stderr, r.stderr[-2000:]
    assert_same_state(final_state(out), final_state(reference_workers), steps=400)


def test_timeout_of_the_training_command_with_loader_workers(tmp_path, reference_workers):
    """`timeout -s TERM <limit> difflab-train ...`: GNU timeout runs the command in a process group of
    its own and, at the limit, signals that whole group (DataLoader workers included). A signal that
    timeout itself receives takes the same path (its handler sends the signal to the command and to
    the group), so the test signals timeout at a step it picks instead of guessing a wall-clock limit
    on a loaded machine. The run saves at that step, exits 143 through timeout, and resumes exactly."""
    import os
    import shutil
    import subprocess
    import sys

    from .conftest import MODULES, ROOT, env

    assert shutil.which("timeout"), "GNU coreutils' timeout is needed"
    out = tmp_path / "run"
    kill_at = random.Random(15).randrange(50, 300)
    proc = subprocess.Popen(["timeout", "-s", "TERM", "900", sys.executable, "-m", f"difflab.cli.{MODULES['train']}", *WORKERS,
                             f"output={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    wait_for_step(out / "checkpoints" / "last.ckpt", proc, kill_at)
    assert proc.poll() is None, "the run ended before the signal"
    os.kill(proc.pid, signal.SIGTERM)  # to timeout, which signals the command's whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "killed by signal" not in err and "Traceback" not in err, err[-2000:]
    step = saved_step(out / "checkpoints" / "last.ckpt")
    assert kill_at <= step < 400 and f"resume={out}" in err
    r = cli("train", f"resume={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {out} from step {step} " in r.stderr, r.stderr[-2000:]
    assert_same_state(final_state(out), final_state(reference_workers), steps=400)
