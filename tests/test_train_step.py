"""The fast training step: EMA order against checkpoints, the sync-free non-finite guard
(a bad step never moves the weights or the EMA), compile without `_orig_mod.` keys,
channels_last, all on the test device (`--device` / DIFFLAB_TEST_DEVICE)."""
import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from difflab.lit_module import load_denoiser
from helpers.modules import make_data, make_module

EAGER = {"backend": "eager"}  # torch.compile's machinery without a C++ build: seconds on a CPU


def fit(tmp_path, module, data, steps, device, ckpt_path=None, **kw):
    acc = "gpu" if device.type == "cuda" else "cpu"
    devices = [device.index or 0] if device.type == "cuda" else 1
    t = L.Trainer(max_steps=steps, accelerator=acc, devices=devices, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                  limit_val_batches=0, num_sanity_val_steps=0, **kw)
    t.fit(module, data, ckpt_path=ckpt_path)
    return t


class SaveAt(Callback):
    """Saves a checkpoint from `on_train_batch_end` of step k, as difflab-train's SaveLast does."""

    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_checkpoint_of_step_k_holds_k_ema_updates_and_resumes_exactly(tmp_path, device):
    """Lightning calls callbacks' on_train_batch_end before the module's: the EMA must already
    hold step k's update when a callback saves step k, and a resumed run must not skip one."""
    torch.manual_seed(0)
    straight = make_module()
    fit(tmp_path / "a", straight, make_data(32, 16), 5, device, callbacks=[SaveAt(3, tmp_path / "k3.ckpt")])
    ck = torch.load(tmp_path / "k3.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 3 and ck["ema"]["num_updates"] == 3
    # the EMA of step 3 is d·EMA(2) + (1−d)·θ(3), θ(3) being the saved weights: recompute it from step 2's save
    torch.manual_seed(0)
    two = make_module()
    fit(tmp_path / "b", two, make_data(32, 16), 3, device, callbacks=[SaveAt(2, tmp_path / "k2.ckpt")])
    ck2 = torch.load(tmp_path / "k2.ckpt", map_location="cpu", weights_only=True)
    d = ck["ema"]["decay"]
    for k, v in ck["ema"]["shadow"].items():
        theta3 = ck["state_dict"]["net." + k]
        torch.testing.assert_close(v, d * ck2["ema"]["shadow"][k] + (1 - d) * theta3, msg=k)
    torch.manual_seed(7)
    resumed = make_module()
    fit(tmp_path / "c", resumed, make_data(32, 16), 5, device, ckpt_path=str(tmp_path / "k3.ckpt"))
    assert resumed.ema.num_updates == straight.ema.num_updates == 5
    for k, v in straight.ema.shadow.items():
        torch.testing.assert_close(resumed.ema.shadow[k], v, msg=k)


def nan_batches(n_good, n_bad):
    x = torch.randn(4 * (n_good + n_bad), 2)
    x[4 * n_good:] = float("nan")
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.arange(len(x))), batch_size=4)


@pytest.mark.parametrize("fused", [False, True], ids=["check_each_step", "fused_skip_on_device"])
def test_non_finite_steps_never_move_weights_or_ema(tmp_path, device, fused):
    """Deferred check (the default on CUDA, where Adam is made fused at train start): the fused
    optimiser skips the bad steps on the device and the error comes at the next check
    (log_every_n_steps=3); on the CPU (Adam fused there too, for speed) the check stops before
    the first bad step."""
    m = make_module(optim={"lr": 1e-2, "name": "adamw"})
    if fused:
        opt = m.configure_optimizers

        def fused_opt():
            conf = opt()
            o = conf["optimizer"]
            f = torch.optim.AdamW(o.param_groups[0]["params"], lr=1e-2, fused=True)
            conf["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(f, lambda s: 1.0)
            return {"optimizer": f, "lr_scheduler": conf["lr_scheduler"]}

        m.configure_optimizers = fused_opt
        m.defer_non_finite_check = True  # what a GPU does by default: the deferred check, tested on the CPU too
    deferred = fused or device.type == "cuda"
    snap = {}

    class Snapshot(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:  # after the good steps
                snap["w"] = {k: v.detach().cpu() for k, v in pl_module.net.state_dict().items()}
                snap["ema"] = {k: v.cpu() for k, v in pl_module.ema.shadow.items()}

    # the batches are NaN, so the error names the data, not the learning rate
    with pytest.raises(FloatingPointError, match="training data contain NaN"):
        fit(tmp_path, m, nan_batches(2, 4), 6, device, log_every_n_steps=3, callbacks=[Snapshot()])
    assert m.global_step == (3 if deferred else 2)  # the fused run took (and skipped) step 3 before the check
    # compared on the CPU: Lightning's teardown moves the module back there, the EMA stays on the device
    for k, v in m.net.state_dict().items():
        torch.testing.assert_close(v.cpu(), snap["w"][k], rtol=0, atol=0, msg=k)
    for k, v in m.ema.shadow.items():
        assert torch.isfinite(v).all(), k
        if not deferred:
            torch.testing.assert_close(v.cpu(), snap["ema"][k], rtol=0, atol=0, msg=k)
    if deferred:  # the skipped step left Adam's state and its step count untouched too
        st = next(iter(m.trainer.optimizers[0].state.values()))
        assert int(st["step"]) == 2 and torch.isfinite(st["exp_avg"]).all()


@pytest.mark.parametrize("trained_compiled", [True, False], ids=["compiled_run", "eager_run"])
def test_compile_checkpoints_load_both_ways(tmp_path, device, trained_compiled):
    """model.compile leaves parameter names alone: a compiled run's checkpoint has no
    `_orig_mod.` keys, loads without compile, and an eager run's loads with compile."""
    model = {"_target_": "difflab.models.MLP", "dim": 2, "hidden": 32, "depth": 2, "emb_dim": 16,
             "compile": EAGER if trained_compiled else False}
    m = make_module(model=model)
    t = fit(tmp_path, m, make_data(), 3, device)
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    keys = torch.load(path, map_location="cpu", weights_only=True)["state_dict"].keys()
    assert keys and not [k for k in keys if "_orig_mod" in k]
    z, tt = torch.randn(6, 2, device=device), torch.rand(6, device=device) * 0.9 + 0.05
    ref = m.to(device).denoiser(use_ema=True)(z, tt).eps  # Lightning's teardown moved the module to the CPU
    for compile in (False, EAGER):
        got = load_denoiser(path, device=device, compile=compile)
        assert (got.denoiser.model._compiled_call_impl is not None) == bool(compile)
        torch.testing.assert_close(got.denoiser(z, tt).eps, ref)


def test_channels_last_unet_matches_and_trains(tmp_path, device):
    unet = {"_target_": "difflab.models.UNet", "in_channels": 1, "image_size": 8, "ch": 16, "ch_mult": [1, 2],
            "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.0, "num_groups": 8}
    torch.manual_seed(0)
    plain = make_module(data_shape=(1, 8, 8), model=unet).to(device)
    torch.manual_seed(0)
    fast = make_module(data_shape=(1, 8, 8), model={**unet, "channels_last": True}).to(device)
    w = fast.net.model.down[0].blocks[0].conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    with torch.no_grad():  # same weights, other memory layout: same function
        for p in fast.net.parameters():
            p.normal_(0, 0.1)
        plain.net.load_state_dict(fast.net.state_dict())
    z = torch.randn(3, 1, 8, 8, device=device)
    t = torch.rand(3, device=device) * 0.9 + 0.05
    torch.testing.assert_close(fast.net(z.contiguous(memory_format=torch.channels_last), t).eps, plain.net(z, t).eps,
                               rtol=1e-4, atol=1e-4)
    images = torch.utils.data.TensorDataset(torch.rand(16, 1, 8, 8) * 2 - 1, torch.arange(16))
    fit(tmp_path, fast, torch.utils.data.DataLoader(images, batch_size=8), 2, device)
    assert fast.ema.num_updates == 2


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_adam_made_fused_gives_the_same_update_and_skips_on_found_inf(device, kind):
    """use_fused_step (on the test device: CPU kernels since torch 2.4): the same Adam/AdamW
    update (Kingma & Ba 2015, Alg. 1; Loshchilov & Hutter 2019) as the per-parameter loop over
    20 steps, and found_inf = 1 leaves weights, moments and the step count as they were."""
    from difflab.fused import use_fused_step

    torch.manual_seed(0)
    a = torch.nn.Linear(4, 3).to(device)
    b = torch.nn.Linear(4, 3).to(device)
    b.load_state_dict(a.state_dict())
    oa = kind(a.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    ob = kind(b.parameters(), lr=1e-2, weight_decay=0.1)
    assert use_fused_step(ob) and ob.param_groups[0]["fused"] and ob.defaults["fused"]
    x = torch.randn(8, 4, device=device)
    for _ in range(20):
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa)
    before = [p.detach().clone() for p in b.parameters()]
    ob.zero_grad()
    b(x).pow(2).sum().backward()
    ob.found_inf = torch.ones((), device=device)
    ob.step()
    for p, q in zip(b.parameters(), before):
        assert torch.equal(p, q)
    assert int(next(iter(ob.state.values()))["step"]) == 20


def test_an_explicit_foreach_on_the_cpu_is_kept_and_training_makes_adam_fused(tmp_path, device):
    """An explicit `foreach` on the CPU is the user's choice (not made fused); the training step
    makes the recipes' Adam (foreach unset) fused, on any device."""
    from difflab.fused import use_fused_step

    for choice in (False, True):
        kept = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], foreach=choice)
        assert use_fused_step(kept) is False and kept.param_groups[0]["foreach"] is choice
        assert not kept.defaults.get("fused")
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert use_fused_step(sgd) is False
    m = make_module()
    t = fit(tmp_path, m, make_data(32, 16), 2, device)
    opt = t.optimizers[0]  # the torch optimiser (Trainer.optimizers holds no LightningOptimizer wrapper)
    assert opt.defaults["fused"] is True and all(g["fused"] for g in opt.param_groups)


def test_multi_tensor_step_is_the_same_adam_and_respects_an_explicit_choice():
    """For an optimiser without a fused kernel, the training step gives an unset `foreach` the
    multi-tensor implementation (Adam here, to compare with its loop): the same update rule
    (Kingma & Ba 2015, Alg. 1), so 20 steps agree with the per-parameter loop to float32
    rounding; an explicit foreach=False is kept."""
    from difflab.fused import use_multi_tensor_step

    def run(make):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
        opt = make(params)
        for k in range(20):
            for p in params:
                p.grad = torch.sin(p.detach() * (k + 1))
            opt.step()
        return opt, params

    switched, a = run(lambda ps: (lambda o: (use_multi_tensor_step(o), o)[1])(torch.optim.Adam(ps, lr=1e-2)))
    assert switched.defaults["foreach"] is True and all(g["foreach"] is True for g in switched.param_groups)
    _, b = run(lambda ps: torch.optim.Adam(ps, lr=1e-2, foreach=False))
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    kept = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], foreach=False)
    assert use_multi_tensor_step(kept) is False and kept.param_groups[0]["foreach"] is False
