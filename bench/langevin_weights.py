"""Seed 002's Langevin experiment as a plot: weights 0.2/0.8, plain vs annealed Langevin vs PC.

    PYTHONPATH=src python bench/langevin_weights.py   # writes bench/langevin_weights.png
"""
from pathlib import Path

import torch

from difflab.models import GMMOracle
from difflab.processes import VESDE
from difflab.samplers import langevin, sample

oracle = GMMOracle([[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0], [0.2, 0.8])
process, n = VESDE(0.01, 50.0), 3000
x0 = 16 * torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) - 8
sets = {
    "exact": oracle.sample(n, generator=torch.Generator().manual_seed(3)),
    "Langevin (true score)": langevin(lambda x: oracle.score(x, 1.0, 0.0), x0, 0.1, 1000, torch.Generator().manual_seed(1)),
    "annealed Langevin": sample(oracle.denoiser(process), process, (n, 2), "annealed_langevin", 200,
                                generator=torch.Generator().manual_seed(2)).samples,
    "PC": sample(oracle.denoiser(process), process, (n, 2), "pc", 100, generator=torch.Generator().manual_seed(2)).samples,
}
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, axes = plt.subplots(1, 4, figsize=(16, 4))
for ax, (name, x) in zip(axes, sets.items()):
    share = float((x.sum(1) < 0).double().mean())
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
    ax.set(title=f"{name}: weight of (−5,−5) = {share:.3f}", xlim=(-9, 9), ylim=(-9, 9), aspect="equal")
fig.tight_layout()
out = Path(__file__).with_suffix(".png")
fig.savefig(out, dpi=100)
print(f"wrote {out}; shares:", {k: round(float((v.sum(1) < 0).double().mean()), 3) for k, v in sets.items()})
