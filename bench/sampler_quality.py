"""Sampler quality at low NFE: ours against diffusers' schedulers and k-diffusion's samplers, all driven by
the exact GMM oracle (so only the sampler errs).

Distance ("gap"): each sample is assigned to its most likely mixture component; gap = total variation of
the component weights + Σ_k w_k |spread_k − spread_k^ref|, spread_k = RMS distance of the component's
samples to μ_k over s_k √D, against the same statistics of `--ref-n` (400k) exact samples. Its noise floor is the gap
of n exact samples. Every number is a mean over `--seeds` prior draws.

Ours: the deterministic low-NFE samplers (DDIM, Heun, DPM-Solver++ 2M/3M, UniPC 2/3, LMS) × grids (uniform_t,
uniform_log_snr, edm ρ=7, vp_uniform_t; DDPM's trailing grid) on each process.
Peers (process-free, they bring their own noise range): diffusers' DDPM, DDIM, DPM-Solver++ 2M/3M,
UniPC, Euler, Heun, LMS on the DDPM β schedule (plus Karras σ where offered), and k-diffusion's
euler, heun, lms, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, dpmpp_3m_sde (tests/kdiffusion_ref.py) on Karras and
exponential σ grids over the DDPM (0.01–157) and EDM (0.002–80) ranges.

Score of a configuration = geometric mean over mixtures of gap / floor. "limit/peer": the converged ODE from the same
prior noise (LMS, 200 steps) over the best peer, the lowest ratio a deterministic sampler can reach but by chance:
with deterministic samplers the sample noise of the prior draw is shared, so near convergence every ratio → 1. Printed per process and NFE:
our best / the best peer (goal ≤ 0.8 at 10 and 20 NFE, ≤ 1.0 at 5). Writes bench/results/sampler_quality.json.

    PYTHONPATH=src python bench/sampler_quality.py [--n 16384] [--seeds 3] [--nfe 5 10 20 50] [--configs lms ...]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from difflab.models import GMMOracle
from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, SubVPSDE
from difflab.evaluation.tuning import tune_grid
from difflab.samplers import sample
from difflab.samplers.grids import make_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kdiffusion_ref as kd  # noqa: E402

MIXTURES = {
    "2d_separated": GMMOracle([[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]], [0.5, 0.4, 0.6], [0.3, 0.5, 0.2]),
    "3d_five": GMMOracle([[-2.0, 0.0, 1.0], [2.0, 0.5, -1.0], [0.0, 2.5, 0.0], [0.5, -2.0, 1.5], [-1.0, -1.0, -2.0]],
                         [0.4, 0.3, 0.5, 0.35, 0.45], [0.3, 0.25, 0.2, 0.15, 0.1]),
    "8d_overlapping": GMMOracle(
        torch.tensor([[1.0] * 4 + [0.0] * 4, [0.0] * 4 + [1.0] * 4, [-1.0, 1.0] * 4, [0.5, -0.5, 0.0, 0.0] * 2]) * 1.2,
        [0.6, 0.8, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]),
}
PROCESSES = {"ddpm": lambda: DDPM(1000), "vp": lambda: VPSDE(), "subvp": lambda: SubVPSDE(), "ve": lambda: VESDE(),
             "continuous_snr": lambda: ContinuousSNR("linear")}
# configuration name -> (sampler, NFE per step, options, grids tried; DDPM also tries its trailing grid). The
# stochastic samplers (ancestral, dpm_solver_sde/3m_sde, edm_stochastic) are left out: none was ever our best at
# ≤ 20 NFE (bench/results history), and leaving them out only narrows our side of the comparison.
_ALL = ("uniform_t", "uniform_log_snr", "edm", "vp_uniform_t")
S15 = 15.0  # σ̃_max of the lms_s15 grid, and the start of the tuned one
OURS = {"ddim": ("ddim", 1, {}, _ALL), "ode_heun": ("ode_heun", 2, {}, ("edm", "vp_uniform_t")),
        "dpm_solver": ("dpm_solver", 1, {}, _ALL), "dpm_solver_3m": ("dpm_solver_3m", 1, {}, _ALL),
        "unipc": ("unipc", 1, {"order": 2}, _ALL), "unipc_3": ("unipc", 1, {"order": 3}, _ALL),
        "lms": ("lms", 1, {}, _ALL), "lms_pc": ("lms", 1, {"corrector": True}, ("edm", "vp_uniform_t")),
        # vp_uniform_t below σ̃ = 15 after a first jump from t_max: σ_max chosen on prior seed 7 (held out: the
        # scores below use seeds 0, 1, 2) among 10, 15, 20, 30, 50, 80 at 10 and 20 NFE on vp and ve
        "lms_s15": ("lms", 1, {"grid_sigma_max": S15}, ("vp_uniform_t",)),
        # the lms_s15 grid fitted to the model by `difflab-tune-grid`'s search (evaluation.tuning.tune_grid) on
        # held-out prior noise (TUNE_N draws of seed TUNE_SEED, not the scored seeds), per mixture, process and NFE
        "lms_tuned": ("lms", 1, {}, ("tuned",))}
TUNE_N, TUNE_SEED, TUNE_EVALS = 1024, 7, 300
DEFAULT_OUT = Path(__file__).parent / "results" / "sampler_quality.json"
# The converged probability-flow ODE from the same prior noise (LMS, 200 steps): the gap no deterministic sampler
# can beat but by chance; "limit / best peer" is the lowest ratio a deterministic sampler can reach at this n.
LIMIT = ("lms", 200, "vp_uniform_t")
DIFFUSERS = ("DDPM", "DDIM", "DPMSolverMultistep", "DPMSolverMultistep-3M", "DPMSolverMultistep-karras", "UniPC",
             "UniPC-karras", "Euler", "Euler-karras", "Heun", "LMS", "LMS-karras")
KD_SAMPLERS = {"euler": kd.sample_euler, "heun": kd.sample_heun, "lms": kd.sample_lms, "dpmpp_2m": kd.sample_dpmpp_2m,
               "dpmpp_3m": kd.sample_dpmpp_3m_sde, "dpmpp_2m_sde": kd.sample_dpmpp_2m_sde,
               "dpmpp_3m_sde": kd.sample_dpmpp_3m_sde}
KD_RANGES = {"ddpm": (0.0100, 156.6), "edm": (0.002, 80.0)}


# ------------------------------------------------------------------------------------------- distance
def stats(oracle: GMMOracle, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    k = oracle.responsibilities(x, 1.0, 0.0).argmax(1)
    w = torch.bincount(k, minlength=oracle.num_components).double() / len(x)
    d2 = (x - oracle.means[k]).pow(2).sum(1) / (oracle.stds[k] ** 2 * oracle.dim)
    spread = torch.zeros(oracle.num_components, dtype=torch.float64).index_add_(0, k, d2)
    return w, (spread / torch.bincount(k, minlength=oracle.num_components).clamp_min(1)).sqrt()


def gap(oracle, ref, x) -> float:
    if not torch.isfinite(x).all():
        return float("inf")
    w, s = stats(oracle, x)
    return float(0.5 * (w - ref[0]).abs().sum() + (ref[0] * (s - ref[1]).abs()).sum())


def reference(oracle: GMMOracle, n: int, ref_n: int) -> tuple[tuple, float]:
    """(the statistics of ref_n exact samples, the noise floor: the mean gap of 8 sets of n exact samples)."""
    ref = stats(oracle, oracle.sample(ref_n, generator=torch.Generator().manual_seed(99)))
    floor = sum(gap(oracle, ref, oracle.sample(n, generator=torch.Generator().manual_seed(500 + j))) for j in range(8)) / 8
    return ref, floor


# ------------------------------------------------------------------------------------------- peers
def diffusers_run(oracle, name: str, nfe: int, x_T: torch.Tensor, seed: int) -> torch.Tensor:
    import diffusers

    base, _, variant = name.partition("-")
    kw = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    if variant == "karras":
        kw["use_karras_sigmas"] = True
    cls = {"DDPM": diffusers.DDPMScheduler, "DDIM": diffusers.DDIMScheduler, "Euler": diffusers.EulerDiscreteScheduler,
           "Heun": diffusers.HeunDiscreteScheduler, "LMS": diffusers.LMSDiscreteScheduler,
           "DPMSolverMultistep": diffusers.DPMSolverMultistepScheduler, "UniPC": diffusers.UniPCMultistepScheduler}[base]
    if base in ("DDPM", "DDIM"):
        kw["clip_sample"] = False
    if variant == "3M":
        kw["solver_order"] = 3
    sch = cls(**kw)
    sch.set_timesteps((nfe + 1) // 2 if base == "Heun" else nfe)  # Heun: 2 N − 1 evaluations
    ac = sch.alphas_cumprod.double()
    z = x_T.clone().float() * float(sch.init_noise_sigma)
    gen = torch.Generator().manual_seed(seed)
    for k in sch.timesteps:
        zin = sch.scale_model_input(z, k)
        if base in ("DDPM", "DDIM"):
            a, sig = math.sqrt(float(ac[int(k)])), math.sqrt(1 - float(ac[int(k)]))
        else:  # σ-parameterised: the model input is VP with α = 1/√(1+σ²)
            s = float(sch.sigmas[sch.step_index or 0])
            a, sig = 1 / math.sqrt(1 + s * s), s / math.sqrt(1 + s * s)
        x0 = oracle.posterior_mean(zin.double(), a, sig)
        eps = ((zin.double() - a * x0) / sig).float()
        z = sch.step(eps, k, z, **({"generator": gen} if base == "DDPM" else {})).prev_sample
    return z


def kd_run(oracle, name: str, grid: str, rng: str, nfe: int, x_T: torch.Tensor, seed: int) -> torch.Tensor:
    n = (nfe + 1) // 2 if name == "heun" else nfe  # n noise levels + the final 0; Heun: 2 n − 1 evaluations
    smin, smax = KD_RANGES[rng]
    sigmas = (kd.get_sigmas_karras if grid == "karras" else kd.get_sigmas_exponential)(n, smin, smax).double()
    g = torch.Generator().manual_seed(seed)
    kw = {}
    if name.startswith("dpmpp_") and name != "dpmpp_2m":
        kw = dict(eta=0.0 if name == "dpmpp_3m" else 1.0,
                  noise_sampler=lambda s, sn: torch.randn(x_T.shape, generator=g, dtype=torch.float64))
    model = lambda x, s: oracle.posterior_mean(x, torch.ones_like(s), s)  # noqa: E731
    return KD_SAMPLERS[name](model, x_T * sigmas[0], sigmas, disable=True, **kw)


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--mixtures", nargs="+", default=list(MIXTURES))
    ap.add_argument("--processes", nargs="+", default=list(PROCESSES))
    ap.add_argument("--ref-n", type=int, default=400_000,
                    help="exact samples behind the reference statistics (their noise is shared by every method and "
                         "pulls every ratio toward 1: keep it well above --n)")
    ap.add_argument("--configs", nargs="+", choices=list(OURS), default=list(OURS),
                    help="only these of our configurations (fewer only narrows our side; every peer always runs)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--only-ours", action="store_true",
                    help="skip the peers and the converged ODE: a partial result to --merge with a full one")
    ap.add_argument("--merge", nargs="+", help="summarise these partial results (e.g. one run per mixture) instead")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    res: dict = {"n": args.n, "ref_n": args.ref_n, "seeds": args.seeds, "nfe": args.nfe, "floor": {}, "ours": {}, "peers": {}, "limit": {}}
    for part in args.merge or []:  # nested merge: a later file adds configurations to an earlier one's cells
        d = json.loads(Path(part).read_text())
        res.update({k: d[k] for k in ("n", "ref_n", "seeds") if k in d})
        for key in ("floor", "ours", "peers", "limit", "tuned_grids"):
            _merge(res.setdefault(key, {}), d.get(key, {}))
    for mname in [] if args.merge else args.mixtures:
        oracle = MIXTURES[mname]
        ref, res["floor"][mname] = reference(oracle, args.n, args.ref_n)
        noise = [torch.randn(args.n, oracle.dim, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                 for s in range(args.seeds)]

        def mean_gap(fn):
            return sum(gap(oracle, ref, fn(s, xi)) for s, xi in enumerate(noise)) / len(noise)

        peers = res["peers"].setdefault(mname, {})
        for nfe in [] if args.only_ours else args.nfe:
            row = peers.setdefault(str(nfe), {})
            for d in DIFFUSERS:
                row[f"diffusers:{d}"] = mean_gap(lambda s, xi: diffusers_run(oracle, d, nfe, xi, 100 + s))
            for kname in KD_SAMPLERS:
                for grid in ("karras", "exponential"):
                    for rng in KD_RANGES:
                        row[f"kd:{kname}/{grid}/{rng}"] = mean_gap(lambda s, xi: kd_run(oracle, kname, grid, rng, nfe, xi, 100 + s))
        print(f"[{mname}: floor {res['floor'][mname]:.4f}, peers done {time.time() - t0:.0f}s]", flush=True)
        for pname in args.processes:
            process = PROCESSES[pname]()
            den = oracle.denoiser(process)
            cells = res["ours"].setdefault(mname, {}).setdefault(pname, {})
            if not args.only_ours:
                res.setdefault("limit", {}).setdefault(mname, {})[pname] = mean_gap(lambda s, xi: sample(
                    den, process, xi.shape, LIMIT[0], LIMIT[1], grid=LIMIT[2], x_T=xi * process.prior_std(),
                    dtype=torch.float64).samples)
            for nfe in args.nfe:
                row = cells.setdefault(str(nfe), {})
                for sname, (sampler, per_step, opts, grids) in OURS.items():
                    if sname not in args.configs:
                        continue
                    steps = nfe // per_step
                    if steps < 1:
                        continue
                    trailing = pname == "ddpm" and not any(k.startswith("grid_") for k in opts) and "tuned" not in grids
                    for grid in grids + (("ddpm_trailing",) if trailing else ()):
                        if grid == "tuned":
                            t1 = time.time()
                            tuned = tune_grid(den, process, sampler, steps, (oracle.dim,), n=TUNE_N, seed=TUNE_SEED,
                                              grid=make_grid(process, steps, "vp_uniform_t", sigma_max=S15),
                                              max_evals=TUNE_EVALS)
                            grid = tuned.ts
                            print(f"    tuned {pname}/{sampler}/{steps}: L {tuned.initial_loss:.3g} -> {tuned.loss:.3g} "
                                  f"({tuned.evals} evals, {time.time() - t1:.0f}s)", flush=True)
                            res.setdefault("tuned_grids", {}).setdefault(mname, {}).setdefault(pname, {})[str(nfe)] = \
                                [float(t) for t in grid]
                        row[f"{sname}/{grid if isinstance(grid, str) else 'tuned'}"] = mean_gap(lambda s, xi: sample(
                            den, process, xi.shape, sampler, steps,
                            grid=grid, x_T=xi * process.prior_std(), dtype=torch.float64,
                            generator=torch.Generator().manual_seed(100 + s), **opts).samples)
            print(f"  [{mname}/{pname} done {time.time() - t0:.0f}s]", flush=True)
    if args.only_ours:
        _write(res, Path(args.out))
        return
    summarize(res, args)
    out = Path(args.out)  # the README's plot sits beside this script; another --out gets its own beside it
    plot(res, args, Path(__file__).with_suffix(".png") if out.resolve() == DEFAULT_OUT.resolve() else out.with_suffix(".png"))
    _write(res, out)


def _write(res: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _score(per_mix: dict, floors: dict) -> float:
    """Geometric mean over mixtures of gap / floor."""
    return math.exp(sum(math.log(max(v, 1e-12) / floors[m]) for m, v in per_mix.items()) / len(per_mix))


def summarize(res: dict, args) -> None:
    mixes, floors = list(res["ours"]), res["floor"]
    print(f"\nfloors: " + ", ".join(f"{m} {floors[m]:.4f}" for m in mixes) + f"  (n={res['n']}, {res['seeds']} seeds)")
    res["summary"] = {}
    print(f"{'process':16s}{'NFE':>5s}  {'ours best (gap/floor)':44s}{'best peer (gap/floor)':52s}{'ratio':>7s}"
          f"{'limit/peer':>12s}")
    for pname in args.processes:
        for nfe in map(str, args.nfe):
            ours = {c: _score({m: res["ours"][m][pname][nfe][c] for m in mixes}, floors) for c in res["ours"][mixes[0]][pname][nfe]}
            peers = {c: _score({m: res["peers"][m][nfe][c] for m in mixes}, floors) for c in res["peers"][mixes[0]][nfe]}
            bo, bp = min(ours, key=ours.get), min(peers, key=peers.get)
            ratio = ours[bo] / peers[bp]
            lim = _score({m: res["limit"][m][pname] for m in mixes}, floors) if res.get("limit") else float("nan")
            res["summary"].setdefault(pname, {})[nfe] = {"ours": bo, "ours_score": ours[bo], "peer": bp,
                                                         "peer_score": peers[bp], "ratio": ratio,
                                                         "ranking": sorted(ours, key=ours.get)[:8], "limit_score": lim,
                                                         "limit_ratio": lim / peers[bp]}
            print(f"{pname:16s}{nfe:>5s}  {bo:34s}{ours[bo]:8.2f}  {bp:42s}{peers[bp]:8.2f}  {ratio:7.3f}"
                  f"{lim / peers[bp]:12.3f}")


def plot(res: dict, args, path: Path) -> None:
    """gap/floor (geometric mean over mixtures) of our best configuration per process, and of the best peer."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    nfes = [int(n) for n in res["summary"][args.processes[0]]]
    for pname in args.processes:
        ax.plot(nfes, [res["summary"][pname][str(n)]["ours_score"] for n in nfes], "-o", ms=3, label=f"ours, {pname}")
    ax.plot(nfes, [res["summary"][args.processes[0]][str(n)]["peer_score"] for n in nfes], "k--s", ms=4,
            label="best of diffusers + k-diffusion")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":", label="noise floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="gap / noise floor (geo. mean of 3 mixtures)",
           title=f"Best sampler per NFE, exact GMM oracle (n = {res['n']}, {res['seeds']} seeds)")
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
