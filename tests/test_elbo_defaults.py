"""Must show (issue 12): the ELBO's *default* options give a tight, precise bound on every process.

With the exact GMM oracle (the Bayes-optimal denoiser) the continuous-time −ELBO (Kingma et al.
2021, Eq. 17) exceeds −log p(x) only by the prior KL, the reconstruction term and the truncation
of the log-SNR range, all small here; so its Monte Carlo estimate must land in
[exact − 3 SE, exact + 0.05] nats/dim. Drawing t uniformly in *t* fails this on VP (−dλ/dt spans
5000× over [t_min, 1]: 0.870 ± 0.083 nats/dim for a true 1.081, 2.5 SE below the truth); drawing
λ uniformly (antithetic) makes the weight −λ'(t)/p(t) constant and the estimate precise.
The truth is the mixture's closed-form log-density (`GMMOracle.log_prob`), never a number the
code printed earlier.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difflab.likelihood import nll_elbo
from difflab.models import GMMOracle
from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, Flow, SubVPSDE

SRC = Path(__file__).resolve().parents[1] / "src"
PROCESSES = ["vp", "subvp", "ve", "ddpm", "continuous_snr", "flow"]  # the option names of conf/process/
# data=gmm's default mixture (conf/data/gmm.yaml) and each conf/process/<name>.yaml's defaults
MIXTURE = dict(means=[[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]], stds=[0.5, 0.4, 0.6], weights=[0.3, 0.5, 0.2])
LIBRARY = {"vp": lambda: VPSDE(0.1, 20.0, t_min=1e-5), "subvp": lambda: SubVPSDE(0.1, 20.0, t_min=1e-5),
           "ve": lambda: VESDE(0.01, 50.0, t_min=0.0), "ddpm": lambda: DDPM(1000, "linear"),
           "continuous_snr": lambda: ContinuousSNR("linear", -10.0, 10.0), "flow": lambda: Flow(1e-5, 0.999)}


def _assert_tight(elbo, elbo_se, nll, nll_se, label):
    """SE ≤ 0.01 nats/dim and the gap in [−3 SE, 0.05] (SE of the difference of the two
    independent Monte Carlo means)."""
    gap, se = elbo - nll, math.hypot(elbo_se, nll_se)
    assert elbo_se <= 0.01, (label, elbo, elbo_se)
    assert -3 * se <= gap <= 0.05, (label, elbo, elbo_se, nll, nll_se)


@pytest.mark.slow  # a subprocess per process (~20 s each on one loaded core)
@pytest.mark.parametrize("process", PROCESSES)
def test_default_difflab_eval_elbo_is_tight_on_every_process(tmp_path, process):
    """`difflab-eval model=oracle data=gmm process=<p> metrics=[nll_elbo]` with default options."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "DIFFLAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "difflab.cli.evaluate", "model=oracle", "data=gmm", f"process={process}",
           "metrics=[nll_elbo]", "threads=1", f"output={tmp_path}"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    _assert_tight(m["nll_elbo"], m["nll_elbo_se"], m["nll"], m["nll_se"], process)


@pytest.mark.parametrize("process", PROCESSES)
def test_default_nll_elbo_is_tight_on_every_process(process):
    """The library call with default options (no Hydra): nll_elbo(denoiser, process, sampler)."""
    oracle = GMMOracle(**MIXTURE)
    proc = LIBRARY[process]().double()
    est = nll_elbo(oracle.denoiser(proc), proc, lambda n, g: oracle.sample(n, generator=g).double(),
                   num_draws=4_000_000, generator=torch.Generator().manual_seed(0))
    elbo, elbo_se = est.per_dim
    nll, nll_se = oracle.nll(num_samples=2_000_000, seed=1)
    _assert_tight(elbo, elbo_se, nll, nll_se, process)
