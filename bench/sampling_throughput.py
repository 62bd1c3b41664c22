"""Sampling throughput (network evaluations/s): difflab's DDIM vs diffusers' DDIMPipeline, same run.

    python bench/sampling_throughput.py                                   # CPU: tiny UNet, fp32
    python bench/sampling_throughput.py --config ddpm_cifar10 --batch 1024 --steps 20 --precision bf16,bf16-true --compile off,on

Both sides: DDPM's process (T = 1000, linear β 1e-4..0.02), ε-prediction, DDIM (η = 0) with the
same number of steps, the same batch, UNets of the same architecture with random weights (speed
does not depend on them), the samples copied to the host at the end (as a CLI writing them must).

difflab: `difflab.samplers.sample(..., sampler="ddim")` with its `Denoiser`, in the precision
`difflab-sample precision=...` uses (`difflab.evaluation.in_precision`): `bf16` runs the network
under bf16 autocast (normalisations stay float32 on CUDA), `bf16-true` a bf16 copy of it (every
layer in bf16, as the peer's pipeline); in both the sampler state and the prediction stay float32. Two networks: difflab's UNet (`difflab`) and diffusers' UNet2DModel
inside difflab's Denoiser (`difflab+diffusers_unet`: same network as the peer, so the ratio is the
sampler loop alone). diffusers: `DDIMPipeline` with the UNet in bf16 weights (its fastest set-up:
the state is bf16 too), output_type="pt" then copied to the host as float32. Compile: `nn.Module.compile()` / `torch.compile`.
Prints evals/s (batch × NFE / seconds) per side and the ratios; writes
`bench/results/sampling_throughput_<device>.json`; `--jsonl FILE` appends one JSON line per result.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))


def timed(fn, device, repeats: int) -> float:
    """Best wall time of `repeats` calls after one untimed call (compilation, caches)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    from _results import append_jsonl, device_and_compiles, write_results
    from unet_throughput import build

    from difflab.denoiser import Denoiser
    from difflab.evaluation.sampling import in_precision
    from difflab.parameterizations import Epsilon
    from difflab.processes import DDPM
    from difflab.samplers import sample

    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="ddpm_cifar10" if cuda else "tiny", choices=["ddpm_cifar10", "tiny"])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--batch", type=int, default=1024 if cuda else 64)
    ap.add_argument("--steps", type=int, default=20 if cuda else 10)
    ap.add_argument("--precision", default="bf16,bf16-true" if cuda else "fp32",
                    help="comma-separated: fp32, bf16 (autocast), bf16-true (a bf16 copy of the network)")
    ap.add_argument("--compile", default="off", help="off, on or off,on")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--jsonl", default=None)
    ap.add_argument("--check", action="store_true",
                    help="validate the arguments and print what would run, without running it (tests check "
                         "bench/gpu_check.sh so)")
    args = ap.parse_args()
    device, compiles = device_and_compiles(ap, args.device, args.compile)
    precisions = args.precision.split(",")
    for p in precisions:
        if p not in ("fp32", "bf16", "bf16-true"):
            ap.error(f"--precision: {p!r} is not one of fp32, bf16, bf16-true")
    if min(args.batch, args.steps, args.repeats) < 1:
        ap.error("--batch, --steps and --repeats must be >= 1")
    try:
        from diffusers import DDIMPipeline, DDIMScheduler
    except ImportError as e:
        ap.error(f"the peer pipeline needs diffusers: {e}")
    runs = [(c, p) for c in compiles for p in precisions]
    if args.check:
        for compile_on, precision in runs:
            print(f"sampling_throughput: {args.config} {precision} compile={'on' if compile_on else 'off'} on {device.type}, "
                  f"batch {args.batch}, {args.steps} DDIM steps, best of {args.repeats}")
        return
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    if device.type == "cuda":  # cuDNN autotuning for both sides (difflab-sample turns it on for CUDA)
        torch.backends.cudnn.benchmark = True
    results = []
    for compile_on, precision in runs:
        bf16 = precision != "fp32"
        torch.manual_seed(0)
        ours, peer, (chans, size) = build(args.config, dropout=0.0)
        ours, peer = ours.to(device).eval(), peer.to(device).eval()
        peer_in_ours = build(args.config, dropout=0.0)[1].to(device).eval()

        class PeerNet(torch.nn.Module):  # diffusers' UNet as a difflab network: model(z, c) -> ε̂
            def __init__(self, unet):
                super().__init__()
                self.unet = unet

            def forward(self, z, c):
                return self.unet(z, c).sample

        process = DDPM(1000, "linear").to(device)
        dens = {"difflab": Denoiser(ours, process, Epsilon(), conditioning="t", cond_scale=1000.0),
                "difflab+diffusers_unet": Denoiser(PeerNet(peer_in_ours), process, Epsilon(), conditioning="t", cond_scale=1000.0)}
        if compile_on:
            for den in dens.values():
                den.model.compile()
        shape = (args.batch, chans, size, size)
        row = dict(config=args.config, device=str(device), precision=precision, compile=compile_on, batch=args.batch,
                   steps=args.steps)

        def ours_run(den):
            den, amp = in_precision(den, precision)  # once, as difflab-sample does per call

            def run():
                g = torch.Generator(device=device).manual_seed(0)
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    out = sample(den, process, shape, "ddim", steps=args.steps, generator=g, device=device)
                row["nfe"] = int(out.nfe)
                assert out.samples.dtype == torch.float32
                out.samples.cpu().numpy()
            return run

        for name, den in dens.items():
            row[f"{name}_evals_s"] = round(args.batch * args.steps / timed(ours_run(den), device, args.repeats), 1)

        sched = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                              clip_sample=False, set_alpha_to_one=True)
        unet = peer.to(torch.bfloat16) if bf16 else peer
        if compile_on:
            unet = torch.compile(unet)
        pipe = DDIMPipeline(unet=unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)

        def peer_run():
            g = torch.Generator(device=device).manual_seed(0)
            out = pipe(batch_size=args.batch, generator=g, num_inference_steps=args.steps, eta=0.0, output_type="pt")
            out.images.float().cpu().numpy()  # its "np" output cannot convert bf16 itself

        row["diffusers_pipeline_evals_s"] = round(args.batch * args.steps / timed(peer_run, device, args.repeats), 1)
        row["ratio_difflab_vs_pipeline"] = round(row["difflab_evals_s"] / row["diffusers_pipeline_evals_s"], 3)
        row["ratio_same_unet_vs_pipeline"] = round(row["difflab+diffusers_unet_evals_s"] / row["diffusers_pipeline_evals_s"], 3)
        results.append(row)
        print(json.dumps(row), flush=True)
        append_jsonl(args.jsonl, "sampling_throughput", row)
    write_results(args.out, ROOT / "bench" / "results" / f"sampling_throughput_{device.type}.json", device, results)


if __name__ == "__main__":
    main()
