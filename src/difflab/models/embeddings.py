"""Noise-level embeddings shared by the MLP and the UNet.

The networks are conditioned on one number per example, c [B], which the `Denoiser` computes
from its `conditioning` (t, log-SNR, σ or ¼ log σ, times `cond_scale`). The sinusoidal
embedding (Vaswani et al. 2017; DDPM's timestep embedding) uses frequencies from 1 down to
1/max_period radians per unit of c, so it resolves changes of c of order 1 across a range of
up to ~max_period. Good inputs therefore span tens to thousands of units:

    conditioning=t          cond_scale=1000   (c ∈ [0, 1000], DDPM's integer steps)
    conditioning=log_snr    cond_scale=1…10   (λ ∈ about [−10, 14])
    conditioning=log_sigma  cond_scale=1000   (¼ log σ ∈ about [−1.2, 1], EDM's c_noise)
    conditioning=sigma      only for narrow σ ranges; prefer log_sigma
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(c: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[B] → [B, dim]: [cos(c ω_k), sin(c ω_k)], ω_k = max_period^(−k/half), k = 0..half−1
    (zero-padded when dim is odd). Computed in float32 whatever the autocast dtype."""
    if dim < 2:
        raise ValueError(f"embedding dim must be >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c.device, dtype=torch.float32) / half)
    args = c.reshape(-1).to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the noise conditioning followed by a 2-layer MLP (DDPM's temb):
    c [B] → [B, out_dim]."""

    def __init__(self, dim: int, out_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim, self.max_period = int(dim), float(max_period)
        self.mlp = nn.Sequential(nn.Linear(self.dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c: Tensor) -> Tensor:
        emb = sinusoidal_embedding(c, self.dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


def check_conditioning(x: Tensor, c: Tensor) -> Tensor:
    """c must hold one value per example; a scalar is broadcast."""
    c = torch.as_tensor(c, device=x.device)
    if c.ndim == 0:
        c = c.expand(x.shape[0])
    if c.ndim != 1 or c.shape[0] != x.shape[0]:
        raise ValueError(f"noise conditioning c must have shape [B] = [{x.shape[0]}], got {tuple(c.shape)}")
    return c
