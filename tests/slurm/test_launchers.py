"""A 2-job sweep (gmm recipe, a few steps) through hydra-submitit-launcher: locally
(hydra/launcher=submitit_local) and on a real one-node SLURM (hydra/launcher=slurm). Each job
trains in its own directory, named after its overrides, and difflab-report reads them."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from cluster import Cluster, sinfo_ok, unavailable_reason

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
ROOT = Path(__file__).resolve().parents[2]
SWEEP = ["experiment=gmm", "schedule=linear,cosine", "trainer.max_steps=4", "trainer.val_check_interval=2",
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
    env = dict(env or os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, "-m", "difflab.cli.train", "-m", *launcher, *SWEEP, f"output={out}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    jobs = {}
    for s in ("linear", "cosine"):
        name = ",".join(sorted(o for o in SWEEP if "schedule" not in o) + [f"schedule={s}"])
        name = ",".join(sorted(name.split(","), key=lambda o: o.split("=")[0]))
        job = out / name
        assert (job / "checkpoints" / "last.ckpt").is_file(), sorted(p.name for p in out.iterdir())
        assert "swd" in yaml.safe_load((job / "metrics.json").read_text())  # each job ends with its numbers
        jobs[s] = yaml.safe_load((job / "config.yaml").read_text())
    assert jobs["linear"]["process"]["schedule"] == "linear" and jobs["cosine"]["process"]["schedule"] == "cosine"
    subprocess.run([sys.executable, "-m", "difflab.cli.report", str(out)], check=True, env=env, capture_output=True)
    table = (out / "report.md").read_text()
    assert "| schedule |" in table and "| cosine |" in table and (out / "loss_curves.png").is_file()


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    run_sweep(tmp_path / "sweep", ["hydra/launcher=submitit_local"])


@pytest.mark.slow
def test_sweep_through_slurm(tmp_path, slurm):
    run_sweep(tmp_path / "sweep", ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"],
              env=slurm.env)
