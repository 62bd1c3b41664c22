"""`data=gmm`: samples of an isotropic Gaussian mixture set from the command line.

The same means/stds/weights build `GMMOracle` (model=oracle), so a trained model can be
compared with the exact Bayes-optimal denoiser, NLL and samples of the same mixture.
"""
from __future__ import annotations

import torch

from ..models.oracle import GMMOracle
from .base import BaseDataModule, TensorDataset1


class GMMDataModule(BaseDataModule):
    """`num_train` / `num_val` points of p(x) = Σ_k w_k N(μ_k, s_k² I), drawn once from `seed`."""

    def __init__(self, means, stds, weights=None, num_train: int = 65536, num_val: int = 8192,
                 batch_size: int = 512, seed: int = 0, dim: int | None = None, **loader):
        super().__init__(batch_size=batch_size, **loader)
        self.oracle = GMMOracle(means, stds, weights)  # validates shapes with a clear message
        self.num_train, self.num_val, self.seed = int(num_train), int(num_val), int(seed)
        if self.num_train < 1:
            raise ValueError(f"data.num_train must be >= 1, got {num_train}")
        self.data_shape = (self.oracle.dim,)
        if dim is not None and int(dim) != self.oracle.dim:
            raise ValueError(f"data.dim={dim} but data.means has {self.oracle.dim} columns; set data.dim={self.oracle.dim}")

    def _draw(self, n: int, offset: int):
        g = torch.Generator().manual_seed(self.seed * 1000 + offset)
        return TensorDataset1(self.oracle.sample(n, generator=g).to(torch.float32))

    def build_train(self):
        return self._draw(self.num_train, 0)

    def build_val(self):
        return self._draw(self.num_val, 1) if self.num_val > 0 else None
