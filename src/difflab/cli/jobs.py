"""A training job's life in a sweep: what a rerun does with a job directory (skip it, resume it,
or start it), and the job's own numbers at the end (`eval_at_end`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..progress import program
from ..utils import provenance, save_npz, write_json
from .common import UsageError, resolve_device


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def rerun_state(cfg, out: Path) -> str:
    """For a job of a rerun `-m` sweep (hydra#3328): "done" when its results exist (metrics.json,
    or a final checkpoint when it asks for no eval_at_end), "resume" when it has a last.ckpt, "new"
    otherwise. Outside a sweep (or with an explicit ckpt_path/resume) always "new"."""
    if not in_multirun() or cfg.get("ckpt_path") or cfg.get("resume"):
        return "new"
    last = out / "checkpoints" / "last.ckpt"
    if (out / "metrics.json").is_file():
        return "done"
    if not last.is_file():
        return "new"
    if not cfg.get("eval_at_end"):
        step = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", 0))
        if cfg.trainer.get("max_steps") not in (None, -1) and step >= int(cfg.trainer.max_steps):
            return "done"
    return "resume"


def check_same_run_config(cfg, out: Path, resume_keys) -> None:
    """A run directory belongs to one config. Training into one that holds another run's config.yaml
    (output= + ckpt_path=, or a rerun -m job) with group choices (experiment=, data=, model=...) that
    compose a different config is refused, naming the differing keys; key=value overrides
    (trainer.max_steps=...) are what a continued run may change. A command of key=value overrides
    alone (resume=<dir> trainer.max_steps=...) continues the run with its own config.yaml."""
    import yaml

    from ..utils import flatten, resolved_config
    from .common import _group_overrides, task_overrides

    saved_path = out / "config.yaml"
    overrides = [o for o in task_overrides() if not o.startswith("hydra")]
    groups = _group_overrides(overrides)
    if cfg.get("resume"):  # a group of the config (model=, process=...): resume_config names it in its own words
        groups = [g for g in groups if g.lstrip("+").partition("=")[0] not in cfg]
    if not saved_path.is_file() or not groups:
        return
    changed = {o.lstrip("+~").partition("=")[0] for o in overrides} - {g.lstrip("+").partition("=")[0] for g in _group_overrides(overrides)}
    skip = tuple(changed) + tuple(resume_keys) + ("hydra",)
    now, saved = flatten(resolved_config(cfg)), flatten(yaml.safe_load(saved_path.read_text()) or {})
    diff = sorted(k for k in now.keys() | saved.keys()
                  if now.get(k) != saved.get(k) and not any(k == s or k.startswith(s + ".") for s in skip))
    if diff:
        more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
        raise UsageError(f"{out} holds a run of another config ({', '.join(diff[:6])}{more} differ); choose a new output=, "
                         f"or continue that run with resume={out} and key=value overrides")


def evaluate_at_end(cfg, out: Path) -> dict | None:
    """difflab-eval's metrics for the EMA weights of the run's final last.ckpt (what difflab-eval
    ckpt_path=<out>/checkpoints/last.ckpt reads, also after ddp_spawn) → <out>/metrics.json
    (+ samples.npz)."""
    from ..evaluation import SAMPLE_METRICS, SamplerChoice, evaluate, from_checkpoint, options

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
    from ..evaluation import METRICS

    unknown = sorted(set(cfg.get("eval_at_end") or []) - set(METRICS))
    if unknown:
        raise UsageError(f"unknown eval_at_end metrics {unknown}; choose from {list(METRICS)}")
