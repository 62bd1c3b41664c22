"""difflab-report on synthetic multirun directories: the table says exactly what the jobs wrote."""
import csv
import json

import numpy as np
import pytest
import torch

from difflab.cli.report import main as report_main
from difflab.studies.jobs import load_study
from difflab.studies.overrides import split_overrides
from helpers.reports import table_rows


def fake_job(root, name, metrics=None, losses=None, overrides=None, config=None):
    job = root / name
    job.mkdir(parents=True)
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if losses is not None:  # Lightning CSVLogger layout: one row per logging call
        (job / "logs").mkdir()
        with open(job / "logs" / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", "train/loss", "val/loss", "val/loss_ema"])
            for step, loss in losses:
                w.writerow([0, step, loss, "", ""])
            w.writerow([0, losses[-1][0], "", loss + 0.1, loss + 0.05])
    if overrides is not None:
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if config is not None:
        (job / "config.yaml").write_text(json.dumps(config))
    return job


def test_schedule_by_weighting_table_and_plots(tmp_path, capsys):
    rng = np.random.default_rng(0)
    truth = {}
    for s in ("linear", "cosine"):
        for w in ("elbo", "simple"):
            nll, se, swd = rng.uniform(1, 2), rng.uniform(0.001, 0.01), rng.uniform(0, 0.1)
            truth[(s, w)] = (nll, se, swd)
            fake_job(tmp_path, f"experiment=gmm,schedule={s},weighting={w}",
                     metrics={"nll_elbo": nll, "nll_elbo_se": se, "nll_elbo_seconds": 3.0, "swd": swd, "nfe": 100,
                              "data_shape": [2]},
                     losses=[(49, 1.0 + nll), (99, nll)])
    report_main([str(tmp_path)])
    report = tmp_path / "report.md"
    assert capsys.readouterr().out.strip() == str(report)
    text = report.read_text()
    assert "`experiment=gmm`" in text  # a setting shared by every job is stated once, not a column
    rows = table_rows(report)
    assert len(rows) == 4 and set(rows[0]) >= {"schedule", "weighting", "nll_elbo", "swd", "nfe"}
    assert "experiment" not in rows[0] and "nll_elbo_se" not in rows[0] and "nll_elbo_seconds" not in rows[0]
    for r in rows:
        nll, se, swd = truth[(r["schedule"], r["weighting"])]
        assert r["nll_elbo"] == f"{nll:.4g} ± {se:.2g}"
        assert r["swd"] == f"{swd:.4g}" and r["nfe"] == "100"
        assert float(r["val/loss (last)"]) == pytest.approx(nll + 0.1, rel=1e-3)
    for png in ("nll_elbo_vs_weighting.png", "swd_vs_weighting.png", "loss_curves.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f"]({png})" in text


def test_sampler_by_nfe_plot_from_hydra_overrides(tmp_path):
    for i, (sampler, steps) in enumerate([(s, n) for s in ("ddim", "ode_heun") for n in (10, 20)]):
        nfe = steps * (2 if sampler == "ode_heun" else 1)
        fake_job(tmp_path, str(i), metrics={"swd": 1.0 / nfe, "nfe": nfe},
                 overrides=["model=oracle", f"sampler={sampler}", f"sampler.steps={steps}"])
    report_main([str(tmp_path), "--out", str(tmp_path / "out")])
    rows = table_rows(tmp_path / "out" / "report.md")
    assert [(r["sampler"], r["sampler.steps"], r["nfe"]) for r in rows] == [
        ("ddim", "10", "10"), ("ddim", "20", "20"), ("ode_heun", "10", "20"), ("ode_heun", "20", "40")]
    assert (tmp_path / "out" / "swd_vs_nfe.png").stat().st_size > 1000


def test_numbered_job_dirs_fall_back_to_what_differs_in_config(tmp_path):
    for i, lr in enumerate((1e-3, 1e-4)):
        fake_job(tmp_path, str(i), metrics={"swd": lr}, config={"optim": {"lr": lr}, "seed": 0})
    jobs, swept, fixed = load_study(tmp_path)
    assert swept == ["optim.lr"] and fixed == {"seed": "0"}


def test_override_names_split_at_top_level_commas_only():
    assert split_overrides("data.means=[[0,0],[3,1]],schedule=cosine") == {"data.means": "[[0,0],[3,1]]", "schedule": "cosine"}
    assert split_overrides("7") == {}


def test_empty_directory_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        report_main([str(tmp_path)])
    assert e.value.code == 2 and "no jobs under" in capsys.readouterr().err


def test_image_grid_is_upscaled_to_readable_size(tmp_path):
    """8×8 images are enlarged 8× by pixel repetition: each source pixel is an 8×8 block."""
    from PIL import Image

    from difflab.plotting import save_image_grid

    x = -torch.ones(4, 1, 8, 8)
    x[0, 0, 0, 0] = 1.0  # one white pixel in the first image's corner
    path = save_image_grid(x, tmp_path / "grid.png", nrow=2)
    img = np.asarray(Image.open(path).convert("L"))
    pad = 4
    assert img.shape == (2 * 64 + 3 * pad, 2 * 64 + 3 * pad)
    block = img[pad:pad + 8, pad:pad + 8]
    assert (block == 255).all() and (img[pad + 8:pad + 64, pad + 8:pad + 64] == 0).all()


def test_shared_overrides_come_from_multirun_yaml(tmp_path):
    """Job directories name only the swept overrides; the ones every job shares are read from
    Hydra's record of the sweep (multirun.yaml) and stated once."""
    for s in ("linear", "cosine"):
        fake_job(tmp_path, f"schedule={s}", metrics={"swd": 0.5})
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - experiment=gmm\n    - schedule=linear,cosine\n    - data.means=[[0,0],[3,1]]\n"
        f"    - output={tmp_path}\n")
    jobs, swept, fixed = load_study(tmp_path)
    assert swept == ["schedule"] and fixed == {"experiment": "gmm", "data.means": "[[0,0],[3,1]]"}


def test_two_key_sweep_gets_a_grid_per_metric_and_list_metrics_one_column_each(tmp_path):
    """A sampler × steps sweep: the grid puts each job's number (± its SE) in its own cell,
    steps in numeric order (5 before 10), and the `weights` list becomes weights[0], weights[1]."""
    root = tmp_path / "sweep"
    values = {}
    for sampler in ("ddim", "heun"):
        for steps in (5, 10, 50):
            v = round(0.1 * steps + (1.0 if sampler == "heun" else 0.0), 3)
            values[sampler, steps] = v
            fake_job(root, f"sampler={sampler},sampler.steps={steps}",
                     metrics={"swd": v, "weights": [0.25, 0.75], "weights_se": [0.01, 0.02], "nfe": steps, "nll": 1.5, "nll_se": 0.01})
    report_main([str(root)])
    text = (root / "report.md").read_text()
    grid = text[text.index("**swd**"):].split("\n\n")[1].splitlines()
    assert grid[0] == "| sampler.steps \\ sampler | ddim | heun |"  # rows: the key with more values
    assert [ln.split(" | ")[0] for ln in grid[2:]] == ["| 5", "| 10", "| 50"]
    for line, steps in zip(grid[2:], (5, 10, 50)):
        assert line == f"| {steps} | {values['ddim', steps]:.4g} | {values['heun', steps]:.4g} |"
    assert "weights[1]" in text and "0.75 ± 0.02" in text
    assert "The same in every job: nll = 1.5 ± 0.01" in text and "**nll**" not in text  # a reference, not a grid


@pytest.mark.parametrize("numbered", [False, True])
def test_rows_follow_the_swept_values_in_numeric_order(tmp_path, numbered):
    """Job directories sort as text (steps=10 < steps=20 < steps=5; job 10 < job 2), the
    table does not: rows go by the swept values, numbers numerically, the rest alphabetically."""
    jobs = [(s, n) for s in ("ode_heun", "ddim") for n in (5, 20, 10)]
    for i, (sampler, steps) in enumerate(jobs * 2 if numbered else jobs):
        seed = i // len(jobs) if numbered else 0
        name = str(i) if numbered else f"sampler={sampler},sampler.steps={steps}"
        fake_job(tmp_path, name, metrics={"swd": 1.0 / steps, "nfe": steps},
                 overrides=[f"sampler={sampler}", f"sampler.steps={steps}"] + ([f"seed={seed}"] if numbered else []))
    report_main([str(tmp_path)])
    rows = table_rows(tmp_path / "report.md")
    expected = [(s, str(n)) for s in ("ddim", "ode_heun") for n in (5, 10, 20)]
    if numbered:
        expected = [(s, n, str(seed)) for s, n in expected for seed in (0, 1)]
    assert [tuple(r[k] for k in ("sampler", "sampler.steps", "seed")[:len(expected[0])]) for r in rows] == expected


def test_nfe_plot_series_and_the_floor_line(tmp_path):
    """Metric vs NFE: one series per sampler (and other swept setting); a sweep of the step count
    alone is one series, not one per job; the real-vs-real floor (mean of `<metric>_floor`
    over the jobs) is drawn as a line, so a curve reaching it is seen to."""
    from difflab.studies.plots import floor_value, nfe_series

    for steps, swd, floor in ((5, 1.0, 0.2), (20, 0.3, 0.22), (10, 0.5, 0.21)):
        fake_job(tmp_path / "a", f"sampler.steps={steps}", metrics={"swd": swd, "swd_floor": floor, "nfe": 2 * steps})
    jobs, swept, _ = load_study(tmp_path / "a")
    assert swept == ["sampler.steps"]
    series = nfe_series(jobs, swept, "swd")
    assert list(series.values()) == [[(10, 1.0, 0.0), (20, 0.5, 0.0), (40, 0.3, 0.0)]]
    assert floor_value(jobs, "swd") == pytest.approx(0.21) and floor_value(jobs, "nfe") is None
    report_main([str(tmp_path / "a")])
    assert (tmp_path / "a" / "swd_vs_nfe.png").stat().st_size > 1000

    for sampler in ("ddim", "ode_heun"):
        for steps in (10, 5):
            fake_job(tmp_path / "b", f"sampler={sampler},sampler.steps={steps}",
                     metrics={"fid_n2k": 1.0 / steps, "fid_n2k_floor": 0.01, "nfe": steps, "swd": 1.0})
    jobs, swept, _ = load_study(tmp_path / "b")
    series = nfe_series(jobs, swept, "fid_n2k")
    assert series == {"sampler=ddim": [(5, 0.2, 0.0), (10, 0.1, 0.0)], "sampler=ode_heun": [(5, 0.2, 0.0), (10, 0.1, 0.0)]}
    assert floor_value(jobs, "fid_n2k") == pytest.approx(0.01) and floor_value(jobs, "swd") is None


def test_columns_say_whose_number_they_are(tmp_path):
    """The `nll` column is the data's exact NLL (a Gaussian mixture's), easily read as the
    model's. The table marks the data's columns `(data)` (the exact nll, the real-vs-real floors and
    their count) and says under it what they are; the model's columns keep their plain names. A
    floor that is unavailable (null, with `<metric>_floor_unavailable`) is a dash, never a number."""
    for i, w in enumerate(("elbo", "simple")):
        fake_job(tmp_path, f"weighting={w}",
                 metrics={"nll_elbo": 1.2 + i, "nll_elbo_se": 0.01, "nll": 1.1652, "nll_se": 0.0004, "swd": 0.1 + i,
                          "swd_floor": 0.05 if i else None, "num_real_floor": 2048,
                          **({} if i else {"swd_floor_unavailable": "only 197 held-out examples for 2048 samples"})})
    report_main([str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    rows = table_rows(tmp_path / "report.md")
    assert set(rows[0]) == {"weighting", "nll (data)", "nll_elbo", "swd", "swd_floor (data)", "num_real_floor (data)"}
    assert [r["swd_floor (data)"] for r in rows] == ["–", "0.05"] and rows[0]["nll (data)"] == "1.165 ± 0.0004"
    note = next(line for line in text.splitlines() if line.startswith("Every column is the model's number except"))
    assert "`nll`: the data's exact NLL" in note and "`swd_floor`: real-vs-real floor" in note
    assert "nll_elbo`" not in note and "`swd`" not in note


def test_report_plots_import_no_private_name_of_report():
    """report ↔ report_plots was once an import cycle (report_plots took report's private
    `_label` / `_slug`); studies.table and studies.plots both import the leaf module studies.common,
    and studies.plots never studies.table."""
    import ast
    from pathlib import Path

    import difflab.studies.common as common
    import difflab.studies.plots as plots

    imported = [n for n in ast.walk(ast.parse(Path(plots.__file__).read_text())) if isinstance(n, ast.ImportFrom)]
    assert all(n.module not in ("table", "jobs") for n in imported)
    assert not [a.name for n in imported for a in n.names if a.name.startswith("_")]
    leaf = [n for n in ast.walk(ast.parse(Path(common.__file__).read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in leaf if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("difflab"))]
    assert common.slug("val/loss (last)") == "val_loss_last" and common.header("nll") == "nll (data)"
