"""`DiffusionModule`: Lightning training of model × process × parameterization × loss, with
float32 EMA weights, and `load_denoiser` to rebuild a trained denoiser from its checkpoint.

A checkpoint is self-describing: its `hyper_parameters` hold plain containers only
(`_target_` specs of model, process, parameterization, loss; the denoiser's conditioning;
optimiser and EMA settings; the data shape and data config), so
`torch.load(path, weights_only=True)` works and `load_denoiser` rebuilds everything
without the Hydra config that produced it. Beside the raw `state_dict` the checkpoint
holds `ema` = {decay, warmup, num_updates, shadow} (see `difflab.ema`).

The training loss is the per-example loss of `difflab.losses.DiffusionLoss` (docs/objectives.md,
"One weighted loss"), averaged over the batch:
    L = ½ E_t [ w(λ_t) · (−dλ/dt) · ‖ε − ε̂‖² ]   (+ prior and reconstruction terms for the ELBO).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from .compat import CheapHookNameSetattr, grad_norm, logs_this_step, remember_no_cuda, skip_next_step_if, skips_found_inf
from .compat import strip_compiled_prefix
from .denoiser import Denoiser
from .ema import ExponentialMovingAverage
from .fused import use_fused_step, use_multi_tensor_step
from .models.options import apply_model_options, is_compiled, split_model_options, uncompiled_copy
from .models.checks import check_model_fits  # noqa: F401 - re-exported (tests, users)
from .utils import destroy_process_group_at_exit, instantiate, locate, plain

DEFAULT_OPTIM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-4, "betas": [0.9, 0.999], "eps": 1e-8,
                 "weight_decay": 0.0}
DEFAULT_LR_SCHEDULE = {"warmup_steps": 0, "schedule": "constant", "total_steps": None, "min_lr_ratio": 0.0}
_LEGACY_OPTIMIZERS = {"adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}


def split_legacy_optim(optim: Mapping | None, lr_schedule: Mapping | None) -> tuple[dict, dict]:
    """An optim dict without `_target_` — {name: adam|adamw, lr, ..., warmup_steps, schedule, ...}
    as checkpoints written before optimisers became `_target_` specs hold, or just {lr: ...} —
    becomes an Adam/AdamW spec plus the LR-schedule keys."""
    optim, sched = dict(optim or {}), dict(lr_schedule or {})
    if "_target_" not in optim:
        name = str(optim.pop("name", "adam")).lower()
        if name not in _LEGACY_OPTIMIZERS:
            raise ValueError(f"optim.name must be adam or adamw, got {name!r}")
        for k in DEFAULT_LR_SCHEDULE:
            if k in optim:
                sched.setdefault(k, optim.pop(k))
        optim = {"_target_": _LEGACY_OPTIMIZERS[name], "_partial_": True, **optim}
    return optim, sched
DEFAULT_EMA = {"decay": 0.9999, "warmup": False}
DEFAULT_DENOISER = {"conditioning": "t", "cond_scale": 1.0, "scale_input": False}


def build(spec: Mapping, what: str, **kwargs):
    """Instantiate a `_target_` spec (plain dict) with extra keyword arguments; an option the
    class does not take (e.g. model.hidden on a UNet) is a ValueError naming it and the options."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ValueError(f"the {what} config has no _target_ (got {spec!r}); pick an option of the `{what}` group")
    target = locate(spec["_target_"])
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): the call itself will tell
        params = None
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        given = [k for k in [*spec, *kwargs] if not (k.startswith("_") and k.endswith("_"))]  # not _target_, _partial_
        unknown = [k for k in given if k not in params]
        if unknown:
            takes = [p for p in params if p not in ("self", "args", "kwargs")]
            raise ValueError(f"{what} {target.__name__} has no option {what}.{unknown[0]} (set by the recipe or an override); "
                             f"it takes {', '.join(takes)}")
    return instantiate(spec, **kwargs)


class LRLambda:
    """Linear warm-up over `warmup_steps`, then constant, cosine or linear decay to
    `min_lr_ratio` at `total_steps` (a class, not a closure: it pickles for ddp_spawn)."""

    def __init__(self, warmup_steps: int = 0, schedule: str = "constant", total_steps: int | None = None, min_lr_ratio: float = 0.0):
        if schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"lr_schedule.schedule must be constant, cosine or linear, got {schedule!r}")
        if schedule != "constant" and not total_steps:
            raise ValueError(f"lr_schedule.schedule={schedule} needs lr_schedule.total_steps (or trainer.max_steps)")
        self.warmup_steps, self.schedule = int(warmup_steps or 0), schedule
        self.total_steps, self.min_lr_ratio = int(total_steps or 0), float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        frac = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        shape = 0.5 * (1 + math.cos(math.pi * frac)) if self.schedule == "cosine" else 1.0 - frac
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


class DiffusionModule(CheapHookNameSetattr, L.LightningModule):
    """Trains `Denoiser(model, process, parameterization)` with `loss(denoiser, x) → [B]`.

    Arguments are plain `_target_` specs and dicts (what Hydra's config groups hold), saved
    as hyper-parameters so that a checkpoint rebuilds the whole model on its own.

    Noise: every step draws from a generator seeded by (seed, step, rank), so DDP ranks
    never share noise (Lightning#16166) and a resumed run continues the same stream. With
    `per_sample_noise=True` example i's noise and time come from (seed, step, dataset
    index of i) alone — one process and N DDP processes then make exactly the same update
    (the loss is evaluated one example at a time: a reproducibility mode, not for speed).

    Speed (no host-device sync in a training step): the loss is logged only on the steps the
    logger writes; a non-finite loss or gradient sets a device flag that makes a fused
    optimiser skip the step (`found_inf`, the mechanism of AMP's GradScaler) and raises
    FloatingPointError at the next check (every `log_every_n_steps` and at the end). On the
    CPU, or with an optimiser that cannot skip on the device, the check runs before every
    step (`defer_non_finite_check` overrides this choice). Either way a non-finite step never
    changes the weights, and the EMA (updated in `optimizer_step`, so a checkpoint of step k
    holds exactly k EMA updates) only ever averages finite weights. Adam/AdamW run fused
    (`difflab.fused`: on CUDA for the guard, on the CPU for speed). `model.compile` / `model.channels_last`: see
    `difflab.models.options`.
    """

    defer_non_finite_check: bool | None = None  # None: on accelerators (a sync), not on the CPU (free there)

    def __init__(self, model: Mapping, process: Mapping, parameterization: Mapping, loss: Mapping,
                 data_shape: Sequence[int], data_config: Mapping | None = None, denoiser: Mapping | None = None,
                 optim: Mapping | None = None, ema: Mapping | None = None, per_sample_noise: bool = False, seed: int = 0,
                 lr_schedule: Mapping | None = None):
        super().__init__()
        optim, lr_schedule = split_legacy_optim(plain(optim), plain(lr_schedule))
        lr_schedule = {k: v for k, v in lr_schedule.items() if k not in ("_target_", "_partial_")}
        hp = dict(model=plain(model), process=plain(process), parameterization=plain(parameterization), loss=plain(loss),
                  data_shape=[int(s) for s in data_shape], data_config=plain(data_config or {}),
                  denoiser={**DEFAULT_DENOISER, **plain(denoiser or {})}, optim={**DEFAULT_OPTIM, **optim}, lr_schedule={**DEFAULT_LR_SCHEDULE, **lr_schedule},
                  ema={**DEFAULT_EMA, **plain(ema or {})}, per_sample_noise=bool(per_sample_noise), seed=int(seed))
        self.save_hyperparameters(hp)
        self.data_shape = tuple(hp["data_shape"])
        unknown = set(hp["lr_schedule"]) - set(DEFAULT_LR_SCHEDULE)
        if unknown:
            raise ValueError(f"unknown lr_schedule keys {sorted(unknown)}; known: {sorted(DEFAULT_LR_SCHEDULE)}")
        accepted = set(inspect.signature(locate(hp["optim"]["_target_"])).parameters) - {"params"}
        unknown = set(hp["optim"]) - accepted - {"_target_", "_partial_"}
        if unknown:
            raise ValueError(f"unknown optim keys {sorted(unknown)}; {hp['optim']['_target_']} takes {sorted(accepted)}")
        model_spec, model_options = split_model_options(hp["model"])
        net = build(model_spec, "model")
        if not any(p.requires_grad for p in net.parameters()):
            raise ValueError(f"model {type(net).__name__} has no trainable parameters (model=oracle is the exact denoiser "
                             "of data=gmm, for difflab-sample/difflab-eval); choose model=mlp or a model=unet_*")
        check_model_fits(net, self.data_shape)
        self.channels_last = bool(model_options.get("channels_last", False)) and len(self.data_shape) == 3
        self._compile_on_gpu = model_options.get("compile", False) == "auto"  # decided in on_fit_start
        apply_model_options(net, False if self._compile_on_gpu else model_options.get("compile", False), self.channels_last)
        proc = build(hp["process"], "process")
        param = build(hp["parameterization"], "parameterization")
        self.net = Denoiser(net, proc, param, **hp["denoiser"])
        self.loss_fn = build(hp["loss"], "weighting", process=proc, parameterization=param)
        self.per_sample_noise, self.seed = hp["per_sample_noise"], hp["seed"]
        # float32 shadow weights: a plain attribute, so neither DDP nor state_dict sees it
        self.ema = ExponentialMovingAverage(self.net, **hp["ema"])
        object.__setattr__(self, "_ema_net", None)  # not a registered submodule
        self._generators: dict = {}
        self._loss: Tensor | None = None  # last training loss (detached, on the device)
        self._bad_steps: Tensor | None = None  # number of skipped non-finite steps since the last check
        self._params: list | None = None  # trainable parameters (set at fit start)

    # ----------------------------------------------------------------- accessors
    @property
    def process(self):
        return self.net.process

    @property
    def parameterization(self):
        return self.net.parameterization

    def denoiser(self, use_ema: bool = True) -> Denoiser:
        """The denoiser with EMA weights (a float32 copy, eval mode) or the live one."""
        if not use_ema:
            return self.net
        if self._ema_net is None:
            object.__setattr__(self, "_ema_net", uncompiled_copy(self.net).requires_grad_(False))
        ema_net = self._ema_net.to(self.device).float()
        self.ema.copy_to(ema_net)
        return ema_net.eval()

    # ----------------------------------------------------------------- training
    def _generator(self, *key: int) -> torch.Generator:
        """The generator of the device, re-seeded from (seed, *key) (one object per device:
        building a generator every step costs more than the step of a small model)."""
        g = self._generators.get(self.device)
        if g is None:
            g = self._generators[self.device] = torch.Generator(device=self.device)
        g.manual_seed(hash((self.seed,) + tuple(int(k) for k in key)) & 0x7FFF_FFFF_FFFF_FFFF)
        return g

    def _losses(self, net: nn.Module, x: Tensor, index: Tensor, stage: int) -> Tensor:
        """Per-example losses. The loss draws its own times inside [t_min, t_max], so the
        process's range check of every call (two host syncs each on a GPU) is off meanwhile."""
        with self.process.times_unchecked(), self.process.reusing_alpha_sigma():
            return self._draw_losses(net, x, index, stage)

    def _draw_losses(self, net: nn.Module, x: Tensor, index: Tensor, stage: int) -> Tensor:
        step = self.global_step if stage == 0 else 0
        if self.per_sample_noise:
            return torch.cat([self.loss_fn(net, x[i:i + 1], generator=self._generator(stage, step, int(index[i])))
                              for i in range(x.shape[0])])
        rank = self.global_rank if stage == 0 else int(index[0])
        return self.loss_fn(net, x, generator=self._generator(stage, step, rank))

    @staticmethod
    def _split(batch) -> tuple[Tensor, Tensor]:
        if isinstance(batch, (tuple, list)):
            x, index = batch[0], batch[1] if len(batch) > 1 else torch.arange(batch[0].shape[0])
        else:
            x, index = batch, torch.arange(batch.shape[0])
        return x.float(), index

    def training_step(self, batch, batch_idx):
        x, index = self._split(batch)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        losses = self._losses(self.net, x, index, stage=0)
        loss = losses.mean()
        self._loss, self._x = loss.detach(), x  # kept for the error message only (no sync)
        if logs_this_step(self.trainer):  # a float: the progress bar never syncs
            self.log("train/loss", float(self._loss), on_step=True, on_epoch=False, prog_bar=True, batch_size=x.shape[0])
        return loss

    def setup(self, stage: str) -> None:
        destroy_process_group_at_exit()  # gloo workers (ddp_spawn on CPU) otherwise may abort at exit
        remember_no_cuda()  # without a GPU, every Adam step would otherwise load NVML (compat)

    def on_fit_start(self) -> None:
        self.ema.to(self.device, copy=True)  # private per rank (ddp_spawn shares pickled CPU tensors)
        if self._compile_on_gpu and self.device.type == "cuda" and not is_compiled(self.net.model):
            apply_model_options(self.net.model, True)
        self._bad_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        self._params = None

    # ----------------------------------------------------------------- non-finite guard
    def _raise_non_finite(self, skipped: int | None = None) -> None:
        if getattr(self, "_x", None) is not None and not bool(torch.isfinite(self._x).all()):
            raise FloatingPointError(f"the training data contain NaN or inf (a batch at step {self.global_step}): check the data set")
        loss = float(self._loss) if self._loss is not None else math.nan
        what = (f"training {'loss is %g' % loss if not math.isfinite(loss) else 'gradient is not finite'} at step {self.global_step}"
                if skipped is None else
                f"training loss or gradient was non-finite in {skipped} step(s) before step {self.global_step} "
                f"(those optimiser steps were skipped)")
        if reason := self.process.problem():
            raise FloatingPointError(f"{what}: the {reason}")
        raise FloatingPointError(f"{what}: lower optim.lr, set trainer.gradient_clip_val (e.g. 1.0) or use a float32/bf16 precision")

    def _any_rank(self, flag: bool) -> bool:
        return bool(self.trainer.strategy.reduce_boolean_decision(flag, all=False)) if self.trainer.world_size > 1 else flag

    def _check_skipped_steps(self) -> None:
        """The deferred check of the device flag (one host sync)."""
        if self._bad_steps is not None:
            skipped = int(self._bad_steps)
            if self._any_rank(skipped > 0):
                self._raise_non_finite(max(skipped, 1))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, plus the non-finite guard: the gradient norm (all-reduced
        gradients: the same on every rank) or the local loss is not finite → skip the step."""
        if self._params is None:  # walking the module tree every step costs more than a small model's step
            self._params = [p for p in self.parameters() if p.requires_grad]
        params = [p for p in self._params if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            norm = torch.nn.utils.clip_grad_norm_(params, float(gradient_clip_val))
        else:
            if gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            norm = grad_norm(grads)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        defer = self.defer_non_finite_check if self.defer_non_finite_check is not None else self.device.type != "cpu"
        on_device_skip = defer and skips_found_inf(optimizer)
        if scaler is None and not on_device_skip:  # check now: on the CPU this costs no device sync
            loss = float(self._loss) if self._loss is not None else 0.0
            if self._any_rank(not (math.isfinite(float(norm)) and math.isfinite(loss))):
                self._raise_non_finite()
            return
        bad = ~torch.isfinite(norm)
        if self._loss is not None:
            bad = bad | ~torch.isfinite(self._loss)
        if scaler is None:
            skip_next_step_if(optimizer, bad)  # the fused Adam/AdamW kernel leaves weights and state untouched
        self._bad_steps += bad  # (AMP's GradScaler skips non-finite steps itself)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The optimiser step, then the EMA update (once per optimiser step, also under gradient
        accumulation), before any callback's `on_train_batch_end` can save a checkpoint."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.ema.update(self.net)
        every = max(1, int(self.trainer.log_every_n_steps or 50))
        if self._bad_steps is not None and self.global_step % every == 0:
            self._check_skipped_steps()

    def on_train_start(self) -> None:
        # optimisers exist (and a resumed state is loaded) by now. Adam/AdamW become fused (CUDA: the
        # sync-free guard; CPU: 2-3x faster than torch's default there, see difflab.fused), not under
        # 16-mixed, whose GradScaler would leave a fused optimiser's gradients scaled during clipping
        fused = getattr(self.trainer.precision_plugin, "scaler", None) is None
        for opt in self.trainer.optimizers:
            if not (fused and use_fused_step(opt)):
                use_multi_tensor_step(opt)  # others: multi-tensor kernels instead of a loop over parameters

    def on_train_end(self) -> None:
        self._check_skipped_steps()

    def validation_step(self, batch, batch_idx):
        x, index = self._split(batch)
        self.log("val/loss", self._losses(self.net, x, index, stage=1).mean(), sync_dist=True, batch_size=x.shape[0])
        with torch.no_grad():
            ema_losses = self._losses(self.denoiser(use_ema=True), x, index, stage=1)
        self.log("val/loss_ema", ema_losses.mean(), sync_dist=True, batch_size=x.shape[0])

    def _attached_trainer(self):
        try:
            return self.trainer
        except RuntimeError:  # not attached to a Trainer (configure_optimizers called by hand)
            return None

    def configure_optimizers(self):
        """The `optim` spec (a `_target_` optimiser class with `_partial_: true`) on the trainable
        parameters, stepped per optimiser step by `LRLambda(**lr_schedule)`."""
        params = [p for p in self.parameters() if p.requires_grad]
        opt = build(self.hparams["optim"], "optim")(params)
        sched = dict(self.hparams["lr_schedule"])
        if sched["total_steps"] is None and sched["schedule"] != "constant" and (trainer := self._attached_trainer()) is not None:
            sched["total_steps"] = int(trainer.estimated_stepping_batches)
        lr = torch.optim.lr_scheduler.LambdaLR(opt, LRLambda(**sched))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": lr, "interval": "step"}}

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema"] = self.ema.state_dict()
        try:  # metric modules (FID's Inception, ~90 MB) never go into checkpoints
            from torchmetrics import Metric

            prefixes = tuple(n + "." for n, m in self.named_modules() if isinstance(m, Metric) and n)
            if prefixes:
                checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(prefixes)}
        except ImportError:  # pragma: no cover
            pass

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])


@dataclass
class LoadedModel:
    """What `load_denoiser` returns."""

    denoiser: Denoiser
    process: nn.Module
    data_shape: tuple
    data_config: dict
    module: DiffusionModule = field(repr=False)
    global_step: int = 0
    used_ema: bool = True


def load_denoiser(ckpt_path, device=None, use_ema: bool = True, compile=False) -> LoadedModel:
    """Rebuild the denoiser of a `difflab-train` checkpoint (EMA weights by default).

    `compile` (false | true | torch.compile options) compiles the returned network,
    whether or not the run was trained with `model.compile` (the keys are the same).

    Loads with `weights_only=True`; raises FileNotFoundError / ValueError with a clear
    message for a missing file or a checkpoint that is not a difflab training checkpoint.
    """
    from .checkpoints import read_checkpoint

    ckpt = read_checkpoint(ckpt_path)
    hp = dict(ckpt["hyper_parameters"])
    module = DiffusionModule(**{**hp, "model": {**hp["model"], "compile": False}})
    state = strip_compiled_prefix(ckpt["state_dict"])
    module.load_state_dict(state)
    has_ema = "ema" in ckpt
    if has_ema:
        module.ema.load_state_dict(ckpt["ema"])
    use_ema = bool(use_ema and has_ema)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    module.to(dev)
    den = module.denoiser(use_ema=use_ema) if use_ema else module.net.eval()
    den = den.to(dev).requires_grad_(False)
    if reason := den.process.problem():  # checked once here: on a GPU λ would only turn NaN
        raise ValueError(f"{ckpt_path}: the {reason} (in the {'EMA' if use_ema else 'trained'} weights)")
    apply_model_options(den.model, compile, bool(hp["model"].get("channels_last", False)) and len(hp["data_shape"]) == 3,
                        device=dev)
    return LoadedModel(denoiser=den, process=den.process, data_shape=tuple(hp["data_shape"]), data_config=dict(hp["data_config"]),
                       module=module, global_step=int(ckpt.get("global_step", 0)), used_ema=use_ema)
