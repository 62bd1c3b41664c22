"""A 2-job sweep (gmm recipe, a few steps) through hydra-submitit-launcher: locally
(hydra/launcher=submitit_local) and on a real one-node SLURM (hydra/launcher=slurm). Each job
trains in its own directory, named after its overrides, and difflab-report reads them. On that
SLURM, `scontrol requeue` of a running job resumes it from its own last.ckpt, and it ends
bit-identical to an uninterrupted run."""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml
from cluster import Cluster, sinfo_ok, unavailable_reason

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment=gmm", "process=continuous_snr", "schedule=linear,cosine", "weighting=elbo,simple", "trainer.max_steps=4", "trainer.val_check_interval=2",
         "trainer.log_every_n_steps=1", "checkpoint_every=0", "logger=csv", "eval_at_end=[swd]", "evaluation.num_samples=64",
         "evaluation.num_reference=256", "sampler.steps=4"]


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM: the running one, else started here (as root) and stopped afterwards."""
    if not sinfo_ok():
        why = unavailable_reason()
        if why:
            pytest.skip(f"no SLURM: {why}")
    with tempfile.TemporaryDirectory(prefix="difflab-slurm-") as d:
        cluster = Cluster(d).start()
        try:
            yield cluster
        finally:
            cluster.stop()


def run_sweep(out: Path, launcher: list[str], env=None):
    """The 2×2 study (schedule × weighting on continuous-SNR) through `launcher`: every job in its own
    directory with its metrics.json, the report from them; the same command again skips every job
    (its checkpoint and metrics.json stay as they were)."""
    env = dict(env or os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, "-m", "difflab.cli.train", "-m", *launcher, *SWEEP, f"output={out}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    names = [f"schedule={s},weighting={w}" for s in ("cosine", "linear") for w in ("elbo", "simple")]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["multirun.yaml", *names]
    jobs, written = {}, {}
    for name in names:
        job = out / name  # named after its swept overrides only
        assert (job / "checkpoints" / "last.ckpt").is_file(), sorted(p.name for p in out.iterdir())
        assert "swd" in yaml.safe_load((job / "metrics.json").read_text())  # each job ends with its numbers
        jobs[name] = yaml.safe_load((job / "config.yaml").read_text())
        written[name] = {f: (job / f).stat().st_mtime_ns for f in ("metrics.json", "checkpoints/last.ckpt")}
    for name, cfg in jobs.items():
        sched, weighting = (kv.split("=")[1] for kv in name.split(","))
        assert cfg["process"]["schedule"] == sched and cfg["weighting"]["weighting"] == weighting
    subprocess.run([sys.executable, "-m", "difflab.cli.report", str(out)], check=True, env=env, capture_output=True)
    table = (out / "report.md").read_text()
    assert "| schedule | weighting |" in table and "| cosine | simple |" in table and (out / "loss_curves.png").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    for name in names:  # every job skipped: nothing rewritten
        assert {f: (out / name / f).stat().st_mtime_ns for f in written[name]} == written[name], name


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    run_sweep(tmp_path / "sweep", ["hydra/launcher=submitit_local"])


@pytest.mark.slow
def test_sweep_through_slurm(tmp_path, slurm):
    run_sweep(tmp_path / "sweep", ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"],
              env=slurm.env)


# a small gmm run (tests/reliability's criterion: bit-identical final state after STEPS steps)
REQUEUE_RUN = ["experiment=gmm", "model.hidden=16", "model.depth=1", "callbacks=none", "threads=1", "checkpoint_every=25",
               "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=5"]
REQUEUE_STEPS = 1500


def _job_state(job_id: str, env) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text))


def _wait(what, predicate, timeout: float, proc=None):
    t0 = time.time()
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}: {proc.stderr.read()[-3000:]}")
        assert time.time() - t0 < timeout, f"no {what} after {timeout:.0f} s"
        time.sleep(0.2)
    return value


def _job_folder(submitit: Path):
    """The job id, once submitit has made the job's folder (named by the id; array tasks "id_k").
    Its pickled jobs (`<uuid>.pkl`) appear first, and a uuid may start with a digit too."""
    if not submitit.is_dir():
        return None
    return next((p.name for p in submitit.iterdir() if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)), None)


@pytest.mark.slow
def test_scontrol_requeue_resumes_from_last_ckpt(tmp_path, slurm):
    """`scontrol requeue` kills the running job (SIGTERM, then SIGKILL after KillWait) and queues it
    again with SLURM_RESTART_COUNT=1; the job's SaveLast writes last.ckpt at the current step on
    SIGTERM, and the requeued job resumes from it in its own directory. Resume is exact, so the final
    weights, EMA, optimiser state and logged rows equal an uninterrupted run's bit for bit."""
    from reliability.test_interrupts import assert_same_state, rows  # tests/ is on sys.path (tests/conftest.py)

    env = dict(slurm.env, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    run = [*REQUEUE_RUN, f"trainer.max_steps={REQUEUE_STEPS}"]
    out, ref = tmp_path / "sweep", tmp_path / "reference"
    train = [sys.executable, "-m", "difflab.cli.train"]
    sweep = subprocess.Popen([*train, "-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
                              *run, f"output={out}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    reference = subprocess.Popen([*train, *run, f"output={ref}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    job_id = None
    try:
        job_id = _wait("SLURM job", lambda: _job_folder(out / ".submitit"), 120, sweep)
        ckpt = _wait("last.ckpt", lambda: next(out.glob("**/checkpoints/last.ckpt"), None), 180, sweep)
        job = ckpt.parents[1]
        time.sleep(1.0)
        assert _job_state(job_id, slurm.env).get("JobState") == "RUNNING"
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, env=slurm.env)
        assert r.returncode == 0, r.stderr
        # a requeued job waits for a begin time ~2 min ahead; let it start now
        _wait("pending requeued job", lambda: _job_state(job_id, slurm.env).get("JobState") == "PENDING", 90, sweep)
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
    assert _job_state(job_id, slurm.env).get("Restarts") == "1"
    log = "".join(p.read_text() for p in (out / ".submitit" / job_id).glob("*_log.err"))
    stopped = re.search(r"SIGTERM at step (\d+)", log)
    resumed = re.search(rf"resuming {re.escape(str(job))} from step (\d+) \({re.escape(str(ckpt))}\)", log)
    assert stopped and resumed, log[-3000:]
    assert 0 < int(stopped.group(1)) == int(resumed.group(1)) < REQUEUE_STEPS  # it resumed mid-run, from its own last.ckpt
    final = {d: torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (job, ref)}
    assert_same_state(final[job], final[ref], steps=REQUEUE_STEPS)
    assert rows(job) == rows(ref)  # every logged row once, none lost, none repeated
