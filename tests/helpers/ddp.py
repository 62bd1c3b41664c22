"""One small training run in 1 process and in 2 DDP processes (torchrun's 2 nodes, SLURM's 2 tasks,
ddp_spawn), and how their results compare.

The config (gmm, an MLP, per_sample_noise=true, Adam with optim.eps=1e-4) makes each example's
(t, eps) a function of (seed, step, dataset index) alone, and `difflab.data.base.StepSampler` deals
step k's items to ranks (and to accumulated micro-batches) from one permutation. Then:

- `ACCUMULATED`, one process with `trainer.accumulate_grad_batches=2` and batch 4, computes in its
  micro-batch m what rank m of 2 processes with batch 4 computes, and sums the two gradients as
  DDP does (each scaled by 1/2, an exact power-of-two scaling, then added: a + b = b + a). Its
  result equals the 2-process run's *bit for bit*: weights, EMA, samples, metrics
  (`assert_identical_run`).
- `ONE_PROCESS`, one process with batch 8, takes the gradient of one mean over the 8 items: the
  same gradient up to float32 summation order. Its weights agree within atol 1e-5 (measured 6e-8;
  a wrong example or noise assignment moves a weight by ~lr = 1e-2 per step), and its samples and
  swd within 1e-5 of their scale (`assert_same_run`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

#: the model, data, optimiser and length of the run
RUN = [
    "data=gmm", "data.num_train=64", "data.num_val=0", "+data.shuffle=true",
    "model=mlp", "model.dim=2", "model.hidden=32", "model.depth=2", "optim.eps=1e-4", "weighting=simple",
    "process=vp", "parameterization=eps", "callbacks=none",
    "per_sample_noise=true", "optim.lr=1e-2", "ema.decay=0.5", "ema.warmup=false",
    "trainer.max_steps=3", "trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false",
]
#: RUN through difflab-train, with logs, checkpoints and eval_at_end
COMMON = [
    *RUN, "logger=csv", "checkpoint_every=2", "trainer.log_every_n_steps=1",
    "eval_at_end=[swd]", "evaluation.num_samples=64", "evaluation.num_reference=64", "sampler.steps=4",
]
ONE_PROCESS = ["trainer=cpu", "data.batch_size=8"]
ACCUMULATED = ["trainer=cpu", "data.batch_size=4", "trainer.accumulate_grad_batches=2"]
TWO_NODES = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2", "data.batch_size=4"]
#: the files of a finished run of COMMON (each exactly once, all written by rank 0)
RUN_FILES = {"config.yaml", "checkpoints/last.ckpt", "metrics.json", "samples.npz", "logs/hparams.yaml", "logs/metrics.csv"}
#: metrics.json fields that say where the run came from, not what it computed
PROVENANCE = ("provenance",)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def ckpt(out: Path):
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ck["global_step"], ck["state_dict"], ck["ema"]


def _metrics(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in PROVENANCE}


def assert_same_run(one: Path, two: Path) -> None:
    """A DDP run `two` against the 1-process run `one` with batch 8 (module docstring): the same
    weights and EMA within 1e-5, the same evaluation from the same seed (exact fields equal, swd
    within 1e-5 relative, samples within 1e-5 of their scale)."""
    step1, sd1, ema1 = ckpt(one)
    step2, sd2, ema2 = ckpt(two)
    assert step1 == step2 == 3 and ema1["num_updates"] == ema2["num_updates"] == 3
    for k, v in sd1.items():
        torch.testing.assert_close(sd2[k], v, rtol=0, atol=1e-5, msg=f"raw weight {k}")
    for k, v in ema1["shadow"].items():
        torch.testing.assert_close(ema2["shadow"][k], v, rtol=0, atol=1e-5, msg=f"EMA weight {k}")
    m1, m2 = _metrics(one), _metrics(two)
    for key in ("swd_floor", "nfe", "num_samples", "num_real_floor", "data_shape"):
        assert m1[key] == m2[key], key
    assert m2["swd"] == pytest.approx(m1["swd"], rel=1e-5)
    s1, s2 = (np.load(d / "samples.npz") for d in (one, two))
    assert s1["samples"].shape == s2["samples"].shape == (64, 2) and int(s1["nfe"]) == int(s2["nfe"])
    scale = float(np.abs(s1["samples"]).max())
    np.testing.assert_allclose(s2["samples"], s1["samples"], rtol=0, atol=1e-5 * scale)


def assert_identical_run(one: Path, two: Path) -> None:
    """A DDP run `two` against the 1-process run `one` that accumulates the ranks' micro-batches
    (ACCUMULATED): the same final weights, EMA, samples and metrics, bit for bit."""
    step1, sd1, ema1 = ckpt(one)
    step2, sd2, ema2 = ckpt(two)
    assert step1 == step2 == 3 and ema1["num_updates"] == ema2["num_updates"] == 3
    assert sd1.keys() == sd2.keys() and ema1["shadow"].keys() == ema2["shadow"].keys()
    for k, v in sd1.items():
        assert torch.equal(sd2[k], v), f"raw weight {k}: max |diff| {(sd2[k] - v).abs().max():.3g}"
    for k, v in ema1["shadow"].items():
        assert torch.equal(ema2["shadow"][k], v), f"EMA weight {k}: max |diff| {(ema2['shadow'][k] - v).abs().max():.3g}"
    assert _metrics(one) == _metrics(two)  # swd, its floor, nfe, counts: every number equal
    s1, s2 = (np.load(d / "samples.npz") for d in (one, two))
    assert sorted(s1.files) == sorted(s2.files)
    for key in s1.files:
        np.testing.assert_array_equal(s2[key], s1[key], err_msg=key)


def compose_train(out: Path, overrides):
    """difflab-train's config (Hydra's compose API) of RUN with logger=none and no evaluation, for
    in-process runs (`difflab.cli.train.train(cfg, out)`)."""
    from hydra import compose, initialize_config_dir

    from difflab.config_check import CONFIG_DIR

    base = [f"output={out}", *RUN, "logger=none", "trainer.enable_model_summary=false"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=base + overrides)
