"""Sampling away from the CPU: every process (the learned schedule's network included) and
every deterministic sampler give on the test device (`--device cuda` / DIFFLAB_TEST_DEVICE)
what they give on the CPU, with grids, generators and starts made on either side; what a
run sets process-wide is put back; `compile=auto` follows the device the network runs on.

On a GPU the device-parametrised tests are the check; the `meta` device stands in for "not
the CPU" where a CPU run can tell (a host sync on a meta tensor raises)."""
import copy

import pytest
import torch

from conftest import PROCESS_IDS, all_processes, torch_globals_restored
from difflab.models import GMMOracle
from difflab.models.mlp import MLP
from difflab.models.options import apply_model_options, is_compiled
from difflab.samplers import SAMPLERS, sample
from difflab.samplers.core import _infer_device

ORACLE = GMMOracle([[-2.0, 0.0], [2.0, 0.5]], [0.5, 0.6], [0.4, 0.6])
DETERMINISTIC = ["ddim", "ode_euler", "ode_heun", "dpm_solver", "dpm_solver_3m", "unipc", "lms", "ipndm"]


@pytest.fixture(scope="module")
def procs():
    return all_processes()


@pytest.mark.parametrize("pid", PROCESS_IDS)
def test_every_process_samples_on_the_test_device_as_on_the_cpu(procs, pid, device):
    """The learned schedule evaluated CPU grid times with CUDA weights (vdm_cifar10 could not
    sample or evaluate on a GPU): its λ(t) now answers on t's device wherever its weights are."""
    cpu = procs[pid]
    dev = copy.deepcopy(cpu).to(device)
    oracle = copy.deepcopy(ORACLE).to(device)
    assert dev.prior_std() == pytest.approx(cpu.prior_std(), rel=1e-12)
    t = torch.linspace(cpu.t_min + 1e-3, cpu.t_max, 7, dtype=torch.float64)
    for tt in (t, t.to(device)):  # times from the CPU (grids, prior_std) or from the device
        lam = dev.log_snr(tt)
        assert lam.device == tt.device
        torch.testing.assert_close(lam.cpu(), cpu.log_snr(t))
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    for sampler in DETERMINISTIC:
        ref = sample(ORACLE.denoiser(cpu), cpu, (16, 2), sampler, 6, x_T=x_T).samples
        out = sample(oracle.denoiser(dev), dev, (16, 2), sampler, 6, x_T=x_T.to(device)).samples
        assert out.device.type == device.type
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4, msg=f"{pid} {sampler}")


def test_explicit_device_grid_and_generators_without_device(procs, device):
    """A grid given as a tensor on the device (ode_rk45 built its mask on the CPU), and the
    start's device read off a list of generators or the denoiser, not defaulting to the CPU."""
    cpu = procs["vp"]
    dev = copy.deepcopy(cpu).to(device)
    den = copy.deepcopy(ORACLE).to(device).denoiser(dev)
    grid = torch.linspace(cpu.t_max, cpu.t_min, 5, dtype=torch.float64)
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    for sampler, opts in (("ode_rk45", {"adaptive": False}), ("ddim", {})):
        ref = sample(ORACLE.denoiser(cpu), cpu, (8, 2), sampler, 4, x_T=x_T, grid=grid, **opts).samples
        out = sample(den, dev, (8, 2), sampler, 4, x_T=x_T.to(device), grid=grid.to(device), **opts).samples
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    gens = [torch.Generator(device=device).manual_seed(s) for s in (1, 2)]
    out = sample(den, dev, (8, 2), "ancestral", 3, generator=gens).samples
    assert out.device.type == device.type and torch.isfinite(out).all()
    out = sample(den, dev, (8, 2), "ddim", 3).samples  # no generator, no device: the denoiser's
    assert out.device.type == device.type and torch.isfinite(out).all()


def test_the_start_device_is_read_off_generators_then_the_denoiser():
    meta_net = torch.nn.Linear(2, 2, device="meta")
    assert _infer_device(meta_net, None, None).type == "meta"
    assert _infer_device(meta_net, [torch.Generator()], None).type == "cpu"  # the generator decides first
    assert _infer_device(meta_net, None, torch.zeros(1)).type == "cpu"  # and x_T before it
    assert _infer_device(lambda z, t: z, None, None).type == "cpu"  # a plain function: the CPU


@pytest.fixture
def meta_without_autocast(monkeypatch):
    """The meta device has no autocast: ask for none there (the code under test queries it)."""
    import contextlib

    import difflab.denoiser

    enabled, dtype = torch.is_autocast_enabled, torch.get_autocast_dtype
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: False if a and a[0] == "meta" else enabled(*a))
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda d: torch.float32 if d == "meta" else dtype(d))
    monkeypatch.setattr(difflab.denoiser, "autocast_off", lambda device_type: contextlib.nullcontext())


IMAGE_RECIPES = ["ddpm_cifar10", "vdm_cifar10", "edm_cifar10", "ncsn_cifar10", "score_sde_vp", "score_sde_ve"]


@pytest.mark.parametrize("recipe", IMAGE_RECIPES)
def test_a_training_step_of_every_image_recipe_makes_no_host_sync(recipe, meta_without_autocast):
    """Loss (times drawn, noised, denoised, weighted), backward, EMA update and optimiser step of
    each image recipe, its full-size network on the meta device, where reading any value back
    raises. vdm_cifar10's learned schedule read its endpoints back on every λ call."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import recipe_throughput as rt

    from difflab.lit_module import DiffusionModule

    _, dm, kw = rt.recipe_parts(recipe, None, False, torch.device("cpu"))
    m = DiffusionModule(**kw).to("meta")
    x = torch.empty(4, *dm.data_shape, device="meta")
    with m.process.times_unchecked(), m.process.reusing_alpha_sigma():
        loss = m.loss_fn(m.net, x, generator=None).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in m.net.model.parameters())
    torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.grad is not None], 1.0)
    m.ema.to("meta", copy=True)
    m.ema.update(m.net)
    optim = m.configure_optimizers()  # (kept: the LR scheduler wraps the optimiser's step)
    optim["optimizer"].step()
    optim["lr_scheduler"]["scheduler"].step()


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "ode_rk45"])
def test_sampling_off_the_cpu_makes_no_host_sync_per_step(procs, sampler, meta_without_autocast):
    """Each network call checked its times' range (two host syncs per call on a GPU, the queue
    drained before every step). The grid is checked once; on a device that cannot be read from
    the host (meta) any sync in the loop raises. (ode_rk45 is torchdiffeq's: it reads its times
    back once, and its adaptive step control reads each error estimate.)"""
    from difflab.denoiser import Denoiser
    from difflab.parameterizations import Epsilon

    for pid in ("ddpm_linear", "vp", "ve", "flow"):
        proc = procs[pid]  # on the CPU: the grid's constants are read back once per run, by design
        den = Denoiser(MLP(dim=2, hidden=16, depth=1, emb_dim=8).to("meta"), proc, Epsilon(), conditioning="t")
        out = sample(den, proc, (4, 2), sampler, 5, x_T=torch.empty(4, 2, device="meta"))
        assert out.samples.device.type == "meta" and out.samples.shape == (4, 2)
    proc = procs["vp"]
    # on the CPU, where a check costs nothing, every call is still checked
    with pytest.raises(ValueError, match=r"t_min, t_max"):
        proc.alpha_sigma(torch.tensor([proc.t_max + 0.5]))
    with proc.times_unchecked():
        proc.alpha_sigma(torch.tensor([proc.t_max + 0.5]))
    assert proc.validate_time


def test_torch_globals_a_cli_run_sets_are_put_back():
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark)
    with torch_globals_restored():
        from difflab.evaluation import resolve_device

        torch.set_float32_matmul_precision("medium")  # as difflab-train's run() does ("high")
        resolve_device("cpu")
        torch.backends.cudnn.benchmark = not before[1]
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark) == before


def test_compile_auto_follows_the_device_the_network_runs_on(monkeypatch):
    """A checkpoint loaded for the CPU on a machine with a GPU stays eager (minutes of compiling
    on a CPU otherwise); for a GPU it compiles."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    net = apply_model_options(MLP(dim=2, hidden=8, depth=1, emb_dim=8), "auto", device="cpu")
    assert not is_compiled(net)
    net = apply_model_options(MLP(dim=2, hidden=8, depth=1, emb_dim=8), "auto", device="cuda")
    assert is_compiled(net)  # compiled lazily: nothing runs here
    net = apply_model_options(MLP(dim=2, hidden=8, depth=1, emb_dim=8), "auto")
    assert is_compiled(net)  # no device given: a GPU is present


LEARNED_PROCESS = {"_target_": "difflab.processes.ContinuousSNR", "schedule": "learned", "log_snr_min": -5.0,
                   "log_snr_max": 5.0, "hidden": 8}


def test_a_crossed_learned_schedule_is_named_without_a_host_sync(tmp_path):
    """Off the CPU the learned schedule's λ_min < λ_max check would sync per call: there λ turns
    NaN (no check is read back) and the training guard names the schedule as the reason. The
    CPU path (`check_on_host`) raises at once, as test_processes checks."""
    from difflab.processes import ContinuousSNR
    from helpers.modules import make_data, make_module, trainer

    p = ContinuousSNR("learned", -5, 5, hidden=8)
    p.log_snr_schedule.check_on_host = False  # as on a GPU
    assert p.log_snr_schedule.problem() is None
    assert torch.isfinite(p.log_snr(torch.tensor([0.2, 0.7]))).all()
    with torch.no_grad():
        p.log_snr_schedule.log_snr_min_param.fill_(6.0)
    assert torch.isnan(p.log_snr(torch.tensor([0.2, 0.7]))).all()
    assert "no longer decreasing" in p.log_snr_schedule.problem()
    assert p.problem() == p.log_snr_schedule.problem()  # the process passes it on

    module = make_module(process=LEARNED_PROCESS)
    module.process.log_snr_schedule.check_on_host = False
    with torch.no_grad():
        module.process.log_snr_schedule.log_snr_min_param.fill_(6.0)
    with pytest.raises(FloatingPointError, match="learned schedule is no longer decreasing"):
        trainer(tmp_path, 2).fit(module, make_data())


def test_a_checkpoint_with_a_crossed_learned_schedule_is_refused_on_load(tmp_path):
    """Sampling it on a GPU would only give NaN: load_denoiser says why, once, on the host."""
    from difflab.lit_module import load_denoiser
    from helpers.modules import make_data, make_module, trainer

    module = make_module(process=LEARNED_PROCESS)
    trainer(tmp_path, 2).fit(module, make_data())
    path = tmp_path / "m.ckpt"
    module.trainer.save_checkpoint(path)
    assert load_denoiser(path).denoiser is not None
    ck = torch.load(path, map_location="cpu", weights_only=True)
    for table in (ck["state_dict"], ck["ema"]["shadow"]):
        keys = [k for k in table if k.endswith("log_snr_min_param")]
        assert keys
        for k in keys:
            table[k] = torch.tensor(6.0)
    torch.save(ck, path)
    for use_ema in (True, False):
        with pytest.raises(ValueError, match="no longer decreasing"):
            load_denoiser(path, use_ema=use_ema)
