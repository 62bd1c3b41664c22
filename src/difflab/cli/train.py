"""`difflab-train`: compose the config, build data + DiffusionModule + Trainer, fit.

    difflab-train experiment=digits output=runs/digits
    difflab-train output=runs/digits ckpt_path=runs/digits/checkpoints/last.ckpt   # resume

Writes `<output>/config.yaml` (the resolved config) and `<output>/checkpoints/last.ckpt`
(every `checkpoint_every` steps and at the end). Every check that can fail on user input
(unknown option, data root, model/data shape, an existing run directory) runs before
anything is written; failures print one line and exit with status 2.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..callbacks.checkpoint import SaveLast
from .common import UsageError, hydra_entry, instantiate, plain


def build_datamodule(cfg):
    """The data module, with its files checked (a missing root fails here, before writing)."""
    dm = instantiate(cfg.data, "data")
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    return dm


def build_module(cfg, data_shape):
    from ..lit_module import DiffusionModule

    if cfg.get("weighting") is None:
        raise UsageError("no loss chosen: add weighting=simple (or elbo, snr, min_snr, likelihood, sigma2)")
    return DiffusionModule(
        model=plain(cfg.model), process=plain(cfg.process), parameterization=plain(cfg.parameterization),
        loss=plain(cfg.weighting), data_shape=data_shape, data_config=plain(cfg.data),
        denoiser=plain(cfg.get("denoiser")), optim=plain(cfg.get("optim")), ema=plain(cfg.get("ema")),
        per_sample_noise=bool(cfg.get("per_sample_noise", False)), seed=int(cfg.seed),
    )


def has_results(out: Path) -> bool:
    return (out / "config.yaml").exists() or any((out / "checkpoints").glob("*.ckpt"))


def check_run_dir(out: Path, ckpt_path) -> None:
    if ckpt_path:
        if not Path(str(ckpt_path)).is_file():
            raise UsageError(f"ckpt_path={ckpt_path} does not exist; resume from <run dir>/checkpoints/last.ckpt")
    elif has_results(out):
        raise UsageError(
            f"output={out} already holds a training run; choose a new output=... or resume it with "
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
        )


def build_logger(cfg, out: Path):
    node = cfg.get("logger")
    if not node or node.get("_target_") is None:
        return False
    from hydra.utils import instantiate as _inst

    try:
        return _inst(node, save_dir=str(out))
    except Exception as e:
        cause = e.__cause__ or e
        if isinstance(cause, (UsageError, ValueError)):
            raise UsageError(str(cause)) from None
        raise UsageError(f"could not build logger: {cause}") from e


def build_callbacks(cfg, out: Path, with_logger: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor

    cbs = [SaveLast(out / "checkpoints", int(cfg.get("checkpoint_every") or 0))]
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None or node.get("_target_") is None:
            continue
        cb = instantiate(node, f"callbacks.{key}")
        if isinstance(cb, LearningRateMonitor) and not with_logger:
            continue  # it refuses to run without a logger
        cbs.append(cb)
    return cbs


def train(cfg, out: Path):
    """Fit from a composed config; returns (module, trainer, datamodule)."""
    import lightning as L
    from omegaconf import OmegaConf

    out = Path(out)
    ckpt_path = cfg.get("ckpt_path")
    check_run_dir(out, ckpt_path)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)
    try:
        module = build_module(cfg, dm.data_shape)
    except UsageError:
        raise
    except Exception as e:  # a bad option inside model/process/loss: one line naming it
        raise UsageError(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__) from e
    logger = build_logger(cfg, out)
    callbacks = build_callbacks(cfg, out, with_logger=bool(logger))
    trainer_cfg = cfg.trainer
    from hydra.utils import instantiate as _inst

    try:
        trainer = _inst(trainer_cfg, logger=logger, callbacks=callbacks, default_root_dir=str(out), enable_checkpointing=False)
    except Exception as e:
        raise UsageError(f"could not build trainer: {e.__cause__ or e}") from e

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "config.yaml").exists():
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except FloatingPointError as e:
        raise UsageError(str(e)) from e
    return module, trainer, dm


def run(cfg, out: Path) -> None:
    torch.set_float32_matmul_precision("high")
    train(cfg, out)


main = hydra_entry("train", "difflab-train")(run)

if __name__ == "__main__":
    main()
