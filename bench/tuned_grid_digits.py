"""A tuned 10-NFE grid against the demo's untuned 50-step DDIM, on the demo's own metric.

`difflab-tune-grid` fits the 10-step grid of UniPC (order 2, 10 NFE) to a `digits` demo checkpoint
(`make demo`) on 1024 prior draws of seed 1000; then the demo's metric, classifier_confident (the
fraction of samples its MLP classifier labels with p >= 0.9, `difflab.demo`), is computed for
1000 samples of each of the seeds 0..S-1 (difflab-sample's seeding; seed 0 = the samples the demo
reports) with: DDIM-50 on its default grid (the demo's sampler), the same UniPC-2 on its default grid,
the tuned grid, and a 256-step Heun solve (the reference the grid is fitted to). Writes
bench/results/tuned_grid_digits.json.

    PYTHONPATH=src python bench/tuned_grid_digits.py --ckpt runs/demo/checkpoints/last.ckpt [--seeds 6]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUNE = ["sampler=unipc", "sampler.order=2", "sampler.steps=10", "num_samples=1024", "seed=1000", "max_evals=400"]


def tune(ckpt: Path, out: Path) -> tuple[Path, list[str]]:
    """Run difflab-tune-grid on the checkpoint → (grid.yaml, the command line)."""
    cmd = [sys.executable, "-m", "difflab.cli.tune_grid", f"ckpt_path={ckpt}", *TUNE, f"output={out}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"difflab-tune-grid failed: {r.stderr.strip()}")
    return out / "grid.yaml", ["difflab-tune-grid", *cmd[3:]]


def confidence(ckpt: Path, grid_file: Path, seeds: int, reference: bool = True) -> dict:
    """classifier_confident per configuration: per seed, and pooled over all seeds' samples
    (reference: also the 512-NFE Heun solve the grid was fitted to)."""
    import torch
    import yaml

    from difflab.demo import classifier_scores, demo_classifier
    from difflab.evaluation import SamplerChoice, draw_samples, from_checkpoint

    torch.set_num_threads(1)
    target = from_checkpoint(ckpt, device="cpu")
    clf = demo_classifier()[0]
    node = yaml.safe_load(grid_file.read_text())  # the tuned file is a sampler node
    configs = {"ddim_50": SamplerChoice("ddim", 50), "unipc2_10_default_grid": SamplerChoice("unipc", 10, None, {"order": 2}),
               "unipc2_10_tuned": SamplerChoice.from_config(node)}
    if reference:
        configs["reference_heun_256"] = SamplerChoice("ode_heun", 256, "edm")
    res = {}
    for name, choice in configs.items():
        per_seed, nfe = [], 0
        for seed in range(seeds):
            x, nfe = draw_samples(target.denoiser, target.process, target.data_shape, 1000, seed, choice, progress=False)
            per_seed.append(classifier_scores(clf, x.float().clamp(-1, 1))["confident"])
        res[name] = {"nfe": int(nfe), "per_seed": per_seed, "pooled": sum(per_seed) / len(per_seed)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", type=Path, default=ROOT / "runs" / "demo" / "checkpoints" / "last.ckpt")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "tuned_grid_digits")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tuned_grid_digits.json")
    args = ap.parse_args()
    t0 = time.time()
    grid_file, command = tune(args.ckpt, args.work)
    tune_report = json.loads((grid_file.parent / "tune.json").read_text())
    scores = confidence(args.ckpt, grid_file, args.seeds)
    result = {"command": " ".join(command), "checkpoint": str(args.ckpt), "metric": "classifier_confident (difflab.demo)",
              "samples_per_seed": 1000, "seeds": list(range(args.seeds)), "scores": scores,
              "tuned_grid": tune_report["grid"], "distance": {"tuning": tune_report["distance_tuning"],
                                                             "heldout": tune_report["distance_heldout"]},
              "tune_seconds": tune_report["seconds"], "total_seconds": round(time.time() - t0, 1)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in scores.items():
        print(f"{name:24s} NFE {s['nfe']:4d}  seed 0 {s['per_seed'][0]:.3f}  pooled {s['pooled']:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
