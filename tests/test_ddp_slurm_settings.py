"""The documented SLURM multi-node settings, checked without a cluster (no sbatch, no training):

1. `hydra/launcher=slurm hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=1` (our
   conf/hydra/launcher/slurm.yaml, through the installed hydra_submitit_launcher's own
   `launch`, stopped where it would submit) makes submitit write an sbatch script asking for
   `--nodes=2 --ntasks-per-node=1` and starting the job with `srun` (one task per node); with
   `tasks_per_node=4 gpus_per_node=4`, 4 tasks and 4 GPUs per node.
2. In such a task, `trainer=ddp trainer.num_nodes=2 trainer.devices=1` builds a Trainer whose
   cluster environment is Lightning's SLURMEnvironment, and the task SLURM starts on the second
   node (SLURM_PROCID=1, SLURM_NODEID=1, SLURM_LOCALID=0, SLURM_NTASKS=2) is global rank 1,
   node rank 1, local rank 0 of a world of 2, a process difflab-train treats as secondary (no
   lock, no checks, no writes: tests/test_ddp_torchrun.py shows the same under torchrun).

Exact comparisons: these are the strings and integers SLURM and Lightning would read.
"""
from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate

from difflab.cli.common import CONFIG_DIR

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


class _Submitted(Exception):
    pass


def _sbatch_script(tmp_path, monkeypatch, launcher_overrides: list[str]) -> tuple[str, dict]:
    """The sbatch script and parameters hydra_submitit_launcher's SlurmLauncher gives submitit
    for a -m job of difflab-train with these launcher overrides (its `launch`, up to the submission)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"output={tmp_path / 'sweep'}", "hydra/launcher=slurm", *launcher_overrides,
                                          "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=1"],
                      return_hydra_config=True)
    params = dict(cfg.hydra.launcher)
    launcher = get_class(params.pop("_target_"))(**params)
    launcher.config = cfg
    seen = {}

    def submit(executor, fn, *args):
        seen["executor"] = executor._executor
        raise _Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    with pytest.raises(_Submitted):
        launcher.launch([["schedule=cosine"]], initial_job_idx=0)
    executor = seen["executor"]
    assert type(executor).__name__ == "SlurmExecutor"
    return executor._make_submission_file_text("python -u -m submitit.core._submit /folder", "uid"), executor.parameters


def _sbatch_lines(script: str) -> set[str]:
    return {line for line in script.splitlines() if line.startswith("#SBATCH ")}


def test_two_nodes_one_task_each_sbatch_script(tmp_path, monkeypatch):
    script, params = _sbatch_script(tmp_path, monkeypatch, ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1"])
    lines = _sbatch_lines(script)
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --time=60", "#SBATCH --cpus-per-task=2"} <= lines
    assert not any(line.startswith("#SBATCH --gpus-per-node") for line in lines)  # gpus_per_node: null
    assert any(line.startswith("#SBATCH --signal=USR2@") for line in lines)  # submitit's timeout/requeue signal
    assert any(line.startswith("srun ") and line.endswith("python -u -m submitit.core._submit /folder")
               for line in script.splitlines())  # every task runs the job: one per node
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 1


def test_two_nodes_four_gpus_each_sbatch_script(tmp_path, monkeypatch):
    script, _ = _sbatch_script(tmp_path, monkeypatch, ["hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
                                                       "hydra.launcher.gpus_per_node=4"])
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4"} <= _sbatch_lines(script)


SECOND_NODE = {"SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODEID": "1",
               "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
               "SLURM_NODELIST": "node[1-2]"}


@pytest.fixture
def second_node(monkeypatch):
    """SLURM's environment of the task on the second node; Lightning's process-wide rank (a Trainer
    sets it to 1 here) is put back afterwards, so later tests still log and write as rank 0."""
    from lightning.pytorch.utilities import rank_zero_only  # the one object Lightning sets

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_"))] + ["RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in SECOND_NODE.items():
        monkeypatch.setenv(key, value)
    # Lightning's SLURMEnvironment writes MASTER_ADDR (node1, from SLURM_NODELIST) and MASTER_PORT into
    # os.environ when asked for them: recorded here so they are put back. Left behind, every later DDP
    # run of this pytest process would rendezvous at the unreachable host node1 and hang.
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, os.environ.get(key, "recorded"))
        if key not in SECOND_NODE and os.environ.get(key) == "recorded":
            monkeypatch.delenv(key)


def test_lightning_slurm_environment_of_the_second_node(second_node):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    assert SLURMEnvironment.detect()
    env = SLURMEnvironment()
    assert (env.global_rank(), env.node_rank(), env.local_rank(), env.world_size()) == (1, 1, 0, 2)
    assert env.main_address == "node1" and env.creates_processes_externally


def test_trainer_of_the_second_node(second_node):
    """The Trainer difflab-train builds from trainer=ddp for 2 nodes x 1 device reads SLURM's ranks."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from difflab.cli.train import secondary_process

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2"])
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.global_rank, trainer.node_rank, trainer.local_rank, trainer.world_size) == (1, 1, 0, 2)
    assert not trainer.is_global_zero and trainer.num_nodes == 2
    assert secondary_process()
