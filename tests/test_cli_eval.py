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
    assert cfg.model._target_ == "difflab.models.GMMOracle" and "means" in cfg.data


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "difflab.cli.evaluate", f"output={tmp_path}", "metrics=[nll_ode,fidd]"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("difflab-eval: error: unknown metrics")
    assert not (tmp_path / "metrics.json").exists()


def test_oracle_elbo_reaches_se_0005_quickly(tmp_path):
    """The issue: the oracle's ELBO reaches SE 0.005 nats/dim in well under a minute on a
    CPU (default mc_samples: 4M batched draws); it bounds the exact nll."""
    m = evaluate(tmp_path, "metrics=[nll_elbo]")
    assert m["nll_elbo_num_samples"] == 4_000_000
    assert m["nll_elbo_se"] <= 0.005
    assert m["nll_elbo"] >= m["nll"] - 3 * (m["nll_elbo_se"] + m["nll_se"])
    assert m["nll_elbo"] - m["nll"] < 0.05
    print(f"nll_elbo {m['nll_elbo']:.4f} ± {m['nll_elbo_se']:.4f} in {m['nll_elbo_seconds']:.1f} s; nll {m['nll']:.4f}")


def test_mc_samples_option_and_discrete_elbo(tmp_path):
    m = evaluate(tmp_path, "metrics=[nll_elbo]", "mc_samples=20000", "elbo.num_steps=1000")
    assert m["nll_elbo_num_samples"] == 20000
    assert m["nll_elbo_se"] > 0.005  # fewer draws, larger error: the option is used


def test_oracle_sample_metrics(tmp_path):
    """Oracle samples (exact denoiser, Heun PF-ODE) are as close to the data as a second
    real set: swd and FID against their real-vs-real floors; a protocol-named FID."""
    m = evaluate(tmp_path, "metrics=[swd,mmd,fid,kid]", "num_samples=512", "num_reference=1024")
    assert any("512 samples (< 2048)" in w for w in m["warnings"])  # too few for a stable FID: said, with the number
    assert m["nfe"] > 0
    assert m["swd"] < 3 * m["swd_floor"] + 0.02
    assert abs(m["mmd"]) < 0.01
    # the floors come from 512 fresh real draws, as many as the samples: exact, so nothing is said about them
    # (how the oracle's FID compares with real data's: test_oracle_fid_lies_within_the_noise_of_real_data)
    assert m["num_real_floor"] == 512 and not any("real-vs-real floor from" in w for w in m["warnings"])
    assert m["fid_learned_n512_floor"] > 0
    assert {"kid_learned_n512", "kid_learned_n512_std"} <= m.keys()


def test_oracle_fid_lies_within_the_noise_of_real_data():
    """Oracle samples (exact denoiser, Heun PF-ODE) are draws from the data distribution up to
    the ODE's discretisation, so their FID against a reference set lies among the FIDs of fresh
    real sets of the same size against that reference (the floor's draws): inside the prediction
    interval mean ± 4·sd·√(1 + 1/K) of K such floors, same reference and feature net. One
    floor alone cannot say this: at 512 samples a single FID varies by its own size."""
    from difflab.evaluation import build_target
    from difflab.evaluation import SamplerChoice, feature_network, generate
    from difflab.metrics import extract, fid

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval")
    target = build_target(cfg, torch.device("cpu"))
    n, K = 512, 12
    samples, _ = generate(target, n, 0, SamplerChoice.from_config(cfg.sampler), progress=False)
    real = target.real(1024, 5).float()
    net = feature_network("learned", real, 0)
    real_f = extract(net, real)
    floors = torch.tensor([fid(real_f, extract(net, target.real(n, 100 + k).float())) for k in range(K)])
    value = fid(real_f, extract(net, samples.float()))
    mean, sd = float(floors.mean()), float(floors.std())
    assert abs(value - mean) < 4 * sd * (1 + 1 / K) ** 0.5, f"oracle FID {value:.3f}, real sets {mean:.3f} ± {sd:.3f}"



def test_floors_of_a_finite_data_set_come_from_its_validation_split():
    """A finite data set's floors are scored from real examples outside the reference: its
    validation split (digits: 197 examples), never the reference's own first rows (which gave
    swd_floor = 0). Fewer held-out examples than samples is said, with the number, and no floor
    is reported then: swd_floor is None and swd_floor_unavailable says why."""
    from omegaconf import OmegaConf

    from difflab.evaluation import EvalTarget, real_examples, sample_metrics
    from difflab.metrics import sliced_wasserstein

    target = EvalTarget(None, None, (1, 8, 8), OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / "digits.yaml")))
    train, val = target.real(10_000, 0), real_examples(target.get_datamodule(), 10_000, "val")
    assert val.shape[0] == 197
    samples = torch.rand(300, 1, 8, 8) * 2 - 1
    out, _ = sample_metrics(target, ["swd"], samples=samples)
    assert out["num_real_floor"] == 197 and any("floor from 197 held-out real examples (< 300" in w for w in out["warnings"])
    assert out["swd_floor"] is None and out["swd_floor_unavailable"] == "only 197 held-out examples for 300 samples"
    out, _ = sample_metrics(target, ["swd"], samples=samples[:150])  # held-out as many as the samples: exact, unsaid
    assert out["num_real_floor"] == 150 and "warnings" not in out and "swd_floor_unavailable" not in out
    expected = sliced_wasserstein(val[:150].flatten(1).double(), train[:150].flatten(1).double(), 512, torch.Generator().manual_seed(0))
    assert out["swd_floor"] == pytest.approx(float(expected)) and out["swd_floor"] > 0.01
    # no validation split: the training examples after the reference (here the first 1000 of 1797) stand in
    target = EvalTarget(None, None, (1, 8, 8), {**target.data_spec, "num_val": 0})
    train = target.real(10_000, 0)
    assert train.shape[0] == 1797
    out, _ = sample_metrics(target, ["swd"], samples=samples, num_reference=1000)
    expected = sliced_wasserstein(train[1000:1300].flatten(1).double(), train[:300].flatten(1).double(), 512,
                                  torch.Generator().manual_seed(0))
    assert out["num_real_floor"] == 300 and out["swd_floor"] == pytest.approx(float(expected))
    out, _ = sample_metrics(target, ["swd"], samples=samples, num_reference=10_000)  # the reference is all of it: none left
    assert "swd_floor" not in out and "num_real_floor" not in out
    assert out["swd_floor_unavailable"] == "no real examples outside the reference"

MIX = dict(means=[[-2.0, 0.0], [2.0, 1.0]], stds=[0.5, 0.3], weights=[0.4, 0.6])


@pytest.fixture
def checkpoint(tmp_path):
    """A few steps of a real DiffusionModule on a mixture, saved like difflab-train does."""
    import lightning as L

    from difflab.data import GMMDataModule
    from difflab.lit_module import DiffusionModule

    m = DiffusionModule(
        model={"_target_": "difflab.models.MLP", "dim": 2, "hidden": 32, "depth": 2, "emb_dim": 16},
        process={"_target_": "difflab.processes.VPSDE"},
        parameterization={"_target_": "difflab.parameterizations.Epsilon"},
        loss={"_target_": "difflab.losses.DiffusionLoss", "weighting": "simple", "time_sampling": "uniform"},
        data_shape=(2,), data_config={"_target_": "difflab.data.GMMDataModule", **MIX},
        denoiser={"conditioning": "log_snr"}, optim={"lr": 1e-2}, ema={"decay": 0.9, "warmup": False},
    )
    tr = L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, default_root_dir=str(tmp_path), limit_val_batches=0, num_sanity_val_steps=0)
    tr.fit(m, GMMDataModule(**MIX, num_train=64, num_val=0, batch_size=16))
    path = tmp_path / "last.ckpt"
    tr.save_checkpoint(path)
    return path


def test_checkpoint_evaluation_uses_its_own_data(tmp_path, checkpoint):
    out = tmp_path / "eval"
    m = evaluate(out, f"ckpt_path={checkpoint}", "metrics=[nll_ode,nll_elbo,swd]", "mc_samples=20000", "num_eval=64",
                 "num_samples=256")
    for key in ("nll_ode", "nll_ode_se", "nll_elbo", "nll_elbo_se", "swd", "nfe", "nll", "nll_se"):
        assert key in m, key
    exact = __import__("difflab.models", fromlist=["GMMOracle"]).GMMOracle(**MIX).nll()[0]
    assert m["nll"] == pytest.approx(exact, abs=0.01)  # the checkpoint's mixture, not the default data=gmm
    # an untrained model: its bound lies above the truth
    assert m["nll_elbo"] > m["nll"]


def test_checkpoint_for_other_data_is_refused(tmp_path, checkpoint, monkeypatch):
    import difflab.cli.evaluate as ev

    monkeypatch.setattr(ev, "_user_chose", lambda group: group == "data")  # as if data=digits was typed
    with pytest.raises(UsageError, match="trained on data GMMDataModule but data=DigitsDataModule"):
        evaluate(tmp_path / "eval", f"ckpt_path={checkpoint}", "data=digits", "metrics=[nll_ode]")


def test_sampling_compile_option_reaches_the_checkpoint_network(checkpoint):
    """difflab-sample/difflab-eval `compile=`: the checkpoint's network is compiled in place (no
    `_orig_mod.`), and a bf16-true copy of it is compiled again; compile=false leaves it eager."""
    from difflab.evaluation import build_target
    from difflab.evaluation.sampling import in_precision
    from difflab.models.options import is_compiled

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        on = compose("sample", overrides=[f"ckpt_path={checkpoint}", "compile=true"])
        off = compose("sample", overrides=[f"ckpt_path={checkpoint}"])
    target = build_target(on, torch.device("cpu"))
    assert is_compiled(target.denoiser.model) and not any("_orig_mod" in k for k in target.denoiser.state_dict())
    low, _ = in_precision(target.denoiser, "bf16-true")
    assert is_compiled(low.model.net) and low.model.net.inp.weight.dtype == torch.bfloat16
    assert not is_compiled(build_target(off, torch.device("cpu")).denoiser.model)
