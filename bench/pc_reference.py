"""Is `pc`'s bias at many steps ours or the algorithm's? Our `pc` against a reference written in score_sde's
own formulation (Song et al. 2021, App. G, Alg. 2 "PC sampling" with the reverse-diffusion predictor and
Alg. 4 / 5 Langevin corrector, as yang-song/score_sde_pytorch's `ReverseDiffusionPredictor`,
`LangevinCorrector`, `VPSDE.discretize`, `VESDE.discretize` and `get_pc_sampler` implement them: discrete
β_i = β(t_i)/N, time grid linspace(1, ε, N), corrector step 2 α_i (snr ‖ξ‖/‖s‖)² with batch-mean norms, the
final x_mean returned), both with the exact score of the mixture. Also Euler–Maruyama (no corrector) and
pc at smaller snr. Gap as in bench/sampler_quality.py (3d_five mixture), in units of the noise floor.

    PYTHONPATH=src python bench/pc_reference.py [--n 8192] [--steps 500] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from difflab.processes import VESDE, VPSDE
from difflab.samplers import sample

sys.path.insert(0, str(Path(__file__).parent))
from sampler_quality import MIXTURES, gap, stats  # noqa: E402


def score_sde_pc(oracle, process, kind: str, n_steps: int, x: torch.Tensor, gen: torch.Generator, snr: float = 0.16,
                 eps: float = 1e-3) -> torch.Tensor:
    """score_sde's PC sampler (reverse-diffusion predictor + one Langevin corrector step per time)."""
    ts = torch.linspace(1.0, eps, n_steps, dtype=torch.float64)
    if kind == "vp":
        betas = torch.linspace(process.beta_min / n_steps, process.beta_max / n_steps, n_steps, dtype=torch.float64)
    else:
        sigmas = torch.exp(torch.linspace(math.log(process.sigma_min), math.log(process.sigma_max), n_steps, dtype=torch.float64))

    def score(z, t):
        a, s = process.alpha_sigma(torch.full((1,), float(t), dtype=torch.float64))
        return oracle.score(z, float(a), float(s))

    x_mean = x
    for t in ts:
        idx = int(t * (n_steps - 1))
        # corrector (Langevin, step size from the batch-mean norms)
        alpha = float(1 - betas[idx]) if kind == "vp" else 1.0
        grad, noise = score(x, t), torch.randn(x.shape, generator=gen, dtype=x.dtype)
        step = (snr * noise.norm(dim=-1).mean() / grad.norm(dim=-1).mean()) ** 2 * 2 * alpha
        x = x + step * grad + (2 * step).sqrt() * noise
        # predictor (reverse diffusion): x_mean = x − [f − G² s], f, G of the forward discretisation
        if kind == "vp":
            f, g = (math.sqrt(1 - float(betas[idx])) - 1) * x, math.sqrt(float(betas[idx]))
        else:
            adjacent = float(sigmas[idx - 1]) if idx > 0 else 0.0
            f, g = torch.zeros_like(x), math.sqrt(float(sigmas[idx]) ** 2 - adjacent**2)
        x_mean = x - (f - g**2 * score(x, t))
        x = x_mean + g * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return x_mean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--mixture", default="3d_five")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pc_reference.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    oracle = MIXTURES[args.mixture]
    ref = stats(oracle, oracle.sample(400_000, generator=torch.Generator().manual_seed(99)))
    floor = sum(gap(oracle, ref, oracle.sample(args.n, generator=torch.Generator().manual_seed(500 + j))) for j in range(8)) / 8
    out = {"n": args.n, "steps": args.steps, "seeds": args.seeds, "mixture": args.mixture, "floor": floor, "gap_over_floor": {}}
    print(f"noise floor {floor:.4f} (n={args.n}); gap / floor, mean of {args.seeds} seeds, {args.steps} steps")
    for kind, process in (("vp", VPSDE()), ("ve", VESDE())):
        den = oracle.denoiser(process)
        runs = {
            "score_sde pc (snr 0.16)": lambda x, g: score_sde_pc(oracle, process, kind, args.steps, x, g, 0.16),
            "score_sde pc (snr 0.05)": lambda x, g: score_sde_pc(oracle, process, kind, args.steps, x, g, 0.05),
            "ours pc (snr 0.16)": lambda x, g: sample(den, process, x.shape, "pc", args.steps, x_T=x, generator=g, dtype=torch.float64).samples,
            "ours pc (snr 0.05)": lambda x, g: sample(den, process, x.shape, "pc", args.steps, x_T=x, generator=g, dtype=torch.float64, snr=0.05).samples,
            "ours pc (no corrector)": lambda x, g: sample(den, process, x.shape, "pc", args.steps, x_T=x, generator=g, dtype=torch.float64, corrector_steps=0).samples,
            "ours euler_maruyama": lambda x, g: sample(den, process, x.shape, "euler_maruyama", args.steps, x_T=x, generator=g, dtype=torch.float64).samples,
        }
        for name, fn in runs.items():
            vals = []
            for s in range(args.seeds):
                g = torch.Generator().manual_seed(100 + s)
                x = process.prior_sample((args.n, oracle.dim), generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                vals.append(gap(oracle, ref, fn(x, g)) / floor)
            out["gap_over_floor"][f"{kind}: {name}"] = sum(vals) / len(vals)
            print(f"  {kind}: {name:28s} {sum(vals) / len(vals):6.2f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
