"""difflab-tune-grid end to end: the grid it writes is used by difflab-sample as
sampler.grid=tuned:<file> and gives exactly the samples of that grid; bad input and bad grid files
end in one line, exit 2, nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MIXTURE = ["data=gmm", "data.means=[[-2,0],[2,0]]", "data.stds=[0.5,0.5]", "data.weights=[0.3,0.7]", "process=vp"]


def run_cli(module, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", f"difflab.cli.{module}", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_tuned_grid_round_trips_through_difflab_sample(tmp_path):
    from difflab.models import GMMOracle
    from difflab.processes import VPSDE
    from difflab.evaluation import tuning

    r = run_cli("tune_grid", "model=oracle", *MIXTURE, "sampler=dpm_solver", "sampler.steps=4", "num_samples=64", "max_evals=30",
                f"output={tmp_path / 'tuned'}")
    assert r.returncode == 0, r.stderr
    grid_file = tmp_path / "tuned" / "grid.yaml"
    report = json.loads((tmp_path / "tuned" / "tune.json").read_text())
    assert report["distance_tuning"]["tuned"] <= report["distance_tuning"]["start"]
    assert set(report["distance_heldout"]) == {"start", "tuned"} and f"sampler.grid=tuned:{grid_file}" in r.stdout

    r = run_cli("sample", "model=oracle", *MIXTURE, "sampler=dpm_solver", "sampler.steps=4", f"sampler.grid=tuned:{grid_file}",
                "num_samples=64", "seed=3", f"output={tmp_path / 'samples'}")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "samples" / "samples.npz")
    process = VPSDE()
    oracle = GMMOracle([[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5], [0.3, 0.7])
    x_T = tuning.prior_noise(process, (2,), 64, seed=3)
    want = tuning.solve(oracle.denoiser(process), process, x_T, "dpm_solver", 4, torch.tensor(report["grid"], dtype=torch.float64))
    assert int(got["nfe"]) == 4 and np.allclose(got["samples"], want.numpy(), atol=1e-5)
    default = tuning.solve(oracle.denoiser(process), process, x_T, "dpm_solver", 4, None)
    assert not np.allclose(got["samples"], default.numpy(), atol=1e-5)  # the tuned grid was used, not the default


@pytest.mark.slow
@pytest.mark.parametrize("content,steps,msg", [
    ("grid: [1.0, 0.3, 1.0e-5]\n", 4, "holds 3 times, a grid for steps=2, but steps=4"),
    ("just text\n", 4, "holds no list of times"),
    (None, 4, "cannot read the file"),
])
def test_bad_grid_file_exits_2_with_one_line(tmp_path, content, steps, msg):
    path = tmp_path / "grid.yaml"
    if content is not None:
        path.write_text(content)
    r = run_cli("sample", "model=oracle", *MIXTURE, "sampler=ddim", f"sampler.steps={steps}", f"sampler.grid=tuned:{path}",
                "num_samples=8", f"output={tmp_path / 'out'}")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    assert not (tmp_path / "out" / "samples.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,msg", [
    (["sampler=ancestral"], "draws noise"),
    (["sampler=ddim", "sampler.eta=1.0"], "draws noise"),
    (["num_samples=0"], "num_samples must be >= 1"),
    (["reference.sampler=nope"], "unknown sampler"),
])
def test_tune_grid_bad_input_exits_2_with_one_line(tmp_path, args, msg):
    r = run_cli("tune_grid", "model=oracle", *MIXTURE, "max_evals=2", *args, f"output={tmp_path / 'out'}")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
