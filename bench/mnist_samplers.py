"""FID against NFE on a trained MNIST network: our samplers against diffusers' schedulers and k-diffusion's
samplers, all driven by the same network (the checkpoint's EMA weights) from the same initial noise.

Metric: FID in the MNIST protocol classifier's features (`features=classifier`, docs/evaluation.md) of n
samples against the 10,000 test images' statistics; the floor is n training images against the same
statistics. A configuration's score is its mean FID over the prior seeds.

Ours: each deterministic sampler as its `conf/sampler/<name>.yaml` default (grid and options), and on the
grid families the peers get (`edm` = Karras ρ = 7, `uniform_t`); UniPC also at order 2 (`unipc_2`; diffusers'
UniPC is order 2 by default and gets order 3 as `UniPC-3M`).
Peers, given the network's own schedule and the common grid families:
- diffusers: DDIM, DPMSolverMultistep (2M, 3M), UniPC, Euler, Heun, LMS on the network's own schedule
  (`trained_betas` with ᾱ_k = sigmoid(λ((k + 1)/1000)), the continuous-SNR schedule it was trained on), and
  with Karras σ, Lu's uniform λ (`use_lu_lambdas`) and the trailing spacing where the scheduler offers them;
- k-diffusion (tests/kdiffusion_ref.py, its code): euler, heun, lms, dpmpp_2m, dpmpp_3m (η = 0) on Karras
  (ρ = 7) and exponential σ grids over the network's σ̃ = σ/α range [e^(−λ_max/2), e^(−λ_min/2)], and on our
  grids `uniform_t` and `vp_uniform_t@10` (σ̃ of their times, then a last move to σ = 0).
A peer's model call at noise (α, σ) evaluates our network at t = t(λ), λ = 2 log(α/σ). Every configuration's
network evaluations are counted and must not exceed its NFE budget (Heun: 2 N − 1 ≤ budget).

Held out: every configuration (ours and the peers alike) runs on the tuning seeds (`--tune-seeds`, `--tune-n`
samples each); each library's best per NFE is then scored on the scoring seeds (`--seeds`, `--n` samples each),
which nothing was chosen on. The script refuses overlapping seed sets.

Stochastic samplers (`--stochastic`): ours (`dpm_solver_sde`, `dpm_solver_3m_sde` at η = 1, `ancestral`,
`edm_stochastic` with its YAML's churn), diffusers' SDE-DPM-Solver++ (its own and Karras σ), Euler ancestral and DDPM,
and k-diffusion's DPM-Solver++ 2M/3M SDE at η = 1 on its grids and ours. Each draws its per-step noise from its own
generator seeded by (seed, batch), so the initial noise is shared and the later noise is not: their FIDs differ by
chance as well as by method.

Tuned grids (`--tuned NFE=FILE`): a grid that `difflab-tune-grid` fitted to this network on tuning draws (the
global objective of LD3, docs/samplers.md) joins the tuning stage at that NFE for every sampler of ours and of
k-diffusion alike (ours run its K + 1 times to σ̃_min; k-diffusion gets the same σ̃ = σ/α points). With `--only`
naming each library's earlier pick, the picks over (earlier configurations ∪ tuned grid) are the same as a
full rerun's, since every earlier configuration already lost to those picks on the same tuning seeds.

    PYTHONPATH=src python bench/mnist_samplers.py --ckpt runs/mnist/checkpoints/last.ckpt --root data \
        [--tune-seeds 100] [--tune-n 500] [--seeds 0 1] [--n 2000] [--nfe 5 10 20] [--out bench/results/mnist_samplers.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kdiffusion_ref as kd  # noqa: E402

OURS = ("ddim", "dpm_solver", "dpm_solver_3m", "unipc", "unipc_2", "lms", "ipndm", "ode_heun")
#: ours with an option other than its YAML's (diffusers' UniPC is order 2 by default; it gets order 3 as UniPC-3M)
VARIANTS = {"unipc_2": ("unipc", {"order": 2})}
DIFFUSERS = ("DDIM", "DPMSolverMultistep", "DPMSolverMultistep-3M", "DPMSolverMultistep-karras", "UniPC",
             "UniPC-karras", "Euler", "Euler-karras", "Heun", "LMS", "LMS-karras",
             # the spacings and λ grid diffusers offers besides its default: Lu et al.'s uniform λ, trailing
             "DPMSolverMultistep-lu", "DPMSolverMultistep-trailing", "UniPC-trailing", "DDIM-trailing", "UniPC-3M",
             # the multistep methods diffusers has besides: DEIS (Zhang & Chen 2023, tAB order 3) on the network's
             # schedule and Karras σ, and IPNDMScheduler (its own cosine σ schedule, model output v)
             "DEIS", "DEIS-karras", "IPNDM")
#: `--stochastic`: samplers that draw fresh noise at every step (their own generator, seeded by (seed, batch));
#: ours at their YAML options (η = 1 for the DPM-Solver SDEs, EDM's churn), the peers' counterparts at η = 1
OURS_SDE = ("dpm_solver_sde", "dpm_solver_3m_sde", "ancestral", "edm_stochastic")
DIFFUSERS_SDE = ("DPMSolverMultistep-sde", "DPMSolverMultistep-sdekarras", "EulerAncestral", "DDPM")
KD_SDE = ("dpmpp_2m_sde", "dpmpp_3m_sde")
#: ours on every grid family the peers get (Karras ρ = 7 is our `edm`, exponential σ our `uniform_log_snr`, and
#: our own two that k-diffusion also gets), besides each YAML's own grid (None; a family equal to it is not rerun)
OURS_GRIDS = ("edm", "uniform_t", "uniform_log_snr", "vp_uniform_t@10")
#: k-diffusion's own σ grids, and ours (every grid our samplers' YAMLs use: the peers get them too)
KD_GRIDS = ("karras", "exponential", "uniform_t", "vp_uniform_t@10")
KD = {"euler": kd.sample_euler, "heun": kd.sample_heun, "lms": kd.sample_lms, "dpmpp_2m": kd.sample_dpmpp_2m,
      "dpmpp_3m": kd.sample_dpmpp_3m_sde, "dpmpp_2m_sde": kd.sample_dpmpp_2m_sde, "dpmpp_3m_sde": kd.sample_dpmpp_3m_sde}
CONF = Path(__file__).resolve().parents[1] / "src" / "difflab" / "conf" / "sampler"


class Counted:
    """The network at any VP noise level (α, σ): ε̂ and x̂ from our denoiser at t(λ); counts calls."""

    def __init__(self, target):
        self.den, self.process, self.calls = target.denoiser, target.process, 0
        lam = self.process.log_snr(torch.tensor([self.process.t_min, self.process.t_max]))
        self.lam_max, self.lam_min = float(lam[0]), float(lam[1])

    def at(self, z: torch.Tensor, a: float, s: float):
        self.calls += 1
        lam = torch.tensor([2 * math.log(a / s)], dtype=torch.float64).clamp(self.lam_min, self.lam_max)
        t = self.process.t_from_log_snr(lam).float().clamp(self.process.t_min, self.process.t_max)
        with torch.no_grad():
            return self.den(z.float(), t.expand(z.shape[0]))

    def __call__(self, z, t):  # our samplers call the denoiser directly
        self.calls += 1
        return self.den(z, t)


@functools.lru_cache(maxsize=None)
def _yaml_node(name: str) -> dict:
    """Our sampler `name` as its `conf/sampler` YAML (read once), with a VARIANTS entry's options on top."""
    from omegaconf import OmegaConf

    base, options = VARIANTS.get(name, (name, {}))
    return {**OmegaConf.to_container(OmegaConf.load(CONF / f"{base}.yaml"), resolve=True), **options}


def ours(model: Counted, name: str, nfe: int, x_T: torch.Tensor, grid: str | None = None, gen=None):
    from difflab.evaluation import SamplerChoice
    from difflab.samplers import sample

    node = dict(_yaml_node(name))
    node["steps"] = max(1, nfe // 2) if node["name"] in ("ode_heun", "edm_stochastic") else nfe  # Heun: 2 evaluations per step
    if grid is not None:  # one of the grid families the peers get, instead of the YAML's
        node["grid"] = grid
    choice = SamplerChoice.from_config(node)
    with torch.no_grad():
        return sample(model, model.process, tuple(x_T.shape), choice.sampler, choice.steps, x_T=x_T, grid=choice.grid,
                      generator=gen, **choice.options).samples


def diffusers_run(model: Counted, name: str, nfe: int, x_T: torch.Tensor, gen=None) -> torch.Tensor:
    import diffusers

    base, _, variant = name.partition("-")
    lam = model.process.log_snr(torch.arange(1, 1001, dtype=torch.float64) / 1000)
    ac = torch.sigmoid(lam)
    betas = 1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    kw = dict(num_train_timesteps=1000, trained_betas=betas.tolist())
    if variant in ("karras", "sdekarras"):
        kw["use_karras_sigmas"] = True
    if variant.startswith("sde"):
        kw["algorithm_type"] = "sde-dpmsolver++"
    if variant == "3M":
        kw["solver_order"] = 3
    if variant == "lu":
        kw["use_lu_lambdas"] = True
    if variant == "trailing":
        kw["timestep_spacing"] = "trailing"
    cls = {"DDIM": diffusers.DDIMScheduler, "Euler": diffusers.EulerDiscreteScheduler, "Heun": diffusers.HeunDiscreteScheduler,
           "LMS": diffusers.LMSDiscreteScheduler, "DPMSolverMultistep": diffusers.DPMSolverMultistepScheduler,
           "UniPC": diffusers.UniPCMultistepScheduler, "EulerAncestral": diffusers.EulerAncestralDiscreteScheduler,
           "DDPM": diffusers.DDPMScheduler, "DEIS": diffusers.DEISMultistepScheduler, "IPNDM": diffusers.IPNDMScheduler}[base]
    if base in ("DDIM", "DDPM"):
        kw["clip_sample"] = False
    if base == "IPNDM":  # its own schedule: σ_i = sin²(π s_i/2), α_i = √(1 − σ_i²), s uniform from 1 to 0; model output v
        sch = cls(num_train_timesteps=1000)
        sch.set_timesteps(nfe)
        z = x_T.clone().float()
        for k in sch.timesteps:
            i = sch.step_index or 0
            a, s = float(sch.alphas[i]), float(sch.betas[i])
            pred = model.at(z, max(a, 1e-12), s)
            z = sch.step((a * pred.eps - s * pred.x0).float(), k, z).prev_sample
        return z
    sch = cls(**kw)
    sch.set_timesteps((nfe + 1) // 2 if base == "Heun" else nfe)  # Heun: 2 N − 1 evaluations
    acd = sch.alphas_cumprod.double()
    z = x_T.clone().float() * float(sch.init_noise_sigma)
    for k in sch.timesteps:
        zin = sch.scale_model_input(z, k)
        if base in ("DDIM", "DDPM"):
            a, s = math.sqrt(float(acd[int(k)])), math.sqrt(1 - float(acd[int(k)]))
        else:  # σ-parameterised: the model input is VP with α = 1/√(1+σ²)
            sg = float(sch.sigmas[sch.step_index or 0])
            a, s = 1 / math.sqrt(1 + sg * sg), sg / math.sqrt(1 + sg * sg)
        extra = {"generator": gen} if base in ("DDPM", "EulerAncestral") or variant.startswith("sde") else {}
        z = sch.step(model.at(zin, a, s).eps.float(), k, z, **extra).prev_sample
    return z


def kd_run(model: Counted, name: str, grid: str, nfe: int, x_T: torch.Tensor, gen=None) -> torch.Tensor:
    n = (nfe + 1) // 2 if name == "heun" else nfe
    smin, smax = math.exp(-model.lam_max / 2), math.exp(-model.lam_min / 2)
    if grid in ("karras", "exponential"):
        sigmas = (kd.get_sigmas_karras if grid == "karras" else kd.get_sigmas_exponential)(n, smin, smax).double()
    else:  # one of our grids as σ̃ = e^(−λ/2) of its times
        from difflab.samplers.grids import make_grid

        tuned = grid.startswith("tuned:")  # difflab-tune-grid's n + 1 times, run as ours run them (to σ̃_min)
        if tuned or n > 1:  # else its n times t_max … t_min, then k-diffusion's last move to σ = 0
            ts = make_grid(model.process, n if tuned else n - 1, grid)
        else:
            ts = torch.tensor([model.process.t_max], dtype=torch.float64)
        sigmas = torch.exp(-0.5 * model.process.log_snr(ts).double())
        if not tuned:
            sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    if name == "dpmpp_3m":  # k-diffusion's 3M SDE sampler at η = 0 (deterministic; the noise sampler is never drawn from)
        kw = {"eta": 0.0, "noise_sampler": lambda s, sn: torch.zeros_like(x_T, dtype=torch.float64)}
    elif name.endswith("_sde"):  # η = 1, Gaussian noise from this batch's generator (k-diffusion's default is a Brownian tree)
        kw = {"eta": 1.0, "noise_sampler": lambda s, sn: torch.randn(x_T.shape, generator=gen, dtype=torch.float64)}
    else:
        kw = {}

    def x0(x, sg):  # k-diffusion's denoiser D(x; σ) on x = x₀ + σ ε (VE): our network at z = x/√(1+σ²)
        s = float(sg.reshape(-1)[0])
        a = 1 / math.sqrt(1 + s * s)
        return model.at(x * a, a, s * a).x0.double()

    return KD[name](x0, x_T.double() * sigmas[0], sigmas, disable=True, **kw).float()


def run_config(model: Counted, clf, ref, lib: str, name: str, grid, nfe: int, seeds, n: int, batch: int) -> dict:
    """FID of one configuration at one NFE budget for each seed (n samples from that seed's noise)."""
    from difflab.metrics import extract
    from difflab.metrics.quality import FeatureStats, frechet_distance

    fids, used, t0 = [], 0, time.time()
    for seed in seeds:
        x_T = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        outs = []
        for b, xb in enumerate(x_T.split(batch)):
            model.calls = 0
            gen = torch.Generator().manual_seed(1_000_003 * (seed + 1) + b)  # a stochastic sampler's own noise
            if lib == "ours":
                xs = ours(model, name, nfe, xb, grid, gen)
            elif lib == "diffusers":
                xs = diffusers_run(model, name, nfe, xb, gen)
            else:
                xs = kd_run(model, name, grid, nfe, xb, gen)
            used = max(used, model.calls)
            outs.append(xs.clamp(-1, 1))
        if used > nfe:
            raise AssertionError(f"{lib} {name} {grid or ''}: {used} network evaluations for a budget of {nfe}")
        fids.append(frechet_distance(ref, FeatureStats.from_features(extract(clf, torch.cat(outs)))))
    return {"lib": lib, "sampler": name, "grid": grid, "nfe_budget": nfe, "nfe": used, "seeds": list(seeds), "n": n,
            "fid": fids, "fid_mean": sum(fids) / len(fids), "seconds": round(time.time() - t0, 1)}


def picks(rows: list[dict], nfe: int) -> list[dict]:
    """Each library's best configuration at this NFE (lowest mean FID): the tuning stage's choice."""
    out = []
    for lib in ("ours", "diffusers", "k-diffusion"):
        cand = [r for r in rows if r["lib"] == lib and r["nfe_budget"] == nfe]
        if cand:
            out.append(min(cand, key=lambda r: r["fid_mean"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", help="the checkpoint (required unless --report)")
    ap.add_argument("--root", help="MNIST root (holding MNIST/raw; required unless --report)")
    ap.add_argument("--tune-seeds", type=int, nargs="+", default=[100], help="seeds every choice is made on")
    ap.add_argument("--tune-n", type=int, default=500, help="samples per tuning seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="scoring seeds (disjoint from --tune-seeds)")
    ap.add_argument("--n", type=int, default=2000, help="samples per scoring seed")
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--batch", type=int, default=64, help="network batch (64 is the CPU's fastest for 28x28)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="configuration names to run (default: all)")
    ap.add_argument("--reuse", nargs="*", default=[], metavar="JSON",
                    help="earlier results of this script: a configuration already run at the same NFE on the same seeds "
                         "and n is taken from them, not run again (every configuration is seeded, so it is the same number)")
    ap.add_argument("--stochastic", action="store_true",
                    help="also the samplers that draw noise at every step (ours, diffusers' and k-diffusion's)")
    ap.add_argument("--tuned", nargs="*", default=[], metavar="NFE=FILE",
                    help="a grid fitted by difflab-tune-grid on tuning seeds (its steps = NFE), run by ours and by "
                         "k-diffusion's samplers alike at that NFE, e.g. 10=runs/tuned10/grid.yaml")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mnist_samplers.json"))
    ap.add_argument("--report", metavar="JSON", nargs="+",
                    help="only print the table and draw the plot of finished runs' JSONs; a later JSON's scored picks "
                         "replace an earlier one's at the NFEs it ran (a --tuned rerun with --only naming the earlier "
                         "picks); the plot is written beside the first")
    args = ap.parse_args()
    if args.report:
        res = json.loads(Path(args.report[0]).read_text())
        for later in args.report[1:]:
            more = json.loads(Path(later).read_text())
            assert more["protocol"]["seeds"] == res["protocol"]["seeds"] and more["protocol"]["n"] == res["protocol"]["n"]
            nfes = {r["nfe_budget"] for r in more["runs"]}
            res["runs"] = [r for r in res["runs"] if r["nfe_budget"] not in nfes] + more["runs"]
            res["tuning"] += more["tuning"]
        summarize(res)
        print("plot:", plot(res, Path(args.report[0]).with_suffix(".png")))
        return
    if not (args.ckpt and args.root):
        ap.error("--ckpt and --root are required (unless --report)")
    if set(args.tune_seeds) & set(args.seeds):
        ap.error(f"tuning seeds {args.tune_seeds} and scoring seeds {args.seeds} must be disjoint")
    torch.set_num_threads(args.threads)

    from difflab.data import MNISTDataModule
    from difflab.evaluation import data_classifier, from_checkpoint
    from difflab.metrics import extract
    from difflab.metrics.quality import FeatureStats, frechet_distance

    target = from_checkpoint(args.ckpt, data_spec={"_target_": "difflab.data.MNISTDataModule", "root": args.root})
    dm = MNISTDataModule(root=args.root)
    clf = data_classifier(dm)
    test = dm.labelled_images("val")[0]
    ref = FeatureStats.from_features(extract(clf, test.float() / 127.5 - 1))
    train = dm.labelled_images("train")[0]
    floors = {n: frechet_distance(ref, FeatureStats.from_features(extract(clf, train[:n].float() / 127.5 - 1)))
              for n in sorted({args.n, args.tune_n})}
    model = Counted(target)

    def ours_grids(name):
        return [None] + [g for g in OURS_GRIDS if g != _yaml_node(name).get("grid")]

    configs = [("ours", s, g) for s in OURS for g in ours_grids(s)] + [("diffusers", s, None) for s in DIFFUSERS]
    configs += [("k-diffusion", s, g) for s in KD if not s.endswith("_sde") for g in KD_GRIDS]
    if args.stochastic:
        configs += [("ours", s, g) for s in OURS_SDE for g in ours_grids(s)]
        configs += [("diffusers", s, None) for s in DIFFUSERS_SDE]
        configs += [("k-diffusion", s, g) for s in KD_SDE for g in KD_GRIDS]
    if args.only:
        keys = lambda c: {c[1], f"{c[1]}-{c[2]}", f"{c[0]}:{c[1]}", f"{c[0]}:{c[1]}-{c[2]}"}  # noqa: E731
        configs = [c for c in configs if keys(c) & set(args.only)]
    res = {"protocol": {"tune_seeds": args.tune_seeds, "tune_n": args.tune_n, "seeds": args.seeds, "n": args.n,
                        "reference": "10k MNIST test images, classifier features",
                        "floor": floors[args.n], "floor_tune": floors[args.tune_n], "ckpt": args.ckpt,
                        "rule": "every configuration runs on the tuning seeds; each library's best per NFE is scored on the "
                                "scoring seeds, which no choice was made on"},
           "tuning": [], "runs": []}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")

    tuned = dict(t.split("=", 1) for t in args.tuned)
    done = {}
    for path in args.reuse:
        old = json.loads(Path(path).read_text())
        for r in old["tuning"] + old["runs"]:
            done[(r["lib"], r["sampler"], r["grid"], r["nfe_budget"], tuple(r["seeds"]), r["n"])] = r

    def cached(lib, name, grid, nfe, seeds, n):
        r = done.get((lib, name, grid, nfe, tuple(seeds), n))
        return dict(r, reused=True) if r else None

    for nfe in args.nfe:
        extra = [(lib, s, f"tuned:{tuned[str(nfe)]}") for lib, names in (("ours", OURS), ("k-diffusion", KD))
                 for s in names if s not in ("heun", "ode_heun") and not s.endswith("_sde")] if str(nfe) in tuned else []
        for lib, name, grid in configs + extra:
            row = cached(lib, name, grid, nfe, args.tune_seeds, args.tune_n) or \
                run_config(model, clf, ref, lib, name, grid, nfe, args.tune_seeds, args.tune_n, args.batch)
            res["tuning"].append(row)
            print("tune", json.dumps(row), flush=True)
            save()
        for p in picks(res["tuning"], nfe):
            row = cached(p["lib"], p["sampler"], p["grid"], nfe, args.seeds, args.n) or \
                run_config(model, clf, ref, p["lib"], p["sampler"], p["grid"], nfe, args.seeds, args.n, args.batch)
            res["runs"].append(row)
            print("score", json.dumps(row), flush=True)
            save()
    summarize(res)
    print("plot:", plot(res, Path(args.out).with_suffix(".png")))


def summarize(res: dict) -> None:
    print(f"floor ({res['protocol']['n']} training images vs test statistics): {res['protocol']['floor']:.3f}")
    for nfe in sorted({r["nfe_budget"] for r in res["runs"]}):
        rows = [r for r in res["runs"] if r["nfe_budget"] == nfe]
        o = next((r for r in rows if r["lib"] == "ours"), None)
        peer = min((r for r in rows if r["lib"] != "ours"), key=lambda r: r["fid_mean"], default=None)
        if o and peer:
            per_seed = [a / b for a, b in zip(o["fid"], peer["fid"])]
            print(f"NFE {nfe}: ours {o['sampler']} {o['fid_mean']:.3f} | best peer {peer['lib']} {peer['sampler']} "
                  f"{peer['grid'] or ''} {peer['fid_mean']:.3f} | ratio {o['fid_mean'] / peer['fid_mean']:.3f} "
                  f"(per seed {', '.join(f'{x:.3f}' for x in per_seed)})")


def plot(res: dict, path: Path) -> Path:
    """FID on the scoring seeds against NFE, one line per library's tuning pick (its name at each point), the
    floor dashed; error bars: the spread of the per-seed FIDs."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for lib, style, dy in (("ours", "o-", -11), ("diffusers", "s--", 6), ("k-diffusion", "^--", -2)):
        rows = sorted((r for r in res["runs"] if r["lib"] == lib), key=lambda r: r["nfe_budget"])
        if not rows:
            continue
        x = [r["nfe_budget"] for r in rows]
        y = [r["fid_mean"] for r in rows]
        err = [(max(r["fid"]) - min(r["fid"])) / 2 for r in rows]
        ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label="difflab" if lib == "ours" else lib)
        for r in rows:
            ax.annotate(f"{r['sampler']}{'/' + r['grid'] if r['grid'] else ''}", (r["nfe_budget"], r["fid_mean"]),
                        textcoords="offset points", xytext=(5, dy), fontsize=6, color=ax.lines[-1].get_color())
    p = res["protocol"]
    ax.axhline(p["floor"], color="grey", ls=":", label=f"floor ({p['n']} training digits)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    nfes = sorted({r["nfe_budget"] for r in res["runs"]})
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(min(nfes) * 0.85, max(nfes) * 1.6)
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel(f"FID, classifier features, n = {p['n']} (mean of seeds {p['seeds']})")
    ax.set_title("MNIST: each library's pick on the tuning seeds, scored on others", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
