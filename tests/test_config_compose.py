"""Every option of every config group composes with train.yaml and instantiates; every
experiment runs `fast_dev_run` at tiny size on the CPU (lightning-hydra-template's tests)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from difflab.cli.common import CONFIG_DIR
from difflab.lit_module import DEFAULT_OPTIM

CONF = Path(CONFIG_DIR)


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def cfg_of(*overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=["output=unused", *overrides])


def test_groups_have_options():
    for g in ("process", "schedule", "parameterization", "weighting", "model", "data", "optim", "trainer", "logger",
              "callbacks", "experiment"):
        assert options(g), g
    assert {"ddpm_cifar10", "ncsn_cifar10", "score_sde_vp", "score_sde_ve", "vdm_cifar10", "gmm", "toy2d", "digits"} <= set(options("experiment"))


def test_every_option_has_a_comment_header():
    for path in CONF.glob("*/*.yaml"):
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("#"), f"{path} needs a comment saying what it is"


@pytest.mark.parametrize("process", options("process"))
@pytest.mark.parametrize("weighting", options("weighting"))
def test_every_weighting_builds_on_every_process(process, weighting):
    cfg = cfg_of(f"process={process}", f"weighting={weighting}")
    proc, param = instantiate(cfg.process), instantiate(cfg.parameterization)
    loss = instantiate(cfg.weighting, process=proc, parameterization=param)
    assert loss.weighting == weighting


@pytest.mark.parametrize("name", options("parameterization"))
def test_every_parameterization(name):
    assert instantiate(cfg_of(f"parameterization={name}").parameterization) is not None


@pytest.mark.parametrize("name", options("model"))
def test_every_model_fits_its_default_data(name):
    from difflab.lit_module import check_model_fits

    data = {"mlp": "digits", "unet_tiny": "digits", "unet_ddpm_cifar10": "cifar10"}.get(name, "gmm")
    cfg = cfg_of(f"model={name}", f"data={data}")
    if name == "oracle":  # the exact GMM denoiser of data=gmm, not a network
        oracle = instantiate(cfg.model)
        assert oracle.dim == 2 and callable(oracle.denoiser)
        return
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data)
    if name != "unet_ddpm_cifar10":  # 35.7M parameters: building it is the check
        check_model_fits(model, dm.data_shape)


@pytest.mark.parametrize("name", options("data"))
def test_every_data_module(name, tmp_path):
    cfg = cfg_of(f"data={name}", f"data.root={tmp_path}" if name in ("mnist", "cifar10", "imagefolder") else "data.batch_size=8")
    dm = instantiate(cfg.data)
    assert len(dm.data_shape) in (1, 3)
    if name in ("mnist", "cifar10", "imagefolder"):
        with pytest.raises(FileNotFoundError, match="data.download=true|data.root"):
            dm.prepare_data()  # no files: a clear message, never a download
        return
    if name == "gmm" or name == "toy2d":
        dm.num_train, dm.num_val = 64, 16
    x, index = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == dm.data_shape and x.dtype == torch.float32 and index.dtype == torch.long


def test_digits_are_scaled_to_unit_range():
    from difflab.data import load_digits_tensor

    x = load_digits_tensor()
    assert x.shape == (1797, 1, 8, 8) and float(x.min()) == -1.0 and float(x.max()) == 1.0


@pytest.mark.parametrize("name", options("optim"))
def test_every_optim_is_understood(name):
    """Each option is a `_target_` optimiser with `_partial_: true`: it builds a torch optimiser
    on parameters, and DiffusionModule accepts every key of it."""
    o = OmegaConf.to_container(cfg_of(f"optim={name}").optim)
    opt = instantiate(o)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Optimizer) and opt.defaults["lr"] == o["lr"]
    assert o["_partial_"] is True and set(DEFAULT_OPTIM) - {"_target_"} <= set(o)


@pytest.mark.parametrize("name", options("trainer"))
def test_every_trainer(name, tmp_path):
    over = [f"trainer={name}", "trainer.accelerator=cpu"]
    if name in ("ddp", "ddp_spawn"):
        over.append("trainer.devices=2")
    trainer = instantiate(cfg_of(*over).trainer, default_root_dir=str(tmp_path), logger=False)
    assert trainer.max_steps > 0


@pytest.mark.parametrize("name", options("logger"))
def test_every_logger(name, tmp_path, monkeypatch):
    from difflab.training import build_logger

    if name == "wandb":
        pytest.importorskip("wandb")  # a declared dependency; GPU images without it use logger=csv
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = build_logger(cfg_of(f"logger={name}"), tmp_path)
    assert (logger is False) == (name == "none")


@pytest.mark.parametrize("name", options("callbacks"))
def test_every_callbacks_option(name, tmp_path):
    from difflab.training import build_callbacks

    cbs = build_callbacks(cfg_of(f"callbacks={name}"), tmp_path, with_logger=True)
    assert cbs


def test_experiment_overrides_are_applied():
    cfg = cfg_of("experiment=ddpm_cifar10")
    assert cfg.process.num_steps == 1000 and cfg.process.beta_schedule == "linear"
    assert cfg.parameterization._target_.endswith("Epsilon") and cfg.weighting.weighting == "simple"
    assert cfg.optim.lr == 2e-4 and cfg.lr_schedule.warmup_steps == 5000 and cfg.ema.decay == 0.9999
    assert cfg.model.ch == 128 and cfg.model.dropout == 0.1 and cfg.data.batch_size == 128
    assert cfg.trainer.gradient_clip_val == 1.0
    model = instantiate(cfg.model)
    assert abs(sum(p.numel() for p in model.parameters()) - 35.7e6) < 0.05e6



def test_vdm_recipe_starts_at_the_paper_s_endpoints():
    """VDM (Kingma et al. 2021, Sec. 5 / Appendix): γ(t) = −log SNR(t) with γ_min = −13.3 at t = 0 and
    γ_max = 5 at t = 1, so log-SNR runs from 13.3 (nearly clean) down to −5."""
    process = instantiate(cfg_of("experiment=vdm_cifar10").process)
    lam = process.log_snr(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(lam.double(), torch.tensor([13.3, -5.0], dtype=torch.float64), atol=1e-4, rtol=0)

# ------------------------------------------------------------------ fast_dev_run of every recipe
TINY_UNET = ["model.ch=16", "model.ch_mult=[1,2]", "model.num_res_blocks=1", "model.attn_resolutions=[16]", "model.num_groups=8"]


def _image_folder(root: Path, n=8, size=32):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", options("experiment"))
def test_fast_dev_run_of_every_experiment(name, tmp_path, request):
    from difflab.cli.train import train

    over = [f"experiment={name}", f"output={tmp_path / 'run'}", "trainer=cpu", "trainer.fast_dev_run=true",
            "logger=none", "callbacks=none", "data.batch_size=4", "+trainer.enable_progress_bar=false"]
    if name.endswith("cifar10") or name.startswith("score_sde"):
        root = _image_folder(tmp_path / "images")
        over += ["data=imagefolder", f"data.root={root}", "data.num_workers=0", *TINY_UNET]
    elif name.startswith("mnist"):  # the official MNIST (tests/conftest.py's fixture), a narrow UNet
        over += [f"data.root={request.getfixturevalue('mnist_root')}", "model.ch=8", "trainer.precision=32-true"]
    elif name in ("gmm", "toy2d"):
        over += ["data.num_train=64", "data.num_val=8", "model.hidden=16", "model.depth=1"]
    else:
        over += ["model.hidden=16", "model.depth=1"]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=over)
    module, trainer, _ = train(cfg, tmp_path / "run")
    assert trainer.global_step == 1 and module.ema.num_updates == 1
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
