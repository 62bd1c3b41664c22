"""Multi-node DDP through torchrun: two `torchrun --nnodes 2 --node-rank {0,1}
--nproc-per-node 1` invocations on this machine (gloo on CPU, one process per "node", both with
the same output=) train one model with `trainer=ddp trainer.num_nodes=2 trainer.devices=1`, and
give what the 1-process run of the same command gives:

- final weights (raw and EMA) within atol 1e-5, the tolerance of tests/test_ddp.py and for the
  same reason (same config: per_sample_noise=true, batch 8 in one process = 4 per rank, Adam
  with optim.eps=1e-4): each example's (t, eps) depends only on (seed, step, dataset index), the
  step-indexed sampler gives rank r the items r, r+2, ... of the same permutation, so only the
  float32 summation order differs (two local means then the all-reduce vs one mean). A wrong
  example or noise assignment moves a weight by ~lr = 1e-2 per step; measured: 6e-8;
- the same eval_at_end results from the same seed: the data's floor (swd_floor), nfe and the
  sample count exactly; the samples and swd agree to 1e-5 relative (to the samples' scale),
  i.e. only the weights' last-bit differences carried through the sampler (measured: 1.7e-6 of
  max|x| = 4 float32 ulps, swd 2.4e-8 relative), where another seed or sample noise would
  change them by O(1);
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

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300

COMMON = [
    "data=gmm", "data.num_train=64", "data.num_val=0", "+data.shuffle=true",
    "model=mlp", "model.dim=2", "model.hidden=32", "model.depth=2", "optim.eps=1e-4", "weighting=simple",
    "process=vp", "parameterization=eps", "logger=csv", "callbacks=none",
    "per_sample_noise=true", "optim.lr=1e-2", "ema.decay=0.5", "ema.warmup=false", "checkpoint_every=2",
    "trainer.max_steps=3", "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1",
    "+trainer.enable_progress_bar=false",
    "eval_at_end=[swd]", "evaluation.num_samples=64", "evaluation.num_reference=64", "sampler.steps=4",
]
ONE_PROCESS = ["trainer=cpu", "data.batch_size=8"]
TWO_NODES = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2", "data.batch_size=4"]


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


def assert_same_run(one, two) -> None:
    """A DDP run `two` against the 1-process run `one` (module docstring's tolerances): the same
    weights and EMA within 1e-5, the same evaluation from the same seed (exact fields equal, swd
    within 1e-5 relative, samples within 1e-5 of their scale)."""
    step1, sd1, ema1 = _ckpt(one)
    step2, sd2, ema2 = _ckpt(two)
    assert step1 == step2 == 3 and ema1["num_updates"] == ema2["num_updates"] == 3
    for k, v in sd1.items():
        torch.testing.assert_close(sd2[k], v, rtol=0, atol=1e-5, msg=f"raw weight {k}")
    for k, v in ema1["shadow"].items():
        torch.testing.assert_close(ema2["shadow"][k], v, rtol=0, atol=1e-5, msg=f"EMA weight {k}")
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    for key in ("swd_floor", "nfe", "num_samples", "num_real_floor", "data_shape"):
        assert m1[key] == m2[key], key
    assert m2["swd"] == pytest.approx(m1["swd"], rel=1e-5)
    s1, s2 = (np.load(d / "samples.npz") for d in (one, two))
    assert s1["samples"].shape == s2["samples"].shape == (64, 2) and int(s1["nfe"]) == int(s2["nfe"])
    scale = float(np.abs(s1["samples"]).max())
    np.testing.assert_allclose(s2["samples"], s1["samples"], rtol=0, atol=1e-5 * scale)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _ckpt(out: Path):
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ck["global_step"], ck["state_dict"], ck["ema"]


@pytest.mark.slow
def test_torchrun_two_nodes_equal_one_process(tmp_path):
    one, two, cwd = tmp_path / "one", tmp_path / "two", tmp_path / "cwd"
    cwd.mkdir()
    port = _free_port()
    train = ["-m", "difflab.cli.train"]
    procs = {"1 process": _start([*train, f"output={one}", *COMMON, *ONE_PROCESS], cwd)}
    for rank in (0, 1):
        procs[f"torchrun node {rank}"] = _start(
            ["-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
             "--master-addr", "localhost", "--master-port", str(port),
             *train, f"output={two}", *COMMON, *TWO_NODES], cwd)
    logs = _finish(procs)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs["torchrun node 1"]  # really one 2-process group
    assert "Starting with 2 processes" in logs["torchrun node 0"]
    assert "model:" not in logs["torchrun node 1"]  # rank 1 prints nothing of its own

    assert_same_run(one, two)

    # one copy of each file, rank 0's; no lock left; nothing written beside the run directory
    expected = {"config.yaml", "checkpoints/last.ckpt", "metrics.json", "samples.npz", "logs/hparams.yaml", "logs/metrics.csv"}
    assert _files(two) == _files(one) == expected
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
