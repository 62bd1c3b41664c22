"""difflab-eval's work, from a composed config: likelihoods and sample quality of a checkpoint or
of the GMM oracle → <output>/metrics.json (+ samples.npz), and the samples of a sweep's job
directory found by its overrides in any order (`find_job_dir`). The metrics themselves are
`difflab.evaluation.evaluate`; the console script is `difflab.cli.evaluate`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config_check import UsageError, refuse_existing
from .evaluation import METRICS, SAMPLE_METRICS, SamplerChoice, build_target, evaluate, options, resolve_device, set_threads
from .progress import program
from .studies.common import header
from .utils import RunLock, provenance, save_npz, write_json

PROG = "difflab-eval"


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def job_pairs(name: str) -> frozenset | None:
    """A -m job directory's name, `k1=v1,k2=v2` (Hydra's override_dirname), as its set of
    (key, value) pairs: order-free, values unquoted, commas inside [...], {...}, (...) or quotes
    kept. None when the name is not such a list."""
    items, depth, quote, cur = [], 0, None, ""
    for ch in name:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    items.append(cur)
    pairs = set()
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("+~")
        if not eq or not key:
            return None
        pairs.add((key, _unquote(value)))
    return frozenset(pairs)


def find_job_dir(path: Path) -> Path:
    """`path` itself when it exists; else, when it names a sweep's job directory `PARENT/k1=v1,k2=v2`,
    the directory of PARENT whose set of k=v pairs is the same in any order and quoting
    (`runs/nfe/sampler=ddim,sampler.steps=10` finds `runs/nfe/sampler.steps=10,sampler=ddim`).
    `path` unchanged when neither (the caller says it is missing)."""
    if path.exists():
        return path
    if path.name == "samples.npz":  # PARENT/k=v,.../samples.npz
        found = find_job_dir(path.parent)
        return found / path.name if found != path.parent else path
    want = job_pairs(path.name)
    if not want or not path.parent.is_dir():
        return path
    same = sorted(d for d in path.parent.iterdir() if d.is_dir() and job_pairs(d.name) == want)
    if len(same) > 1:
        raise UsageError(f"samples={path}: {len(same)} job directories hold these overrides: "
                         f"{', '.join(str(d) for d in same)}; give one of them")
    return same[0] if same else path


def load_samples(path) -> tuple[torch.Tensor, int | None]:
    """Samples already drawn: a samples.npz (difflab-sample's) or a directory holding one; a sweep's
    job directory is found with its k=v overrides in any order (`find_job_dir`)."""
    p = find_job_dir(Path(_unquote(str(path))))
    p = p / "samples.npz" if p.is_dir() else p
    if not p.is_file():
        job = p.parent if p.name == "samples.npz" else p
        sweep, where = job.parent, ""
        if job_pairs(job.name) and sweep.is_dir():  # a job directory that is not there: name the ones that are
            jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and job_pairs(d.name))
            where = f" (the job directories of {sweep}: {', '.join(jobs[:8])}{' ...' if len(jobs) > 8 else ''})" if jobs else ""
        raise FileNotFoundError(f"samples={path}: no samples.npz there; give difflab-sample's output directory or file{where}")
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


def run(cfg, output_dir: Path, data_chosen: bool = False) -> dict:
    """difflab-eval's work: the options checked, the target built (`data_chosen`: data= was typed),
    the metrics evaluated and written to <output_dir>/metrics.json (+ samples.npz)."""
    with program(PROG):  # the progress lines of long steps (likelihoods, sampling, features) name difflab-eval
        return _run(cfg, output_dir, data_chosen)


def _run(cfg, output_dir: Path, data_chosen: bool) -> dict:
    metrics = check_options(cfg)
    refuse_existing(Path(output_dir) / "metrics.json", cfg.get("overwrite"))
    sampler = SamplerChoice.from_config(cfg.get("sampler"))
    device = resolve_device(cfg.device)
    target = build_target(cfg, device, data_chosen=data_chosen)
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
            print(f"{PROG}: warning: {w}")
        out["provenance"] = provenance(cfg, cfg.get("ckpt_path"), output=str(output_dir))
        write_json(Path(output_dir) / "metrics.json", out)
        if samples is not None and given is None and bool(cfg.get("save_samples", True)) and any(m in SAMPLE_METRICS for m in metrics):
            save_npz(Path(output_dir) / "samples.npz", samples=samples.numpy(), nfe=out.get("nfe") or 0)
    # the data's numbers (the exact nll of a mixture, the real-vs-real floors) marked as such
    shown = ", ".join(f"{header(k)}={v:.4g}" if isinstance(v, float) else f"{k[:-len('_unavailable')]}=unavailable"
                      for k, v in out.items() if isinstance(v, float) and not k.endswith("_seconds") or k.endswith("_floor_unavailable"))
    print(f"{PROG}: wrote {Path(output_dir) / 'metrics.json'}: {shown}")
    return out
