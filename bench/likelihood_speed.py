"""Likelihood cost on the GMM oracle (CPU): the batched ELBO against a small-batch run of the
same code, and the PF-ODE with Hutchinson against exact divergence, measured in the same run.

    PYTHONPATH=src python bench/likelihood_speed.py [--draws 4000000] [--threads 1]

Prints seconds, draws/s and the ratios; no asserts (timings depend on the machine).
"""
from __future__ import annotations

import argparse
import time

import torch

from difflab.likelihood import nll_elbo, nll_ode
from difflab.models import GMMOracle
from difflab.processes import ContinuousSNR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=4_000_000)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    oracle = GMMOracle([[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]], [0.5, 0.4, 0.6], [0.3, 0.5, 0.2])
    proc = ContinuousSNR("linear", -10, 10)
    den = oracle.denoiser(proc)
    data = lambda n, g: oracle.sample(n, generator=g)  # noqa: E731
    nll, _ = oracle.nll(num_samples=1_000_000)

    def elbo(draws, batch):
        t0 = time.perf_counter()
        est = nll_elbo(den, proc, data, num_draws=draws, batch_size=batch, generator=torch.Generator().manual_seed(0))
        return time.perf_counter() - t0, est.per_dim

    small_draws = max(args.draws // 20, 1000)
    t_small, _ = elbo(small_draws, 1024)
    t_big, (m, se) = elbo(args.draws, 65536)
    print(f"exact nll          {nll:.4f} nats/dim")
    print(f"nll_elbo           {m:.4f} ± {se:.4f} nats/dim from {args.draws:,} draws in {t_big:.2f} s "
          f"({args.draws / t_big:,.0f} draws/s)")
    print(f"  batch 65536 vs 1024: {(small_draws / t_small) and (args.draws / t_big) / (small_draws / t_small):.1f}x draws/s")

    x = oracle.sample(args.points, generator=torch.Generator().manual_seed(1)).double()
    den64, proc64 = oracle.denoiser(proc.double()), proc.double()
    out = {}
    for div in ("exact", "hutchinson"):
        t0 = time.perf_counter()
        est = nll_ode(den64, proc64, x, divergence=div, generator=torch.Generator().manual_seed(2))
        out[div] = time.perf_counter() - t0
        print(f"nll_ode {div:<10} {est.per_dim[0]:.4f} ± {est.per_dim[1]:.4f} nats/dim, {args.points} points in {out[div]:.2f} s")
    print(f"  exact / hutchinson time (D=2): {out['exact'] / out['hutchinson']:.2f}x")


if __name__ == "__main__":
    main()
