"""The plots of a study report (`studies.table.write_study`): metric vs NFE and metric vs weighting,
one series per swept setting with the real-vs-real floor dashed, and the loss curves."""
from __future__ import annotations

from pathlib import Path

from .common import Job, plotted, slug, varies
from .common import label as job_label


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def nfe_series(jobs: list[Job], swept: list[str], metric: str) -> dict[str, list[tuple]]:
    """{label: [(nfe, value, se), ...] in NFE order}: one series per sampler and per other swept
    setting; one series (labelled by the metric) when only the step count is swept."""
    others = [k for k in swept if k not in ("sampler", "sampler.steps", "steps")]
    keys = (["sampler"] if "sampler" in swept else []) + others
    series: dict[str, list[tuple]] = {}
    for j in jobs:
        if j.value("nfe") is not None and j.value(metric) is not None:
            label = job_label(j, keys) if keys else metric
            series.setdefault(label, []).append((j.value("nfe"), j.value(metric), j.se(metric) or 0.0))
    return {label: sorted(pts) for label, pts in sorted(series.items())}


def floor_value(jobs: list[Job], metric: str) -> float | None:
    """The real-vs-real floor of `metric` (`<metric>_floor`: what a perfect model scores under the
    same protocol, docs/evaluation.md), averaged over the jobs that report one; None if none do."""
    values = [j.value(metric + "_floor") for j in jobs if j.value(metric + "_floor") is not None]
    return sum(values) / len(values) if values else None


def _draw_floor(ax, jobs: list[Job], metric: str) -> bool:
    floor = floor_value(jobs, metric)
    if floor is not None:
        ax.axhline(floor, ls="--", color="0.5", lw=1, label="real-vs-real floor")
    return floor is not None


def plot_vs_nfe(jobs, swept, metrics, out: Path) -> list[Path]:
    """Metric vs NFE, one line per sampler (and per other swept setting), the floor dashed."""
    rows = [j for j in jobs if j.value("nfe") is not None]
    if len({j.value("nfe") for j in rows}) < 2:
        return []
    paths = []
    for m in [m for m in plotted(metrics) if m != "nfe" and any(j.value(m) is not None for j in rows)]:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        series = nfe_series(rows, swept, m)
        for label, pts in series.items():
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=2, label=label)
        ax.set(xscale="log", xlabel="NFE", ylabel=m, title=f"{m} vs NFE")
        if _draw_floor(ax, rows, m) or len(series) > 1:
            ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"{slug(m)}_vs_nfe.png"))
    return paths


def plot_vs_weighting(jobs, swept, metrics, out: Path) -> list[Path]:
    """Metric vs weighting, one series per schedule (and per other swept setting), ± SE."""
    if "weighting" not in swept:
        return []
    weightings = sorted({j.overrides.get("weighting") for j in jobs if "weighting" in j.overrides})
    groups = [k for k in swept if k != "weighting"]
    groups.sort(key=lambda k: k != "schedule")
    paths = []
    for m in [m for m in plotted(metrics) if m != "nfe" and varies(jobs, m)]:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 4))
        label_of = (lambda j: job_label(j, groups)) if groups else (lambda j: m)  # no other key: one series, not one per job
        labels = sorted({label_of(j) for j in jobs})
        for i, label in enumerate(labels):
            sel = [j for j in jobs if label_of(j) == label and j.value(m) is not None and "weighting" in j.overrides]
            x = [weightings.index(j.overrides["weighting"]) + (i - (len(labels) - 1) / 2) * 0.08 for j in sel]
            ax.errorbar(x, [j.value(m) for j in sel], yerr=[j.se(m) or 0.0 for j in sel], marker="o", ls="none",
                        capsize=3, label=label if groups else None)
        ax.set_xticks(range(len(weightings)), weightings)
        ax.set(xlabel="weighting", ylabel=m, title=f"{m} vs weighting" + (" by " + groups[0] if groups else ""))
        if _draw_floor(ax, jobs, m) or groups:
            ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"{slug(m)}_vs_weighting.png"))
    return paths


def plot_losses(jobs, swept, out: Path) -> list[Path]:
    """Every job's loss curves overlaid (train solid, validation dashed)."""
    if not any(j.curves for j in jobs):
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, j in enumerate(jobs):
        for k, pts in sorted(j.curves.items()):
            if pts and (k.startswith("train/") or k.endswith("_ema")):
                x, y = zip(*pts)
                ax.plot(x, y, ls="-" if k.startswith("train/") else "--", marker="." if len(pts) < 3 else None, lw=1,
                        color=f"C{i % 10}", label=f"{job_label(j, swept)} {k}")
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="loss curves")
    ax.legend(fontsize=6)
    return [_save(fig, out / "loss_curves.png")]


def plot_eval_curves(jobs, swept, out: Path) -> list[Path]:
    """The EvalCallback's metrics against the training step (`eval/<metric>` columns of the CSV log),
    one panel per metric, every job a line; ± its standard error where the callback logged one."""
    names = sorted({k for j in jobs for k in j.curves if k.startswith("eval/") and k != "eval/seconds"
                    and not k.endswith(("_se", "_floor", "_floor_std")) and "num_" not in k})
    if not names:
        return []
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, j in enumerate(jobs):
            pts = j.curves.get(name)
            if not pts:
                continue
            x, y = zip(*pts)
            se = dict(j.curves.get(name + "_se", []))
            ax.errorbar(x, y, yerr=[se.get(s, 0.0) for s in x] if se else None, marker="o", ms=3, lw=1, capsize=2,
                        color=f"C{i % 10}", label=job_label(j, swept))
            floor = j.curves.get(name + "_floor")
            if floor:  # the real-vs-real floor under the same protocol, dashed
                fx, fy = zip(*floor)
                ax.plot(fx, fy, ls="--", lw=1, color=f"C{i % 10}", label=f"{job_label(j, swept)} floor (data)")
        ax.set(xlabel="step", title=name[len("eval/"):])
        if len(jobs) > 1:
            ax.legend(fontsize=6)
    fig.suptitle("evaluations during training (EvalCallback)", fontsize=9)
    return [_save(fig, out / "eval_curves.png")]
