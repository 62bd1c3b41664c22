"""Sampler quality vs NFE against diffusers' schedulers, all driven by the exact GMM oracle.

For NFE in (10, 20, 50, 100) and each process, the sliced Wasserstein distance to exact
mixture samples of each of our samplers, and of diffusers' DDPM, DDIM, DPMSolverMultistep,
Euler and Heun schedulers (their discrete DDPM β schedule: process=DDPM(1000), ε from the
oracle at exactly the (ᾱ or σ) the scheduler asks for). Prints a table and, per NFE, the ratio
(our best) / (diffusers' best); goal ≤ 1.0. Writes bench/sampler_quality.png.

    PYTHONPATH=src python bench/sampler_quality.py [--n 8192] [--seeds 2]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from difflab.metrics.distances import sliced_wasserstein
from difflab.models import GMMOracle
from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, SubVPSDE
from difflab.samplers import sample

ORACLE = GMMOracle([[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]], [0.5, 0.4, 0.6], [0.3, 0.5, 0.2])
PROCESSES = {"ddpm": lambda: DDPM(1000), "continuous_snr": lambda: ContinuousSNR("linear"), "vp": lambda: VPSDE(),
             "subvp": lambda: SubVPSDE(), "ve": lambda: VESDE()}
# sampler -> (NFE per step, options)
OURS = {"ancestral": (1, {}), "ddim": (1, {}), "euler_maruyama": (1, {}), "pc": (2, {}),
        "annealed_langevin": (5, {}), "ode_euler": (1, {}), "ode_heun": (2, {}),
        "ode_rk45": (4, {"adaptive": False}), "dpm_solver": (1, {})}


def diffusers_run(name: str, nfe: int, x_T: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    import diffusers

    kw = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    if name == "DDPM":
        sch = diffusers.DDPMScheduler(clip_sample=False, **kw)
    elif name == "DDIM":
        sch = diffusers.DDIMScheduler(clip_sample=False, **kw)
    elif name == "DPMSolverMultistep":
        sch = diffusers.DPMSolverMultistepScheduler(**kw)
    elif name == "Euler":
        sch = diffusers.EulerDiscreteScheduler(**kw)
    else:
        sch = diffusers.HeunDiscreteScheduler(**kw)
    steps = (nfe + 1) // 2 if name == "Heun" else nfe  # Heun: 2 N − 1 evaluations
    sch.set_timesteps(steps)
    ac = sch.alphas_cumprod.double()
    z = x_T.clone() * float(sch.init_noise_sigma)
    gen = torch.Generator().manual_seed(12345)
    calls = 0
    for k in sch.timesteps:
        zin = sch.scale_model_input(z, k)
        if name in ("Euler", "Heun"):  # σ-parameterised: input z/√(1+σ²) is VP with α = 1/√(1+σ²)
            s = float(sch.sigmas[sch.step_index])
            a, sig = 1 / math.sqrt(1 + s * s), s / math.sqrt(1 + s * s)
        else:
            a, sig = math.sqrt(float(ac[int(k)])), math.sqrt(1 - float(ac[int(k)]))
        x0 = ORACLE.posterior_mean(zin.double(), a, sig)
        eps = ((zin.double() - a * x0) / sig).float()
        calls += 1
        step_kw = {"generator": gen} if name == "DDPM" else {}
        z = sch.step(eps, k, z, **step_kw).prev_sample
    return z, calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--png", default=str(Path(__file__).with_suffix(".png")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    refs = [ORACLE.sample(args.n, generator=torch.Generator().manual_seed(1000 + k)) for k in range(4)]

    def dist(x):
        return sum(sliced_wasserstein(x, r, 128, torch.Generator().manual_seed(7)) for r in refs) / len(refs)

    floor = sum(dist(ORACLE.sample(args.n, generator=torch.Generator().manual_seed(2000 + j))) for j in range(4)) / 4
    x_Ts = [torch.randn(args.n, 2, generator=torch.Generator().manual_seed(s)) for s in range(args.seeds)]
    table: dict[str, dict[int, float]] = {}
    t0 = time.time()
    for pname, make in PROCESSES.items():
        process = make()
        den = ORACLE.denoiser(process)
        for sname, (per_step, opts) in OURS.items():
            row = table.setdefault(f"{sname}/{pname}", {})
            for nfe in args.nfe:
                steps = nfe // per_step
                if steps < 1:
                    continue
                vals = []
                for s, x_T in enumerate(x_Ts):
                    out = sample(den, process, (args.n, 2), sname, steps, x_T=x_T * process.prior_std(),
                                 generator=torch.Generator().manual_seed(100 + s), **opts)
                    vals.append(dist(out.samples) if torch.isfinite(out.samples).all() else float("inf"))
                row[nfe] = sum(vals) / len(vals)
        print(f"  [{pname} done, {time.time() - t0:.0f}s]", flush=True)
    for dname in ("DDPM", "DDIM", "DPMSolverMultistep", "Euler", "Heun"):
        row = table.setdefault(f"diffusers:{dname}", {})
        for nfe in args.nfe:
            vals = [dist(diffusers_run(dname, nfe, x_T)[0]) for x_T in x_Ts]
            row[nfe] = sum(vals) / len(vals)

    nfes = args.nfe
    print(f"\nsliced W2 to exact mixture samples (n={args.n}, mean of {args.seeds} seeds x 4 reference sets); "
          f"noise floor {floor:.4f}\n")
    print(f"{'sampler/process':32s}" + "".join(f"{'NFE ' + str(n):>10s}" for n in nfes))
    for name, row in table.items():
        print(f"{name:32s}" + "".join(f"{row.get(n, float('nan')):10.4f}" for n in nfes))
    print()
    for n in nfes:
        ours = {k: v[n] for k, v in table.items() if not k.startswith("diffusers") and n in v}
        ours_ddpm = {k: v for k, v in ours.items() if k.endswith("/ddpm")}
        theirs = {k: v[n] for k, v in table.items() if k.startswith("diffusers") and n in v}
        bo, bd, bt = min(ours, key=ours.get), min(ours_ddpm, key=ours_ddpm.get), min(theirs, key=theirs.get)
        print(f"NFE {n:4d}: ours best {ours[bo]:.4f} ({bo}), ours best on ddpm {ours_ddpm[bd]:.4f} ({bd}), "
              f"diffusers best {theirs[bt]:.4f} ({bt}); ratio ours/diffusers = {ours[bo] / theirs[bt]:.3f} "
              f"(same process: {ours_ddpm[bd] / theirs[bt]:.3f})")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, proc in zip(axes, ("ddpm", "vp")):
        for name, row in table.items():
            if name.endswith("/" + proc) or name.startswith("diffusers"):
                xs = [n for n in nfes if n in row and math.isfinite(row[n])]
                ax.plot(xs, [row[n] for n in xs], "--o" if name.startswith("diffusers") else "-o", ms=3, label=name.split("/")[0])
        ax.axhline(floor, color="k", lw=0.8, ls=":", label="noise floor")
        ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="sliced W2 to truth", title=f"process={proc} (diffusers: DDPM β)")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
