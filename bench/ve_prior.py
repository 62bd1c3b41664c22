"""Why ve trails the other processes at 20 NFE and n = 262144 (bench/sampler_quality.py): its prior.

VE's prior is N(0, σ_max² I), while its true marginal at t_max is the data convolved with N(0, σ_max² I), whose
variance is larger by Var(x_0) (Song et al. 2021, Eq. 9 and its prior N(0, σ_max² I); processes.VESDE). Starting the exact
probability-flow ODE (LMS, 200 steps, converged) from that prior leaves a bias at the end; starting it from
the exact marginal (x_T = α_T x_0 + σ_T ε, x_0 exact samples) removes it. VP's prior is exact up to α_T ≈ 0.007,
so both starts agree there. Prints gap / noise floor (the statistic of bench/sampler_quality.py), mean of 3
seeds, and writes bench/results/ve_prior.json.

    PYTHONPATH=src python bench/ve_prior.py [--n 262144]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_quality import MIXTURES, PROCESSES, gap, reference  # noqa: E402

from difflab.samplers import sample  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=262144)
    ap.add_argument("--mixture", default="2d_separated", choices=list(MIXTURES))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    oracle = MIXTURES[args.mixture]
    ref, floor = reference(oracle, args.n, 4_000_000)
    out = {"n": args.n, "mixture": args.mixture, "seeds": args.seeds, "floor": floor}
    for pname in ("ve", "vp"):
        process = PROCESSES[pname]()
        den = oracle.denoiser(process)
        a_T, s_T = (float(v) for v in process.alpha_sigma(torch.tensor(process.t_max, dtype=torch.float64)))
        total = {"prior": 0.0, "marginal": 0.0}
        for s in range(args.seeds):
            eps = torch.randn(args.n, oracle.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            x0 = oracle.sample(args.n, generator=torch.Generator().manual_seed(1000 + s)).double()
            for start, key in ((eps * process.prior_std(), "prior"), (a_T * x0 + s_T * eps, "marginal")):
                x = sample(den, process, eps.shape, "lms", 200, grid="vp_uniform_t", x_T=start, dtype=torch.float64).samples
                total[key] += gap(oracle, ref, x) / args.seeds
        prior, marginal = total["prior"] / floor, total["marginal"] / floor
        out[pname] = {"alpha_T": a_T, "sigma_T": s_T, "prior_std": process.prior_std(),
                      "from_prior": prior, "from_exact_marginal": marginal}
        print(f"{pname}: converged ODE, gap / floor: from the prior {prior:.2f}, "
              f"from the exact marginal {marginal:.2f}", flush=True)
    path = Path(__file__).parent / "results" / "ve_prior.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
