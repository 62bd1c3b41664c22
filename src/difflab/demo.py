"""The demo's work (`make demo` = `python -m difflab.cli.demo output=runs/demo`, whose console
script composes the configs and calls `demo`): train the `digits` recipe on
the CPU, evaluate its EMA weights with difflab-eval, write `<output>/report.md` with a sample grid,
a loss curve and `metrics.json`.

Any other `key=value` is passed to difflab-train (e.g. `trainer.max_steps=500`).
The numbers, all computed here against scikit-learn's real digits:
  - swd / fid_learned_n1000 and their real-vs-real floors: difflab-eval's own numbers, from its
    own code (`difflab.scoring.run`) with the settings in `eval_overrides` (DDIM-50, 1000
    samples of seed `seed`, reference_split=val: the 197 validation digits are the reference, and
    the floors score 1000 training digits against them). `<output>/eval/` holds difflab-eval's
    metrics.json and samples; the report gives the difflab-eval command that reproduces them;
  - classifier_confident: the fraction of those samples that a digits classifier trained on the
    real digits (scikit-learn's MLPClassifier) labels with probability >= 0.9
    (the same classifier on held-out real digits is given as `real_confident` for scale);
  - classes_covered / class_histogram: how many of the 10 digits the samples cover;
  - memorisation: the median distance from each sample to its nearest training digit over the
    same median for the validation digits the model never saw (~1: as novel as fresh digits;
    near 0: the model copies its training set).
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path

import numpy as np
import torch

from .config_check import UsageError, one_line
from .progress import Progress
from .utils import provenance, save_npz, write_json

PROG = "difflab-demo"
CONFIDENCE = 0.9


def digits_classifier(x: torch.Tensor, y: torch.Tensor):
    """A one-hidden-layer MLP classifier (scikit-learn) on flattened digits in [-1, 1]."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=1000, random_state=0).fit(
        x.reshape(len(x), -1).numpy(), y.numpy())


def demo_classifier():
    """The demo's classifier, fitted on all real digits but a fixed held-out 300 → (clf, digits [N, 1, 8, 8],
    held-out indices, fitting indices). `classifier_scores(clf, samples)["confident"]` is the demo's
    classifier_confident metric."""
    from .data import load_digits_tensor

    x, y = load_digits_tensor(return_labels=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    held, fit = perm[:300], perm[300:]
    return digits_classifier(x[fit], y[fit]), x, held, fit


def classifier_scores(clf, samples: torch.Tensor, threshold: float = CONFIDENCE) -> dict:
    p = clf.predict_proba(samples.reshape(len(samples), -1).clamp(-1, 1).numpy())
    labels = p.argmax(1)
    hist = np.bincount(labels, minlength=10)
    return {"confident": float((p.max(1) >= threshold).mean()), "classes_covered": int((hist > 0).sum()),
            "class_histogram": hist.tolist()}


def nearest_neighbour_ratio(samples: torch.Tensor, train: torch.Tensor, unseen: torch.Tensor) -> float:
    """median_i min_j ‖s_i − x_j‖ over median_k min_j ‖u_k − x_j‖ (x: training set, u: unseen real)."""
    train = train.reshape(len(train), -1).double()

    def nn(a):
        return torch.cdist(a.reshape(len(a), -1).double(), train).min(1).values.median()

    return float(nn(samples) / nn(unseen))


def save_grid(x: torch.Tensor, path: Path, nrow: int = 10) -> None:
    """Images [N, 1, H, W] in [-1, 1] as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x[: nrow * nrow].clamp(-1, 1).reshape(-1, *x.shape[-2:]).numpy()
    rows = (len(x) + nrow - 1) // nrow
    fig, axes = plt.subplots(rows, nrow, figsize=(nrow * 0.6, rows * 0.6))
    for ax, img in zip(np.ravel(axes), list(x) + [None] * (rows * nrow - len(x))):
        ax.axis("off")
        if img is not None:
            ax.imshow((img + 1) / 2, cmap="gray_r", vmin=0, vmax=1)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0, right=1, top=1, bottom=0)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_loss_curve(metrics_csv: Path, path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss, vsteps, vloss = [], [], [], []
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                steps.append(int(row["step"]))
                loss.append(float(row["train/loss"]))
            if row.get("val/loss_ema"):
                vsteps.append(int(row["step"]))
                vloss.append(float(row["val/loss_ema"]))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, loss, lw=0.8, label="train loss")
    if vsteps:
        ax.plot(vsteps, vloss, "o-", label="val loss (EMA weights)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: what the demo asks difflab-eval for: the sample metrics with a real-vs-real floor
EVAL_METRICS = ("swd", "fid")


def eval_overrides(ckpt: Path, seed: int, num_samples: int, sampler: str, steps: int) -> list[str]:
    """difflab-eval's options for the demo's SWD and FID: its sampler, sample count and seed, and
    reference_split=val (the validation digits as reference, so the floors score as many training
    digits as there are samples; difflab-eval's default, reference_split=train, has only the 197
    validation digits for the floors and reports them unavailable at 2048 samples)."""
    return [f"ckpt_path={ckpt}", f"metrics=[{','.join(EVAL_METRICS)}]", f"sampler={sampler}", f"sampler.steps={steps}",
            f"num_samples={num_samples}", "reference_split=val", f"seed={seed}"]


def _cell(metrics: dict, key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None:
        return f"unavailable ({metrics.get(key + '_unavailable', 'not computed')})"
    return format(value, fmt)


def demo(out: Path, overrides: list[str], compose, num_samples: int = 1000, sampler: str = "ddim", steps: int = 50) -> dict:
    """Train, sample, score and report (see the module docstring); `compose(config_name, overrides)`
    composes difflab's configs (Hydra's compose API: the console script passes it)."""
    from . import scoring
    from .training import train

    if (out / "report.md").exists():
        raise UsageError(f"output={out} already holds a demo report; remove it or choose another output=...")
    ckpt = out / "checkpoints" / "last.ckpt"
    try:
        cfg = compose("train", ["experiment=digits", f"output={out}", *overrides])
        eval_args = eval_overrides(ckpt, int(cfg.seed), num_samples, sampler, steps)
        eval_cfg = compose("eval", [*eval_args, f"output={out / 'eval'}"])
    except Exception as e:  # unknown option / misspelled key
        raise UsageError(one_line(str(e))) from None
    t0 = time.time()
    module, trainer, dm = train(cfg, out)
    train_s = time.time() - t0

    # difflab-eval itself on the final checkpoint: `difflab-eval <eval_args>` gives these very numbers
    # (and, by the seeding rule, `difflab-sample ckpt_path=... sampler=<sampler> sampler.steps=<steps>
    # seed=<seed>` these very samples)
    t1 = time.time()
    scored = scoring.run(eval_cfg, out / "eval")
    sample_s = time.time() - t1
    with np.load(out / "eval" / "samples.npz") as f:
        drawn, nfe = torch.from_numpy(f["samples"]), int(f["nfe"])
    samples = drawn.float().clamp(-1, 1).reshape(num_samples, 1, 8, 8)

    with Progress("classifier scores (an MLP fitted on real digits)"):
        clf, x, held, fit = demo_classifier()
        scores = classifier_scores(clf, samples)
        real = classifier_scores(clf, x[held])
        memorisation = nearest_neighbour_ratio(samples, *dm.split())
    fid_key = next(k for k in scored if k.startswith("fid_") and not k.endswith(("_floor", "_unavailable")))
    metrics = {
        "classifier_confident": scores["confident"], "classes_covered": scores["classes_covered"],
        "class_histogram": scores["class_histogram"], "real_confident": real["confident"],
        "confidence_threshold": CONFIDENCE,
        **{k: v for k, v in scored.items() if k.startswith(("swd", "fid_", "num_real_floor", "reference_split"))},
        "memorisation": memorisation,
        "num_samples": num_samples, "sampler": sampler, "nfe": nfe, "steps_trained": int(trainer.global_step),
        "train_seconds": round(train_s, 1), "sample_seconds": round(sample_s, 1),
        "eval_command": shlex.join(["difflab-eval", *eval_args]),  # shell-ready: metrics=[...] quoted
    }
    metrics["provenance"] = provenance(cfg, ckpt, output=str(out))
    with Progress("writing the report (sample grids, loss curve)"):
        write_json(out / "metrics.json", metrics)
        save_npz(out / "samples.npz", samples=samples.numpy(), nfe=nfe)
        save_grid(samples, out / "samples.png")
        save_grid(x[held][:100], out / "real.png")
        csv_path = out / "logs" / "metrics.csv"
        if csv_path.exists():
            save_loss_curve(csv_path, out / "loss.png")
        (out / "report.md").write_text(report(cfg, metrics, fid_key, trainer, out))
    return metrics


def report(cfg, metrics: dict, fid_key: str, trainer, out: Path) -> str:
    """The demo's report.md."""
    def name(node) -> str:
        return str(node["_target_"]).rsplit(".", 1)[-1]

    m, floors = metrics, metrics.get("num_real_floor")
    return f"""# difflab demo: diffusion on scikit-learn's 8x8 digits

Recipe `experiment=digits` ({name(cfg.model)}, {name(cfg.process)}
{cfg.schedule.name}, {name(cfg.parameterization)}-prediction, `{cfg.weighting.weighting}` weighting),
{m['steps_trained']} steps in {m['train_seconds']:.0f} s on {trainer.accelerator.__class__.__name__.replace('Accelerator', '')};
{m['num_samples']} samples with `{m['sampler']}` ({m['nfe']} network evaluations) from the EMA weights, scored in {m['sample_seconds']:.0f} s.

| | samples | real digits |
|---|---|---|
| labelled with probability >= {CONFIDENCE} by an MLP classifier trained on real digits | {m['classifier_confident']:.1%} | {m['real_confident']:.1%} |
| digit classes covered | {m['classes_covered']} / 10 | 10 / 10 |
| sliced Wasserstein distance to the validation digits (`swd`; real: the floor, `swd_floor`) | {_cell(m, 'swd', '.4f')} | {_cell(m, 'swd_floor', '.4f')} |
| FID in learned features (`{fid_key}`; real: the floor) | {_cell(m, fid_key, '.4g')} | {_cell(m, fid_key + '_floor', '.4g')} |
| distance to the nearest training digit (median, over that of unseen real digits) | {m['memorisation']:.2f} | 1 |

Class histogram of the samples: {m['class_histogram']}

SWD and FID are difflab-eval's (`eval/metrics.json`): the reference is the validation digits the
model never saw, and the real-vs-real floor scores {floors} training digits against it under the same
protocol (what a perfect model would score). This command gives the same numbers:

    {m['eval_command']}

difflab-eval's defaults score another protocol (`sampler=ode_heun`, `num_samples=2048`,
`reference_split=train`: the training digits as reference), so give these settings to compare.

| samples (EMA) | real |
|---|---|
| ![samples](samples.png) | ![real](real.png) |

![loss curve](loss.png)

Files: `metrics.json`, `samples.npz`, `eval/` (difflab-eval's metrics.json and samples),
`checkpoints/last.ckpt` (sample more with `difflab-sample ckpt_path={out}/checkpoints/last.ckpt`),
`config.yaml`, `logs/metrics.csv`.
"""
