"""`difflab-train`: compose the config, build data + DiffusionModule + Trainer, fit.

    difflab-train experiment=digits output=runs/digits
    difflab-train resume=runs/digits trainer.max_steps=20000    # resume, with the run's own config

Writes `<output>/config.yaml` (the resolved config) and `<output>/checkpoints/last.ckpt`
(every `checkpoint_every` steps and at the end). Every check that can fail on user input
(unknown option, data root, model/data shape, an existing run directory) runs before
anything is written; failures print one line and exit with status 2.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from ..callbacks.checkpoint import Interrupted, SaveLast
from ..callbacks.divergence import DivergenceStop
from ..loggers import end_run, start_run
from ..utils import RunLock, write_text
from .common import UsageError, instantiate, plain, set_threads, task_overrides
from .entry import hydra_entry
from .jobs import check_eval_at_end, check_same_run_config, evaluate_at_end, in_multirun, rerun_state


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
        per_sample_noise=bool(cfg.get("per_sample_noise", False)), seed=int(cfg.seed), lr_schedule=plain(cfg.get("lr_schedule")),
    )


def model_line(module) -> str:
    """The model summary in one line: `model: Denoiser(MLP) 175.2K parameters`."""
    net = module.net
    n = sum(p.numel() for p in net.parameters())
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)
    return f"model: {type(net).__name__}({type(getattr(net, 'model', net)).__name__}) {size} parameters"


def has_results(out: Path) -> bool:
    return (out / "config.yaml").exists() or any((out / "checkpoints").glob("*.ckpt"))


def checkpoint_to_resume(cfg):
    """(path, checkpoint dict) of `ckpt_path` (or `resume`'s last.ckpt), read and checked, or (None, None)."""
    from ..checkpoints import read_checkpoint

    path = cfg.get("ckpt_path") or (Path(str(cfg.resume)) / "checkpoints" / "last.ckpt" if cfg.get("resume") else None)
    requeued = Path(str(cfg.output)) / "checkpoints" / "last.ckpt"
    if not path and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and requeued.is_file():
        path = requeued  # a requeued SLURM job continues its own run
    if not path:
        return None, None
    if not Path(str(path)).is_file():
        raise UsageError(f"ckpt_path={path} does not exist; resume from <run dir>/checkpoints/last.ckpt (or resume=<run dir>)")
    return Path(str(path)), read_checkpoint(path)


RESUME_KEYS = ("output", "ckpt_path", "resume", "threads", "device", "fail_fast")


def resume_config(cfg, out: Path):
    """The config a resumed run trains with: the run's own config.yaml, with the command line's
    key=value overrides applied (e.g. trainer.max_steps=...), so no option has to be repeated.
    A group choice (model=..., process=...) that differs from the saved run is refused."""
    from omegaconf import OmegaConf, open_dict

    saved_path = out / "config.yaml"
    overrides = task_overrides()
    if not saved_path.is_file() or not overrides:
        return cfg  # a checkpoint from elsewhere, or composed by a caller: the given config
    saved = OmegaConf.load(saved_path)
    groups = []
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in RESUME_KEYS or key.startswith("hydra") or ("." not in key and key not in cfg):
            continue  # where to write, or a recipe name (experiment=): the saved config already holds it
        if "." not in key and OmegaConf.is_dict(cfg[key]):
            groups.append((key, value))
            continue
        with open_dict(saved):
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    for key, value in groups:  # a group choice must be the saved run's (with the key=value overrides applied)
        if plain(cfg[key]) != plain(saved.get(key)):
            raise UsageError(f"resuming {out} uses its own config.yaml, and {key}={value} changes it; drop {key}= "
                             "or start a new run with another output=")
    with open_dict(saved):
        for key in RESUME_KEYS:
            if key in cfg:
                saved[key] = cfg[key]
    return saved


def check_same_model(ckpt: dict, module, path: Path) -> None:
    """Refuse to resume a checkpoint into a run with another model, process, parameterization or data shape."""
    from ..checkpoints import mismatched_keys

    diff = mismatched_keys(ckpt["hyper_parameters"], module.hparams)
    if diff:
        raise UsageError(f"{path} was trained with another configuration ({', '.join(diff[:6])} differ); resume with "
                         "the run's own config (resume=<run dir>) or start a new run with another output=")


def sweep_name() -> str:
    """The name of a -m sweep: its output directory's name (output=runs/study -> "study")."""
    from hydra.core.hydra_config import HydraConfig

    return Path(str(HydraConfig.get().sweep.dir)).name


def build_logger(cfg, out: Path):
    node = cfg.get("logger")
    if not node or node.get("_target_") is None:
        return False
    from hydra.utils import instantiate as _inst

    extra = {}
    if in_multirun():  # W&B: the sweep's runs grouped under its name, each named after its job directory
        extra = {k: v for k, v in (("group", sweep_name()), ("name", out.name)) if k in node and node[k] is None}
    try:
        return _inst(node, save_dir=str(out), **extra)
    except Exception as e:
        cause = e.__cause__ or e
        if isinstance(cause, (UsageError, ValueError)):
            raise UsageError(str(cause)) from None
        raise UsageError(f"could not build logger: {cause}") from e


def build_callbacks(cfg, out: Path, with_logger: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor

    save = SaveLast(out / "checkpoints", int(cfg.get("checkpoint_every") or 0), divergence_factor=None)
    # the divergence stop first (callbacks run in list order): a diverged state never replaces last.ckpt
    cbs = [DivergenceStop(float(cfg.get("divergence_factor") or 1000.0), checkpoint=save), save]
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None or node.get("_target_") is None:
            continue
        cb = instantiate(node, f"callbacks.{key}")
        if isinstance(cb, LearningRateMonitor) and not with_logger:
            continue  # it refuses to run without a logger
        cbs.append(cb)
    return cbs


def secondary_process() -> bool:
    """A process that Lightning's `ddp` launcher, torchrun or SLURM started beside rank 0: it re-runs
    this script, and must neither re-check, lock nor write the run directory rank 0 holds.
    Lightning's launcher sets LOCAL_RANK/NODE_RANK, SLURM SLURM_PROCID; torchrun sets RANK and
    GROUP_RANK (the node), and its process on node 1 has LOCAL_RANK=0, so RANK is read too."""
    return any(int(os.environ.get(k, "0") or 0) > 0
               for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"))


def train(cfg, out: Path):
    """Fit from a composed config; returns (module, trainer, datamodule). The run first takes an
    exclusive lock on `out` (a second run into it is refused before it builds anything), then
    checks every user input before it writes anything."""
    out = Path(out)
    check_eval_at_end(cfg)
    with (contextlib.nullcontext() if secondary_process() else RunLock(out)):
        return _fit(cfg, out)


def _fit(cfg, out: Path):
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    state = rerun_state(cfg, out)
    # a job of a rerun sweep that failed or was killed before its first checkpoint starts again
    restart = state == "new" and in_multirun() and has_results(out) and not secondary_process()
    if state != "new" or cfg.get("ckpt_path") or cfg.get("resume") or restart:
        check_same_run_config(cfg, out, RESUME_KEYS)
    if state == "done":
        print(f"difflab-train: {out} already finished (metrics.json / final checkpoint): skipped", file=sys.stderr)
        return None, None, None
    if state == "resume":
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.ckpt_path = str(out / "checkpoints" / "last.ckpt")
    ckpt_path, ckpt = checkpoint_to_resume(cfg)
    if ckpt is not None:
        cfg = resume_config(cfg, out)
    elif has_results(out) and not secondary_process() and not restart:
        raise UsageError(f"output={out} already holds a training run; choose a new output=... or resume it with resume={out} (= ckpt_path={out / 'checkpoints' / 'last.ckpt'})")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)
    try:
        module = build_module(cfg, dm.data_shape)
    except UsageError:
        raise
    except Exception as e:  # a bad option inside model/process/loss: one line naming it
        raise UsageError(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__) from e
    set_threads(cfg.get("threads"), module)
    if ckpt is not None:
        check_same_model(ckpt, module, ckpt_path)
        if not secondary_process():  # said once every check has passed (a refused resume prints one line)
            print(f"difflab-train: resuming {out} from step {int(ckpt.get('global_step', 0))} ({ckpt_path})", file=sys.stderr)
    logger = build_logger(cfg, out)
    if (ckpt is not None or restart) and hasattr(logger, "keep_before_step"):  # rows after the checkpoint are logged again
        logger.keep_before_step = int(ckpt.get("global_step", 0)) if ckpt is not None else 0
    callbacks = build_callbacks(cfg, out, with_logger=bool(logger))
    trainer = instantiate(cfg.trainer, "trainer", logger=logger, callbacks=callbacks, default_root_dir=str(out),
                          enable_checkpointing=False)
    if not secondary_process():
        print(f"  {model_line(module)}", file=sys.stderr)  # not a "difflab-train:" line: those are events and errors
    # rank 0 only: a secondary process (torchrun's node 1 starts at the same time) that wrote it
    # first would make rank 0's own check above refuse the run as "already holds a training run"
    if not secondary_process() and (restart or not (out / "config.yaml").exists()):
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    start_run(logger, OmegaConf.to_container(cfg, resolve=True), module)
    metrics = None
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if not secondary_process():
            metrics = evaluate_at_end(cfg, out)
    except FloatingPointError as e:
        raise UsageError(str(e)) from e
    except SIGTERMException:  # SIGTERM before training started (Lightning's own handler): nothing to save
        print(f"difflab-train: SIGTERM before the first step; nothing to resume, run the command again", file=sys.stderr)
        raise SystemExit(128 + 15) from None
    except Interrupted as e:
        print(f"difflab-train: {e}: saved {out / 'checkpoints' / 'last.ckpt'}; continue with: difflab-train resume={out}",
              file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    finally:
        end_run(logger, metrics)  # one W&B run per job, finished before the next job starts
    return module, trainer, dm


def run(cfg, out: Path) -> None:
    torch.set_float32_matmul_precision("high")
    train(cfg, out)


main = hydra_entry("train", "difflab-train")(run)

if __name__ == "__main__":
    main()
