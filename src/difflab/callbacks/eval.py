"""`EvalCallback`: sample with the EMA weights every N epochs and log sample-quality metrics.

Sampling and scoring are `difflab.evaluation`'s, so the callback scores exactly the samples that
`difflab-sample` / `difflab-eval` draw for the same seed and sampler. DDP, done the EDM way:
- sample i depends only on (seed, i) (32-sample chunks, `evaluation.seeding`); chunk c is drawn
  by rank c mod world_size, so 1 and N processes generate the *same* samples, each exactly once
  (no DistributedSampler padding duplicates);
- all ranks take part in the same gathers (a success flag first, then the padded chunks),
  reassemble the chunks in order and compute the metrics identically; only logging is rank-zero
  (`log(rank_zero_only=True)`), no collective ever sits inside rank-zero-only code;
- anything that goes wrong is turned into a warning: evaluation never stops training.

Metric state stays out of checkpoints: the feature network is a plain attribute of this callback
(not of the LightningModule) and `state_dict()` holds only a counter. Features are computed with
autocast off and accumulated in float64.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Callable, Mapping, Sequence

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from ..evaluation import (
    FEATURE_METRICS,
    LIKELIHOOD_METRICS,
    MIXTURE_METRICS,
    SAMPLE_METRICS,
    SEED_CHUNK,
    SamplerChoice,
    assemble,
    check_metrics,
    chunk_sizes,
    draw_chunks,
    feature_network,
    from_module,
    held_out_examples,
    likelihood_metrics,
    rank_chunks,
    real_examples,
    score_samples,
)
from ..utils import destroy_process_group_at_exit

__all__ = ["EvalCallback", "chunk_sizes"]


class EvalCallback(Callback):
    """Every `every_n_epochs` epochs: `num_samples` samples with `pl_module.denoiser(use_ema=True)`
    and `pl_module.process`, metrics among swd, mmd (on the samples) and fid, kid, is (on
    features), logged as `<prefix><metric key>`.

    sampler: a `sampler` group node ({name | _target_, steps, grid, options}, what
        `callbacks=eval` passes from the `sampler` group) or a sampler name; `steps` overrides
        its step count.
    real_data: a tensor of real samples (or a callable returning one); if None, up to
        `num_reference` training examples of the datamodule, and up to `num_samples` of its
        validation split (else of the training examples after those) for the real-vs-real
        floors (`<key>_floor`, `swd_floor`: a perfect model's score against the same reference;
        `difflab.metrics.quality`). Without such examples, or with `real_data`, the FID floor
        holds out part of the reference and swd has none.
    features: "learned" (a small net trained on the real data, cached), "inception"
        (standard weights from `inception_weights` or the torch cache), "classifier" (the
        protocol classifier of a labelled image data set such as MNIST), or an nn.Module with
        `forward` → features (and `logits` for IS).
    sample_fn: `fn(denoiser, process, shape, generator=, device=, sampler=, steps=)` replacing
        the sampler for one 32-sample chunk (its samples or an object with `.samples`).
    reference_split: "train" (the reference is up to `num_reference` training examples, as above)
        or "val" (the validation split, e.g. MNIST's test set; the floors from training examples),
        as difflab-eval's `reference_split`.
    likelihood: options of `difflab.evaluation.likelihood_metrics` (num_eval, split, mc_samples,
        mc_batch_size, bits, ode, elbo) for the likelihood metrics (bpd_elbo, nll_elbo, bpd_ode,
        nll_ode) among `metrics`, computed with the same EMA weights on the data module's `split`
        (every rank computes the same seeded estimate: no collective). `<prefix>seconds` logs the
        cost of each evaluation.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 2048,
        batch_size: int = 256,
        metrics: Sequence[str] = ("fid",),
        sampler: str | Mapping | None = "ode_heun",
        steps: int | None = None,
        seed: int = 0,
        real_data: Tensor | Callable[[], Tensor] | None = None,
        num_reference: int = 10_000,
        features: str | torch.nn.Module = "learned",
        inception_weights: str | None = None,
        use_ema: bool = True,
        prefix: str = "eval/",
        sample_fn: Callable | None = None,
        num_projections: int = 256,
        likelihood: Mapping | None = None,
        reference_split: str = "train",
    ):
        super().__init__()
        # weights: difflab-eval / eval_at_end (it needs the exact mixture)
        check_metrics(metrics, exclude=MIXTURE_METRICS)
        if every_n_epochs < 1 or num_samples < 2 or batch_size < 1:
            raise ValueError("EvalCallback: every_n_epochs >= 1, num_samples >= 2 and batch_size >= 1 are required, got "
                             f"{every_n_epochs}, {num_samples}, {batch_size}")
        node = {"name": sampler} if isinstance(sampler, str) else dict(sampler or {"name": "ode_heun", "steps": 50})
        if steps is not None:
            node["steps"] = int(steps)
        self.sampler = SamplerChoice.from_config(node)
        self.every_n_epochs, self.num_samples, self.batch_size = int(every_n_epochs), int(num_samples), int(batch_size)
        self.metrics, self.seed = tuple(metrics), int(seed)
        self.real_data, self.num_reference = real_data, int(num_reference)
        self.features, self.inception_weights = features, inception_weights
        self.use_ema, self.prefix = use_ema, prefix
        self.sample_fn = sample_fn
        self.num_projections = num_projections
        self.likelihood = dict(likelihood or {})
        if reference_split not in ("train", "val"):
            raise ValueError(f"EvalCallback: reference_split must be train or val, got {reference_split!r}")
        self.reference_split = reference_split
        self.num_evaluations = 0
        self.last_seconds = 0.0
        self.last_metrics: dict[str, float] = {}
        self.last_samples: Tensor | None = None
        self._real: Tensor | None = None
        self._held: Tensor | None = None  # real examples outside the reference (floors), from the data module's val split
        self._net = None
        if any(m in FEATURE_METRICS for m in self.metrics) and num_samples < 2048:
            warnings.warn(f"EvalCallback: FID/KID from num_samples={num_samples} (< 2048) samples is biased; "
                          "the sample count is part of the metric name", stacklevel=2)

    # ------------------------------------------------------------------ checkpoint state
    def setup(self, trainer, pl_module, stage: str) -> None:
        destroy_process_group_at_exit()  # any LightningModule under ddp_spawn on CPU (gloo)

    def state_dict(self) -> dict:
        return {"num_evaluations": self.num_evaluations}  # never metric states or feature nets

    def load_state_dict(self, state_dict: dict) -> None:
        self.num_evaluations = int(state_dict.get("num_evaluations", 0))

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self.evaluate(trainer, pl_module)
        if metrics:
            metrics = {**metrics, "seconds": self.last_seconds}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                pl_module.log(self.prefix + k, float(v), rank_zero_only=True, on_epoch=True, on_step=False)

    # ------------------------------------------------------------------ the work
    def evaluate(self, trainer, pl_module) -> dict[str, float]:
        """The sample metrics (sample, gather, score) and the likelihood metrics; returns them (the
        same on every rank) with `seconds`, the evaluation's cost; {} when both failed."""
        t0 = time.perf_counter()
        out: dict = {}
        if any(m in SAMPLE_METRICS for m in self.metrics):
            out.update(self._sample_metrics(trainer, pl_module))
        wanted = [m for m in self.metrics if m in LIKELIHOOD_METRICS]
        if wanted:
            try:
                out.update(self._likelihood_metrics(trainer, pl_module, wanted))
            except Exception as e:  # noqa: BLE001 - evaluation must never stop training
                rank_zero_warn(f"EvalCallback: likelihood metrics failed this epoch ({type(e).__name__}: {e})")
        if not out:
            return {}
        self.last_seconds = time.perf_counter() - t0  # logged as <prefix>seconds, kept out of the metrics
        self.num_evaluations += 1
        self.last_metrics = out
        return out

    def _likelihood_metrics(self, trainer, pl_module, wanted) -> dict:
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        target = from_module(pl_module, datamodule=dm, use_ema=self.use_ema)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.autocast(pl_module.device.type, enabled=False):
                res = likelihood_metrics(target, wanted, seed=self.seed, device=pl_module.device, **self.likelihood)
        finally:
            pl_module.train(was_training)
        return {k: v for k, v in res.items() if not k.endswith("_seconds")}

    def _sample_metrics(self, trainer, pl_module) -> dict:
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        local, err = None, None
        try:
            local = self._local_chunks(trainer, pl_module, rank, world)
        except Exception as e:  # noqa: BLE001 - evaluation must never stop training
            err = e
        if not self._all_ok(trainer, err is None):
            rank_zero_warn(f"EvalCallback: evaluation skipped this epoch ({type(err).__name__ if err else 'error on another rank'}: {err})")
            if err is not None and rank != 0:
                warnings.warn(f"EvalCallback (rank {rank}): {type(err).__name__}: {err}")
            return {}
        samples = self._gather(trainer, local, rank, world).reshape(-1, *self._real.shape[1:])
        try:
            with torch.autocast(samples.device.type, enabled=False):
                out = score_samples(samples, self._real, [m for m in self.metrics if m in SAMPLE_METRICS], seed=self.seed,
                                    num_projections=self.num_projections, features=self.features, net=self._net,
                                    real_other=self._held, datamodule=getattr(trainer, "datamodule", None),
                                    reference_split=self.reference_split)
        except Exception as e:  # noqa: BLE001
            rank_zero_warn(f"EvalCallback: metrics failed this epoch ({type(e).__name__}: {e})")
            return {}
        out.pop("warnings", None)  # the small-sample warning was given once at construction
        self.last_samples = samples
        return out

    def _prepare(self, trainer, device) -> None:
        if self._real is None:
            real = self.real_data() if callable(self.real_data) and not torch.is_tensor(self.real_data) else self.real_data
            if real is None:
                dm = getattr(trainer, "datamodule", None) if trainer is not None else None
                if dm is None:
                    raise ValueError("EvalCallback needs real data: pass real_data=... or train with a datamodule")
                real = real_examples(dm, self.num_reference, self.reference_split)
                # for the floors (None: see fid_floor): real examples outside the reference
                held = (held_out_examples(dm, self.num_samples, real.shape[0]) if self.reference_split == "train"
                        else real_examples(dm, self.num_samples, "train"))
                self._held = held.detach().float().cpu() if held is not None else None
            self._real = real.detach().float().cpu()[: self.num_reference]
        if self._net is None and any(m in FEATURE_METRICS for m in self.metrics):
            dm = getattr(trainer, "datamodule", None) if trainer is not None else None
            self._net = feature_network(self.features, self._real, self.seed, self.inception_weights, device, dm)

    def _local_chunks(self, trainer, pl_module, rank: int, world: int) -> dict[int, Tensor]:
        device = pl_module.device
        self._prepare(trainer, device)
        denoiser = pl_module.denoiser(use_ema=self.use_ema) if self.use_ema else pl_module.denoiser(use_ema=False)
        fn = None if self.sample_fn is None else functools.partial(self.sample_fn, sampler=self.sampler.name, steps=self.sampler.steps)
        was_training = pl_module.training
        pl_module.eval()
        try:
            drawn, _ = draw_chunks(denoiser, pl_module.process, tuple(self._real.shape[1:]), rank_chunks(self.num_samples, rank, world),
                                   self.seed, self.sampler, batch_size=self.batch_size, device=device, sample_fn=fn, progress=False)
        finally:
            pl_module.train(was_training)
        for c, x in drawn.items():
            if not bool(torch.isfinite(x).all()):
                raise FloatingPointError(f"non-finite samples in chunk {c}")
        return drawn

    @staticmethod
    def _all_ok(trainer, ok: bool) -> bool:
        if trainer is None or trainer.world_size == 1:
            return ok
        flags = trainer.strategy.all_gather(torch.tensor([1.0 if ok else 0.0], device=trainer.strategy.root_device))
        return bool(flags.min() > 0)

    def _gather(self, trainer, drawn: dict[int, Tensor], rank: int, world: int) -> Tensor:
        """Every chunk, in chunk order, on every rank (each sample exactly once), flattened."""
        if trainer is None or world == 1:
            return assemble({c: x.flatten(1) for c, x in drawn.items()}, self.num_samples)
        mine = rank_chunks(self.num_samples, rank, world)
        per_rank = len(rank_chunks(self.num_samples, 0, world))
        width = math.prod(self._real.shape[1:])
        buf = torch.zeros(per_rank, SEED_CHUNK, width, dtype=torch.float64)
        for i, c in enumerate(mine):
            buf[i] = drawn[c].flatten(1).to(torch.float64)
        allbuf = trainer.strategy.all_gather(buf.to(trainer.strategy.root_device)).cpu()  # [world, per_rank, 32, F]
        return assemble({c: allbuf[c % world, c // world] for c in range(len(chunk_sizes(self.num_samples, SEED_CHUNK)))},
                        self.num_samples).float()
