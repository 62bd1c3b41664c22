"""The evaluation library: one seeding rule, one way to fetch real data, one set of metrics.

Every entry point goes through it — `difflab-sample` (draw), `difflab-eval` (evaluate),
`EvalCallback` (draw its rank's chunks, gather, score) and a training job's `eval_at_end` — so the
same `seed` gives the same samples and the same numbers everywhere.

- `seeding`: sample i depends only on (seed, i) — 32-sample chunks, each with its own generator.
- `sampling`: `SamplerChoice` (a `sampler` config node: registry name or `_target_` function),
  `draw_samples` / `draw_chunks` over chunks, ranks and batches, with optional bf16 autocast.
- `target`: `EvalTarget` (denoiser, process, data shape, real data) from a checkpoint, an exact
  model (GMM oracle) or a training module; `real_examples` from any data module.
- `metrics`: likelihoods (nll/bpd by ODE and ELBO, with standard errors) and sample quality
  (swd, mmd, FID/KID/IS by protocol name, mixture weights).
- `run`: `evaluate(target, metrics, ...)` → metrics dict (+ the samples it scored).
- `build`: what a command runs on: `resolve_device`, `set_threads`, `build_target` (the
  `EvalTarget` of a config: a checkpoint or an exact model), `build_oracle`.
"""
from .build import build, build_oracle, build_target, resolve_device, set_threads
from .metrics import (
    DISTANCE_METRICS,
    FEATURE_METRICS,
    LIKELIHOOD_METRICS,
    METRICS,
    MIXTURE_METRICS,
    SAMPLE_METRICS,
    CLASSIFIER_METRICS,
    REFERENCE_SPLITS,
    check_metrics,
    data_classifier,
    discover_metrics,
    feature_metrics,
    feature_network,
    features_name,
    likelihood_metrics,
    mixture_weights,
    register_metric,
    score_samples,
)
from .run import evaluate, generate, options, sample_metrics
from .sampling import PRECISIONS, SamplerChoice, assemble, draw_chunks, draw_samples
from .seeding import SEED_CHUNK, chunk_generator, chunk_sizes, num_chunks, rank_chunks
from .target import EvalTarget, from_checkpoint, from_exact_model, from_module, held_out_examples, mixture_of, real_examples

__all__ = [
    "SEED_CHUNK", "chunk_generator", "chunk_sizes", "num_chunks", "rank_chunks",
    "SamplerChoice", "PRECISIONS", "draw_samples", "draw_chunks", "assemble",
    "EvalTarget", "from_checkpoint", "from_exact_model", "from_module", "mixture_of", "real_examples", "held_out_examples",
    "METRICS", "LIKELIHOOD_METRICS", "SAMPLE_METRICS", "DISTANCE_METRICS", "FEATURE_METRICS", "MIXTURE_METRICS",
    "check_metrics", "mixture_weights", "register_metric", "discover_metrics",
    "feature_network", "features_name", "feature_metrics", "score_samples", "likelihood_metrics",
    "build", "build_oracle", "build_target", "resolve_device", "set_threads",
    "evaluate", "generate", "options", "sample_metrics", "CLASSIFIER_METRICS", "REFERENCE_SPLITS", "data_classifier",
]
