"""The README's main command (`make demo` = `python -m difflab.cli.demo`) end to end on CPU:
the `digits` recipe trains, samples, evaluates and writes its report, and the samples are
digits: a classifier trained here on scikit-learn's real digits (independent of the one the
demo reports with) labels ≥ 80% of them with probability ≥ 0.9 and finds all 10 classes.

Controls keep the check honest: the same classifier must be confident on held-out real digits
and must not be on real digits with their pixels shuffled (same marginals, no digit)."""
import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.cli import demo


def real_digits():
    from difflab.data import load_digits_tensor

    x, y = load_digits_tensor(return_labels=True)
    return x.reshape(len(x), -1).numpy(), y.numpy()


def fit_classifier(x, y):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=2000, random_state=1).fit(x, y)


def confident(clf, x, threshold=0.9):
    p = clf.predict_proba(np.clip(x, -1, 1))
    return float((p.max(1) >= threshold).mean()), int(len(np.unique(p.argmax(1))))


@pytest.fixture(scope="session")
def digits_demo(tmp_path_factory):
    """`difflab-demo` run once per session (~4-8 min on 2 CPU cores) → (its output directory, what it printed);
    the demo test and the tuned-grid test both use it."""
    out = tmp_path_factory.mktemp("digits") / "demo"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(sys, "argv", ["difflab-demo", f"output={out}", "logger=csv"])
        demo.main()
    return out, printed.getvalue()


@pytest.mark.slow
def test_demo_trains_digits_that_a_classifier_recognises(digits_demo):
    out, printed = digits_demo
    assert "of samples classified confidently" in printed
    for name in ("report.md", "samples.png", "real.png", "loss.png", "metrics.json", "samples.npz", "config.yaml",
                 "checkpoints/last.ckpt"):
        assert (out / name).is_file(), f"demo did not write {name}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_trained"] > 0 and metrics["classes_covered"] == 10

    samples = np.load(out / "samples.npz")["samples"].reshape(-1, 64)
    assert samples.shape[0] >= 500 and np.isfinite(samples).all()

    x, y = real_digits()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    held, fit = perm[:400], perm[400:]
    clf = fit_classifier(x[fit], y[fit])
    assert (clf.predict(x[held]) == y[held]).mean() > 0.95  # a real digits classifier
    real_conf, _ = confident(clf, x[held])
    shuffled = np.array([rng.permutation(row) for row in x[held]])
    shuffled_conf, _ = confident(clf, shuffled)
    assert real_conf >= 0.85 and shuffled_conf < 0.5, (real_conf, shuffled_conf)

    sample_conf, classes = confident(clf, samples)
    assert classes == 10, f"samples cover {classes} of 10 digit classes"
    assert sample_conf >= 0.8, (f"{sample_conf:.1%} of samples labelled with p >= 0.9 (real digits: {real_conf:.1%}, "
                                f"shuffled: {shuffled_conf:.1%})")


def test_demo_refuses_bad_input_and_keeps_a_finished_report(tmp_path, monkeypatch, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "report.md").write_text("earlier report")
    for argv, expect in ([f"output={out}"], "already holds a demo report"), ([f"output={tmp_path / 'new'}", "trainer.max_stepz=3"], "max_stepz"), \
            (["trainer.max_steps"], "key=value"):
        monkeypatch.setattr(sys, "argv", ["difflab-demo", *argv])
        with pytest.raises(SystemExit) as e:
            demo.main()
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and expect in err[0], (argv, err)
    assert (out / "report.md").read_text() == "earlier report" and not (tmp_path / "new").exists()


@pytest.mark.slow
def test_tuned_10_nfe_grid_scores_at_least_the_demo_s_ddim_50(digits_demo, tmp_path):
    """difflab-tune-grid fits UniPC-2's 10-step grid (10 NFE) to the demo's checkpoint, on prior
    draws (seed 1000) disjoint from those scored; on the demo's own metric (classifier_confident, its
    classifier) over 6000 samples (difflab-sample seeds 0-5, seed 0 = the demo's own samples) the tuned
    grid scores at least the demo's untuned DDIM-50 (50 NFE). Control: the same sampler on its default
    grid scores below DDIM-50, so the tuning is what closes the gap (bench/tuned_grid_digits.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import tuned_grid_digits as bench

    out, _ = digits_demo
    ckpt = out / "checkpoints" / "last.ckpt"
    grid_file, _ = bench.tune(ckpt, tmp_path / "tuned")
    tune = json.loads((tmp_path / "tuned" / "tune.json").read_text())
    assert tune["distance_heldout"]["tuned"] < 0.5 * tune["distance_heldout"]["start"], tune["distance_heldout"]
    s = bench.confidence(ckpt, grid_file, seeds=6, reference=False)
    assert s["unipc2_10_tuned"]["nfe"] == 10 and s["ddim_50"]["nfe"] == 50
    tuned, ddim50, untuned = (s[k]["pooled"] for k in ("unipc2_10_tuned", "ddim_50", "unipc2_10_default_grid"))
    assert tuned >= ddim50, s
    assert untuned < ddim50, s


@pytest.mark.slow
def test_difflab_eval_reproduces_the_demo_s_swd_and_fid(tmp_path, monkeypatch):
    """The demo's SWD and FID are difflab-eval's: computed each by its own code, the demo once reported
    SWD 0.0646 (floor 0.053) where difflab-eval on the same checkpoint reported 0.026 (floor 0.071,
    from 197 held-out digits). The demo now runs
    difflab-eval's code with the settings it prints; that command, run afresh (another process,
    another feature-net cache), gives the report's SWD and FID and their floors to the printed digits.
    The floors score as many real digits as there are samples; difflab-eval's default protocol on the
    same samples has only the 197 validation digits for them and says the floor is unavailable.
    A small demo: 40 training steps, 256 samples."""
    from difflab.evaluation import from_checkpoint, sample_metrics

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    m = demo.demo(out, ["trainer.max_steps=40", "trainer.val_check_interval=20", "logger=csv"], num_samples=256)
    report = (out / "report.md").read_text()
    fid_key = "fid_learned_n256"
    assert m["num_real_floor"] == 256 and m["swd_floor"] > 0 and m[fid_key + "_floor"] > 0
    assert m["eval_command"] in report and m["eval_command"].startswith("difflab-eval ckpt_path=")

    env = dict(os.environ, DIFFLAB_CACHE=str(tmp_path / "cache2"), WANDB_MODE="disabled",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    r = subprocess.run([sys.executable, "-m", "difflab.cli.evaluate", *shlex.split(m["eval_command"])[1:], f"output={tmp_path / 'again'}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert f"| {again['swd']:.4f} | {again['swd_floor']:.4f} |" in report, (again["swd"], again["swd_floor"], report)
    assert f"| {again[fid_key]:.4g} | {again[fid_key + '_floor']:.4g} |" in report, (again[fid_key], report)
    assert (f"{again['swd']:.4f}", f"{again[fid_key]:.4g}") == (f"{m['swd']:.4f}", f"{m[fid_key]:.4g}")

    samples = torch.from_numpy(np.load(tmp_path / "again" / "samples.npz")["samples"])
    default, _ = sample_metrics(from_checkpoint(out / "checkpoints" / "last.ckpt"), ["swd"], samples=samples)
    assert default["swd_floor"] is None and default["swd_floor_unavailable"] == "only 197 held-out examples for 256 samples"
