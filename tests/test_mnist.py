"""The official MNIST end to end: the files, the protocol classifier (features=classifier), a few
training steps of `experiment=mnist`, sampling, FID/KID in classifier features against the test set
with their floor, the classifier scores, and bits/dim per 28×28 pixel.

The data come from the `mnist_root` fixture (tests/conftest.py): the official IDX files, unpacked
offline. Under CI=true a missing data set fails these tests; elsewhere they skip.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture(scope="session")
def mnist(mnist_root):
    from difflab.data import MNISTDataModule

    dm = MNISTDataModule(root=str(mnist_root))
    return dm, dm.labelled_images("train"), dm.labelled_images("val")


def test_the_files_are_the_official_mnist(mnist):
    """Facts of the published data set: split sizes, first labels, class counts, pixel statistics."""
    _, (x, y), (xt, yt) = mnist
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    u = x.double() / 255
    assert abs(float(u.mean()) - 0.1307) < 5e-5 and abs(float(u.std()) - 0.3081) < 5e-5


def test_protocol_classifier_reaches_99_percent_on_the_test_set(mnist):
    """The FID feature network of `features=classifier` (deterministic, cached): ≥ 99% test accuracy,
    and almost every real test digit is labelled confidently."""
    from difflab.evaluation import data_classifier
    from difflab.metrics.classifier import accuracy, classifier_scores, predict

    dm, _, (xt, yt) = mnist
    net = data_classifier(dm)
    assert accuracy(net, xt, yt) >= 0.99
    s = classifier_scores(predict(net, xt))
    assert s["confident"] >= 0.95 and s["classes_covered"] == 10
    assert 0.08 < s["class_fraction_min"] and s["class_fraction_max"] < 0.12  # the test set's own class balance
    assert net(xt[:4].float() / 127.5 - 1).shape == (4, 128)


def test_classifier_scores_and_copying_ratio_from_their_definitions():
    from difflab.metrics.classifier import classifier_scores, nearest_neighbour_ratio

    p = torch.tensor([[0.95, 0.05, 0.0], [0.5, 0.5, 0.0], [0.0, 0.05, 0.95], [0.0, 0.1, 0.9]], dtype=torch.float64)
    s = classifier_scores(p, threshold=0.9)
    assert s["confident"] == 0.75 and s["class_histogram"] == [2, 0, 2] and s["classes_covered"] == 2
    assert s["class_fraction_min"] == 0.0 and s["class_fraction_max"] == 0.5
    g = torch.Generator().manual_seed(0)
    train, unseen = torch.randn(200, 1, 4, 4, generator=g), torch.randn(50, 1, 4, 4, generator=g)
    assert nearest_neighbour_ratio(train[:50], train, unseen) == 0.0  # copies of the training set
    assert nearest_neighbour_ratio(unseen, train, unseen) == 1.0


def test_bits_per_dim_of_padded_images_is_refused():
    """Padding adds constant pixels that a bits/dim would count (1.64 bits per padded dimension was
    about 2.1 per MNIST pixel): refused with what to change."""
    from difflab.evaluation import EvalTarget, likelihood_metrics

    target = EvalTarget(None, None, (1, 32, 32), {"_target_": "difflab.data.MNISTDataModule", "pad": 2})
    with pytest.raises(ValueError, match="data.pad=0"):
        likelihood_metrics(target, ["bpd_elbo"])


def _cli(module, *args) -> int:
    GlobalHydra.instance().clear()
    r = subprocess.run([sys.executable, "-m", f"difflab.cli.{module}", *args], capture_output=True, text=True,
                       env={**os.environ, "WANDB_MODE": "disabled"}, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_mnist_recipe_trains_samples_and_is_scored_by_the_protocol(mnist_root, tmp_path):
    """experiment=mnist for a few steps at a small width, then difflab-sample (samples.npz + grid) and
    difflab-eval with the MNIST protocol: FID/KID in classifier features against the 10k test set, the
    floor from as many training images, classifier scores, the copying check and bits/dim per pixel."""
    run, s, e = tmp_path / "run", tmp_path / "s", tmp_path / "e"
    _cli("train", "experiment=mnist", f"data.root={mnist_root}", f"output={run}", "trainer.max_steps=4",
         "model.ch=8", "data.batch_size=16", "trainer.val_check_interval=4", "trainer.limit_val_batches=1")
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 4
    _cli("sample", f"ckpt_path={ckpt}", "sampler=ddim", "sampler.steps=3", "num_samples=8", f"output={s}")
    import numpy as np

    with np.load(s / "samples.npz") as z:
        assert z["samples"].shape == (8, 1, 28, 28) and int(z["nfe"]) == 3
    assert any(s.glob("*.png"))
    n = 64
    _cli("evaluate", f"ckpt_path={ckpt}", "metrics=[fid,kid,confidence,copying,bpd_elbo]", "features=classifier",
         "reference_split=val", f"num_samples={n}", "num_reference=512", "sampler=ddim", "sampler.steps=3",
         "num_eval=32", "mc_samples=64", "mc_batch_size=64", "elbo.decoder=discretized", f"output={e}")
    m = json.loads((e / "metrics.json").read_text())
    assert m["data_shape"] == [1, 28, 28] and m["reference_split"] == "val"
    key = f"fid_classifier_n{n}"
    assert {key, key + "_floor", f"kid_classifier_n{n}", "num_real_floor"} <= m.keys()
    assert m["num_real_floor"] == n  # n training images against the test statistics
    assert m[key] > m[key + "_floor"] >= 0  # 4 training steps are far from the data
    assert m["classes_covered"] >= 1 and 0 <= m["classifier_confident"] <= 1 and m["real_confident"] > 0.9
    assert 0 < m["nearest_train_ratio"] and m["nearest_train_num"] == n
    # a bound on 8-bit data (no dequantisation: the discretised decoder) from 4 steps of training cannot beat
    # the independent per-pixel histogram's 1.69 bits per MNIST pixel
    assert m["bpd_elbo"] > 1.69 and m["bpd_elbo_se"] > 0


@pytest.mark.slow
def test_eval_callback_on_mnist_logs_fid_and_bits_per_dim_curves_with_their_cost(mnist_root, tmp_path):
    """`callbacks=eval` during MNIST training (the protocol: classifier features against the test set,
    discretised-decoder ELBO per 28x28 pixel): every evaluation logs FID, bits/dim ± SE and its cost
    (eval/seconds) to the CSV log, and difflab-report draws the curves (eval_curves.png) and states
    the mean cost. Epochs cut to 4 steps (trainer.limit_train_batches) so 8 steps give 2 evaluations."""
    import csv

    run = tmp_path / "run"
    _cli("train", "experiment=mnist", f"data.root={mnist_root}", f"output={run}", "trainer.max_steps=8",
         "+trainer.limit_train_batches=4", "model.ch=8", "data.batch_size=16", "trainer.val_check_interval=4",
         "trainer.limit_val_batches=1", "callbacks=eval", "callbacks.eval.metrics=[fid,bpd_elbo]",
         "callbacks.eval.features=classifier", "callbacks.eval.reference_split=val", "callbacks.eval.num_samples=32",
         "callbacks.eval.num_reference=256", "callbacks.eval.likelihood.num_eval=16", "callbacks.eval.likelihood.mc_samples=32",
         "callbacks.eval.likelihood.mc_batch_size=32", "callbacks.eval.likelihood.elbo.decoder=discretized",
         "sampler=ddim", "sampler.steps=3")
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = {}
    for r in rows:
        for k in ("eval/fid_classifier_n32", "eval/bpd_elbo", "eval/bpd_elbo_se", "eval/seconds"):
            if r.get(k):
                logged.setdefault(k, []).append((int(r["step"]), float(r[k])))
    assert sorted(logged) == ["eval/bpd_elbo", "eval/bpd_elbo_se", "eval/fid_classifier_n32", "eval/seconds"], rows[-1].keys()
    assert all(len(v) == 2 for v in logged.values()), logged  # two evaluations, each logging every key
    assert all(v > 1.69 for _, v in logged["eval/bpd_elbo"])  # per MNIST pixel; 8 steps cannot beat the histogram
    assert all(v > 0 for _, v in logged["eval/seconds"])
    _cli("report", str(run))
    report = (run / "report.md").read_text()
    assert (run / "eval_curves.png").is_file() and "eval_curves.png" in report
    assert "eval/seconds (mean)" in report and "eval/bpd_elbo (last)" in report
