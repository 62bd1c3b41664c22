"""No long step in silence: `difflab.progress.Progress` says what a step is doing once it
runs past a few seconds, then at intervals, and how long it took; a short step says nothing.
Lines are plain, start with two spaces (never a command's own `difflab-eval: ...` message line)
and fit 80 columns, in a terminal and in a log file alike."""
import io
import time

import pytest

from difflab import progress
from difflab.progress import Progress, count, seconds, track


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_short_step_prints_nothing():
    out = io.StringIO()
    with Progress("nll_elbo", 1000, "draws", stream=out, delay=5) as p:
        p.update(1000)
    assert out.getvalue() == ""


def test_a_long_step_prints_progress_then_its_duration():
    out = io.StringIO()
    with progress.program("difflab-eval"), Progress("nll_elbo", 4_000_000, "draws", stream=out, delay=0.05, every=0.05) as p:
        for _ in range(8):
            time.sleep(0.03)
            p.update(500_000)
    lines = lines_of(out)
    assert len(lines) >= 2, lines
    assert all(ln.startswith("  difflab-eval: nll_elbo  ") and len(ln) <= 80 and "\r" not in ln for ln in lines)
    assert "/4M draws  " in lines[0]
    assert lines[-1].startswith("  difflab-eval: nll_elbo  4M draws in ") and lines[-1].endswith(" s")


def test_one_blocking_call_is_announced_and_timed():
    """A step with nothing to count (one long call) still gets its lines: a thread prints them."""
    out = io.StringIO()
    with Progress("reference solve (ode_heun, 256 steps)", stream=out, delay=0.05, every=10):
        time.sleep(0.2)
    lines = lines_of(out)
    assert len(lines) == 2, lines
    assert lines[0].startswith("  difflab: reference solve (ode_heun, 256 steps)  0.")
    assert lines[1].startswith("  difflab: reference solve (ode_heun, 256 steps)  done in 0.")


def test_lines_fit_80_columns_and_a_failed_step_prints_no_final_line():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("a step with a very long description " * 4, 10**9, "draws", stream=out, delay=0.02, every=10) as p:
            p.note = "best distance 0.001234"
            time.sleep(0.1)
            raise RuntimeError("boom")
    lines = lines_of(out)
    # no room for the note: it goes first, then the description is cut short
    assert len(lines) == 1 and len(lines[0]) == 80 and "..." in lines[0] and "/1G draws  0." in lines[0], lines
    out = io.StringIO()
    p = Progress("tuning ddim", 400, "runs", stream=out, delay=0.02, every=10)
    p.set(57)
    p.note = "distance 0.00123"  # where it fits
    with p:
        time.sleep(0.1)
    first, last = lines_of(out)
    assert first.startswith("  difflab: tuning ddim  57/400 runs  0.") and first.endswith("  distance 0.00123")
    assert last.startswith("  difflab: tuning ddim  57/400 runs in 0.") and len(first) <= 80


def test_disabled_and_track():
    out = io.StringIO()
    with Progress("x", 10, stream=out, delay=0, every=0.01, enabled=False):
        time.sleep(0.05)
    assert out.getvalue() == ""
    assert list(track(range(5), "y", stream=out)) == [0, 1, 2, 3, 4]


def test_numbers_read_short():
    assert [count(n) for n in (2048, 12000, 65536, 1_310_720, 4_000_000)] == ["2048", "12k", "65.5k", "1.31M", "4M"]
    assert [seconds(s) for s in (3.21, 45.2, 125)] == ["3.2 s", "45 s", "2 min 05 s"]


@pytest.fixture
def every_step_reports(monkeypatch):
    """Every step prints its final line (no 5 s wait), heartbeats rarely: the lines each step gives."""
    monkeypatch.setattr(progress, "DELAY", 0.0)
    monkeypatch.setattr(progress, "EVERY", 600.0)


def finals(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("  ") and (" in " in ln or "done in" in ln)]


def test_difflab_eval_says_what_each_step_does(tmp_path, monkeypatch, capsys, every_step_reports):
    """difflab-eval's long steps each have their lines, named `  difflab-eval: <step>`: the ELBO
    draws, the exact data NLL, sampling, the feature network, the features and FID."""
    from hydra import compose, initialize_config_dir

    from difflab.cli.common import CONFIG_DIR
    from difflab.cli.evaluate import run

    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"output={tmp_path}", "metrics=[nll_elbo,swd,fid]", "mc_samples=20000",
                                         "num_samples=256", "num_reference=512", "sampler.steps=8"])
    capsys.readouterr()
    run(cfg, tmp_path)
    printed = capsys.readouterr()
    err = printed.err
    # the summary line marks the data's numbers (the mixture's exact nll, the floors), not the model's
    assert "nll (data)=" in printed.out and "swd_floor (data)=" in printed.out and "nll_elbo=" in printed.out
    lines = [ln for ln in err.splitlines() if ln.startswith("  ")]
    assert lines and all(ln.startswith("  difflab-eval: ") and len(ln) <= 80 for ln in lines), err
    done = finals(err)
    for step in ("nll_elbo (ELBO)  20k draws in ", "nll: the data's exact NLL (20k draws)  done in ",
                 "sampling (ode_heun, 8 steps)  256 samples in ", "learned feature network for FID/KID/IS  done in ",
                 "learned features  1024 examples in ", "FID of 256 samples  done in "):
        assert any(ln.startswith("  difflab-eval: " + step) for ln in done), (step, done)


def test_tune_grid_says_what_it_is_doing(capsys, every_step_reports):
    """The reference solve and the search of `difflab-tune-grid` (once silent for 50 s)."""
    from difflab.evaluation import tuning
    from difflab.models import GMMOracle
    from difflab.processes import VPSDE

    process = VPSDE()
    oracle = GMMOracle([[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5], [0.3, 0.7])
    capsys.readouterr()
    with progress.program("difflab-tune-grid"):
        tuning.tune_grid(oracle.denoiser(process), process, "dpm_solver", 4, (2,), n=16, max_evals=5, reference=("ode_heun", 16, "edm"))
    done = finals(capsys.readouterr().err)
    assert any(ln.startswith("  difflab-tune-grid: reference solve: ode_heun, 16 steps  done in ") for ln in done), done
    assert any(ln.startswith("  difflab-tune-grid: tuning dpm_solver, 4 steps  5 runs in ") for ln in done), done
    assert all(len(ln) <= 80 for ln in done)
