"""EvalCallback: same samples and metric with 1 or 2 processes, errors never stop
training, no metric state in checkpoints, fp32 metric states under autocast."""
import warnings

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from difflab.callbacks.eval import EvalCallback, chunk_sizes
from difflab.evaluation import score_samples
from difflab.models import GMMOracle
from difflab.processes import VPSDE
from difflab.processes.base import append_dims

MEANS = [[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]]
STDS = [0.5, 0.4, 0.6]
WEIGHTS = [0.3, 0.5, 0.2]


def euler_pf_ode(denoiser, process, shape, *, generator, device, sampler, steps, **options):
    """A small self-contained probability-flow sampler (prior noise from `generator`)."""
    z = process.prior_sample(shape, generator=generator).to(device)
    ts = torch.linspace(process.t_max, process.t_min, steps + 1)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        t = torch.full((shape[0],), float(t0))
        f, g = process.sde(z, t)
        v = f - 0.5 * append_dims(g**2, z.ndim) * denoiser(z, t).score
        z = z + (t1 - t0) * v
    return z


def failing_sampler(*args, **kwargs):
    raise RuntimeError("sampler exploded")


class TinyModule(L.LightningModule):
    """The training module's interface: `.denoiser(use_ema=True)` and `.process`."""

    def __init__(self):
        super().__init__()
        self.oracle = GMMOracle(MEANS, STDS, WEIGHTS)
        self.process = VPSDE(0.1, 20.0)
        self.w = nn.Parameter(torch.zeros(2))
        self.ema_requests = []

    def denoiser(self, use_ema: bool = True):
        self.ema_requests.append(use_ema)
        return self.oracle.denoiser(self.process)

    def training_step(self, batch, batch_idx):
        return ((self.w - batch[0]) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        x = self.oracle.sample(64, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x), batch_size=32)


def real_data():
    return GMMOracle(MEANS, STDS, WEIGHTS).sample(600, generator=torch.Generator().manual_seed(1))


def make_callback(**kw):
    opts = dict(every_n_epochs=1, num_samples=300, batch_size=64, metrics=("fid", "kid", "swd", "mmd"), steps=20, seed=7,
                real_data=real_data(), features="learned", sample_fn=euler_pf_ode)
    opts.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvalCallback(**opts)


def gmm_diffusion_module():
    """The training module on the test mixture: a small MLP, VP-SDE, ε-prediction, EMA 0.9."""
    from difflab.lit_module import DiffusionModule

    return DiffusionModule(
        model={"_target_": "difflab.models.MLP", "dim": 2, "hidden": 32, "depth": 2, "emb_dim": 16},
        process={"_target_": "difflab.processes.VPSDE"},
        parameterization={"_target_": "difflab.parameterizations.Epsilon"},
        loss={"_target_": "difflab.losses.DiffusionLoss", "weighting": "simple", "time_sampling": "uniform"},
        data_shape=(2,), data_config={"_target_": "difflab.data.GMMDataModule", "means": MEANS, "stds": STDS,
                                      "weights": WEIGHTS},
        denoiser={"conditioning": "log_snr"}, optim={"lr": 1e-2}, ema={"decay": 0.9, "warmup": False},
    )


def fit(cb, tmp_path, **trainer_kw):
    opts = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    opts.update(trainer_kw)
    trainer = L.Trainer(callbacks=[cb], **opts)
    module = TinyModule()
    trainer.fit(module)
    return trainer, module


@pytest.fixture(autouse=True, scope="module")
def feature_cache(tmp_path_factory):
    """One feature-net cache for the module (the net trains once) and one thread (tiny
    tensors: a second thread only adds contention on a 2-core machine)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    mp.undo()


def test_chunks_cover_every_sample_once():
    assert chunk_sizes(300, 64) == [64, 64, 64, 64, 44]
    assert sum(chunk_sizes(2048, 256)) == 2048


def test_logs_metrics_with_ema_weights(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    cb = make_callback()
    trainer, module = fit(cb, tmp_path, logger=CSVLogger(tmp_path, name="logs", version=""))
    m = trainer.callback_metrics
    header = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "eval/fid_learned_n300" in header  # reaches the loggers (CSV here, W&B alike)
    assert "eval/fid_learned_n300" in m and "eval/fid_learned_n300_floor" in m and "eval/kid_learned_n300" in m
    assert float(m["eval/num_samples"]) == 300
    assert module.ema_requests == [True]
    # oracle samples are good: FID is of the order of the real-vs-real floor, far below noise
    assert float(m["eval/fid_learned_n300"]) < 5 * float(m["eval/fid_learned_n300_floor"]) + 0.5


@pytest.mark.slow
def test_ddp_spawn_two_processes_same_metric(tmp_path):
    """Must show: under ddp_spawn with 2 CPU processes (gloo) the metric equals one process's:
    chunks are seeded by index, not by rank, and each sample is counted exactly once."""
    single, _ = fit(make_callback(), tmp_path / "one")
    double, _ = fit(make_callback(), tmp_path / "two", devices=2, strategy="ddp_spawn")
    for key in ("eval/fid_learned_n300", "eval/kid_learned_n300", "eval/swd", "eval/mmd", "eval/num_samples"):
        assert key in double.callback_metrics, key
        assert float(double.callback_metrics[key]) == pytest.approx(float(single.callback_metrics[key]), rel=1e-6, abs=1e-9), key


def test_default_sampler_from_difflab_samplers(tmp_path):
    """Without sample_fn the callback samples with difflab.samplers.sample (Heun PF-ODE)."""
    # 1024 samples: with 256, exact samples of the mixture already range 0.15-0.56 in SWD over seeds
    cb = make_callback(sample_fn=None, metrics=("swd", "mmd"), steps=10, num_samples=1024, batch_size=256)
    trainer, _ = fit(cb, tmp_path)
    m = trainer.callback_metrics
    assert float(m["eval/num_samples"]) == 1024
    assert float(m["eval/swd"]) < 0.5 and abs(float(m["eval/mmd"])) < 0.02  # oracle samples match the data


def test_evaluation_error_never_stops_training(tmp_path):
    cb = make_callback(sample_fn=failing_sampler)
    with pytest.warns(UserWarning, match="sampler exploded"):
        trainer, _ = fit(cb, tmp_path, max_epochs=2)
    assert trainer.current_epoch == 2  # both epochs ran
    assert not any(k.startswith("eval/") for k in trainer.callback_metrics)


def test_no_metric_state_in_checkpoint(tmp_path):
    cb = make_callback()
    trainer, _ = fit(cb, tmp_path)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert not any("feature" in k or "_net" in k for k in ckpt["state_dict"])
    states = [v for k, v in ckpt["callbacks"].items() if "EvalCallback" in k]
    assert states == [{"num_evaluations": 1}]


def test_metrics_fp32_under_autocast():
    """Features run with autocast off: a bf16 autocast region changes nothing."""
    module = TinyModule()
    cb = make_callback(metrics=("fid",))
    plain = cb.evaluate(None, module)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = cb.evaluate(None, module)
    assert plain and plain == mixed


def test_bad_options():
    with pytest.raises(ValueError, match="unknown metrics"):
        EvalCallback(metrics=("fid", "precision"))
    with pytest.warns(UserWarning, match="num_samples=100"):
        EvalCallback(metrics=("fid",), num_samples=100)


def test_with_the_real_diffusion_module(tmp_path):
    """The training module (EMA denoiser, real data from its datamodule) plugs in as is."""
    from difflab.data import GMMDataModule

    mix = dict(means=MEANS, stds=STDS, weights=WEIGHTS)
    module = gmm_diffusion_module()
    cb = make_callback(real_data=None, sample_fn=None, metrics=("swd",), steps=5, num_samples=128, num_reference=256)
    trainer = L.Trainer(callbacks=[cb], max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, GMMDataModule(**mix, num_train=64, num_val=0, batch_size=32))
    assert float(trainer.callback_metrics["eval/num_samples"]) == 128
    assert cb._real.shape == (64, 2)  # the datamodule's training examples (all 64 of them)
    assert torch.isfinite(trainer.callback_metrics["eval/swd"])


def test_callbacks_eval_config_instantiates():
    """`difflab-train callbacks=eval` adds the callback to the default ones."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from difflab.cli.common import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["callbacks=eval", "output=unused"])
    assert {"progress", "lr_monitor", "eval"} <= set(cfg.callbacks)
    cb = instantiate(cfg.callbacks.eval)
    assert isinstance(cb, EvalCallback) and cb.num_samples == 2048 and cb.sampler.name == "ode_heun"


@pytest.mark.parametrize("num_val,num_train", [(100, 400), (0, 400), (0, 300)])
def test_floors_come_from_real_examples_outside_the_reference(num_val, num_train):
    """Without `real_data`, the reference is the first num_reference training examples and the
    floors' real examples outside it are the validation split (up to num_samples of them), else
    the training examples after the reference; with none left, the FID floor holds out part of
    the reference (`difflab.metrics.quality.fid_floor`) and swd has no floor."""
    from types import SimpleNamespace

    from difflab.data import GMMDataModule
    from difflab.evaluation import real_examples

    dm = GMMDataModule([[-1.0, 0.0], [1.0, 0.0]], [0.3, 0.3], num_train=num_train, num_val=num_val)
    cb = EvalCallback(metrics=("swd",), num_samples=64, num_reference=300, sampler="ddim", steps=2)
    cb._prepare(SimpleNamespace(datamodule=dm), torch.device("cpu"))
    assert torch.equal(cb._real, dm.train_tensor(300))
    if num_train == 300 and not num_val:
        assert cb._held is None
        assert "swd_floor" not in score_samples(torch.randn(64, 2), cb._real, cb.metrics, real_other=cb._held)
        return
    expected = real_examples(dm, 64, "val") if num_val else dm.train_tensor(364)[300:]
    assert torch.equal(cb._held, expected)
    out = score_samples(torch.randn(64, 2), cb._real, cb.metrics, real_other=cb._held)
    assert out["num_real_floor"] == 64 and out["swd_floor"] > 0


def test_likelihood_metrics_are_difflab_evals_numbers_with_their_cost(tmp_path):
    """bpd/nll metrics in the callback: the EMA denoiser's estimate that `likelihood_metrics` gives for
    the same module, options and seed (one code path for every entry point), logged with the
    evaluation's cost `eval/seconds`."""
    from difflab.data import GMMDataModule
    from difflab.evaluation import from_module, likelihood_metrics

    mix = dict(means=MEANS, stds=STDS, weights=WEIGHTS)
    module = gmm_diffusion_module()
    opts = dict(mc_samples=20000, mc_batch_size=5000)
    cb = make_callback(real_data=None, sample_fn=None, metrics=("nll_elbo",), likelihood=opts)
    trainer = L.Trainer(callbacks=[cb], max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, GMMDataModule(**mix, num_train=64, num_val=0, batch_size=32))
    logged = trainer.callback_metrics
    direct = likelihood_metrics(from_module(module.eval()), ["nll_elbo"], seed=7, **opts)
    assert float(logged["eval/nll_elbo"]) == pytest.approx(direct["nll_elbo"], rel=1e-6)
    assert float(logged["eval/nll_elbo_se"]) == pytest.approx(direct["nll_elbo_se"], rel=1e-6)
    assert "eval/nll" in logged  # the mixture's exact NLL beside it
    assert float(logged["eval/seconds"]) > 0 and cb.num_evaluations == 1


def test_reference_from_the_validation_split_and_floors_from_training_examples():
    """reference_split=val (MNIST's protocol): the reference is the validation split, the floors'
    real examples are training examples, outside it by construction."""
    from types import SimpleNamespace

    from difflab.data import GMMDataModule
    from difflab.evaluation import real_examples

    dm = GMMDataModule([[-1.0, 0.0], [1.0, 0.0]], [0.3, 0.3], num_train=400, num_val=100)
    cb = EvalCallback(metrics=("swd",), num_samples=64, num_reference=300, sampler="ddim", steps=2, reference_split="val")
    cb._prepare(SimpleNamespace(datamodule=dm), torch.device("cpu"))
    assert torch.equal(cb._real, real_examples(dm, 300, "val")) and cb._real.shape[0] == 100
    assert torch.equal(cb._held, dm.train_tensor(64))
    with pytest.raises(ValueError, match="reference_split"):
        EvalCallback(metrics=("swd",), reference_split="test")
