"""DDP under SLURM tasks on the one-node SLURM the tests start (tests/slurm/cluster.py):
`difflab-train -m hydra/launcher=slurm hydra.launcher.tasks_per_node=2 hydra.launcher.cpus_per_task=1
trainer=ddp trainer.accelerator=cpu trainer.devices=2 ...` is one SLURM job whose 2 tasks (srun,
gloo on CPU) train one model; Lightning reads each task's rank from SLURM's environment
(SLURMEnvironment), and difflab-train's secondary_process() (SLURM_PROCID > 0) keeps task 1 from
checking, locking or writing the run directory.

1. The 2-task job trains the 1-process model (the config and criteria of tests/helpers/ddp.py,
   per_sample_noise=true, 4 items per task): the 1-process run that accumulates 2 micro-batches
   of 4 gives the same weights, EMA, samples and metrics bit for bit; the 1-process run with batch
   8 the same weights and EMA within atol 1e-5 (only float32 summation order differs; a wrong
   example or noise assignment moves a weight by ~lr = 1e-2 per step) and the same evaluation
   within 1e-5 of its scale. Exactly one copy of each output file (rank 0's), no `.lock`, nothing
   in the working directory; with logger=wandb (offline), exactly one W&B run.
2. `scontrol requeue` of the running 2-task job: both tasks get SIGTERM, save last.ckpt at one step
   (SaveLast shares the signal between ranks), the requeued job resumes from it, and it ends
   bit-identical to an uninterrupted 2-task job of the same config (also through SLURM).
   A signal that reaches one rank only (the others a step later, or never) stops every rank at one
   step too: the last test, without SLURM (trainer=ddp's own launcher, SIGTERM to rank 1 alone).
3. `scancel --signal=USR1` (SLURM's pre-timeout warning signal) of a job training the digits recipe
   with 2 DataLoader workers: last.ckpt at the signal's step, the job requeues itself (SaveLast),
   resumes from that step and ends bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cluster import job_env, job_folder, job_state, slurm, wait_until  # noqa: F401  (slurm: the session fixture)
from helpers.checkpoints import WORKERS, assert_same_state, rows
from helpers.ddp import ACCUMULATED, COMMON, ONE_PROCESS, RUN_FILES, assert_identical_run, assert_same_run, files

pytestmark = pytest.mark.slow
TIMEOUT = 300
SUBMIT = 180  # s until a -m command has submitted its job (Python, torch, Hydra start-up on a loaded 2-core machine)
TRAIN = [sys.executable, "-m", "difflab.cli.train"]
TWO_TASKS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4"]


def launcher(tasks: int = 2, cpus: int = 1) -> list[str]:
    return ["hydra/launcher=slurm", f"hydra.launcher.tasks_per_node={tasks}", f"hydra.launcher.cpus_per_task={cpus}",
            "hydra.launcher.timeout_min=10"]


def _popen(cmd: list[str], env, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _finish(procs: dict[str, subprocess.Popen], timeout: float = TIMEOUT) -> None:
    for name, p in procs.items():
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"{name} exited {p.returncode}: {err[-3000:]}"


LIVE = ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESIZING")


def _cancel(procs, job_ids, env) -> None:
    """Its commands killed if still running and its SLURM jobs cancelled (a finished job: a no-op)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for job_id in job_ids:  # only a job still queued or running: scancel of a COMPLETING job makes it CANCELLED
        if job_id and job_state(job_id, env).get("JobState") in LIVE:
            subprocess.run(["scancel", job_id], env=env, timeout=30, capture_output=True)


def _job_logs(job_dir: Path, job_id: str) -> dict[int, str]:
    """Each task's stderr (submitit: <id>_<task>_log.err)."""
    logs = sorted((job_dir / ".submitit" / job_id).glob(f"{job_id}_*_log.err"))
    return {int(p.name.split("_")[1]): p.read_text() for p in logs}


def _run_files(job_dir: Path) -> set[str]:
    """The run's own files: a job's directory less the launcher's (multirun.yaml, .submitit/)."""
    return {f for f in files(job_dir) if f != "multirun.yaml" and not f.startswith(".submitit/")}


def test_two_slurm_tasks_equal_one_process(tmp_path, slurm):  # noqa: F811
    env = job_env(slurm.env)
    one, acc, two, cwd = tmp_path / "one", tmp_path / "acc", tmp_path / "two", tmp_path / "cwd"
    cwd.mkdir()
    procs = {"2-task SLURM job": _popen([*TRAIN, "-m", *launcher(), *COMMON, *TWO_TASKS, f"output={two}"], env, cwd),
             "1 process": _popen([*TRAIN, *COMMON, *ONE_PROCESS, f"output={one}"], env, cwd),
             "1 process, 2 micro-batches": _popen([*TRAIN, *COMMON, *ACCUMULATED, f"output={acc}"], env, cwd)}
    job_id = None
    try:
        job_id = wait_until("SLURM job", lambda: job_folder(two / ".submitit"), SUBMIT, procs["2-task SLURM job"])
        _finish(procs)
    except BaseException:  # a failed or timed-out wait: nothing left running (a finished job is left alone)
        _cancel(procs.values(), [job_id], slurm.env)
        raise
    # the sweep returns once the tasks' results are in; SLURM may still show the job RUNNING or COMPLETING a moment
    state = wait_until("the job's end", lambda: (s := job_state(job_id, slurm.env)).get("JobState") not in (*LIVE, "COMPLETING") and s, 60)
    assert (state.get("JobState"), state.get("NumTasks"), state.get("Restarts")) == ("COMPLETED", "2", "0"), state
    logs = _job_logs(two, job_id)
    assert sorted(logs) == [0, 1]
    assert "Starting with 2 processes" in logs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]  # one 2-process group
    assert "model:" in logs[0] and "model:" not in logs[1]  # task 1 says nothing of its own

    assert_identical_run(acc, two)  # bit for bit: the 1-process run that accumulates the 2 tasks' micro-batches
    assert_same_run(one, two)  # batch 8 in one process: tests/helpers/ddp.py's tolerances

    # one copy of each file, rank 0's: no second config, no .lock, no lightning_logs/, no checkpoint temporary
    assert _run_files(two) == files(one) == files(acc) == RUN_FILES
    assert not (two / ".lock").exists() and list(cwd.iterdir()) == []
    lines = [(two / "logs" / "metrics.csv").read_text().splitlines(), (one / "logs" / "metrics.csv").read_text().splitlines()]
    assert len(lines[0]) == len(lines[1]) and lines[0][0] == lines[1][0]  # one writer: one header, one row per logged step


def test_two_slurm_tasks_log_one_wandb_run(tmp_path, slurm):  # noqa: F811
    """logger=wandb, offline (WANDB_MODE=offline), in the 2-task job: one W&B run, rank 0's, the one
    `wandb_run_id` names, finished, with one history row per logged step (not one per task) and
    eval_at_end's swd in its summary; task 1 opens none (tests/test_studies_wandb.py reads the run)."""
    pytest.importorskip("wandb")
    from helpers.wandb_files import read_run

    env = {k: v for k, v in job_env(slurm.env).items() if not k.startswith("WANDB_")}
    env["WANDB_MODE"] = "offline"  # with logger.offline=true: offline files only, whatever key there is
    two, cwd = tmp_path / "two", tmp_path / "cwd"
    cwd.mkdir()
    proc = _popen([*TRAIN, "-m", *launcher(), *COMMON, *TWO_TASKS, "logger=wandb", "logger.offline=true",
                        f"output={two}"], env, cwd)
    job_id = None
    try:
        job_id = wait_until("SLURM job", lambda: job_folder(two / ".submitit"), SUBMIT, proc)
        _finish({"2-task SLURM job": proc})
    except BaseException:  # a failed or timed-out wait: nothing left running (a finished job is left alone)
        _cancel([proc], [job_id], slurm.env)
        raise
    runs = list(tmp_path.rglob("run-*.wandb"))
    assert len(runs) == 1 and runs[0].is_relative_to(two / "wandb"), runs  # one run, in the job's directory
    run = read_run(runs[0])
    assert run["run_id"] == (two / "wandb_run_id").read_text().strip() and run["exited"]
    steps = [row["trainer/global_step"] for row in run["history"] if "train/loss" in row]
    assert steps == [0, 1, 2], steps  # log_every_n_steps=1: each step once, from rank 0 only
    assert run["summary"]["swd"] == json.loads((two / "metrics.json").read_text())["swd"]
    assert {f for f in _run_files(two) if not f.startswith("wandb/")} == {
        "config.yaml", "checkpoints/last.ckpt", "metrics.json", "samples.npz", "wandb_run_id"}
    assert list(cwd.iterdir()) == []


# a small gmm run of a few hundred DDP steps (tests/reliability's criterion: bit-identical final state)
REQUEUE_RUN = ["experiment=gmm", "model.hidden=16", "model.depth=1", "callbacks=none", "threads=1", "checkpoint_every=10",
               "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=5", "trainer.val_check_interval=100000",
               "trainer.limit_val_batches=0"]
REQUEUE_STEPS = 300


def _pending(job_id: str, env, proc) -> None:
    wait_until("pending requeued job", lambda: job_state(job_id, env).get("JobState") == "PENDING", 90, proc)


def _start_now(job_id: str, env) -> None:
    """A requeued job waits for a begin time ~2 min ahead: let it start now."""
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True, env=env, timeout=30)


def test_scontrol_requeue_of_two_tasks_resumes_exactly(tmp_path, slurm):  # noqa: F811
    env = job_env(slurm.env)
    run = [*REQUEUE_RUN, *TWO_TASKS[:-1], "data.batch_size=16", f"trainer.max_steps={REQUEUE_STEPS}"]
    out, ref = tmp_path / "requeued", tmp_path / "reference"
    # the requeued job first; the reference job (2 more CPUs than the node has) waits in the queue
    sweep = _popen([*TRAIN, "-m", *launcher(), *run, f"output={out}"], env, tmp_path)
    job_id = ref_id = None
    reference = None
    try:
        job_id = wait_until("SLURM job", lambda: job_folder(out / ".submitit"), SUBMIT, sweep)
        reference = _popen([*TRAIN, "-m", *launcher(), *run, f"output={ref}"], env, tmp_path)
        ckpt = wait_until("last.ckpt", lambda: next(out.glob("checkpoints/last.ckpt"), None), 180, sweep)
        assert job_state(job_id, slurm.env).get("JobState") == "RUNNING"
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, env=slurm.env, timeout=30)
        assert r.returncode == 0, r.stderr
        _pending(job_id, slurm.env, sweep)
        _start_now(job_id, slurm.env)
        ref_id = wait_until("reference job", lambda: job_folder(ref / ".submitit"), SUBMIT, reference)
        _finish({"requeued job": sweep, "reference job": reference}, timeout=400)
    except BaseException:  # a failed or timed-out wait: nothing left running (a finished job is left alone)
        _cancel([p for p in (sweep, reference) if p], [job_id, ref_id], slurm.env)
        raise
    assert job_state(job_id, slurm.env).get("Restarts") == "1"
    logs = _job_logs(out, job_id)
    stopped = [re.search(r"SIGTERM at step (\d+)", logs[task]) for task in (0, 1)]
    resumed = re.search(rf"resuming {re.escape(str(out))} from step (\d+) \({re.escape(str(ckpt))}\)", logs[0])
    assert stopped[0] and resumed, logs[0][-3000:]
    # both tasks stopped at the same step (or task 1 died first, its log silent), mid-run, and the
    # requeued job resumed from that step's last.ckpt
    assert stopped[1] is None or stopped[1].group(1) == stopped[0].group(1), logs[1][-2000:]
    assert 0 < int(stopped[0].group(1)) == int(resumed.group(1)) < REQUEUE_STEPS
    final = {d: torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (out, ref)}
    assert_same_state(final[out], final[ref], steps=REQUEUE_STEPS)
    assert rows(out) == rows(ref)  # every logged row once, none lost, none repeated
    assert _run_files(out) == _run_files(ref) and not (out / ".lock").exists()


DIGITS_STEPS = 400  # WORKERS' trainer.max_steps (tests/reliability/test_interrupts.py)


def test_scancel_usr1_with_loader_workers_requeues_and_resumes_exactly(tmp_path, slurm):  # noqa: F811
    env = job_env(slurm.env)
    out, ref = tmp_path / "signalled", tmp_path / "reference"
    sweep = _popen([*TRAIN, "-m", *launcher(tasks=1, cpus=1), *WORKERS, f"output={out}"], env, tmp_path)
    reference = _popen([*TRAIN, *WORKERS, f"output={ref}"], env, tmp_path)  # uninterrupted, beside SLURM
    job_id = None
    try:
        job_id = wait_until("SLURM job", lambda: job_folder(out / ".submitit"), SUBMIT, sweep)
        last = wait_until("last.ckpt", lambda: next(out.glob("checkpoints/last.ckpt"), None), 180, sweep)
        assert job_state(job_id, slurm.env).get("JobState") == "RUNNING"
        r = subprocess.run(["scancel", "--signal=USR1", job_id], capture_output=True, text=True, env=slurm.env, timeout=30)
        assert r.returncode == 0, r.stderr
        _pending(job_id, slurm.env, sweep)  # SaveLast requeued the job itself
        saved = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])  # before it starts again
        _start_now(job_id, slurm.env)
        _finish({"signalled job": sweep, "reference": reference}, timeout=400)
    except BaseException:  # a failed or timed-out wait: nothing left running (a finished job is left alone)
        _cancel([sweep, reference], [job_id], slurm.env)
        raise
    assert job_state(job_id, slurm.env).get("Restarts") == "1"
    log = _job_logs(out, job_id)[0]
    assert "killed by signal" not in log and "Traceback" not in log, log[-3000:]  # the loader workers got USR1 too, and did not die of it
    stopped = re.search(r"SIGUSR1 at step (\d+)", log)
    resumed = re.search(rf"resuming {re.escape(str(out))} from step (\d+) ", log)
    assert stopped and resumed, log[-3000:]
    assert 0 < saved == int(stopped.group(1)) == int(resumed.group(1)) < DIGITS_STEPS
    assert_same_state(torch.load(last, weights_only=True), torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True),
                      steps=DIGITS_STEPS)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_signal_to_one_ddp_rank_stops_every_rank_at_one_step(tmp_path):
    """SIGTERM to rank 1 alone (Lightning's ddp launcher: rank 1 is rank 0's child process): SaveLast
    shares the signal between the ranks before each step, so both save last.ckpt at one step and
    exit 128 + 15. Unshared, rank 1 would wait in the checkpoint's barrier while rank 0 waits in the
    next step's gradient all-reduce (a hang until killed)."""
    out = tmp_path / "run"
    env = {k: v for k, v in job_env().items() if not k.startswith("SLURM_")}  # not a SLURM task: Lightning starts rank 1
    run = [*REQUEUE_RUN, *TWO_TASKS[:-1], "data.batch_size=16", "trainer.max_steps=100000", f"output={out}"]
    proc = subprocess.Popen([*TRAIN, *run], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_until("last.ckpt", lambda: (out / "checkpoints" / "last.ckpt").is_file(), 180, proc)
        rank1 = [c for c in _children(proc.pid) if "difflab.cli.train" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(rank1) == 1, rank1
        os.kill(rank1[0], signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            for pid in [*_children(proc.pid), proc.pid]:
                os.kill(pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = re.findall(r"SIGTERM at step (\d+)", err)  # each rank's line (rank 1 writes to rank 0's stderr)
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(stopped) == 2 and {int(s) for s in stopped} == {ck["global_step"]}, err[-3000:]  # both, at one step
    assert ck["ema"]["num_updates"] == ck["global_step"] > 0
