"""MLP denoiser for low-dimensional data (2-D mixtures, toy data), conditioned on the noise level."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, check_conditioning
from .options import apply_model_options


class _ResidualBlock(nn.Module):
    """h + W₂ SiLU(W₁ LN(h) + E emb) (+ dropout): a pre-norm residual block with additive noise
    conditioning."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.lin1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        u = self.act(self.lin1(self.norm(h)) + self.emb(self.act(emb)))
        return h + self.lin2(self.drop(u))


class MLP(nn.Module):
    """forward(x [B, D] or [B, *shape], c [B]) → same shape as x.

    dim: D = the number of features (prod(shape) for non-flat inputs); hidden, depth: width and
    number of residual blocks; emb_dim: size of the sinusoidal embedding of c (see
    `difflab.models.embeddings` for the ranges of c it resolves: with the `Denoiser`, use
    conditioning=t with cond_scale=1000, or conditioning=log_snr). The output layer starts at
    zero, so an untrained network predicts 0 (ε̂ = 0, x̂ = 0, ...).

    skip: add a noise-gated linear path from the input, out = F(x, c) + a(c) ⊙ x with a(c) a
    linear read-out of the noise embedding (zero at init). Every parameterization is close to
    a multiple of its input at one end of the noise range (ε̂ ≈ z/σ at high noise, x̂ ≈ z at
    low noise, v̂ ≈ ±z at both), and the LayerNorm'd trunk alone cannot grow linearly in the
    tails of the prior. Without it a deterministic sampler on VP (x̂ error amplified by σ/α ≈
    150 at t = 1) sends the ~0.3% of starts with |z_T| > 3.4 far off the data
    (tests/test_train_gmm.py).

    compile, channels_last: see `difflab.models.options` (channels_last does nothing here).
    """

    def __init__(self, dim: int | Sequence[int], hidden: int = 256, depth: int = 4, emb_dim: int = 128,
                 dropout: float = 0.0, max_period: float = 10000.0, skip: bool = True,
                 compile=False, channels_last: bool = False):
        super().__init__()
        dim = int(math.prod(dim)) if isinstance(dim, (list, tuple)) else int(dim)
        if dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"MLP: need dim >= 1, hidden >= 1, depth >= 0; got dim={dim}, hidden={hidden}, depth={depth}")
        self.dim = dim
        self.embed = NoiseEmbedding(emb_dim, hidden, max_period)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden, hidden, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.skip = nn.Linear(hidden, dim) if skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)
        apply_model_options(self, compile, channels_last)  # model.compile / model.channels_last (models/options.py)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = check_conditioning(x, c)
        if x[0].numel() != self.dim:
            raise ValueError(f"MLP was built for dim={self.dim} features, got input of shape {tuple(x.shape)}; "
                             f"set model.dim to the data dimension")
        flat = x.reshape(x.shape[0], self.dim)
        h = self.inp(flat)
        emb = self.embed(c)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(h)
        if self.skip is not None:
            out = out + self.skip(emb) * flat.to(out.dtype)  # stay in the autocast dtype
        return out.reshape(x.shape)
