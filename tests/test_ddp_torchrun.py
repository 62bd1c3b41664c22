"""Multi-node DDP through torchrun: two `torchrun --nnodes 2 --node-rank {0,1}
--nproc-per-node 1` invocations on this machine (gloo on CPU, one process per "node", both with
the same output=) train one model with `trainer=ddp trainer.num_nodes=2 trainer.devices=1`, and
give what the 1-process runs of the same command give (tests/helpers/ddp.py):

- the 1-process run that accumulates 2 micro-batches of 4 (`trainer.accumulate_grad_batches=2`):
  the same final weights, EMA, samples.npz and metrics.json, bit for bit;
- the 1-process run with batch 8: weights and EMA within atol 1e-5 (the tolerance of
  tests/test_ddp.py: only the float32 summation order of the gradient's mean differs; measured
  6e-8), eval_at_end's exact fields equal, samples and swd within 1e-5 of their scale;
- exactly one copy of each output file, all written by rank 0: the run directory holds the same
  files as the 1-process run's (config.yaml, checkpoints/last.ckpt, metrics.json, samples.npz,
  logs/), no second config, no `.lock` left and no stray file (lightning_logs/, a checkpoint's
  temporary, W&B's id) from rank 1, in the run directory or the working directory.

torchrun's process on node 1 has RANK=1, GROUP_RANK=1 but LOCAL_RANK=0: difflab-train must
treat it as a secondary process (no lock, no checks, no config.yaml: a rank 1 that wrote it
first made rank 0 refuse the run as "already holds a training run"). The fast tests below
check that classification, the ranks Lightning reads from torchrun's environment
(TorchElasticEnvironment), and that only rank 0 writes logger=wandb's run id.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.ddp import ACCUMULATED, COMMON, ONE_PROCESS, RUN_FILES, TWO_NODES, assert_identical_run, assert_same_run, files

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE")}
    env.update(PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    return env


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own group: torchrun's worker is killed with it


def _finish(procs: dict[str, subprocess.Popen]) -> dict[str, str]:
    out = {}
    try:
        for name, p in procs.items():
            out[name] = p.communicate(timeout=TIMEOUT)[0]
    except subprocess.TimeoutExpired:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        pytest.fail(f"a run took over {TIMEOUT} s (killed): {[n for n, p in procs.items() if p.returncode != 0]}")
    for name, p in procs.items():
        assert p.returncode == 0, f"{name} exited {p.returncode}:\n{out[name][-4000:]}"
    return out


@pytest.mark.slow
def test_torchrun_two_nodes_equal_one_process(tmp_path):
    one, acc, two, cwd = tmp_path / "one", tmp_path / "acc", tmp_path / "two", tmp_path / "cwd"
    cwd.mkdir()
    port = _free_port()
    train = ["-m", "difflab.cli.train"]
    procs = {"1 process": _start([*train, f"output={one}", *COMMON, *ONE_PROCESS], cwd),
             "1 process, 2 micro-batches": _start([*train, f"output={acc}", *COMMON, *ACCUMULATED], cwd)}
    for rank in (0, 1):
        procs[f"torchrun node {rank}"] = _start(
            ["-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
             "--master-addr", "localhost", "--master-port", str(port),
             *train, f"output={two}", *COMMON, *TWO_NODES], cwd)
    logs = _finish(procs)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs["torchrun node 1"]  # really one 2-process group
    assert "Starting with 2 processes" in logs["torchrun node 0"]
    assert "model:" not in logs["torchrun node 1"]  # rank 1 prints nothing of its own

    assert_identical_run(acc, two)
    assert_same_run(one, two)

    # one copy of each file, rank 0's; no lock left; nothing written beside the run directory
    assert files(two) == files(one) == files(acc) == RUN_FILES
    assert not (two / ".lock").exists() and not (one / ".lock").exists()
    assert list(cwd.iterdir()) == []
    steps = [line.split(",") for line in (two / "logs" / "metrics.csv").read_text().splitlines()]
    one_steps = [line.split(",") for line in (one / "logs" / "metrics.csv").read_text().splitlines()]
    assert len(steps) == len(one_steps) and steps[0] == one_steps[0]  # one writer: one header, one row per logged step


TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "NODE_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")


def _torchrun_env(monkeypatch, rank: int) -> None:
    """What torchrun --nnodes 2 --nproc-per-node 1 gives the worker on node `rank`."""
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # a Trainer sets it process-wide
    for key in [k for k in os.environ if k.startswith("SLURM_")] + list(TORCHRUN_ENV):
        monkeypatch.delenv(key, raising=False)
    for key, value in dict(RANK=rank, LOCAL_RANK=0, GROUP_RANK=rank, ROLE_RANK=rank, WORLD_SIZE=2, LOCAL_WORLD_SIZE=1,
                           TORCHELASTIC_RUN_ID="none", MASTER_ADDR="localhost", MASTER_PORT=29500).items():
        monkeypatch.setenv(key, str(value))


@pytest.mark.parametrize("rank", [0, 1])
def test_torchrun_ranks(monkeypatch, rank):
    """Node 1's worker (RANK=1, GROUP_RANK=1, LOCAL_RANK=0) is secondary; node 0's is not, and
    the Trainer of trainer=ddp for 2 nodes x 1 device reads torchrun's ranks."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    from difflab.cli.common import CONFIG_DIR
    from difflab.cli.train import secondary_process

    _torchrun_env(monkeypatch, rank)
    assert secondary_process() == (rank == 1)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert (trainer.global_rank, trainer.node_rank, trainer.local_rank, trainer.world_size) == (rank, rank, 0, 2)


def test_wandb_run_id_written_by_rank_zero_only(tmp_path, monkeypatch):
    """torchrun starts both ranks at once: rank 1 (no id file yet) must not write its own random id
    over rank 0's, or a resume would continue another W&B run than the one rank 0 logged to."""
    pytest.importorskip("wandb")
    from lightning.pytorch.utilities import rank_zero_only

    from difflab.loggers import wandb_logger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    wandb_logger(save_dir=str(tmp_path / "r1"), offline=True)
    assert not (tmp_path / "r1" / "wandb_run_id").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    wandb_logger(save_dir=str(tmp_path / "r0"), offline=True)
    assert len((tmp_path / "r0" / "wandb_run_id").read_text().strip()) == 8
