"""A study end to end: a 2x2 multirun over schedule x weighting on continuous-SNR
(the gmm recipe, a few hundred steps) with eval_at_end; every job has its own directory named
after its overrides and its metrics.json; difflab-report builds the table and plots; rerunning
the same command skips every finished job without building a trainer or recomputing a metric."""
import json
import sys

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

pytestmark = pytest.mark.slow


def run_main(module, argv, monkeypatch) -> int:
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", argv)
    try:
        module.main()
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        GlobalHydra.instance().clear()


def test_schedule_by_weighting_study(tmp_path, monkeypatch):
    from difflab.cli import report, train

    out = tmp_path / "sweep"
    argv = ["difflab-train", "-m", "experiment=gmm", "process=continuous_snr", "schedule=linear,cosine", "weighting=elbo,simple",
            "trainer.max_steps=300", "trainer.val_check_interval=100", "data.num_train=4096", "threads=1",
            "eval_at_end=[nll_elbo,swd]", "evaluation.mc_samples=400000", "evaluation.num_samples=512", "sampler.steps=10",
            f"output={out}"]
    assert run_main(train, argv, monkeypatch) == 0
    jobs = sorted(d for d in out.iterdir() if d.is_dir())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        key = (cfg["process"]["schedule"], cfg["weighting"]["weighting"])
        assert f"schedule={key[0]}" in job.name and f"weighting={key[1]}" in job.name  # named after its overrides
        m = json.loads((job / "metrics.json").read_text())
        assert {"nll_elbo", "nll_elbo_se", "swd", "swd_floor", "nll"} <= m.keys()
        assert m["nll_elbo"] > m["nll"] - 3 * m["nll_elbo_se"]  # a bound on the exact mixture NLL
        seen.add(key)
    assert seen == {(s, w) for s in ("linear", "cosine") for w in ("elbo", "simple")}

    assert run_main(report, ["difflab-report", str(out)], monkeypatch) == 0
    table = (out / "report.md").read_text()
    assert "schedule" in table and "weighting" in table and "nll_elbo" in table and "±" in table
    assert (out / "loss_curves.png").is_file()

    # The rerun: a skipped job builds no Trainer (a wall-clock ratio here failed under CI load,
    # so the test asserts the behaviour instead: no fit, no file of any job rewritten).
    import lightning

    def no_fit(*a, **k):
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(lightning.Trainer, "fit", no_fit)
    before = {f: f.stat().st_mtime_ns for j in jobs for f in j.rglob("*") if f.is_file()}
    assert run_main(train, argv, monkeypatch) == 0
    assert {f: f.stat().st_mtime_ns for j in jobs for f in j.rglob("*") if f.is_file()} == before  # nothing recomputed
