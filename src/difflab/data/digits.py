"""`data=digits`: scikit-learn's 1797 handwritten 8×8 digits (bundled with scikit-learn, so
no download), scaled from 0..16 to [-1, 1]; the CPU default data set."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import BaseDataModule, TensorDataset1


def load_digits_tensor(return_labels: bool = False):
    """All 1797 digits as [N, 1, 8, 8] in [-1, 1] (x / 16 · 2 − 1), optionally with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0 * 2.0 - 1.0
    if return_labels:
        return x, torch.as_tensor(d.target, dtype=torch.long)
    return x


class DigitsDataModule(BaseDataModule):
    """Train on the first `len − num_val` digits (a fixed shuffle), validate on the rest.
    `flatten=true` gives [64] vectors for MLPs."""

    def __init__(self, batch_size: int = 128, num_val: int = 197, flatten: bool = False, seed: int = 0,
                 dim: int | None = None, channels: int | None = None, image_size: int | None = None, **loader):
        super().__init__(batch_size=batch_size, **loader)
        self.num_val, self.flatten, self.seed = int(num_val), bool(flatten), int(seed)
        self.data_shape = (64,) if self.flatten else (1, 8, 8)
        self.check_declared(dim=dim, channels=None if self.flatten else channels, image_size=None if self.flatten else image_size)
        self._split = None

    def split(self) -> tuple[Tensor, Tensor]:
        """(train, val) digits in [-1, 1], shaped like `data_shape` (the fixed shuffle, computed once)."""
        if self._split is None:
            x = load_digits_tensor()
            perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed))
            x = x[perm].reshape(x.shape[0], *self.data_shape)
            n_val = min(max(self.num_val, 0), x.shape[0] - 1)
            self._split = (x[n_val:], x[:n_val])
        return self._split

    def build_train(self):
        return TensorDataset1(self.split()[0])

    def build_val(self):
        return TensorDataset1(self.split()[1]) if self.split()[1].shape[0] else None
