"""`data=toy2d`: the 2-D densities of the score-matching papers (moons, swiss roll,
checkerboard, rings), scaled to roughly unit variance per coordinate."""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import BaseDataModule, TensorDataset1

SHAPES = ("moons", "swiss_roll", "checkerboard", "rings")


def toy2d_sample(name: str, n: int, seed: int = 0, noise: float = 0.05) -> torch.Tensor:
    """n points [n, 2] of the named density, standardised to about unit scale."""
    rng = np.random.default_rng(seed)
    if name == "moons":
        from sklearn.datasets import make_moons

        x, _ = make_moons(n, noise=noise, random_state=seed)
        x = (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5])
    elif name == "swiss_roll":
        from sklearn.datasets import make_swiss_roll

        x3, _ = make_swiss_roll(n, noise=noise * 10, random_state=seed)
        x = x3[:, [0, 2]] / 7.5
    elif name == "checkerboard":
        # 8 squares of side 1 on a 4x4 board over [-2, 2]^2, alternating
        u = rng.uniform(-2, 2, size=n)
        v = rng.uniform(0, 1, size=n) - rng.integers(0, 2, size=n) * 2 + (np.floor(u) % 2)
        x = np.stack([u, v], 1) / 1.15
    elif name == "rings":
        radii = np.array([0.5, 1.0, 1.5, 2.0])
        r = radii[rng.integers(0, 4, size=n)] + noise * rng.standard_normal(n)
        a = rng.uniform(0, 2 * math.pi, size=n)
        x = np.stack([r * np.cos(a), r * np.sin(a)], 1) / 0.95
    else:
        raise ValueError(f"data.name must be one of {SHAPES}, got {name!r}")
    return torch.as_tensor(x, dtype=torch.float32)


class Toy2DDataModule(BaseDataModule):
    def __init__(self, name: str = "moons", num_train: int = 65536, num_val: int = 8192, noise: float = 0.05,
                 batch_size: int = 512, seed: int = 0, dim: int | None = None, **loader):
        super().__init__(batch_size=batch_size, **loader)
        if name not in SHAPES:
            raise ValueError(f"data.name must be one of {SHAPES}, got {name!r}")
        self.name, self.num_train, self.num_val, self.noise, self.seed = name, int(num_train), int(num_val), float(noise), int(seed)
        self.data_shape = (2,)
        self.check_declared(dim=dim)

    def build_train(self):
        return TensorDataset1(toy2d_sample(self.name, self.num_train, self.seed, self.noise))

    def build_val(self):
        return TensorDataset1(toy2d_sample(self.name, self.num_val, self.seed + 1, self.noise)) if self.num_val > 0 else None
