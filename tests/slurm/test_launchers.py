"""Sweeps through hydra-submitit-launcher (difflab's subclass, hydra_plugins/difflab_launchers),
locally (hydra/launcher=submitit_local) and on a real one-node SLURM (hydra/launcher=slurm).

A 3-job sweep (gmm recipe, a few steps) over optim.lr = 1e-3, 1e30, 2e-3, where lr = 1e30 makes
the loss inf at step 1 (a real divergence, refused by difflab-train): each job trains in its own
directory named after its override; the other two keep their metrics.json; the sweep ends with a
non-zero status and one line naming the failed job; difflab-report shows it as a row with its
state; the same command again touches only the failed job (mtimes). A job killed with SIGKILL is
recorded as failed by the launcher and the others finish; fail_fast=true cancels the rest at the
first failure; on SLURM, wait=false returns at once with the jobs queued or running, and the
report made after they end equals the waited-for sweep's. On that SLURM, `scontrol requeue` of a
running job resumes it from its own last.ckpt, and it ends bit-identical to an uninterrupted run."""
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from cluster import job_env, job_folder, job_state, slurm, wait_until  # noqa: F401  (slurm: the session fixture)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ROOT = Path(__file__).resolve().parents[2]
COMMON = ["experiment=gmm", "process=continuous_snr", "schedule=cosine", "weighting=simple", "trainer.max_steps=4",
          "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "checkpoint_every=0", "logger=csv", "eval_at_end=[swd]",
          "evaluation.num_samples=64", "evaluation.num_reference=256", "sampler.steps=4"]
SWEEP = ["optim.lr=1e-3,1e30,2e-3", *COMMON]


def common(**changed) -> list[str]:
    """COMMON with some values changed (trainer.max_steps -> trainer__max_steps=...)."""
    changed = {k.replace("__", "."): v for k, v in changed.items()}
    return [o if o.split("=")[0] not in changed else f"{o.split('=')[0]}={changed[o.split('=')[0]]}" for o in COMMON]
NAMES = {"0.001": "done", "1e+30": "failed", "0.002": "done"}  # Hydra writes the swept floats back like this


def _cmd(out: Path, launcher: list[str], sweep=SWEEP):
    return [sys.executable, "-m", "difflab.cli.train", "-m", *launcher, *sweep, f"output={out}"]


def _mtimes(job: Path) -> dict[str, int]:
    return {p.relative_to(job).as_posix(): p.stat().st_mtime_ns for p in sorted(job.rglob("*")) if p.is_file()}


def _failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("difflab-train: failed: ")]


def report_rows(out: Path, env) -> list[str]:
    """difflab-report's table rows (the lines that start with '| ' below the header) of a sweep."""
    r = subprocess.run([sys.executable, "-m", "difflab.cli.report", str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = (out / "report.md").read_text().splitlines()
    return [line for line in lines if line.startswith("| ") and not line.startswith("| optim.lr")]


def run_sweep(out: Path, launcher: list[str], env=None) -> list[str]:
    """The 3-job sweep with its failing job (module docstring); returns the report's rows."""
    env = job_env(env)
    cmd = _cmd(out, launcher)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
    names = [f"optim.lr={lr}" for lr in NAMES]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(["multirun.yaml", *names])
    failed = out / "optim.lr=1e+30"
    error = json.loads((failed / "failed.json").read_text())["error"]
    assert "training loss is inf" in error
    assert _failed_lines(r.stderr) == [f"difflab-train: failed: {failed}: {error}"], r.stderr[-3000:]
    written = {}
    for lr, state in NAMES.items():
        job = out / f"optim.lr={lr}"
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        assert float(cfg["optim"]["lr"]) == float(lr)  # named after its override
        if state == "done":
            assert (job / "checkpoints" / "last.ckpt").is_file()
            assert "swd" in json.loads((job / "metrics.json").read_text())  # each job ends with its numbers
        written[lr] = _mtimes(job)
    rows = report_rows(out, env)
    assert [row.split(" | ")[:2] for row in rows] == [["| 0.001", "done"], ["| 0.002", "done"], ["| 1e+30", "failed"]], rows
    assert (out / "loss_curves.png").is_file()
    time.sleep(0.05)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 1 and _failed_lines(again.stderr) == _failed_lines(r.stderr), again.stderr[-3000:]
    for lr in ("0.001", "0.002"):  # finished: nothing rewritten
        assert _mtimes(out / f"optim.lr={lr}") == written[lr], lr
    assert _mtimes(failed)["failed.json"] > written["1e+30"]["failed.json"]  # the failed job ran again
    return rows


def _lock_holder(job: Path) -> int | None:
    """The pid that holds a running job's `.lock` (its flock, read from /proc/locks): the job's own process."""
    try:
        inode = (job / ".lock").stat().st_ino
        locks = Path("/proc/locks").read_text()
    except FileNotFoundError:
        return None
    m = re.search(rf"FLOCK\s+ADVISORY\s+WRITE\s+(\d+)\s+\S+:{inode}\s", locks)
    return int(m.group(1)) if m else None


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    run_sweep(tmp_path / "sweep", ["hydra/launcher=submitit_local"])


@pytest.mark.slow
def test_a_killed_job_and_fail_fast_through_submitit_local(tmp_path):
    """SIGKILL of one job's process (no word from it): the launcher records it as failed and the
    other jobs finish. Then fail_fast=true: the first job fails at step 1 and the second, still
    training, is cancelled."""
    env = job_env()
    out = tmp_path / "killed"
    sweep = subprocess.Popen(_cmd(out, ["hydra/launcher=submitit_local"], common(trainer__max_steps="4,100000,5")),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    long_job = out / "trainer.max_steps=100000"
    try:
        pid = wait_until("the long job's process", lambda: _lock_holder(long_job), 180, sweep)
        wait_until("the long job's training", lambda: (long_job / "logs" / "metrics.csv").is_file(), 120, sweep)
        os.kill(pid, signal.SIGKILL)
        _, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 1, err[-3000:]
    record = json.loads((long_job / "failed.json").read_text())
    assert record["error"].startswith("the job ended without a result (killed, out of memory or past its time limit)")
    assert _failed_lines(err) == [f"difflab-train: failed: {long_job}: {record['error']}"]
    for steps in (4, 5):
        assert (out / f"trainer.max_steps={steps}" / "metrics.json").is_file()

    out = tmp_path / "fail_fast"
    t0 = time.time()
    r = subprocess.run(_cmd(out, ["hydra/launcher=submitit_local"], ["optim.lr=1e30,1e-3", *common(trainer__max_steps=100000), "fail_fast=true"]),
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1 and "fail_fast=true: the sweep stopped at its first failed job" in r.stderr, r.stderr[-3000:]
    assert len(_failed_lines(r.stderr)) == 1 and "optim.lr=1e+30" in _failed_lines(r.stderr)[0]
    assert not (out / "optim.lr=0.001" / "metrics.json").exists()  # cancelled long before its 100,000 steps
    assert time.time() - t0 < 240
    time.sleep(2)
    assert _lock_holder(out / "optim.lr=0.001") is None  # and its process is gone


@pytest.mark.slow
def test_sweep_through_slurm(tmp_path, slurm):
    """The failing 3-job sweep on SLURM; and the same sweep with wait=false, submitted first: it
    returns in under 10 s with its jobs queued or running, and its report, once they end, has the
    waited-for sweep's rows."""
    launcher = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
    env = job_env(slurm.env)
    nowait = tmp_path / "nowait"
    t0, used0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(_cmd(nowait, [*launcher, "hydra.launcher.wait=false"]), capture_output=True, text=True, timeout=120, env=env)
    took, used = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime - used0.ru_utime) + (used.ru_stime - used0.ru_stime)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m = re.search(r"submitted 3 jobs \(([\d_ ]+)\) without waiting", r.stdout)
    assert m and str(nowait) in r.stdout, r.stdout[-2000:]
    # it returned at once: the submitting process composes and checks the 3 jobs and submits them,
    # under 10 s of its own CPU time (wall time on a machine running other tests is not the command's;
    # 6.5 s of wall time measured under load, docs/studies.md)
    print(f"wait=false returned after {took:.1f} s ({cpu:.1f} s CPU)")
    assert cpu < 10 and took < 30, f"wait=false took {took:.1f} s ({cpu:.1f} s CPU) to submit 3 jobs"
    # it did not wait: every job is still queued or running, none has its results (each takes ~10 s here)
    queue = subprocess.run(["squeue", "-h", "-o", "%i %t"], capture_output=True, text=True, env=slurm.env).stdout.split("\n")
    array = m.group(1).split()[0].split("_")[0]  # one job array; squeue may fold pending tasks into 12_[1-2]
    assert any(line.startswith(array + "_") for line in queue), (m.group(1), queue, f"{took:.1f} s")
    assert not list(nowait.glob("*/metrics.json")), f"a job finished before wait=false returned ({took:.1f} s)"

    rows = run_sweep(tmp_path / "sweep", launcher, env=slurm.env)  # queued behind the wait=false jobs
    wait_until("the wait=false jobs to end", lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True,
                                                                   env=slurm.env).stdout.strip(), 300)
    assert report_rows(nowait, env) == rows


# a small gmm run (tests/reliability's criterion: bit-identical final state after STEPS steps)
REQUEUE_RUN = ["experiment=gmm", "model.hidden=16", "model.depth=1", "callbacks=none", "threads=1", "checkpoint_every=25",
               "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=5"]
REQUEUE_STEPS = 1500


@pytest.mark.slow
def test_scontrol_requeue_resumes_from_last_ckpt(tmp_path, slurm):
    """`scontrol requeue` kills the running job (SIGTERM, then SIGKILL after KillWait) and queues it
    again with SLURM_RESTART_COUNT=1; the job's SaveLast writes last.ckpt at the current step on
    SIGTERM, and the requeued job resumes from it in its own directory. Resume is exact, so the final
    weights, EMA, optimiser state and logged rows equal an uninterrupted run's bit for bit."""
    from helpers.checkpoints import assert_same_state, rows

    env = dict(slurm.env, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    run = [*REQUEUE_RUN, f"trainer.max_steps={REQUEUE_STEPS}"]
    out, ref = tmp_path / "sweep", tmp_path / "reference"
    train = [sys.executable, "-m", "difflab.cli.train"]
    sweep = subprocess.Popen([*train, "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
                              *run, f"output={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    reference = subprocess.Popen([*train, *run, f"output={ref}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    job_id = None
    try:
        job_id = wait_until("SLURM job", lambda: job_folder(out / ".submitit"), 120, sweep)
        ckpt = wait_until("last.ckpt", lambda: next(out.glob("**/checkpoints/last.ckpt"), None), 180, sweep)
        job = ckpt.parents[1]
        time.sleep(1.0)
        assert job_state(job_id, slurm.env).get("JobState") == "RUNNING"
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, env=slurm.env)
        assert r.returncode == 0, r.stderr
        # a requeued job waits for a begin time ~2 min ahead; let it start now
        wait_until("pending requeued job", lambda: job_state(job_id, slurm.env).get("JobState") == "PENDING", 90, sweep)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, env=slurm.env)
        _, err = sweep.communicate(timeout=400)
        assert sweep.returncode == 0, err[-3000:]
        _, ref_err = reference.communicate(timeout=400)
        assert reference.returncode == 0, ref_err[-3000:]
    finally:
        for p in (sweep, reference):
            if p.poll() is None:
                p.kill()
        if job_id and sweep.returncode != 0:
            subprocess.run(["scancel", job_id], env=slurm.env)
    assert job_state(job_id, slurm.env).get("Restarts") == "1"
    log = "".join(p.read_text() for p in (out / ".submitit" / job_id).glob("*_log.err"))
    stopped = re.search(r"SIGTERM at step (\d+)", log)
    resumed = re.search(rf"resuming {re.escape(str(job))} from step (\d+) \({re.escape(str(ckpt))}\)", log)
    assert stopped and resumed, log[-3000:]
    assert 0 < int(stopped.group(1)) == int(resumed.group(1)) < REQUEUE_STEPS  # it resumed mid-run, from its own last.ckpt
    final = {d: torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (job, ref)}
    assert_same_state(final[job], final[ref], steps=REQUEUE_STEPS)
    assert rows(job) == rows(ref)  # every logged row once, none lost, none repeated
