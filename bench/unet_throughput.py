"""Throughput of difflab's UNet vs diffusers' UNet2DModel of the same architecture, same run.

    python bench/unet_throughput.py                       # DDPM CIFAR-10 net (35.7M), batch 8, CPU fp32
    python bench/unet_throughput.py --device cuda --batch 128 --precision bf16 --train

Both networks get the same inputs, the same precision and the same number of timed
iterations (after warm-up); the script prints images/s for each and ours/diffusers. No
asserts: it is a measurement, run it on the machine you care about.
"""
from __future__ import annotations

import argparse
import time

import torch

CONFIGS = {
    # name: (ch, ch_mult, num_res_blocks, attention levels (index), image size, channels)
    "ddpm_cifar10": (128, (1, 2, 2, 2), 2, (1,), 32, 3),
    "tiny": (32, (1, 2), 1, (1,), 8, 1),
}


def build(config: str, dropout: float = 0.1):
    from diffusers import UNet2DModel

    from difflab.models import UNet

    ch, mult, nres, attn_levels, size, chans = CONFIGS[config]
    groups = 32 if ch % 32 == 0 else 8
    attn_res = tuple(size // 2**i for i in attn_levels)
    ours = UNet(chans, ch, mult, nres, attn_res, dropout, size, num_groups=groups)
    down = tuple("AttnDownBlock2D" if i in attn_levels else "DownBlock2D" for i in range(len(mult)))
    up = tuple("AttnUpBlock2D" if (len(mult) - 1 - i) in attn_levels else "UpBlock2D" for i in range(len(mult)))
    peer = UNet2DModel(sample_size=size, in_channels=chans, out_channels=chans, block_out_channels=tuple(ch * m for m in mult),
                       layers_per_block=nres, down_block_types=down, up_block_types=up, dropout=dropout, norm_num_groups=groups)
    return ours, peer, (chans, size)


def bench(fn, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="ddpm_cifar10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--train", action="store_true", help="time forward + backward instead of forward only")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours, peer, (chans, size) = build(args.config)
    ours, peer = ours.to(device), peer.to(device)
    n_ours, n_peer = (sum(p.numel() for p in m.parameters()) for m in (ours, peer))
    x = torch.randn(args.batch, chans, size, size, device=device)
    t = torch.randint(0, 1000, (args.batch,), device=device).float()
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]

    def step(model, call):
        def run():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), torch.set_grad_enabled(args.train):
                out = call(model)
                if args.train:
                    out.float().pow(2).mean().backward()
        return run

    results = {}
    for name, model, call in (("difflab", ours, lambda m: m(x, t)), ("diffusers", peer, lambda m: m(x, t).sample)):
        model.train(args.train)
        results[name] = args.batch / bench(step(model, call), args.iters, args.warmup, device)
    mode = "train (fwd+bwd)" if args.train else "forward"
    print(f"config={args.config} params: difflab {n_ours:,} diffusers {n_peer:,} | device={device} "
          f"precision={args.precision} batch={args.batch} {mode}")
    for name, ips in results.items():
        print(f"  {name:9s} {ips:10.1f} img/s")
    print(f"ratio difflab/diffusers = {results['difflab'] / results['diffusers']:.3f}")


if __name__ == "__main__":
    main()
