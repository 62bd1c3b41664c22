"""difflab-train's work, from a composed config: the run directory locked and checked (`runs`),
data + DiffusionModule + Trainer built, fitted, and the job's own numbers at the end
(`eval_at_end`). The config goes in and nothing comes back out to the command line: the
console script (`difflab.cli.train`) only composes and hands over the command line's overrides
and, for a job of a -m sweep, the sweep's name."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Sequence

from .callbacks.checkpoint import Interrupted, SaveLast
from .callbacks.divergence import DivergenceStop
from .config_check import UsageError
from .evaluation import build, resolve_device, set_threads
from .loggers import end_run, start_run
from .progress import program
from .runs import (RESUME_KEYS, check_same_model, check_same_run_config, checkpoint_to_resume, has_results, rerun_state,
                   resume_config, secondary_process)
from .utils import RunLock, instantiate, plain, provenance, save_npz, write_json, write_text


def build_datamodule(cfg):
    """The data module, with its files checked (a missing root fails here, before writing)."""
    dm = build(cfg.data, "data")
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    return dm


def build_module(cfg, data_shape):
    from .lit_module import DiffusionModule

    if cfg.get("weighting") is None:
        from .losses import WEIGHTINGS

        raise UsageError(f"no loss chosen: add weighting=simple (or one of {', '.join(w for w in WEIGHTINGS if w != 'simple')}, "
                         "or a weighting/<name>.yaml of your own)")
    return DiffusionModule(
        model=plain(cfg.model), process=plain(cfg.process), parameterization=plain(cfg.parameterization),
        loss=plain(cfg.weighting), data_shape=data_shape, data_config=plain(cfg.data),
        denoiser=plain(cfg.get("denoiser")), optim=plain(cfg.get("optim")), ema=plain(cfg.get("ema")),
        per_sample_noise=bool(cfg.get("per_sample_noise", False)), seed=int(cfg.seed), lr_schedule=plain(cfg.get("lr_schedule")),
    )


def trainer_precision(trainer_cfg) -> str:
    """Lightning's `precision` for a trainer config. `auto` is difflab's own value: bf16-mixed
    (bf16 autocast for the network; losses, EMA and sampling stay float32) where the training
    device computes bf16 natively (`compat.native_bf16`), else 32-true, so a recipe may ask for
    the faster precision without running ~10x slower on a CPU that emulates bf16. The run's
    config.yaml keeps `auto`; the choice is printed at the start."""
    from .compat import native_bf16

    value = str(trainer_cfg.get("precision", "32-true"))
    if value != "auto":
        return value
    accel = str(trainer_cfg.get("accelerator", "auto"))
    import torch

    device = "cuda" if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()) else "cpu"
    return "bf16-mixed" if native_bf16(device) else "32-true"


def model_line(module) -> str:
    """The model summary in one line: `model: Denoiser(MLP) 175.2K parameters`."""
    net = module.net
    n = sum(p.numel() for p in net.parameters())
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)
    return f"model: {type(net).__name__}({type(getattr(net, 'model', net)).__name__}) {size} parameters"


def build_logger(cfg, out: Path, sweep: str | None = None):
    """The `logger` node built into `out`; in a -m sweep (`sweep`: its name), a W&B run grouped
    under the sweep's name and named after its job directory."""
    node = cfg.get("logger")
    if not node or node.get("_target_") is None:
        return False
    extra = {}
    if sweep is not None:
        extra = {k: v for k, v in (("group", sweep), ("name", out.name)) if k in node and node[k] is None}
    try:
        return instantiate(plain(node), save_dir=str(out), **extra)
    except Exception as e:
        if isinstance(e, (UsageError, ValueError)):
            raise UsageError(str(e)) from None
        raise UsageError(f"could not build logger: {e}") from e


def build_callbacks(cfg, out: Path, with_logger: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor

    save = SaveLast(out / "checkpoints", int(cfg.get("checkpoint_every") or 0), divergence_factor=None)
    # the divergence stop first (callbacks run in list order): a diverged state never replaces last.ckpt
    cbs = [DivergenceStop(float(cfg.get("divergence_factor") or 1000.0), checkpoint=save), save]
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None or node.get("_target_") is None:
            continue
        cb = build(node, f"callbacks.{key}")
        if isinstance(cb, LearningRateMonitor) and not with_logger:
            continue  # it refuses to run without a logger
        cbs.append(cb)
    return cbs


def train(cfg, out: Path, overrides: Sequence[str] = (), sweep: str | None = None):
    """Fit from a composed config; returns (module, trainer, datamodule). `overrides`: the
    command line's (a resumed run applies its key=value ones to its own config.yaml); `sweep`:
    the name of the -m sweep this run is a job of. The run first takes an exclusive lock on `out`
    (a second run into it is refused before it builds anything), then checks every user input
    before it writes anything."""
    out = Path(out)
    check_eval_at_end(cfg)
    with (contextlib.nullcontext() if secondary_process() else RunLock(out)):
        return _fit(cfg, out, list(overrides), sweep)


def _fit(cfg, out: Path, overrides: list[str], sweep: str | None):
    import lightning as L
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from omegaconf import OmegaConf

    multirun = sweep is not None
    state = rerun_state(cfg, out, multirun)
    # a job of a rerun sweep that failed or was killed before its first checkpoint starts again
    restart = state == "new" and multirun and has_results(out) and not secondary_process()
    if state != "new" or cfg.get("ckpt_path") or cfg.get("resume") or restart:
        check_same_run_config(cfg, out, overrides, RESUME_KEYS)
    if state == "done":
        print(f"difflab-train: {out} already finished (metrics.json / final checkpoint): skipped", file=sys.stderr)
        return None, None, None
    if state == "resume":
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.ckpt_path = str(out / "checkpoints" / "last.ckpt")
    ckpt_path, ckpt = checkpoint_to_resume(cfg)
    if ckpt is not None:
        cfg = resume_config(cfg, out, overrides)
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
    logger = build_logger(cfg, out, sweep)
    if (ckpt is not None or restart) and hasattr(logger, "keep_before_step"):  # rows after the checkpoint are logged again
        logger.keep_before_step = int(ckpt.get("global_step", 0)) if ckpt is not None else 0
    callbacks = build_callbacks(cfg, out, with_logger=bool(logger))
    precision = trainer_precision(cfg.trainer)
    trainer = build(cfg.trainer, "trainer", logger=logger, callbacks=callbacks, default_root_dir=str(out),
                    enable_checkpointing=False, precision=precision)
    if not secondary_process():
        print(f"  {model_line(module)}", file=sys.stderr)
        if str(cfg.trainer.get("precision")) == "auto":
            print(f"  precision: auto -> {precision}", file=sys.stderr)  # not a "difflab-train:" line: those are events and errors
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
        print("difflab-train: SIGTERM before the first step; nothing to resume, run the command again", file=sys.stderr)
        raise SystemExit(128 + 15) from None
    except Interrupted as e:
        print(f"difflab-train: {e}: saved {out / 'checkpoints' / 'last.ckpt'}; continue with: difflab-train resume={out}",
              file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    finally:
        end_run(logger, metrics)  # one W&B run per job, finished before the next job starts
    return module, trainer, dm


def evaluate_at_end(cfg, out: Path) -> dict | None:
    """difflab-eval's metrics for the EMA weights of the run's final last.ckpt (what difflab-eval
    ckpt_path=<out>/checkpoints/last.ckpt reads, also after ddp_spawn) → <out>/metrics.json
    (+ samples.npz)."""
    from .evaluation import SAMPLE_METRICS, SamplerChoice, evaluate, from_checkpoint, options

    metrics = list(cfg.get("eval_at_end") or [])
    if not metrics:
        return None
    e = cfg.evaluation
    device = resolve_device(cfg.get("device"))
    ckpt = out / "checkpoints" / "last.ckpt"
    target = from_checkpoint(ckpt, device=device)
    likelihood, sampling = options(e, SamplerChoice.from_config(cfg.sampler))
    try:
        with program("difflab-train"):  # progress lines of its long steps (e.g. 4M ELBO draws)
            result, samples = evaluate(target, metrics, seed=int(cfg.seed), likelihood=likelihood, sampling=sampling, device=device)
    except ValueError as err:
        raise UsageError(f"eval_at_end: {err}") from err
    result["provenance"] = provenance(cfg, ckpt, output=str(out))
    write_json(out / "metrics.json", result)
    if samples is not None and any(m in SAMPLE_METRICS for m in metrics):
        save_npz(out / "samples.npz", samples=samples.numpy(), nfe=result.get("nfe") or 0)
    return result


def check_eval_at_end(cfg) -> None:
    """Unknown eval_at_end metrics are refused before training starts."""
    from .evaluation import METRICS

    unknown = sorted(set(cfg.get("eval_at_end") or []) - set(METRICS))
    if unknown:
        raise UsageError(f"unknown eval_at_end metrics {unknown}; choose from {list(METRICS)}")
