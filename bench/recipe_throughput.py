"""Training throughput of a recipe under Lightning vs a bare PyTorch loop, same process, same run.

    python bench/recipe_throughput.py                              # CPU: gmm and digits recipes, fp32
    python bench/recipe_throughput.py --recipes ddpm_cifar10 --precisions bf16-mixed,32-true --compile off,on

Lightning side: the recipe's real training step, composed from `conf/` (`experiment=<recipe>`):
`DiffusionModule` under the recipe's `Trainer` (precision, gradient clipping, the recipe's logger
and callbacks: progress bar, LR monitor), its EMA and its data path. For ddpm_cifar10 the data
are random uint8 images of CIFAR-10's shape on the recipe's device-resident path (CIFAR-10 files
are not shipped anywhere we measure).

Bare side (`--bare-loss inline`, the default), same network size, written as one would by hand: index a batch from the data tensor
on the device, draw t and ε, the recipe's closed-form α, σ, the network, the same regression
target and MSE, backward, the same clipping, optimiser and learning-rate schedule, and a
`torch._foreach_lerp_` EMA. On CPU recipes the network is the recipe's own (an MLP); for
ddpm_cifar10 it is diffusers' UNet2DModel of DDPM's CIFAR-10 size, with channels_last whenever
compile is on (diffusers' fastest configuration). `--bare-loss difflab` makes the bare loop call
difflab's own loss function instead, which separates the cost of Lightning + DiffusionModule
from the cost of the loss function's generality. The bare loop's optimiser is torch's default
implementation (fused on CUDA; on the CPU a per-parameter Python loop, where difflab's training step
switches Adam to the fused CPU kernel, `difflab.fused`); `--bare-optimizer fused` gives the bare loop
that too, which leaves only the Lightning + DiffusionModule overhead in the ratio (`foreach`: the
multi-tensor implementation). `--bare-minimal` also times, interleaved as well, the bare loop a
peer's quick benchmark would time: the same network (its dropout included) and optimiser, without
flips, clipping, learning-rate schedule or EMA; it is reported next to the like-for-like ratio
(`step_time_ratio_vs_minimal`), never in its place.

The two sides are interleaved inside one training run: after every `--block` Lightning steps a
callback runs `--block` bare steps, and each side is timed on its own steps only (from one
`on_train_batch_end` that ends a bare block to the one that ends the next Lightning block, which
covers data, hooks, step, logging and progress bar; the GPU is synchronised at block boundaries
only, for both sides), so load changes on a shared machine hit both sides alike. `--warmup` steps of
each side run untimed first; `--repeats` repeats the whole run. Prints a table and writes
`bench/results/recipe_throughput_<device>.json`; `--jsonl FILE` appends one JSON line per result.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
OVERRIDES: list[str] = []  # --override: extra Hydra overrides for both sides
BARE_LOSS = ["inline"]  # --bare-loss
BARE_NET = ["the recipe's network"]  # what the bare loop ran
BARE_OPTIM = ["default"]  # --bare-optimizer: the bare loop's Adam on the CPU: torch's default (a per-parameter loop), foreach or fused
BARE_OPTIM_KWARGS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


# ----------------------------------------------------------------------------- config
def compose(recipe: str, overrides=()):
    from hydra import compose as _compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "src" / "difflab" / "conf"), version_base=None):
        return _compose("train", overrides=[f"experiment={recipe}", *overrides])


def plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


class SyntheticImages:
    """Random uint8 images in the recipe's device-resident data path (a BaseDataModule)."""

    @staticmethod
    def make(shape, n: int, batch_size: int, random_flip: bool):
        from difflab.data.base import BaseDataModule, TensorDataset1

        class Images(BaseDataModule):
            data_shape = tuple(shape)

            def build_train(self):
                return TensorDataset1(self.images)

        dm = Images(batch_size=batch_size, device_resident=True)
        dm.images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        dm.random_flip = random_flip
        return dm


def recipe_parts(recipe: str, precision: str | None, compile_on: bool, device: torch.device):
    """(config, datamodule, module kwargs) of the recipe with the bench's overrides."""
    from hydra.utils import instantiate

    over = ["logger=csv", f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}"]
    if precision:
        over.append(f"trainer.precision={precision}")
    over.append(f"model.compile={str(compile_on).lower()}")
    cfg = compose(recipe, over + OVERRIDES)
    if cfg.data._target_.endswith(("CIFAR10DataModule", "ImageFolderDataModule", "MNISTDataModule")):
        shape = (int(cfg.data.get("channels") or 3), int(cfg.data.get("image_size") or 32), int(cfg.data.get("image_size") or 32))
        dm = SyntheticImages.make(shape, 50_000 if device.type == "cuda" else 2048, int(cfg.data.batch_size),
                                  bool(cfg.data.get("random_flip", False)))
    else:
        dm = instantiate(cfg.data)
    kw = dict(model=plain(cfg.model), process=plain(cfg.process), parameterization=plain(cfg.parameterization),
              loss=plain(cfg.weighting), data_shape=dm.data_shape, data_config=plain(cfg.data),
              denoiser=plain(cfg.get("denoiser")), optim=plain(cfg.get("optim")), ema=plain(cfg.get("ema")), seed=int(cfg.seed),
              lr_schedule=plain(cfg.get("lr_schedule")))
    return cfg, dm, kw


# ----------------------------------------------------------------------------- Lightning side
def interleaver(bare_step, warmup: int, steps: int, block: int, device: torch.device, minimal: bool = False):
    """A Lightning callback that times blocks of `block` Lightning steps and, after each, runs
    and times `block` bare steps (and, with `minimal`, `block` minimal bare steps, timed on their
    own). The GPU is synchronised at block boundaries only, on both sides alike: a sync after
    every Lightning step would stall the GPU while the host prepares the next step, a cost the
    bare loop (timed per block) would not pay."""
    from lightning.pytorch.callbacks import Callback

    def now():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    class Interleave(Callback):
        def __init__(self):
            self.light = self.bare = self.minimal = 0.0
            self.n_light = self.n_bare = 0
            self.last = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step <= warmup:
                if step == warmup:
                    for _ in range(warmup):
                        bare_step()
                        if minimal:
                            bare_step(minimal=True)
                    self.last = now()
                return
            self.n_light += 1
            if self.n_light % block == 0 or step == warmup + steps:
                t = now()
                self.light += t - self.last  # the block's steps, hooks, data and logging
                n = self.n_light - self.n_bare
                for _ in range(n):
                    bare_step()
                self.last = now()
                self.bare += self.last - t
                self.n_bare += n
                if minimal:
                    for _ in range(n):
                        bare_step(minimal=True)
                    t, self.last = self.last, now()
                    self.minimal += self.last - t

    return Interleave()


def interleaved_run(recipe, precision, compile_on, device, warmup, steps, block, workdir,
                    minimal: bool = False) -> tuple[float, float, float | None]:
    """(Lightning img/s, bare img/s, minimal bare img/s or None) measured in one interleaved
    training run."""
    from hydra.utils import instantiate

    from difflab.lit_module import DiffusionModule

    cfg, dm, kw = recipe_parts(recipe, precision, compile_on, device)
    bare_step, batch = make_bare_step(recipe, precision, compile_on, device)
    module = DiffusionModule(**kw)
    timer = interleaver(bare_step, warmup, steps, block, device, minimal)
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None and node.get("_target_")]
    logger = instantiate(cfg.logger, save_dir=str(workdir))
    trainer = instantiate(cfg.trainer, max_steps=warmup + steps, logger=logger, callbacks=callbacks + [timer],
                          default_root_dir=str(workdir), enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    return (int(dm.batch_size) * timer.n_light / timer.light, batch * timer.n_bare / timer.bare,
            batch * timer.n_bare / timer.minimal if minimal else None)


# ----------------------------------------------------------------------------- bare side
def closed_form(cfg, device):
    """t ↦ (α, σ, network conditioning) of the recipe's process, written out (no validation)."""
    p, den = cfg.process, cfg.denoiser
    target = p._target_.rsplit(".", 1)[-1]
    if target == "VPSDE":
        b0, b1 = float(p.beta_min), float(p.beta_max)

        def alpha_sigma(t):
            log_a2 = -0.5 * t**2 * (b1 - b0) - t * b0
            return log_a2
    elif target == "ContinuousSNR" and p.schedule == "cosine":
        a, b = math.atan(math.exp(-0.5 * float(p.log_snr_max))), math.atan(math.exp(-0.5 * float(p.log_snr_min)))

        def alpha_sigma(t):
            lam = -2.0 * torch.log(torch.tan(a + t * (b - a)))
            return torch.nn.functional.logsigmoid(lam)
    elif target == "DDPM":
        betas = torch.linspace(float(p.beta_start), float(p.beta_end), int(p.num_steps), dtype=torch.float64, device=device)
        log_abar = torch.cumsum(torch.log1p(-betas), 0).float()
        steps = int(p.num_steps)

        def alpha_sigma(t):
            return log_abar[(t * steps).long().clamp(0, steps - 1)]
    else:
        raise ValueError(f"no closed form written for process {target}")

    def schedule(t):
        log_a2 = alpha_sigma(t)
        alpha, sigma = (0.5 * log_a2).exp(), (-torch.expm1(log_a2)).sqrt()
        cond = t * float(den.cond_scale) if den.conditioning == "t" else (log_a2 - torch.log(-torch.expm1(log_a2)))
        return alpha, sigma, cond
    return schedule


def diffusers_unet(cfg):
    from diffusers import UNet2DModel

    m = cfg.model
    mult, attn = list(m.ch_mult), set(m.attn_resolutions)
    res = [int(m.image_size) // 2**i for i in range(len(mult))]
    down = tuple("AttnDownBlock2D" if r in attn else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(res))
    return UNet2DModel(sample_size=int(m.image_size), in_channels=int(m.in_channels), out_channels=int(m.in_channels),
                       block_out_channels=tuple(int(m.ch) * k for k in mult), layers_per_block=int(m.num_res_blocks),
                       down_block_types=down, up_block_types=up, dropout=float(m.dropout), norm_num_groups=int(m.num_groups))


def make_bare_step(recipe, precision, compile_on, device):
    """(one bare training step, batch size)."""
    from difflab.lit_module import LRLambda, build

    cfg, dm, kw = recipe_parts(recipe, precision, compile_on, device)
    images = kw["model"]["_target_"].endswith("UNet")
    spec = {k: v for k, v in kw["model"].items() if k not in ("compile", "channels_last")}
    if images:
        try:
            net, call = diffusers_unet(cfg), (lambda n, z, c: n(z, c).sample)
            BARE_NET[0] = "diffusers.UNet2DModel"
        except ImportError:  # no diffusers here: the same-size difflab UNet, and the result says so
            net, call = build(spec, "model"), (lambda n, z, c: n(z, c))
            BARE_NET[0] = "difflab.UNet (diffusers missing)"
    else:
        net, call = build(spec, "model"), (lambda n, z, c: n(z, c))
    net = net.to(device).train()
    if images and compile_on:
        net = net.to(memory_format=torch.channels_last)
    fwd = torch.compile(net) if compile_on else net
    dm.setup("fit")
    data = dm.train_images().to(device)
    flip = bool(getattr(dm, "random_flip", False))
    schedule = closed_form(cfg, device)
    o, ls = kw["optim"], kw["lr_schedule"]
    params = list(net.parameters())
    opt_cls = torch.optim.AdamW if str(o["_target_"]).endswith("AdamW") else torch.optim.Adam
    opt = opt_cls(params, lr=float(o["lr"]), betas=tuple(o["betas"]), eps=float(o["eps"]), weight_decay=float(o["weight_decay"]),
                  **({"fused": True} if device.type == "cuda" else BARE_OPTIM_KWARGS[BARE_OPTIM[0]]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRLambda(ls["warmup_steps"], ls["schedule"], ls["total_steps"] or 10**6, ls["min_lr_ratio"]))
    ema = [p.detach().float().clone() for p in params]
    decay = float(kw["ema"]["decay"])
    clip = float(cfg.trainer.get("gradient_clip_val") or 0)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(cfg.trainer.precision))
    v_pred = kw["parameterization"]["_target_"].endswith(".V")
    b, n = int(dm.batch_size), data.shape[0]
    lib_loss = None
    if BARE_LOSS[0] == "difflab" and not images:
        from difflab.lit_module import DiffusionModule

        mod = DiffusionModule(**{**kw, "model": spec}).to(device)
        mod.net.model = net
        mod.process.validate_time = False
        gen = torch.Generator(device=device).manual_seed(0)

        def lib_loss(x):
            return mod.loss_fn(mod.net, x, generator=gen).mean()

    def step(minimal: bool = False):
        """One bare step; `minimal`: without flips, clipping, LR schedule and EMA (the network,
        its dropout included, and the optimiser are the same), the loop a peer's quick benchmark
        would time."""
        x = data[torch.randint(0, n, (b,), device=device)]
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1
        if flip and not minimal:
            x = torch.where(torch.rand(b, 1, 1, 1, device=device) < 0.5, x.flip(-1), x)
        if images and compile_on:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.rand(b, device=device) * (1 - 1e-5) + 1e-5
        alpha, sigma, cond = schedule(t)
        a, s = alpha.view(-1, *[1] * (x.ndim - 1)), sigma.view(-1, *[1] * (x.ndim - 1))
        eps = torch.randn_like(x)
        if lib_loss is not None:  # diagnosis: difflab's loss function in the bare loop
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = lib_loss(x)
        else:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = call(fwd, a * x + s * eps, cond)
            target = a * eps - s * x if v_pred else eps
            loss = (out.float() - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if minimal:
            opt.step()
            return
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)

    step.parts = dict(net=net, opt=opt, sched=sched, ema=ema)  # for tests: what each kind of step touches
    return step, b


# ----------------------------------------------------------------------------- main
LIGHTNING_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def plan(args, ap) -> tuple[torch.device, list[tuple[str, str, bool, int]]]:
    """(device, (recipe, precision, compile, batch size) of every run the arguments ask for),
    validated before anything runs (a bad value exits 2 naming the option); sets the bench's
    globals from the arguments."""
    from _results import device_and_compiles

    OVERRIDES[:] = args.override
    BARE_LOSS[0] = args.bare_loss
    BARE_OPTIM[0] = "foreach" if args.bare_foreach else args.bare_optimizer
    device, compiles = device_and_compiles(ap, args.device, args.compile)
    for name, least in (("steps", 0), ("warmup", 0), ("repeats", 1), ("block", 1)):
        if getattr(args, name) < least:
            ap.error(f"--{name} must be >= {least}, got {getattr(args, name)}")
    precisions = args.precisions.split(",") if args.precisions else [None]
    bad = [p for p in precisions if p is not None and p not in LIGHTNING_PRECISIONS]
    if bad:
        ap.error(f"--precisions: {bad} not Lightning precision names {LIGHTNING_PRECISIONS}")
    runs = []
    for recipe in args.recipes.split(","):
        try:
            cfg = compose(recipe, OVERRIDES)
        except Exception as e:  # Hydra's errors name the missing recipe or key
            ap.error(f"--recipes {recipe!r} with --override {OVERRIDES}: {type(e).__name__}: {e}")
        if cfg.model._target_.endswith("UNet"):
            try:
                import diffusers  # noqa: F401  (the bare loop's network; without it the figure is not the peer's)

                BARE_NET[0] = "diffusers.UNet2DModel"
            except ImportError:
                BARE_NET[0] = "difflab.UNet (diffusers missing)"
                if args.check:
                    ap.error(f"--recipes {recipe}: diffusers does not import, so the bare loop would run difflab's own UNet")
        runs += [(recipe, p or str(cfg.trainer.precision), c, int(cfg.data.batch_size)) for p in precisions for c in compiles]
    return device, runs


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="ddpm_cifar10" if cuda else "gmm,digits")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--precisions", default="", help="comma list (default: the recipe's own)")
    ap.add_argument("--compile", default="off", help="off, on or off,on")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default 300 on CPU, 100 on GPU)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps first (default 30 on CPU, 20 on GPU)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--block", type=int, default=10, help="steps per side before switching")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (both sides)")
    ap.add_argument("--override", action="append", default=[], help="a Hydra override for both sides (repeatable)")
    ap.add_argument("--bare-loss", choices=["inline", "difflab"], default="inline",
                    help="difflab: the bare loop calls difflab's loss function (isolates the Lightning + module overhead)")
    ap.add_argument("--bare-optimizer", choices=["default", "foreach", "fused"], default="default",
                    help="the bare loop's CPU Adam: torch's default (per-parameter loop), foreach, or fused as difflab's "
                         "training step runs it (isolates the Lightning + module overhead)")
    ap.add_argument("--bare-foreach", action="store_true", help="same as --bare-optimizer foreach")
    ap.add_argument("--bare-minimal", action="store_true",
                    help="also time a minimal bare loop (no flips, clipping, LR schedule or EMA; same network and "
                         "optimiser), interleaved too: a peer's quick benchmark loop, reported next to the fair one")
    ap.add_argument("--out", default=None, help="JSON file (default bench/results/recipe_throughput_<device>.json)")
    ap.add_argument("--jsonl", default=None, help="append one JSON line per result to this file")
    ap.add_argument("--check", action="store_true",
                    help="validate the arguments (recipes compose, precisions, compile values, the peer network) "
                         "and print what would run, without running it (tests check bench/gpu_check.sh so)")
    args = ap.parse_args()
    from _results import append_jsonl, write_results
    device, runs = plan(args, ap)
    if args.check:
        for recipe, precision, compile_on, _ in runs:
            print(f"recipe_throughput: {recipe} {precision} compile={'on' if compile_on else 'off'} on {device.type}, "
                  f"{args.repeats} x ({args.warmup} + {args.steps} steps, blocks of {args.block}), bare: {BARE_NET[0]}"
                  f"{' (and the minimal bare loop)' if args.bare_minimal else ''}")
        return
    steps = args.steps or (100 if device.type == "cuda" else 300)
    warmup = args.warmup or (20 if device.type == "cuda" else 30)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")
    if device.type == "cuda":  # the bare loop's fastest set-up (trainer=gpu sets it too, for the Lightning side)
        torch.backends.cudnn.benchmark = True
    os.environ.setdefault("WANDB_MODE", "disabled")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    results = []
    for recipe, precision, compile_on, batch in runs:
        light, bare, minimal = [], [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                ll, bb, mm = interleaved_run(recipe, precision, compile_on, device, warmup, steps, args.block, Path(tmp),
                                             args.bare_minimal)
            light.append(ll)
            bare.append(bb)
            minimal.append(mm)
        ratios = [bb / ll for ll, bb in zip(light, bare)]
        row = dict(recipe=recipe, device=str(device), bare_loss=args.bare_loss, bare_network=BARE_NET[0],
                   bare_optimizer="fused" if device.type == "cuda" else
                   {"default": "torch default (per-parameter loop)"}.get(BARE_OPTIM[0], BARE_OPTIM[0]),
                   overrides=args.override, precision=precision,
                   compile=compile_on, batch=batch, steps=steps,
                   lightning_img_s=[round(v, 1) for v in light], bare_img_s=[round(v, 1) for v in bare],
                   lightning_median=round(statistics.median(light), 1), bare_median=round(statistics.median(bare), 1),
                   step_time_ratio=round(statistics.median(ratios), 3),  # median over the interleaved runs
                   step_time_ratio_per_pair=[round(r, 3) for r in ratios])
        if args.bare_minimal:  # the same network and optimiser without flips, clipping, LR schedule, EMA
            row.update(bare_minimal_img_s=[round(v, 1) for v in minimal],
                       bare_minimal_median=round(statistics.median(minimal), 1),
                       step_time_ratio_vs_minimal=round(statistics.median([m / ll for ll, m in zip(light, minimal)]), 3))
        results.append(row)
        print(f"{recipe:14s} {row['precision']:10s} compile={'on ' if compile_on else 'off'} "
              f"lightning {row['lightning_median']:9.1f} img/s  bare {row['bare_median']:9.1f} img/s  "
              f"step-time ratio lightning/bare = {row['step_time_ratio']:.3f}  (pairs {row['step_time_ratio_per_pair']})",
              flush=True)
        if args.bare_minimal:
            print(f"{'':14s} minimal bare loop {row['bare_minimal_median']:9.1f} img/s  "
                  f"step-time ratio lightning/minimal = {row['step_time_ratio_vs_minimal']:.3f}", flush=True)
        append_jsonl(args.jsonl, "recipe_throughput", row)
    write_results(args.out, ROOT / "bench" / "results" / f"recipe_throughput_{device.type}.json", device, results)


if __name__ == "__main__":
    main()
