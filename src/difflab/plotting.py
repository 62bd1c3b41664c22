"""Small plotting helpers (matplotlib, Agg backend): image grids and 2-D sample scatters."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor


def save_image_grid(x: Tensor, path, nrow: int | None = None, min_size: int = 64) -> Path:
    """Save images x [N, C, H, W] with values in [-1, 1] (clamped) as one PNG grid.
    nrow: images per row (default ⌈√N⌉). C = 1 (grey) or 3 (RGB). Images smaller than
    `min_size` pixels are enlarged by an integer factor, nearest neighbour (pixels stay
    sharp): 8×8 digits become 64×64 and readable."""
    from torchvision.utils import make_grid, save_image

    x = torch.as_tensor(x).detach().float().cpu()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid expects images [N, C, H, W] with C in (1, 3), got shape {tuple(x.shape)}")
    factor = max(1, math.ceil(min_size / min(x.shape[-2:])))
    if factor > 1:
        x = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    nrow = nrow or max(1, math.ceil(math.sqrt(x.shape[0])))
    grid = make_grid((x.clamp(-1, 1) + 1) / 2, nrow=nrow, padding=max(1, factor // 2), pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, str(path))
    return path


def scatter_compare(samples: Tensor, reference: Tensor | None, path, title: str | None = None,
                    max_points: int = 4000, labels=("samples", "exact")) -> Path:
    """Scatter of 2-D samples beside reference samples (e.g. exact GMM draws), same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [torch.as_tensor(samples).detach().cpu().float()]
    if reference is not None:
        sets.append(torch.as_tensor(reference).detach().cpu().float())
    for s in sets:
        if s.ndim != 2 or s.shape[1] != 2:
            raise ValueError(f"scatter_compare expects 2-D points [N, 2], got shape {tuple(s.shape)}")
    allp = torch.cat(sets)
    lo, hi = allp.quantile(0.001, dim=0), allp.quantile(0.999, dim=0)
    pad = 0.05 * (hi - lo)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.2), squeeze=False)
    for ax, s, lab, col in zip(axes[0], sets, labels, ("tab:blue", "tab:orange")):
        s = s[:max_points]
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, color=col)
        ax.set_title(f"{lab} (n={len(s)})")
        ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
        ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
