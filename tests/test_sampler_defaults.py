"""The Python API and the command line give the same sampler: every `conf/sampler/<name>.yaml` names the
grid that `difflab.samplers.sample` uses when no grid is passed, and sets each option it lists to the sampler
function's own default. So `sample(..., "lms", steps)` and `difflab-sample sampler=lms` run the configuration
the held-out benchmark picked (docs/samplers.md, "Defaults")."""
from pathlib import Path

import pytest
import yaml

from difflab.samplers.core import SAMPLERS

CONF = Path(__file__).resolve().parents[1] / "src" / "difflab" / "conf" / "sampler"
NOT_OPTIONS = {"name", "steps", "grid", "_target_", "batch_size"}


def _yamls():
    return sorted(CONF.glob("*.yaml"))


def test_every_registered_sampler_has_a_yaml_and_back():
    assert {p.stem for p in _yamls()} == set(SAMPLERS)


@pytest.mark.parametrize("path", _yamls(), ids=lambda p: p.stem)
def test_yaml_grid_and_options_are_the_python_defaults(path):
    node = yaml.safe_load(path.read_text())
    spec = SAMPLERS[node["name"]]
    assert node["grid"] == spec.default_grid, f"{path.name}: grid {node['grid']} but sample() defaults to {spec.default_grid}"
    for key, value in node.items():
        if key in NOT_OPTIONS:
            continue
        assert key in spec.options, f"{path.name}: {key} is not an option of {spec.fn.__name__}"
        assert value == spec.options[key], f"{path.name}: {key}={value!r} but {spec.fn.__name__} defaults to {spec.options[key]!r}"
