"""difflab/compat.py pinned on the installed torch and Lightning: each private attribute it uses
still exists and still does what difflab relies on. A failure here after an upgrade names the
function to rewrite (see its comment for the public alternative it waits for); nothing else in
difflab touches these attributes (tests/test_architecture.py). Also pinned: the public APIs that
replaced private ones do the same job (Hydra's sweep expansion, the CSV logger
append, hyper-parameters kept from the logger)."""
import copy
import csv
import inspect
import pickle
import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from difflab import compat

# ----------------------------------------------------------------------------- torch


def test_cuda_device_count_cache(monkeypatch):
    """remember_no_cuda: torch.cuda.device_count() answers from `_cached_device_count` once set."""
    assert hasattr(torch.cuda, "_cached_device_count") and callable(torch.cuda.is_initialized)
    assert "_cached_device_count" in inspect.getsource(torch.cuda.device_count)
    monkeypatch.setattr(torch.cuda, "_cached_device_count", 0)
    assert torch.cuda.device_count() == 0


def test_grad_norm_is_the_norm_of_all_gradients_in_float32():
    assert hasattr(torch, "_foreach_norm")
    g = [torch.randn(3, 4), torch.randn(5), torch.randn(2, 2, dtype=torch.float64)]
    total = torch.linalg.vector_norm(torch.cat([x.double().flatten() for x in g]))
    got = compat.grad_norm(g)
    assert got.dtype == torch.float32 and torch.isclose(got.double(), total, rtol=1e-6)
    half = [torch.full((1,), 40000.0, dtype=torch.float16)] * 3  # each norm fits fp16, the total (69282) only float32
    assert torch.isclose(compat.grad_norm(half), torch.tensor(40000.0 * 3 ** 0.5))
    assert not torch.isfinite(compat.grad_norm([torch.ones(2), torch.tensor([float("nan")])]))


def test_fused_kernel_devices():
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices  # noqa: F401 - the helper itself

    devices = compat.fused_kernel_devices()
    assert "cuda" in devices and "cpu" in devices  # torch >= 2.4: fused Adam on the CPU (difflab.fused)
    torch.optim.Adam([nn.Parameter(torch.ones(2))], fused=True)  # and the CPU kernel exists


def _adam_step(skip: bool):
    p = nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p], lr=0.1)
    from difflab.fused import use_fused_step

    assert use_fused_step(opt) and compat.skips_found_inf(opt)
    p.grad = torch.ones(4)
    compat.skip_next_step_if(opt, torch.tensor(skip))
    opt.step()
    return p.detach().clone(), opt.state[p]


def test_found_inf_skips_a_fused_step_and_only_then():
    # torch's own fused Adam marks itself as difflab marks an Adam made fused after construction
    assert torch.optim.Adam([nn.Parameter(torch.ones(1))], fused=True)._step_supports_amp_scaling is True
    assert "found_inf" in inspect.getsource(torch.optim.Adam.step)
    skipped, state = _adam_step(True)
    assert torch.equal(skipped, torch.ones(4)) and torch.equal(state["exp_avg"], torch.zeros(4))
    stepped, _ = _adam_step(False)
    assert not torch.equal(stepped, torch.ones(4))


def test_tensor_version_counts_in_place_writes():
    t = torch.zeros(3)
    v = compat.tensor_version(t)
    _ = t + 1
    assert compat.tensor_version(t) == v
    t.add_(1)
    assert compat.tensor_version(t) > v
    t[0] = 5.0
    assert compat.tensor_version(t) > v + 1


def test_compiled_forward_is_what_module_compile_installs():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert compat.compiled_forward(net) is None
    net.compile()  # lazy: nothing is compiled before a call
    fn = compat.compiled_forward(net)
    assert fn is not None and fn is net._compiled_call_impl
    with compat.compiled_forwards_detached(net):
        assert compat.compiled_forward(net) is None
        twin = copy.deepcopy(net)
        assert net(torch.ones(1, 2)).shape == (1, 1)  # eager
    assert compat.compiled_forward(twin) is None and compat.compiled_forward(net) is fn


def test_compiled_state_dict_prefix():
    net = nn.Linear(2, 2)
    keys = set(torch.compile(net).state_dict())
    assert keys == {compat.COMPILED_PREFIX + k for k in net.state_dict()}
    assert compat.strip_compiled_prefix(torch.compile(net).state_dict()).keys() == net.state_dict().keys()


def _rename_w(module, state_dict, prefix, *args):
    if prefix + "w" in state_dict:
        state_dict[prefix + "weight"] = state_dict.pop(prefix + "w")


def test_load_state_dict_pre_hook_renames_keys_and_survives_copies():
    def fresh():
        net = nn.Linear(2, 2)
        compat.add_load_state_dict_pre_hook(net, _rename_w)
        return net

    for net in (fresh(), copy.deepcopy(fresh()), pickle.loads(pickle.dumps(fresh()))):  # ddp_spawn pickles
        old = {"w": torch.full((2, 2), 3.0), "bias": torch.zeros(2)}
        net.load_state_dict(old)
        assert torch.equal(net.weight.detach(), torch.full((2, 2), 3.0))
    parent = nn.Sequential(fresh())  # a submodule's hook sees its own prefix
    parent.load_state_dict({"0.w": torch.ones(2, 2), "0.bias": torch.zeros(2)})
    assert torch.equal(parent[0].weight.detach(), torch.ones(2, 2))

# ----------------------------------------------------------------------------- Lightning


class _Recorder(compat.CheapHookNameSetattr, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        object.__setattr__(self, "seen", {"fx": [], "logs": [], "counter": []})

    def training_step(self, batch, batch_idx):
        self.seen["fx"].append(self._current_fx_name)
        self.seen["logs"].append(compat.logs_this_step(self.trainer))
        self.seen["counter"].append((self.trainer.fit_loop.epoch_loop._batches_that_stepped, self.trainer.global_step))
        loss = self.lin(batch[0]).pow(2).mean()
        if compat.logs_this_step(self.trainer):
            self.log("loss", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _SaveAt(L.Callback):
    """Saves a checkpoint in on_train_batch_start at `step`, as SaveLast does; records Lightning's
    logging step counter and the optimiser step there (and realigns the counter if asked)."""

    def __init__(self, step, path, realign=False):
        self.step, self.path, self.realign, self.counters = step, path, realign, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        before = trainer.fit_loop.epoch_loop._batches_that_stepped
        if self.realign:
            compat.realign_logging_step(trainer)
        self.counters.append((before, trainer.fit_loop.epoch_loop._batches_that_stepped, trainer.global_step))
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def _fit(tmp_path, module, max_steps, callbacks=(), ckpt_path=None, logger=False):
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        log_every_n_steps=2, callbacks=list(callbacks))
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return trainer


def test_lightning_hook_name_logging_step_and_its_restore(tmp_path):
    """CheapHookNameSetattr, logs_this_step and realign_logging_step against a real fit and resume."""
    src = inspect.getsource(L.pytorch.trainer.call)
    assert "pl_module._current_fx_name = hook_name" in src  # the attribute the mixin stores directly
    module = _Recorder()
    assert "_current_fx_name" in vars(module)
    ckpt = tmp_path / "between.ckpt"
    save = _SaveAt(3, ckpt)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="logs", version="")
    _fit(tmp_path, module, 6, [save], logger=logger)
    assert module.seen["fx"] == ["training_step"] * 6
    # loggers write every log_every_n_steps=2 steps: the steps where logs_this_step said so
    assert module.seen["logs"] == [False, True, False, True, False, True]
    with open(tmp_path / "logs" / "metrics.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r.get("loss")] == [1, 3, 5]
    # the logging step counter is the optimiser step while training...
    assert all(a == b for a, b in module.seen["counter"])
    # ...and a checkpoint taken between steps restores it one ahead: what realign_logging_step undoes
    resumed = _SaveAt(-1, None, realign=True)
    _fit(tmp_path, _Recorder(), 5, [resumed], ckpt_path=ckpt)
    (before, after, step), *rest = resumed.counters
    assert step == 3 and before == step + 1, "Lightning now restores the logging step itself: drop realign_logging_step"
    assert after == step and all(b == a == s for b, a, s in rest)


def test_rich_bar_description_hook():
    from lightning.pytorch.callbacks import RichProgressBar

    assert "self._get_train_description(" in inspect.getsource(RichProgressBar)

    @compat.train_bar_description(lambda bar: "mine" if bar.mine else None)
    class Bar(RichProgressBar):
        mine = True

    bar, plain = Bar(), RichProgressBar()
    bar._trainer = plain._trainer = SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(3) == "mine"
    Bar.mine = False
    assert bar._get_train_description(3) == plain._get_train_description(3)
    assert plain._get_train_description(3).strip() == "Epoch 3/9"


def test_logger_experiment_is_started_lazily(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    assert "self._experiment" in inspect.getsource(WandbLogger.experiment.fget)
    logger = CSVLogger(tmp_path)
    assert compat.started_experiment(logger) is None
    writer = logger.experiment
    assert compat.started_experiment(logger) is writer
    compat.forget_experiment(logger)
    assert compat.started_experiment(logger) is None

# ----------------------------------------------------------------------------- public replacements


@pytest.mark.parametrize("overrides,params", [
    (["process=vp,ve", "schedule=linear,cosine", "seed=1"], None),
    (["+sampler=ddim,pc", "seed=1,2", "seed=3,4"], None),  # a key given twice: the last wins, in the first's place
    (["model.hidden=8,16"], {"seed": "1,2", "model.hidden": "4"}),
    (["data=gmm", "weighting=choice(simple,elbo)", "~logger", "seed=range(1,4)"], None),
])
def test_sweep_expansion_is_hydras_basic_sweeper(overrides, params):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from difflab.cli.sweep_check import sweep_jobs

    args = [f"{k}={v}" for k, v in (params or {}).items()] + overrides
    (hydra,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    assert sweep_jobs(overrides, params) == [list(job) for job in hydra]


def test_an_interval_sweep_is_refused_as_hydra_refuses_it():
    from hydra.errors import HydraException

    from difflab.cli.sweep_check import sweep_jobs

    with pytest.raises(HydraException, match="does not support sweep type"):
        sweep_jobs(["optim.lr=interval(0.1,1.0)"])


def test_csv_logger_keeps_earlier_rows_and_drops_those_logged_again(tmp_path):
    from difflab.loggers import CSVLogger

    first = CSVLogger(tmp_path, name="logs", version="")
    first.log_metrics({"loss": 1.0}, step=0)
    first.log_metrics({"loss": 2.0}, step=5)
    first.save()
    again = CSVLogger(tmp_path, name="logs", version="")
    again.keep_before_step = 5  # resumed from a checkpoint at step 5: step 5 is logged again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again.log_metrics({"loss": 3.0, "lr": 0.1}, step=5)
    assert not [w for w in caught if "will be deleted" in str(w.message)]
    again.save()
    with open(tmp_path / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r.get("lr", "")) for r in rows] == [("0", "1.0", ""), ("5", "3.0", "0.1")]


def test_hyperparameters_kept_from_the_logger_are_unchanged():
    from difflab.lit_module import DiffusionModule

    module = DiffusionModule(
        model={"_target_": "difflab.models.MLP", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8},
        process={"_target_": "difflab.processes.VPSDE"}, parameterization={"_target_": "difflab.parameterizations.Epsilon"},
        loss={"_target_": "difflab.losses.DiffusionLoss", "weighting": "simple"}, data_shape=(2,))
    before, initial = dict(module.hparams), dict(module.hparams_initial)
    module.save_hyperparameters(module.hparams, logger=False)
    assert dict(module.hparams) == before and dict(module.hparams_initial) == initial
    from lightning.pytorch.loggers.utilities import _log_hyperparams  # noqa: F401 - what reads the flag
    assert "pl_module._log_hyperparams" in inspect.getsource(_log_hyperparams)
    assert module._log_hyperparams is False


def test_native_bf16_on_the_cpu_agrees_with_the_kernel_s_cpu_flags():
    """native_bf16("cpu") (torch's private cpuinfo queries) against an independent source: the
    flags Linux reports in /proc/cpuinfo (avx512_bf16, amx_bf16/amx_tile)."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not info.is_file():
        pytest.skip("the independent check reads Linux's /proc/cpuinfo")
    flags = next((line.split(":", 1)[1].split() for line in info.read_text().splitlines() if line.startswith("flags")), [])
    assert compat.native_bf16("cpu") == bool({"avx512_bf16", "amx_tile"} & set(flags))
    assert compat.native_bf16("mps") is False
    if not torch.cuda.is_available():
        assert compat.native_bf16("cuda") is False
