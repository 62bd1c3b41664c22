"""`difflab-sample`: samples from a checkpoint or from the exact GMM oracle → DIR/samples.npz.

    difflab-sample model=oracle data=gmm process=vp sampler=ddim sampler.steps=20 num_samples=4096 seed=0 output=DIR

Writes `samples.npz` (`samples` [N, ...], `nfe`: network evaluations per sample), `grid.png` for
image-shaped data and, for 2-D data, `scatter.png` beside exact mixture samples. Sample i
depends only on (seed, i // 32): each 32-sample chunk has its own generator, so batch_size
never changes the samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .common import UsageError, build_oracle, build_parameterization, build_process, hydra_entry, is_oracle, resolve_device, write_json

SEED_CHUNK = 32
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def chunk_generator(seed: int, chunk: int, device) -> torch.Generator:
    """The generator of sample chunk `chunk` (a hash of (seed, chunk), not seed + chunk)."""
    state = int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(state)


def draw(denoiser, process, data_shape, num_samples: int, batch_size: int, seed: int, sampler: str, steps: int,
         device, dtype=torch.float32, grid=None, **options) -> tuple[torch.Tensor, int]:
    """All samples, batch by batch, each batch a whole number of seeding chunks."""
    from ..samplers import sample

    per_batch = max(1, batch_size // SEED_CHUNK)
    n_chunks = math.ceil(num_samples / SEED_CHUNK)
    out, nfe = [], 0
    for first in range(0, n_chunks, per_batch):
        chunks = range(first, min(first + per_batch, n_chunks))
        gens = [chunk_generator(seed, c, device) for c in chunks]
        res = sample(denoiser, process, (len(gens) * SEED_CHUNK, *data_shape), sampler, steps, generator=gens,
                     device=device, dtype=dtype, grid=grid, **options)
        out.append(res.samples.cpu())
        nfe = max(nfe, res.nfe)
    return torch.cat(out)[:num_samples], nfe


def _load(cfg, device):
    """(denoiser, process, data_shape, exact GMM oracle or None)."""
    from omegaconf import OmegaConf

    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path))
        if not path.exists():
            raise UsageError(f"ckpt_path={path} does not exist; give a checkpoint written by difflab-train")
        try:
            from ..lit_module import load_denoiser
        except ImportError:
            raise UsageError("training support not installed") from None
        loaded = load_denoiser(str(path), device=device, use_ema=bool(cfg.get("use_ema", True)))
        data_cfg = loaded.data_config or {}
        exact = None
        if all(k in data_cfg for k in ("means", "stds", "weights")):
            exact = build_oracle(OmegaConf.create({k: data_cfg[k] for k in ("means", "stds", "weights")}))
        return loaded.denoiser, loaded.process, tuple(loaded.data_shape), exact
    if not is_oracle(cfg):
        raise UsageError("nothing to sample from: set ckpt_path=<checkpoint> or model=oracle (with data=gmm)")
    process = build_process(cfg).to(device)
    oracle = build_oracle(cfg.data).to(device)
    shape = tuple(cfg.data.get("shape") or (oracle.dim,))
    if math.prod(shape) != oracle.dim:
        raise UsageError(f"data.shape={list(shape)} has {math.prod(shape)} entries but the mixture means have {oracle.dim}")
    return oracle.denoiser(process, build_parameterization(cfg)), process, shape, oracle


@hydra_entry("sample", "difflab-sample")
def main(cfg, output_dir: Path) -> None:
    from omegaconf import OmegaConf

    from ..plotting import save_image_grid, scatter_compare
    from ..samplers import check_sampler

    scfg = OmegaConf.to_container(cfg.sampler, resolve=True)
    name, steps, grid = scfg.pop("name", None), scfg.pop("steps", None), scfg.pop("grid", None)
    check_sampler(name, steps, scfg)  # bad name / steps / option: exit 2 before any work
    if int(cfg.num_samples) < 1 or int(cfg.batch_size) < 1:
        raise UsageError(f"num_samples and batch_size must be >= 1, got {cfg.num_samples} and {cfg.batch_size}")
    if str(cfg.get("dtype", "float32")) not in DTYPES:
        raise UsageError(f"dtype must be one of {list(DTYPES)}, got {cfg.dtype}")
    device = resolve_device(cfg.get("device"))
    denoiser, process, shape, exact = _load(cfg, device)
    samples, nfe = draw(denoiser, process, shape, int(cfg.num_samples), int(cfg.batch_size), int(cfg.seed), name, int(steps),
                        device, DTYPES[str(cfg.get("dtype", "float32"))], grid, **scfg)
    if not torch.isfinite(samples).all():
        raise UsageError(f"sampler={name} with steps={steps} produced non-finite samples; use more steps or another sampler")
    output_dir.mkdir(parents=True, exist_ok=True)
    np.savez(output_dir / "samples.npz", samples=samples.numpy(), nfe=np.int64(nfe))
    if samples.ndim == 4:
        save_image_grid(samples[:64], output_dir / "grid.png")
    if samples.ndim == 2 and samples.shape[1] == 2 and exact is not None:
        ref = exact.sample(len(samples), generator=torch.Generator(device=exact.means.device).manual_seed(int(cfg.seed) + 1))
        scatter_compare(samples, ref.cpu(), output_dir / "scatter.png", title=f"{name}, {steps} steps, NFE {nfe}")
    write_json(output_dir / "sample.json", {"sampler": name, "steps": int(steps), "nfe": nfe, "num_samples": len(samples),
                                            "shape": list(samples.shape), "seed": int(cfg.seed)})
    print(f"difflab-sample: {len(samples)} samples, NFE {nfe} -> {output_dir / 'samples.npz'}")


if __name__ == "__main__":
    main()
