"""difflab-sample: the contract run, per-sample determinism across batch sizes, images, errors (exit 2)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", "difflab.cli.sample", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_contract_run(tmp_path):
    r = run_cli("model=oracle", "data=gmm", "data.means=[[-2,0],[2,0]]", "data.stds=[0.5,0.5]", "data.weights=[0.3,0.7]",
                "process=vp", "sampler=ddim", "sampler.steps=20", "num_samples=1000", "seed=0", f"output={tmp_path}")
    assert r.returncode == 0, r.stderr
    f = np.load(tmp_path / "samples.npz")
    assert f["samples"].shape == (1000, 2) and int(f["nfe"]) == 20
    assert abs((f["samples"][:, 0] > 0).mean() - 0.7) < 0.05  # the mixture weight
    assert (tmp_path / "scatter.png").stat().st_size > 0


@pytest.mark.slow
def test_image_data_writes_grid(tmp_path):
    r = run_cli("model=oracle", "data.means=[[-0.5,0.5,0.5,-0.5],[0.5,-0.5,-0.5,0.5]]", "data.stds=[0.1,0.1]", "data.weights=[0.5,0.5]",
                "+data.shape=[1,2,2]", "sampler=dpm_solver", "sampler.steps=10", "num_samples=16", f"output={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (16, 1, 2, 2)
    assert (tmp_path / "grid.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("args,msg", [
    (["sampler.steps=0"], "steps must be an integer >= 1"),
    (["+sampler.temperature=2"], "has no option temperature"),
    (["process=vp", "sampler.grid=ddpm_trailing"], "needs a discrete process"),
    (["process=ddpm", "sampler=annealed_langevin", "sampler.grid=ddpm_leading"], "score at every noise level"),
    (["ckpt_path=/nonexistent.ckpt"], "does not exist"),
    (["precision=bf17"], "precision must be one of"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, msg):
    r = run_cli("model=oracle", *args, "num_samples=8", f"output={tmp_path}")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0], r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["data=gmm", "sampler=ddim"], ["-m", "sampler=ddim,ode_heun"]], ids=["bare", "options", "sweep"])
def test_no_checkpoint_and_no_typed_oracle_is_refused(tmp_path, args):
    """Without ckpt_path= and without model=oracle typed, nothing is sampled (never a silent oracle)."""
    out = tmp_path / "out"
    r = run_cli(*args, "num_samples=8", f"output={out}")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and "[HYDRA]" not in ln]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("difflab-sample: error: "), r.stderr
    assert "ckpt_path=" in lines[0] and "model=oracle" in lines[0]
    assert not list(out.rglob("samples.npz"))
    assert run_cli(*args, "model=oracle", "num_samples=8", f"output={out}").returncode == 0  # typed: it samples


@pytest.mark.slow
def test_unknown_sampler_exits_2(tmp_path):
    r = run_cli("model=oracle", "sampler=nope", f"output={tmp_path}")
    assert r.returncode == 2


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from difflab.cli.common import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def test_config_defaults():
    cfg = _compose()
    for key in ("num_samples", "batch_size", "seed", "ckpt_path", "use_ema", "sampler", "process", "data", "model"):
        assert key in cfg
    assert cfg.ckpt_path is None and cfg.use_ema is True and cfg.model._target_ == "difflab.models.GMMOracle"


@pytest.mark.parametrize("process", ["ddpm", "continuous_snr", "vp", "subvp", "ve", "flow"])
def test_every_process_option_and_batch_size_independence(process):
    """Same seed → same samples whatever batch_size (each 32-sample chunk has its own generator)."""
    from difflab.evaluation import build_target
    from difflab.evaluation import SamplerChoice, draw_samples

    cfg = _compose(f"process={process}", "sampler=ancestral", "sampler.steps=8")
    t = build_target(cfg, torch.device("cpu"))
    s = SamplerChoice.from_config(cfg.sampler)
    a, nfe = draw_samples(t.denoiser, t.process, t.data_shape, 100, 0, s, batch_size=32)
    b, _ = draw_samples(t.denoiser, t.process, t.data_shape, 100, 0, s, batch_size=128)
    c, _ = draw_samples(t.denoiser, t.process, t.data_shape, 100, 1, s, batch_size=128)
    assert a.shape == (100, 2) and nfe == 8
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c)


def test_every_sampler_config_composes_and_runs():
    from difflab.cli.common import CONFIG_DIR
    from omegaconf import OmegaConf

    from difflab.evaluation import build_target
    from difflab.evaluation import SamplerChoice, draw_samples

    from difflab.samplers import SAMPLERS

    names = sorted(p.stem for p in (CONFIG_DIR / "sampler").glob("*.yaml"))
    assert set(names) == set(SAMPLERS)  # one YAML per registered sampler
    for name in names:
        cfg = _compose(f"sampler={name}", "sampler.steps=2")
        opts = OmegaConf.to_container(cfg.sampler)
        assert opts.pop("name") == name
        steps, grid = opts.pop("steps"), opts.pop("grid")
        t = build_target(cfg, torch.device("cpu"))
        x, nfe = draw_samples(t.denoiser, t.process, t.data_shape, 32, 0, SamplerChoice(name, steps, grid, opts))
        assert torch.isfinite(x).all() and nfe > 0
