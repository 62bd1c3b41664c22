"""UNet in the DDPM / ADM style (Ho et al. 2020; Dhariwal & Nichol 2021), sized entirely from config.

    conv_in → [ResBlock × num_res_blocks (+ self-attention at attn_resolutions), Downsample] per level
            → middle: ResBlock, attention, ResBlock
            → [ResBlock × (num_res_blocks + 1) on the concatenated skip (+ attention), Upsample] per level
            → GroupNorm, SiLU, conv_out

ResBlock: GroupNorm → SiLU → conv3×3 → + Linear(SiLU(temb)) → GroupNorm → SiLU → dropout → conv3×3,
plus a 1×1 shortcut when the width changes. The noise embedding is DDPM's: sinusoidal(c, ch) →
Linear(ch, 4ch) → SiLU → Linear(4ch, 4ch). With ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
attention at 16×16 this is DDPM's CIFAR-10 network (35.7M parameters). Any input size works:
downsampling rounds up and upsampling restores each skip's exact size (e.g. 8×8 digits, 28×28).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .embeddings import NoiseEmbedding, check_conditioning
from .options import apply_model_options


def base2_fourier_features(x: Tensor, exponents: Sequence[int]) -> Tensor:
    """VDM's Fourier features of the network input (Kingma et al. 2021, Sec. 3.4 / Appendix C,
    `Base2FourierFeatures`): for every channel c and exponent n, sin(2ⁿ · 2π · x_c) and
    cos(2ⁿ · 2π · x_c). [B, C, H, W] → [B, 2·C·N, H, W]: the sines then the cosines, each channel-major
    (index c·N + k for exponent k), as VDM's `repeat` / `tile`. With 8-bit data on [−1, 1] (bins 2/255
    apart) n = 7 has a period of one bin, which lets the network see the fine structure that decides the
    likelihood at high SNR. Computed in float32 whatever the autocast dtype."""
    w = (2.0 ** torch.as_tensor(list(exponents), dtype=torch.float32, device=x.device)) * (2 * math.pi)
    h = x.float().repeat_interleave(len(w), dim=1) * w.repeat(x.shape[1])[None, :, None, None]
    return torch.cat([torch.sin(h), torch.cos(h)], dim=1)


def _norm(ch: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups, ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch, num_groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2, self.drop = _norm(out_ch, num_groups), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (DDPM: scale 1e-10)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over the H·W positions, `num_heads` heads, residual (DDPM's AttnBlock for 1 head)."""

    def __init__(self, ch: int, num_groups: int, num_heads: int = 1):
        super().__init__()
        if ch % num_heads:
            raise ValueError(f"attention: channels {ch} not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.norm = _norm(ch, num_groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three heads c) h w -> three b heads (h w) c",
                            three=3, heads=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b heads (h w) c -> b (heads c) h w", h=h, w=w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)  # ⌈H/2⌉ × ⌈W/2⌉

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor, size) -> Tensor:
        return self.conv(F.interpolate(x, size=tuple(size), mode="nearest"))


class UNet(nn.Module):
    """forward(x [B, C, H, W], c [B]) → [B, out_channels, H, W].

    in_channels, out_channels (default: in_channels); ch: base width; ch_mult: width multiplier
    per level (len = number of levels, len − 1 downsamplings); num_res_blocks per level;
    attn_resolutions: spatial sizes (as computed from image_size) that get self-attention;
    dropout; image_size: the training size (only used to place attention); num_groups of
    GroupNorm (must divide every width); num_heads of attention; emb_max_period of the
    sinusoidal noise embedding (see `difflab.models.embeddings` for the ranges of c);
    fourier_features: exponents n of VDM's input Fourier features (`base2_fourier_features`; VDM
    uses 6, 7), concatenated to the input channels; empty (the default) for none.
    compile, channels_last: see `difflab.models.options` (DiffusionModule applies them after
    its shape check; a network instantiated directly applies them itself).
    """

    def __init__(self, in_channels: int = 3, ch: int = 128, ch_mult: Sequence[int] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.1, image_size: int = 32,
                 out_channels: int | None = None, num_groups: int = 32, num_heads: int = 1,
                 emb_max_period: float = 10000.0, fourier_features: Sequence[int] = (),
                 compile=False, channels_last: bool = False):
        super().__init__()
        ch_mult, attn_resolutions = tuple(int(m) for m in ch_mult), tuple(int(r) for r in attn_resolutions)
        if not ch_mult or num_res_blocks < 1:
            raise ValueError(f"UNet: need at least one level (ch_mult) and num_res_blocks >= 1, got {ch_mult}, {num_res_blocks}")
        widths = [ch * m for m in ch_mult]
        bad = [w for w in [ch] + widths if w % num_groups]
        if bad:
            raise ValueError(f"UNet: num_groups={num_groups} must divide every width (ch * ch_mult = {widths}); "
                             f"choose model.num_groups dividing {ch}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels or in_channels)
        self.image_size = int(image_size)
        emb_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, emb_dim, emb_max_period)
        self.fourier_features = tuple(int(n) for n in fourier_features or ())
        self.conv_in = nn.Conv2d(self.in_channels * (1 + 2 * len(self.fourier_features)), ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_widths, cur, res = [ch], ch, self.image_size
        for level, width in enumerate(widths):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(cur, width, emb_dim, dropout, num_groups))
                attns.append(AttentionBlock(width, num_groups, num_heads) if res in attn_resolutions else nn.Identity())
                cur = width
                skip_widths.append(cur)
            stage = nn.Module()
            stage.blocks, stage.attns = blocks, attns
            if level != len(widths) - 1:
                stage.downsample = Downsample(cur)
                skip_widths.append(cur)
                res = math.ceil(res / 2)
            self.down.append(stage)

        self.mid1 = ResBlock(cur, cur, emb_dim, dropout, num_groups)
        self.mid_attn = AttentionBlock(cur, num_groups, num_heads)
        self.mid2 = ResBlock(cur, cur, emb_dim, dropout, num_groups)

        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(cur + skip_widths.pop(), width, emb_dim, dropout, num_groups))
                attns.append(AttentionBlock(width, num_groups, num_heads) if res in attn_resolutions else nn.Identity())
                cur = width
            stage = nn.Module()
            stage.blocks, stage.attns = blocks, attns
            if level != 0:
                stage.upsample = Upsample(cur)
                res = res * 2  # only for placing attention; exact sizes come from the skips
            self.up.append(stage)

        self.norm_out = _norm(cur, num_groups)
        self.conv_out = nn.Conv2d(cur, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        apply_model_options(self, compile, channels_last)  # model.compile / model.channels_last (models/options.py)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects images [B, {self.in_channels}, H, W], got shape {tuple(x.shape)}; "
                             f"set model.in_channels to the data's channel count")
        emb = self.embed(check_conditioning(x, c))
        if self.fourier_features:
            x = torch.cat([x, base2_fourier_features(x, self.fourier_features).to(x.dtype)], dim=1)
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for stage in self.up:
            for block, attn in zip(stage.blocks, stage.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if hasattr(stage, "upsample"):
                h = stage.upsample(h, skips[-1].shape[-2:])
        return self.conv_out(F.silu(self.norm_out(h)))
