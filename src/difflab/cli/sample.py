"""`difflab-sample`: samples from a checkpoint (ckpt_path=) or from the exact GMM oracle (model=oracle,
asked for by name: with neither the command is refused) → DIR/samples.npz.

    difflab-sample model=oracle data=gmm process=vp sampler=ddim sampler.steps=20 num_samples=4096 seed=0 output=DIR

Writes `samples.npz` (`samples` [N, ...], `nfe`: network evaluations per sample), `grid.png` for
image-shaped data and, for 2-D data, `scatter.png` beside exact mixture samples. Sample i
depends only on (seed, i) (`difflab.evaluation.seeding`): batch_size never changes the samples,
and difflab-eval and the EvalCallback draw the same ones for the same seed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config_check import UsageError, refuse_existing
from ..evaluation import PRECISIONS, SamplerChoice, build_target, draw_samples, resolve_device, set_threads
from ..utils import RunLock, provenance, save_npz, write_json, write_text
from .common import user_chose
from .entry import hydra_entry

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_source(cfg) -> None:
    """A checkpoint, or the oracle asked for by name: never the GMM oracle by default (a sweep
    without ckpt_path= would silently sample the oracle and look like a model's results)."""
    if not cfg.get("ckpt_path") and not user_chose("model"):
        raise UsageError("nothing to sample from: pass ckpt_path=<run>/checkpoints/last.ckpt (a difflab-train checkpoint) "
                         "or model=oracle (the exact denoiser of data=gmm)")


def check_options(cfg) -> SamplerChoice:
    """Every option checked before any work (bad input: one line, exit 2, nothing written)."""
    sampler = SamplerChoice.from_config(cfg.sampler)
    for key in ("num_samples", "batch_size"):
        if int(cfg[key]) < 1:
            raise UsageError(f"{key} must be >= 1, got {cfg[key]}")
    if str(cfg.get("dtype", "float32")) not in DTYPES:
        raise UsageError(f"dtype must be one of {list(DTYPES)}, got {cfg.dtype}")
    if str(cfg.get("precision", "fp32")) not in PRECISIONS:
        raise UsageError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision}")
    return sampler


@hydra_entry("sample", "difflab-sample")
def main(cfg, output_dir: Path) -> None:
    from omegaconf import OmegaConf

    from ..plotting import save_image_grid, scatter_compare

    check_source(cfg)
    sampler = check_options(cfg)
    refuse_existing(output_dir / "samples.npz", cfg.get("overwrite"))
    device = resolve_device(cfg.get("device"))
    target = build_target(cfg, device, data_chosen=user_chose("data"))
    set_threads(cfg.get("threads"), target.denoiser)
    with RunLock(output_dir):
        samples, nfe = draw_samples(target.denoiser, target.process, target.data_shape, int(cfg.num_samples), int(cfg.seed), sampler,
                                    batch_size=int(cfg.batch_size), device=device, dtype=DTYPES[str(cfg.get("dtype", "float32"))],
                                    precision=str(cfg.get("precision", "fp32")))
        if not torch.isfinite(samples).all():
            raise UsageError(f"sampler={sampler.name} with steps={sampler.steps} produced non-finite samples; use more steps or another sampler")
        output_dir.mkdir(parents=True, exist_ok=True)
        save_npz(output_dir / "samples.npz", samples=samples.numpy(), nfe=nfe)
        if samples.ndim == 4:
            save_image_grid(samples[:64], output_dir / "grid.png")
        if samples.ndim == 2 and samples.shape[1] == 2 and target.mixture is not None:
            ref = target.real(len(samples), int(cfg.seed) + 1)
            scatter_compare(samples, ref.cpu(), output_dir / "scatter.png", title=f"{sampler.name}, {sampler.steps} steps, NFE {nfe}")
        origin = provenance(cfg, cfg.get("ckpt_path"), output=str(output_dir))
        write_text(output_dir / "config.yaml", OmegaConf.to_yaml(origin["config"]))
        write_json(output_dir / "sample.json", {"sampler": sampler.name, "steps": sampler.steps, "nfe": nfe, "num_samples": len(samples),
                                                "shape": list(samples.shape), "seed": int(cfg.seed), "provenance": origin})
    print(f"difflab-sample: {len(samples)} samples, NFE {nfe} -> {output_dir / 'samples.npz'}")


if __name__ == "__main__":
    main()
