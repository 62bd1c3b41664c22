"""Divergence: a logged loss past divergence_factor x the running median, or a non-finite one,
stops the run in one line naming the likely cause, and last.ckpt keeps the last sound state."""
from types import SimpleNamespace

import pytest
import torch

from difflab.callbacks.checkpoint import SaveLast

from .conftest import TINY, cli


def fake_trainer(step, loss):
    return SimpleNamespace(global_step=step, callback_metrics={"train/loss": torch.tensor(loss)}, sanity_checking=False)


def test_growth_past_the_factor_stops_before_saving(tmp_path):
    cb = SaveLast(tmp_path, every=0, divergence_factor=100)
    saved = []
    cb._save = lambda trainer: saved.append(trainer.global_step)
    for step, loss in enumerate([1.0, 0.9, 1.1, 0.8, 1.0, 50.0, 0.7], start=1):  # 50x the median: still sound
        cb.on_train_batch_start(fake_trainer(step, loss), None, None, 0)
    with pytest.raises(FloatingPointError, match="learning rate is likely too high"):
        cb.on_train_batch_start(fake_trainer(8, 1e4), None, None, 0)
    with pytest.raises(FloatingPointError, match="diverged: loss nan"):
        SaveLast(tmp_path).on_train_batch_start(fake_trainer(1, float("nan")), None, None, 0)
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        SaveLast(tmp_path, divergence_factor=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["1e10", "1e30"])
def test_exploding_learning_rate_exits_2_and_keeps_a_sound_checkpoint(tmp_path, lr):
    out = tmp_path / "run"
    r = cli("train", *TINY, "trainer.max_steps=300", "checkpoint_every=1", "lr_schedule.warmup_steps=0", f"optim.lr={lr}",
            f"output={out}")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("difflab-train:")]
    assert r.returncode == 2 and len(lines) == 1 and "error:" in lines[0] and "optim.lr" in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    last = out / "checkpoints" / "last.ckpt"
    if last.exists():  # every state it holds is finite, and resumable
        ck = torch.load(last, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ck["state_dict"].values())
        assert all(torch.isfinite(v).all() for v in ck["ema"]["shadow"].values())


def test_nan_in_the_data_is_named_as_the_cause(tmp_path):
    """A NaN in a batch stops training before the step, naming the data (not the learning rate)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from difflab.lit_module import DiffusionModule

    module = DiffusionModule(
        model={"_target_": "difflab.models.MLP", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 16},
        process={"_target_": "difflab.processes.VPSDE"}, parameterization={"_target_": "difflab.parameterizations.Epsilon"},
        loss={"_target_": "difflab.losses.DiffusionLoss", "weighting": "simple"}, data_shape=(2,))
    x = torch.randn(64, 2)
    x[5, 1] = float("nan")
    before = [p.detach().clone() for p in module.parameters()]
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="training data contain NaN"):
        trainer.fit(module, DataLoader(TensorDataset(x), batch_size=64))
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))  # never applied
