"""Sampling speed on one trained MNIST network: difflab-sample's code path against diffusers' DDIMPipeline,
the same network (the checkpoint's EMA weights) and the same sampler (DDIM, η = 0, 20 steps).

- ours: `difflab.evaluation.draw_samples` (what difflab-sample runs), at its default `batch_size=auto`
  and at every batch of the sweep;
- diffusers: `DDIMPipeline` with our network wrapped as its `unet` (a ModelMixin whose forward(x, t)
  returns ε̂ of our network at the continuous time of the discrete step t; `trained_betas` from the
  network's own schedule, as in bench/mnist_samplers.py), at every batch of the sweep, the peer's
  fastest batch reported: a baseline gets the settings its user would pick.

Both sides run in this process, alternately, after one warm-up call each, with the same thread
count. Printed: network evaluations per second (samples × NFE / s) per configuration and the ratio
ours (auto batch) / diffusers (its best batch). Written: bench/results/mnist_sampling_speed.json.

    PYTHONPATH=src python bench/mnist_sampling_speed.py --ckpt runs/mnist/checkpoints/last.ckpt \
        [--n 512] [--steps 20] [--batches 64 256 1024] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def diffusers_pipeline(target, steps: int):
    import diffusers
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    process, den = target.process, target.denoiser
    ts = torch.arange(1, 1001, dtype=torch.float64) / 1000  # step k of 1000 is our t = (k + 1) / 1000
    ac = torch.sigmoid(process.log_snr(ts))
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])

    class Out:
        def __init__(self, sample):
            self.sample = sample

    class Wrapped(ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, sample_size: int = 28, in_channels: int = 1):
            super().__init__()
            self.net = den

        def forward(self, x, t):
            tt = (torch.as_tensor(t, dtype=torch.float32).reshape(-1) + 1) / 1000
            return Out(self.net(x, tt.expand(x.shape[0])).eps)

    shape = target.data_shape
    unet = Wrapped(sample_size=int(shape[-1]), in_channels=int(shape[0])).eval()
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, trained_betas=betas.tolist(), clip_sample=False)
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=sch)
    pipe.set_progress_bar_config(disable=True)

    def run(n: int, batch: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for b in [batch] * (n // batch) + ([n % batch] if n % batch else []):
            pipe(batch_size=b, generator=g, num_inference_steps=steps, eta=0.0, output_type="np")

    return run


def ours(target, steps: int):
    from difflab.evaluation import SamplerChoice, draw_samples

    choice = SamplerChoice.from_config({"name": "ddim", "steps": steps, "grid": "uniform_t", "eta": 0.0})

    def run(n: int, batch, seed: int) -> int:
        _, nfe = draw_samples(target.denoiser, target.process, target.data_shape, n, seed, choice, batch_size=batch)
        return nfe

    return run


def timed(fn, *a) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(*a)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mnist_sampling_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from difflab.evaluation import from_checkpoint
    from difflab.evaluation.sampling import resolve_batch_size

    target = from_checkpoint(args.ckpt)
    ours_run, peer_run = ours(target, args.steps), diffusers_pipeline(target, args.steps)
    auto = resolve_batch_size("auto", target.data_shape, torch.device("cpu"))
    with torch.no_grad():  # warm-up: allocator and kernels
        ours_run(min(64, args.n), auto, 99)
        peer_run(min(64, args.n), min(64, args.n), 99)
    evals = args.n * args.steps
    rows = []
    for batch in [auto, *[b for b in args.batches if b != auto]]:
        for lib, fn in (("difflab", ours_run), ("diffusers", peer_run)):
            s = timed(fn, args.n, batch, 0)
            rows.append({"lib": lib, "batch": batch, "auto": lib == "difflab" and batch == auto, "seconds": round(s, 2),
                         "evals_per_s": round(evals / s, 1)})
            print(json.dumps(rows[-1]), flush=True)
    best_peer = max((r for r in rows if r["lib"] == "diffusers"), key=lambda r: r["evals_per_s"])
    mine = next(r for r in rows if r["auto"])
    res = {"protocol": {"ckpt": args.ckpt, "n": args.n, "sampler": f"DDIM eta=0, {args.steps} steps", "threads": args.threads,
                        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "runs": rows, "ratio_ours_auto_over_best_diffusers": round(mine["evals_per_s"] / best_peer["evals_per_s"], 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"difflab (batch auto = {auto}) {mine['evals_per_s']} evals/s | diffusers DDIMPipeline best (batch {best_peer['batch']}) "
          f"{best_peer['evals_per_s']} evals/s | ratio {res['ratio_ours_auto_over_best_diffusers']}")


if __name__ == "__main__":
    main()
