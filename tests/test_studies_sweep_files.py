"""sweeps/: every Hydra sweep file has a W&B twin with the same grid, and every job of both
composes (Hydra's compose API, no training) into a distinct config."""
import itertools
from pathlib import Path

import pytest
import yaml

from difflab.cli.sweep_check import check_sweep, sweep_jobs

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
FILES = sorted(p.stem for p in SWEEPS.glob("*.yaml") if not p.name.endswith(".wandb.yaml"))
PROGRAMS = {"difflab-train": "train", "difflab-sample": "sample", "difflab-eval": "eval"}
SMALL = 40  # grids up to this many jobs are composed in the fast suite; larger ones are slow


def hydra_grid(name):
    spec = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    return spec["defaults"][0], sweep_jobs([], spec["hydra"]["sweeper"]["params"])


def wandb_grid(name):
    spec = yaml.safe_load((SWEEPS / f"{name}.wandb.yaml").read_text())
    assert spec["method"] == "grid" and "${args_no_hyphens}" in spec["command"]
    keys, values = zip(*((k, v["values"] if "values" in v else [v["value"]]) for k, v in spec["parameters"].items()))
    jobs = [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*values)]
    extras = [c for c in spec["command"] if not c.startswith("${")]
    return PROGRAMS[spec["program"]], jobs, extras


def test_every_sweep_file_has_a_wandb_twin():
    assert FILES and all((SWEEPS / f"{n}.wandb.yaml").is_file() for n in FILES)


@pytest.mark.parametrize("name", FILES)
def test_hydra_and_wandb_grids_are_the_same(name):
    base, hydra_jobs = hydra_grid(name)
    program, wandb_jobs, _ = wandb_grid(name)
    assert base == program
    assert {frozenset(j) for j in hydra_jobs} == {frozenset(j) for j in wandb_jobs}
    assert len(hydra_jobs) == len(wandb_jobs) > 1


def _compose_both(name):
    _, hydra_jobs = hydra_grid(name)
    assert check_sweep(name, [], config_dir=SWEEPS) == len(hydra_jobs)  # the file as the primary config
    program, wandb_jobs, extras = wandb_grid(name)
    keys = list(dict.fromkeys(o.split("=", 1)[0] for j in wandb_jobs for o in j))
    sweep = [f"{k}={','.join(dict.fromkeys(o.split('=', 1)[1] for j in wandb_jobs for o in j if o.startswith(k + '=')))}"
             for k in keys]
    assert check_sweep(program, [*extras, *sweep]) == len(wandb_jobs)  # what the W&B agent runs


@pytest.mark.parametrize("name", [n for n in FILES if len(hydra_grid(n)[1]) <= SMALL])
def test_every_job_of_a_small_grid_composes(name):
    _compose_both(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in FILES if len(hydra_grid(n)[1]) > SMALL])
def test_every_job_of_a_large_grid_composes(name):
    _compose_both(name)
