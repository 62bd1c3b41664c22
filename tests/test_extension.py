"""docs/architecture.md's promise: a new process or sampler is one class (or function) plus one
YAML. Here both live outside difflab (tests/extension/), are found through the user's own config
directory (`hydra.searchpath`) and `_target_` alone, and run through the real difflab-sample."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = Path(__file__).resolve().parent / "extension"
MIX = ["data.means=[[-2,0],[2,0]]", "data.stds=[0.5,0.5]", "data.weights=[0.3,0.7]"]


def run_sample(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(EXT)]), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "difflab.cli.sample", f"hydra.searchpath=[file://{EXT / 'conf'}]", "model=oracle", *MIX, *args,
                           "num_samples=2000", f"output={tmp_path}"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_user_process_and_sampler_through_target_alone(tmp_path):
    r = run_sample(tmp_path / "a", "process=trig_vp", "sampler=toy_ddim")
    assert r.returncode == 0, r.stderr
    f = np.load(tmp_path / "a" / "samples.npz")
    x, nfe = f["samples"], int(f["nfe"])
    assert x.shape == (2000, 2) and nfe == 40  # one network evaluation per step of the user's sampler
    # the exact denoiser + the user's process and sampler recover the mixture: weight 0.7 on the
    # right (binomial SE 0.01), component spread 0.5
    assert abs((x[:, 0] > 0).mean() - 0.7) < 0.04
    assert abs(x[x[:, 0] > 0, 1].std() - 0.5) < 0.05
    # the user's process with a shipped sampler, and the user's option reaching the function
    assert run_sample(tmp_path / "b", "process=trig_vp", "sampler=dpm_solver", "sampler.steps=20").returncode == 0
    r = run_sample(tmp_path / "c", "process=trig_vp", "sampler=toy_ddim", "sampler.squeeze=0.0")
    assert r.returncode == 0, r.stderr
    squeezed = np.load(tmp_path / "c" / "samples.npz")["samples"]
    assert squeezed[:, 1].std() < 0.5 * x[:, 1].std()  # ε̂ dropped: samples collapse towards the means
    # a misspelled option of the user's sampler: one line, exit 2
    r = run_sample(tmp_path / "d", "process=trig_vp", "sampler=toy_ddim", "+sampler.sqeeze=1")
    assert r.returncode == 2 and "has no option sqeeze" in r.stderr.strip().splitlines()[-1]
