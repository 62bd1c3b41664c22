"""difflab-eval on the GMM oracle, where every number has an exact answer."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from difflab.cli.common import CONFIG_DIR, UsageError
from difflab.cli.evaluate import run

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def evaluate(tmp_path, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"output={tmp_path}", *overrides])
    out = run(cfg, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written.keys() == out.keys()
    return written


def test_config_defaults_compose():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval")
    for key in ("process", "schedule", "parameterization", "data", "model", "seed", "device", "mc_samples", "metrics"):
        assert key in cfg, key
    assert cfg.model.name == "oracle" and "means" in cfg.data


def test_oracle_nll_ode_matches_exact_nll(tmp_path):
    m = evaluate(tmp_path, "metrics=[nll_ode]", "ode.divergence=exact", "ode.rtol=1e-7", "ode.atol=1e-7", "num_eval=256",
                 "mc_samples=400000")
    assert {"nll_ode", "nll_ode_se", "nll", "nll_se", "nll_ode_gap", "nll_ode_gap_se"} <= m.keys()
    assert abs(m["nll_ode_gap"]) < 0.01           # paired with the exact log p of the same points
    assert abs(m["nll_ode"] - m["nll"]) < 3 * (m["nll_ode_se"] + m["nll_se"])


def test_bpd_on_continuous_data_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="8-bit image data"):
        evaluate(tmp_path, "metrics=[bpd_ode]", "num_eval=8")


def test_bad_metric_and_missing_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="unknown metrics"):
        evaluate(tmp_path, "metrics=[nll_ode,fidd]")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(tmp_path, "metrics=[nll_ode]", f"ckpt_path={tmp_path / 'nope.ckpt'}")


@pytest.mark.slow
def test_console_script_exit_2_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "difflab.cli.evaluate", f"output={tmp_path}", "metrics=[nll_ode,fidd]"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("difflab-eval: error: unknown metrics")
    assert not (tmp_path / "metrics.json").exists()
