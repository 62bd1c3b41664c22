"""`difflab-eval`: likelihoods and sample quality of a checkpoint or of the GMM oracle.

    difflab-eval model=oracle data=gmm metrics=[nll_ode,nll_elbo,swd,mmd] output=runs/eval
    difflab-eval ckpt_path=runs/x/checkpoints/last.ckpt metrics=[fid,kid,bpd_ode] output=runs/eval
    difflab-eval ckpt_path=... samples=runs/s/samples.npz metrics=[swd,fid]   # score existing samples

Writes `<output>/metrics.json`: every Monte Carlo estimate with `<metric>_se` beside it
(nats/dim for nll_*, bits/dim in 8-bit space for bpd_*), FIDs named by protocol with their
real-vs-real floor, `nfe` of the sampler, and for data=gmm the exact `nll` of the mixture; and
`samples.npz` with the samples it scored (the same as difflab-sample's for the same seed and
sampler). All the work is `difflab.evaluation.evaluate`; this file composes and writes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..evaluation import METRICS, SAMPLE_METRICS, SamplerChoice, evaluate, options
from ..utils import RunLock, provenance, save_npz, write_json
from .common import UsageError, build_target, refuse_existing, hydra_entry, resolve_device, set_threads, user_chose

_user_chose = user_chose  # module-level, so tests can pretend data= was typed


def load_samples(path) -> tuple[torch.Tensor, int | None]:
    """Samples already drawn: a samples.npz (difflab-sample's) or a directory holding one."""
    p = Path(str(path))
    p = p / "samples.npz" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"samples={path}: no samples.npz there; give difflab-sample's output directory or file")
    with np.load(p) as f:
        if "samples" not in f:
            raise UsageError(f"{p} has no 'samples' array (write it with difflab-sample)")
        return torch.from_numpy(f["samples"]), (int(f["nfe"]) if "nfe" in f else None)


def check_options(cfg) -> list[str]:
    metrics = list(cfg.metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise UsageError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    for key in ("mc_samples", "num_eval", "num_samples"):
        if int(cfg[key]) < 2:
            raise UsageError(f"{key} must be >= 2 (a standard error needs two draws), got {cfg[key]}")
    return metrics


def run(cfg, output_dir: Path) -> dict:
    metrics = check_options(cfg)
    refuse_existing(Path(output_dir) / "metrics.json", cfg.get("overwrite"))
    sampler = SamplerChoice.from_config(cfg.get("sampler"))
    device = resolve_device(cfg.device)
    target = build_target(cfg, device, data_chosen=_user_chose("data"))
    set_threads(cfg.get("threads"), target.denoiser)
    given, nfe = load_samples(cfg.samples) if cfg.get("samples") else (None, None)
    with RunLock(output_dir):
        likelihood, sampling = options(cfg, sampler)
        sampling.update(samples=given, nfe=nfe)
        try:
            out, samples = evaluate(target, metrics, seed=int(cfg.seed), likelihood=likelihood, sampling=sampling, device=device)
        except ValueError as e:  # the library's errors on user input say what to change: one line, exit 2
            raise UsageError(str(e)) from e
        for w in out.get("warnings", []):
            print(f"difflab-eval: warning: {w}")
        out["provenance"] = provenance(cfg, cfg.get("ckpt_path"), output=str(output_dir))
        write_json(Path(output_dir) / "metrics.json", out)
        if samples is not None and given is None and bool(cfg.get("save_samples", True)) and any(m in SAMPLE_METRICS for m in metrics):
            save_npz(Path(output_dir) / "samples.npz", samples=samples.numpy(), nfe=out.get("nfe") or 0)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in out.items() if isinstance(v, float) and not k.endswith("_seconds"))
    print(f"difflab-eval: wrote {Path(output_dir) / 'metrics.json'}: {shown}")
    return out


main = hydra_entry("eval", "difflab-eval")(run)

if __name__ == "__main__":
    main()
