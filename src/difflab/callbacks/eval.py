"""`EvalCallback`: sample with the EMA weights every N epochs and log sample-quality metrics.

DDP, done the EDM way (PITFALLS.md):
- the `num_samples` samples are cut into fixed-size chunks; chunk c is drawn from its own
  generator seeded with (seed, c), and chunk c is produced by rank c mod world_size, so 1
  and N processes generate the *same* samples, each exactly once (no DistributedSampler
  padding duplicates);
- every rank computes its chunks' features, then all ranks take part in the same gathers
  (a success flag first, then the padded features), reassemble the chunks in order and
  compute the metrics identically; only logging is rank-zero (`log(rank_zero_only=True)`),
  no collective ever sits inside rank-zero-only code;
- anything that goes wrong is turned into a warning: evaluation never stops training.

Metric state stays out of checkpoints: the feature network and reference statistics are
plain attributes of this callback (not of the LightningModule) and `state_dict()` holds
only a counter. Features are computed with autocast off and accumulated in float64.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

SAMPLE_METRICS = ("swd", "mmd")
FEATURE_METRICS = ("fid", "kid", "is")


def chunk_sizes(num_samples: int, chunk_size: int) -> list[int]:
    """Sizes of the fixed chunks that make up num_samples (the last may be smaller)."""
    full, rest = divmod(num_samples, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def chunk_generator(seed: int, chunk: int, device=None) -> torch.Generator:
    """The generator of chunk `chunk`: depends on (seed, chunk) only, never on the rank.
    It lives on the sampling device (CUDA and CPU streams differ, ranks on one device type agree)."""
    return torch.Generator(device=device or "cpu").manual_seed(int(seed) * 1_000_003 + int(chunk))


def _default_sample_fn(denoiser, process, shape, *, generator, device, sampler, steps, **options):
    from ..samplers import sample

    return sample(denoiser, process, shape, sampler=sampler, steps=steps, generator=generator, device=device, **options)


class EvalCallback(Callback):
    """Every `every_n_epochs` epochs: `num_samples` samples with `pl_module.denoiser(use_ema=True)`
    and `pl_module.process`, metrics among swd, mmd (on the samples) and fid, kid, is (on
    features), logged as `<prefix><metric key>`.

    real_data: a tensor of real samples (or a callable returning one); if None, up to
        `num_reference` examples are taken from the datamodule's val (else train) loader.
    features: "learned" (a small net trained on the real data, cached), "inception"
        (standard weights from `inception_weights` or the torch cache), or an nn.Module with
        `forward` → features (and `logits` for IS).
    sample_fn: `fn(denoiser, process, shape, generator=, device=, sampler=, steps=, **opts)`
        returning samples or an object with `.samples`; default `difflab.samplers.sample`.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 2048,
        chunk_size: int = 256,
        metrics: Sequence[str] = ("fid",),
        sampler: str = "ode_heun",
        steps: int = 50,
        sampler_options: dict | None = None,
        seed: int = 0,
        real_data: Tensor | Callable[[], Tensor] | None = None,
        num_reference: int = 10_000,
        features: str | torch.nn.Module = "learned",
        inception_weights: str | None = None,
        use_ema: bool = True,
        prefix: str = "eval/",
        sample_fn: Callable | None = None,
        num_projections: int = 256,
    ):
        super().__init__()
        unknown = set(metrics) - set(SAMPLE_METRICS + FEATURE_METRICS)
        if unknown:
            raise ValueError(f"EvalCallback: unknown metrics {sorted(unknown)}; choose from {SAMPLE_METRICS + FEATURE_METRICS}")
        if every_n_epochs < 1 or num_samples < 2 or chunk_size < 1:
            raise ValueError("EvalCallback: every_n_epochs >= 1, num_samples >= 2 and chunk_size >= 1 are required, got "
                             f"{every_n_epochs}, {num_samples}, {chunk_size}")
        self.every_n_epochs, self.num_samples, self.chunk_size = int(every_n_epochs), int(num_samples), int(chunk_size)
        self.metrics = tuple(metrics)
        self.sampler, self.steps, self.sampler_options = sampler, int(steps), dict(sampler_options or {})
        self.seed = int(seed)
        self.real_data, self.num_reference = real_data, int(num_reference)
        self.features, self.inception_weights = features, inception_weights
        self.use_ema, self.prefix = use_ema, prefix
        self.sample_fn = sample_fn or _default_sample_fn
        self.num_projections = num_projections
        self.num_evaluations = 0
        self.last_metrics: dict[str, float] = {}
        self._real: Tensor | None = None
        self._net = None
        self._real_features: Tensor | None = None
        if any(m in FEATURE_METRICS for m in self.metrics) and num_samples < 2048:
            warnings.warn(f"EvalCallback: FID/KID from num_samples={num_samples} (< 2048) samples is biased; "
                          "the sample count is part of the metric name", stacklevel=2)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        return {"num_evaluations": self.num_evaluations}  # never metric states or feature nets

    def load_state_dict(self, state_dict: dict) -> None:
        self.num_evaluations = int(state_dict.get("num_evaluations", 0))

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        metrics = self.evaluate(trainer, pl_module)
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                pl_module.log(self.prefix + k, float(v), rank_zero_only=True, on_epoch=True, on_step=False)

    # ------------------------------------------------------------------ the work
    def evaluate(self, trainer, pl_module) -> dict[str, float]:
        """Sample, gather and score; returns the metrics (the same on every rank), {} on error."""
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        local, err = None, None
        try:
            local = self._local_chunks(trainer, pl_module, rank, world)
        except Exception as e:  # noqa: BLE001 - evaluation must never stop training
            err = e
        ok = self._all_ok(trainer, err is None)
        if not ok:
            rank_zero_warn(f"EvalCallback: evaluation skipped this epoch ({type(err).__name__ if err else 'error on another rank'}: {err})")
            if err is not None and rank != 0:
                warnings.warn(f"EvalCallback (rank {rank}): {type(err).__name__}: {err}")
            return {}
        gathered = {k: self._gather_chunks(trainer, v, rank, world) for k, v in local.items()}
        try:
            out = self._score(gathered)
        except Exception as e:  # noqa: BLE001
            rank_zero_warn(f"EvalCallback: metrics failed this epoch ({type(e).__name__}: {e})")
            return {}
        self.num_evaluations += 1
        self.last_metrics = out
        return out

    def _prepare(self, trainer, device) -> None:
        if self._real is None:
            real = self.real_data() if callable(self.real_data) and not torch.is_tensor(self.real_data) else self.real_data
            if real is None:
                real = _real_from_datamodule(trainer, self.num_reference)
            self._real = real.detach().float().cpu()[: self.num_reference]
        if self._net is None and any(m in FEATURE_METRICS for m in self.metrics):
            from ..metrics.features import InceptionFeatures, extract, train_feature_net

            if isinstance(self.features, torch.nn.Module):
                self._net = self.features
            elif self.features == "learned":
                self._net = train_feature_net(self._real, seed=self.seed)
            elif self.features == "inception":
                self._net = InceptionFeatures(self.inception_weights)
            else:
                raise ValueError(f"features must be 'learned', 'inception' or an nn.Module, got {self.features!r}")
            self._net = self._net.to(device).eval()
            self._real_features = extract(self._net, self._real)

    def _local_chunks(self, trainer, pl_module, rank: int, world: int) -> dict[str, list[tuple[int, Tensor]]]:
        device = pl_module.device
        self._prepare(trainer, device)
        denoiser = pl_module.denoiser(use_ema=self.use_ema) if self.use_ema else pl_module.denoiser(use_ema=False)
        process = pl_module.process
        shape = tuple(self._real.shape[1:])
        need_feat = any(m in FEATURE_METRICS for m in self.metrics)
        out: dict[str, list] = {"samples": [], "features": [], "logits": []}
        was_training = pl_module.training
        pl_module.eval()
        try:
            for c, n in enumerate(chunk_sizes(self.num_samples, self.chunk_size)):
                if c % world != rank:
                    continue
                res = self.sample_fn(denoiser, process, (n, *shape), generator=chunk_generator(self.seed, c, device),
                                     device=device, sampler=self.sampler, steps=self.steps, **self.sampler_options)
                x = getattr(res, "samples", res).detach().float()
                if not bool(torch.isfinite(x).all()):
                    raise FloatingPointError(f"non-finite samples in chunk {c}")
                out["samples"].append((c, x.flatten(1).cpu()))
                if need_feat:
                    from ..metrics.features import extract

                    out["features"].append((c, extract(self._net, x)))
                    if "is" in self.metrics:
                        out["logits"].append((c, extract(self._net, x, logits=True)))
        finally:
            pl_module.train(was_training)
        keys = ["samples"] + (["features"] if need_feat else []) + (["logits"] if "is" in self.metrics else [])
        return {k: out[k] for k in keys}

    @staticmethod
    def _all_ok(trainer, ok: bool) -> bool:
        if trainer is None or trainer.world_size == 1:
            return ok
        flags = trainer.strategy.all_gather(torch.tensor([1.0 if ok else 0.0], device=trainer.strategy.root_device))
        return bool(flags.min() > 0)

    def _gather_chunks(self, trainer, chunks: list[tuple[int, Tensor]], rank: int, world: int) -> Tensor:
        """Reassemble every chunk, in chunk order, on every rank (each sample exactly once)."""
        sizes = chunk_sizes(self.num_samples, self.chunk_size)
        if trainer is None or world == 1:
            return torch.cat([t for _, t in sorted(chunks, key=lambda p: p[0])])
        per_rank = math.ceil(len(sizes) / world)
        width = chunks[0][1].shape[1] if chunks else None
        # every rank needs the width even with no chunk of its own: gather it first
        w = trainer.strategy.all_gather(torch.tensor([width or 0], device=trainer.strategy.root_device)).max()
        width = int(w)
        buf = torch.zeros(per_rank, self.chunk_size, width, dtype=torch.float64)
        for i, (_, t) in enumerate(chunks):
            buf[i, : t.shape[0]] = t.to(torch.float64)
        dev = trainer.strategy.root_device
        allbuf = trainer.strategy.all_gather(buf.to(dev)).cpu()  # [world, per_rank, chunk, F]
        parts = [allbuf[c % world, c // world, :n] for c, n in enumerate(sizes)]
        return torch.cat(parts)

    def _score(self, gathered: dict[str, Tensor]) -> dict[str, float]:
        out: dict[str, float] = {}
        samples = gathered["samples"]
        real = self._real.flatten(1).to(torch.float64)
        g = torch.Generator().manual_seed(self.seed)
        if "swd" in self.metrics:
            from ..metrics.distances import sliced_wasserstein

            out["swd"] = float(sliced_wasserstein(samples, real, self.num_projections, g))
        if "mmd" in self.metrics:
            from ..metrics.distances import mmd

            out["mmd"] = float(mmd(samples, real))
        feat_metrics = tuple(m for m in self.metrics if m in FEATURE_METRICS)
        if feat_metrics:
            from ..metrics.quality import sample_quality

            name = self.features if isinstance(self.features, str) else getattr(self._net, "name", "custom")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the small-sample warning was given once at construction
                out.update(sample_quality(self._real_features, gathered["features"], feat_metrics, features=name,
                                          fake_logits=gathered.get("logits")))
        out["num_samples"] = float(samples.shape[0])
        return out


def _real_from_datamodule(trainer, n: int) -> Tensor:
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is None:
        raise ValueError("EvalCallback needs real data: pass real_data=... or train with a datamodule")
    if hasattr(dm, "train_tensor"):  # difflab's data modules: the first n training examples
        return dm.train_tensor(n)
    loader = None
    for name in ("val_dataloader", "train_dataloader"):
        try:
            loader = getattr(dm, name)()
        except Exception:  # noqa: BLE001 - not every datamodule has both
            loader = None
        if loader:
            break
    if not loader:
        raise ValueError("EvalCallback: the datamodule has no val/train dataloader to take real samples from")
    xs, total = [], 0
    for batch in loader:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch["x"] if isinstance(batch, dict) else batch
        xs.append(x.detach().cpu())
        total += x.shape[0]
        if total >= n:
            break
    return torch.cat(xs)[:n]
