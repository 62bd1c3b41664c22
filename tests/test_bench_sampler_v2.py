"""bench/sampler_quality_v2.py at tiny n: every configuration spends exactly its NFE budget (the benchmark's own
assertion, over every configuration it sweeps on ddpm and process-free), and the two mixture sets are disjoint."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import sampler_quality_v2 as sq  # noqa: E402


def test_sets_are_disjoint():
    assert not set(sq.TUNING_SEEDS) & set(sq.SCORING_SEEDS)
    assert not set(sq.SETTINGS["tune"]["seeds"]) & set(sq.SETTINGS["score"]["seeds"])
    for seeds in (sq.TUNING_SEEDS, sq.SCORING_SEEDS):
        assert sorted(sq.draw_mixture(seeds, i)[1]["dim"] for i in range(4)) == sorted(sq.DIMS)
    tune = [sq.draw_mixture(sq.TUNING_SEEDS, i)[0].means for i in range(4)]
    for i in range(4):
        means = sq.draw_mixture(sq.SCORING_SEEDS, i)[0].means
        assert not any(m.shape == means.shape and torch.allclose(m, means) for m in tune)


@pytest.mark.slow  # ~450 sampler runs: about 80 s of CPU
@pytest.mark.parametrize("nfe", [5, 10])
def test_every_configuration_spends_its_nfe(nfe):
    oracle, info = sq.draw_mixture(sq.TUNING_SEEDS, 1)  # the 2-D one: cheap
    target = sq.Target(oracle, 32, 2000, info["seed"])
    noise = sq._noise((10,), 32, oracle.dim)
    process = sq.PROCESSES["ddpm"]()
    keys = [(None, k) for k in sq.free_configs()] + [(process, k) for k in sq.process_configs("ddpm", process)]
    out: dict = {}
    for proc, key in keys:
        if sq.fits(key, nfe):
            sq.evaluate(target, proc, key, nfe, noise, out)  # raises AssertionError on a wrong call count
    assert len(out) > 150
    assert all(len(v["gap"]) == 1 for v in out.values())
