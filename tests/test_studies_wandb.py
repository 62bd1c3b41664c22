"""W&B offline: a 2-job sweep with logger=wandb and no key leaves one finished offline
run per job, under the job's own directory, grouped under the sweep's name, with the job's
resolved config as the run config and its eval_at_end metrics in the run summary. The runs are
read back from W&B's own record file (`run-<id>.wandb`, a LevelDB-style log of protobuf records)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.wandb_files import read_run

wandb = pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parents[1]


def train_offline(tmp_path: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """difflab-train with logger=wandb, no W&B key and no WANDB_* variable (offline by itself): a
    20-step gmm run that logs every 5 steps and ends with eval_at_end=[swd]."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, "-m", "difflab.cli.train", *(["-m"] if multirun else []), "experiment=gmm", "trainer.max_steps=20",
           "trainer.log_every_n_steps=5", "logger=wandb", "eval_at_end=[swd]", "evaluation.num_samples=64",
           "evaluation.num_reference=256", "sampler.steps=4", "threads=1", *overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_offline_sweep_leaves_one_run_per_job(tmp_path):
    out = tmp_path / "study"
    train_offline(tmp_path, "seed=1,2", f"output={out}", multirun=True)
    jobs = sorted(p.parent for p in out.glob("*/config.yaml"))
    assert len(jobs) == 2
    ids = set()
    for job in jobs:
        runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(runs) == 1, runs  # one run per job, in the job's own directory
        run = read_run(runs[0])
        config, metrics = yaml.safe_load((job / "config.yaml").read_text()), json.loads((job / "metrics.json").read_text())
        assert run["run_id"] == (job / "wandb_run_id").read_text().strip() and run["project"] == "difflab"
        assert run["group"] == "study"  # the sweep's name: its output directory's name
        assert run["name"] == job.name  # the job's overrides, what difflab-report --wandb reads
        assert run["exited"]  # finished before the next job started
        for key, value in config.items():  # the job's resolved config is the run config
            assert run["config"][key] == value, key
        assert run["config"]["seed"] == int(job.name.split("seed=")[1].split(",")[0])
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert {"swd", "swd_floor", "nfe"} <= numbers.keys()
        assert {k: run["summary"][k] for k in numbers} == numbers  # eval_at_end's metrics in the summary
        ids.add(run["run_id"])
    assert len(ids) == 2


@pytest.mark.slow
def test_ddp_spawn_run_is_one_wandb_run(tmp_path):
    """Two CPU processes (ddp_spawn, gloo): rank 0 alone logs, so the training rows, the final metrics
    and eval_at_end's summary all land in one offline run, the one `wandb_run_id` names."""
    out = tmp_path / "ddp"
    train_offline(tmp_path, "trainer.devices=2", "+trainer.strategy=ddp_spawn", "trainer.accelerator=cpu", f"output={out}")
    runs = list(tmp_path.rglob("run-*.wandb"))
    assert len(runs) == 1, runs  # no second run opened by a spawned worker or by the summary
    run = read_run(runs[0])
    assert run["run_id"] == (out / "wandb_run_id").read_text().strip() and run["exited"]
    steps = [row["trainer/global_step"] for row in run["history"] if "train/loss" in row]
    assert steps and steps == sorted(steps) and max(steps) >= 14, steps  # rows every 5 steps, from rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert run["summary"]["swd"] == metrics["swd"]


def test_agent_run_id_is_used(tmp_path, monkeypatch):
    """Under `wandb agent` the agent's run (WANDB_RUN_ID) is the job's run, not a new id."""
    from difflab.loggers import wandb_logger

    monkeypatch.setenv("WANDB_RUN_ID", "agent123")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = wandb_logger(save_dir=str(tmp_path), group="g")
    assert logger._wandb_init["id"] == "agent123" and logger._wandb_init["group"] == "g"
    assert (tmp_path / "wandb_run_id").read_text().strip() == "agent123"  # a resume continues the agent's run
