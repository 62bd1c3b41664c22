"""DiffusionModule: EMA arithmetic and precision, checkpoints (plain hyper-parameters,
weights_only loading, exact resume of weights + EMA), NaN guard, LR schedule, shape check."""
import math

import lightning as L
import pytest
import torch
from torch import nn

from difflab.ema import ExponentialMovingAverage
from difflab.lit_module import DiffusionModule, LRLambda, load_denoiser
from helpers.modules import MIX, make_data, make_module, trainer

# ----------------------------------------------------------------------------- EMA
def test_ema_matches_closed_form_and_warmup():
    lin = nn.Linear(3, 1, bias=False)
    w0 = lin.weight.detach().clone()
    ema = ExponentialMovingAverage(lin, decay=0.9, warmup=False)
    targets = [torch.full_like(w0, v) for v in (1.0, -2.0, 0.5)]
    for w in targets:
        with torch.no_grad():
            lin.weight.copy_(w)
        ema.update(lin)
    # θ_ema = d³ θ0 + (1−d)(d² θ1 + d θ2 + θ3)
    d = 0.9
    expect = d**3 * w0 + (1 - d) * (d**2 * targets[0] + d * targets[1] + targets[2])
    torch.testing.assert_close(ema.shadow["weight"], expect)
    warm = ExponentialMovingAverage(lin, decay=0.9999, warmup=True)
    assert warm.current_decay() == pytest.approx(1 / 10)  # (1 + 0)/(10 + 0)
    warm.num_updates = 10**6
    assert warm.current_decay() == pytest.approx(0.9999)


def test_ema_is_float32_for_bf16_weights():
    """bf16 has 8 bits of mantissa: a (1−d)·Δ = 1e-4 step rounds to zero there, not in fp32."""
    lin = nn.Linear(4, 4).to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = ExponentialMovingAverage(lin, decay=0.9999)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update(lin)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((4, 4), 1.0001), rtol=0, atol=1e-6)
    assert torch.tensor(1.0, dtype=torch.bfloat16) + 1e-4 == 1.0  # what a bf16 EMA would have done


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_plain_and_loads_the_ema_denoiser(tmp_path):
    m = make_module()
    trainer(tmp_path, 5).fit(m, make_data())
    path = tmp_path / "m.ckpt"
    m.trainer.save_checkpoint(path)
    ck = torch.load(path, map_location="cpu", weights_only=True)  # plain containers only
    assert ck["ema"]["num_updates"] == 5 and ck["hyper_parameters"]["data_shape"] == [2]
    loaded = load_denoiser(path)
    assert loaded.data_shape == (2,) and loaded.data_config["means"] == MIX["means"] and loaded.global_step == 5
    z, t = torch.randn(7, 2), torch.rand(7) * 0.9 + 0.05
    expect_ema = m.denoiser(use_ema=True)(z, t)
    got = loaded.denoiser(z, t)
    assert got.eps.dtype == torch.float32
    torch.testing.assert_close(got.eps, expect_ema.eps)
    raw = load_denoiser(path, use_ema=False).denoiser(z, t)
    torch.testing.assert_close(raw.eps, m.net(z, t).eps)
    assert (raw.eps - got.eps).abs().max() > 1e-4  # EMA and raw weights really differ


@pytest.mark.parametrize("half", [1, 2], ids=["mid_epoch", "epoch_end"])
def test_resume_restores_weights_and_ema_exactly(tmp_path, half):
    """4 steps straight == `half` steps, checkpoint, resume to 4 (an epoch is 2 steps, so
    half=1 resumes mid-epoch: the step-indexed sampler must continue with the batch an
    uninterrupted run reads; each step's noise is seeded by the step)."""
    torch.manual_seed(0)
    straight = make_module()
    trainer(tmp_path / "a", 4).fit(straight, make_data(num_train=32, batch_size=16))
    torch.manual_seed(0)
    first = make_module()
    t1 = trainer(tmp_path / "b", half)
    t1.fit(first, make_data(num_train=32, batch_size=16))
    ck = tmp_path / "half.ckpt"
    t1.save_checkpoint(ck)
    torch.manual_seed(123)  # the resumed module starts from other weights: all must come from the checkpoint
    resumed = make_module()
    trainer(tmp_path / "c", 4).fit(resumed, make_data(num_train=32, batch_size=16), ckpt_path=str(ck))
    assert resumed.ema.num_updates == straight.ema.num_updates == 4
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, msg=k)
    for k, v in straight.ema.shadow.items():
        torch.testing.assert_close(resumed.ema.shadow[k], v, msg=k)


def test_metric_modules_stay_out_of_checkpoints(tmp_path):
    from torchmetrics import Metric

    class WithWeights(Metric):  # like FID: a feature network inside a metric
        def __init__(self):
            super().__init__()
            self.features = nn.Linear(64, 64)
            self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

        def update(self, x):
            self.total += x.sum()

        def compute(self):
            return self.total

    m = make_module()
    m.fid = WithWeights()
    trainer(tmp_path, 1).fit(m, make_data())
    m.trainer.save_checkpoint(tmp_path / "m.ckpt")
    keys = torch.load(tmp_path / "m.ckpt", weights_only=True)["state_dict"].keys()
    assert not [k for k in keys if k.startswith("fid.")] and any(k.startswith("net.") for k in keys)


# ----------------------------------------------------------------------------- guards
def test_nan_loss_stops_with_a_clear_error(tmp_path):
    m = make_module()
    bad = torch.utils.data.TensorDataset(torch.full((8, 2), float("nan")), torch.arange(8))
    # NaN data: the message names the data, not the learning rate (a finite batch whose
    # loss explodes is named after optim.lr, tests/reliability/test_divergence.py)
    with pytest.raises(FloatingPointError, match="training data contain NaN"):
        trainer(tmp_path, 2).fit(m, torch.utils.data.DataLoader(bad, batch_size=4))


def test_model_that_does_not_fit_the_data_is_refused():
    with pytest.raises(ValueError, match=r"does not fit data of shape \(1, 8, 8\)"):
        make_module(data_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="unknown optim keys"):
        make_module(optim={"lrr": 1.0})


def test_lr_warmup_then_cosine():
    f = LRLambda(warmup_steps=10, schedule="cosine", total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert LRLambda(5)(100) == 1.0
    with pytest.raises(ValueError, match="total_steps"):
        LRLambda(0, "cosine", None)
