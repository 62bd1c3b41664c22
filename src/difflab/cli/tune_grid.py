"""`difflab-tune-grid`: fit the K-step time grid of a deterministic sampler to a checkpoint or to the
exact GMM oracle (`difflab.evaluation.tuning.tune_grid`) → <output>/grid.yaml and <output>/tune.json.

    difflab-tune-grid ckpt_path=runs/demo/checkpoints/last.ckpt sampler=dpm_solver sampler.steps=10 output=runs/tuned
    difflab-sample ckpt_path=runs/demo/checkpoints/last.ckpt sampler=dpm_solver sampler.steps=10 \\
        sampler.grid=tuned:runs/tuned/grid.yaml

The grid is fitted on `num_samples` prior draws of `seed`; tune.json also gives the distance of the
start grid and of the tuned grid to the reference on as many draws of `heldout_seed`.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..config_check import UsageError, refuse_existing
from ..evaluation import SamplerChoice, build_target, resolve_device, set_threads
from ..progress import Progress, program
from ..utils import RunLock, plain, write_json
from .common import user_chose
from .entry import hydra_entry

PROG = "difflab-tune-grid"


def check_options(cfg) -> tuple[SamplerChoice, tuple]:
    """Every option checked before any work (bad input: one line, exit 2, nothing written)."""
    choice = SamplerChoice.from_config(cfg.sampler)
    for key in ("num_samples", "max_evals"):
        if int(cfg[key]) < 1:
            raise UsageError(f"{key} must be >= 1, got {cfg[key]}")
    ref = plain(cfg.reference) or {}
    reference = (ref.get("sampler", "ode_heun"), int(ref.get("steps", 256)), ref.get("grid", "edm"))
    SamplerChoice.from_config({"name": reference[0], "steps": reference[1]})
    return choice, reference


@hydra_entry("tune_grid", PROG)
def main(cfg, output_dir: Path) -> None:
    with program(PROG):  # the progress lines of the reference solve and the search name the command
        _main(cfg, output_dir)


def _main(cfg, output_dir: Path) -> None:
    from ..evaluation import tuning

    choice, reference = check_options(cfg)
    refuse_existing(output_dir / "grid.yaml", cfg.get("overwrite"))
    device = resolve_device(cfg.get("device"))
    target = build_target(cfg, device, data_chosen=user_chose("data"))
    set_threads(cfg.get("threads"), target.denoiser)
    n, den, process = int(cfg.num_samples), target.denoiser, target.process
    with RunLock(output_dir):
        t0 = time.time()
        tuned = tuning.tune_grid(den, process, choice.sampler, choice.steps, target.data_shape, n=n, seed=int(cfg.seed),
                                 grid=choice.grid, options=choice.options, reference=reference,
                                 max_evals=int(cfg.max_evals), device=device)
        with Progress(f"held-out distances (seed {cfg.heldout_seed})"):
            x_held = tuning.prior_noise(process, target.data_shape, n, int(cfg.heldout_seed), device)
            ref_held = tuning.solve(den, process, x_held, *reference)
            held = {name: tuning.grid_error(den, process, choice.sampler, ts, x_held, ref_held, choice.options)
                    for name, ts in (("start", tuned.initial_ts), ("tuned", tuned.ts))}
        source = cfg.ckpt_path or f"model=oracle ({type(process).__name__})"
        use = " ".join([f"sampler={tuned.sampler}", *(f"sampler.{k}={v}" for k, v in tuned.options.items()),
                        f"sampler.steps={tuned.steps}", f"sampler.grid=tuned:{output_dir / 'grid.yaml'}"])
        comment = (f"difflab-tune-grid: {tuned.sampler}, {tuned.steps} steps, fitted to {source}\n"
                   f"mean squared distance per dim to {reference[0]} x {reference[1]} ({reference[2]} grid) from the same noise:\n"
                   f"  tuning draws (n={n}, seed={cfg.seed}): start grid {tuned.initial_loss:.6g}, tuned {tuned.loss:.6g}\n"
                   f"  held-out draws (seed={cfg.heldout_seed}): start grid {held['start']:.6g}, tuned {held['tuned']:.6g}\n"
                   f"use: {use}")
        output_dir.mkdir(parents=True, exist_ok=True)
        tuning.save(tuned, output_dir / "grid.yaml", comment)
        write_json(output_dir / "tune.json", {
            "sampler": tuned.sampler, "steps": tuned.steps, "options": tuned.options, "source": str(source),
            "reference": list(reference), "num_samples": n, "seed": int(cfg.seed), "heldout_seed": int(cfg.heldout_seed),
            "distance_tuning": {"start": tuned.initial_loss, "tuned": tuned.loss},
            "distance_heldout": held, "evals": tuned.evals, "seconds": round(time.time() - t0, 1),
            "grid": [float(t) for t in tuned.ts], "start_grid": [float(t) for t in tuned.initial_ts]})
    print(f"{PROG}: held-out distance {held['start']:.4g} -> {held['tuned']:.4g}; wrote {output_dir / 'grid.yaml'} "
          f"(use sampler.grid=tuned:{output_dir / 'grid.yaml'})")


if __name__ == "__main__":
    main()
