"""`bench/recipe_throughput.py` run for real at a tiny size: the like-for-like bare loop does the
recipe's whole step (optimiser, LR schedule, EMA), the `--bare-minimal` loop only the network and
optimiser, and the result rows carry both figures with ratios computed from them. No timing is
asserted (speed targets are benchmarks, not tests)."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def rt():
    sys.path.insert(0, str(BENCH))
    try:
        import recipe_throughput
        yield recipe_throughput
    finally:
        sys.path.remove(str(BENCH))


def snapshot(tensors):
    return [t.detach().clone() for t in tensors]


def changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before, after))


def test_minimal_bare_step_skips_schedule_and_ema_but_trains(rt):
    step, batch = rt.make_bare_step("gmm", None, False, torch.device("cpu"))
    parts = step.parts
    assert batch == 512
    params = list(parts["net"].parameters())
    w, ema, epoch = snapshot(params), snapshot(parts["ema"]), parts["sched"].last_epoch
    step(minimal=True)
    assert changed(w, params), "the minimal step must still run backward and the optimiser"
    assert not changed(ema, parts["ema"]) and parts["sched"].last_epoch == epoch

    w = snapshot(params)
    step()
    assert changed(w, params) and changed(ema, parts["ema"]) and parts["sched"].last_epoch == epoch + 1
    # the full step's EMA is the recipe's: ema <- ema + (1 - decay) (w - ema), eq. of the EMA callback
    decay = float(rt.recipe_parts("gmm", None, False, torch.device("cpu"))[2]["ema"]["decay"])
    expect = [e + (1 - decay) * (p.detach() - e) for e, p in zip(ema, params)]
    for got, want in zip(parts["ema"], expect):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("minimal", [False, True])
def test_a_tiny_run_writes_rows_with_consistent_ratios(tmp_path, minimal):
    out, jl = tmp_path / "rt.json", tmp_path / "rt.jsonl"
    cmd = [sys.executable, str(BENCH / "recipe_throughput.py"), "--recipes", "gmm", "--device", "cpu", "--steps", "6",
           "--warmup", "2", "--block", "3", "--repeats", "2", "--out", str(out), "--jsonl", str(jl)]
    r = subprocess.run(cmd + (["--bare-minimal"] if minimal else []), capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WANDB_MODE": "disabled"})
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())["results"]
    assert json.loads(jl.read_text().splitlines()[0])["step_time_ratio"] == row["step_time_ratio"]
    light, bare = row["lightning_img_s"], row["bare_img_s"]
    assert len(light) == len(bare) == 2 and min(light + bare) > 0
    assert row["step_time_ratio"] == pytest.approx(statistics.median(b / l for l, b in zip(light, bare)), rel=2e-3)
    assert ("bare_minimal_img_s" in row) == minimal and ("minimal bare loop" in r.stdout) == minimal
    if minimal:
        mins = row["bare_minimal_img_s"]
        assert len(mins) == 2 and min(mins) > 0
        assert row["bare_minimal_median"] == pytest.approx(statistics.median(mins), abs=0.1)
        assert row["step_time_ratio_vs_minimal"] == pytest.approx(
            statistics.median(m / l for l, m in zip(light, mins)), rel=2e-3)
