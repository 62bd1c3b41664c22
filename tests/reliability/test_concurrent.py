"""Two difflab-train runs started 0.1 s apart into one output: exactly one trains, the other is
refused in one line (exit 2), and config.yaml is the winner's."""
import time

import pytest
import yaml

from .conftest import REPEATS, TINY, error_line, start

pytestmark = pytest.mark.slow


def test_two_runs_into_one_directory(tmp_path):
    for k in range(max(2, REPEATS)):
        out = tmp_path / f"run{k}"
        a = start("train", *TINY, "trainer.max_steps=60", "seed=1", f"output={out}")
        time.sleep(0.1)
        b = start("train", *TINY, "trainer.max_steps=60", "seed=2", f"output={out}")
        (_, err_a), (_, err_b) = a.communicate(timeout=300), b.communicate(timeout=300)
        codes = sorted([a.returncode, b.returncode])
        assert codes == [0, 2], (codes, err_a[-1500:], err_b[-1500:])
        winner_seed, loser_err = (1, err_b) if a.returncode == 0 else (2, err_a)
        lines = error_line(loser_err)
        assert len(lines) == 1 and ("another process is writing" in lines[0] or "already holds a training run" in lines[0]), lines
        assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == winner_seed
