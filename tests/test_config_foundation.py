"""The foundation config groups compose and instantiate to the right objects."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from difflab.cli.common import CONFIG_DIR
from difflab.evaluation import build_oracle
from difflab import parameterizations, processes

CONF = Path(CONFIG_DIR)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_top_level_conf_is_the_package_conf():
    root = Path(__file__).resolve().parents[1]
    assert (root / "conf").resolve() == CONF.resolve()


@pytest.mark.parametrize("process", ["ddpm", "continuous_snr", "vp", "subvp", "ve"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_process_instantiates(process, schedule):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("common", overrides=[f"+process={process}", f"+schedule={schedule}"])
    p = instantiate(cfg.process)
    assert isinstance(p, processes.Process)
    if process in ("ddpm", "continuous_snr"):
        assert schedule in repr(p)


def test_learned_schedule_only_for_continuous_snr():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        ok = compose("common", overrides=["+process=continuous_snr", "+schedule=learned"])
        bad = compose("common", overrides=["+process=ddpm", "+schedule=learned"])
    assert instantiate(ok.process).schedule == "learned"
    with pytest.raises(Exception, match="beta_schedule"):
        instantiate(bad.process)


@pytest.mark.parametrize("name", _options("parameterization"))
def test_every_parameterization_instantiates(name):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("common", overrides=[f"+parameterization={name}"])
    assert isinstance(instantiate(cfg.parameterization), parameterizations.Parameterization)


def test_gmm_overrides_build_the_oracle():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("common", overrides=["+data=gmm", "data.means=[[0,0],[3,1]]", "data.stds=[0.5,1]", "data.weights=[0.25,0.75]"])
    o = build_oracle(cfg.data)
    assert o.means.tolist() == [[0, 0], [3, 1]] and o.weights.tolist() == [0.25, 0.75]
