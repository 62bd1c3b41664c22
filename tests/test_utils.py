"""difflab.utils: the library's own `_target_` instantiation (Hydra's semantics, without Hydra)
and atomic result files."""
import functools
import json
import os

import numpy as np
import pytest
import torch

from difflab.utils import atomic_write, instantiate, locate, plain, save_npz, write_json


def test_instantiate_matches_hydra_on_every_process_and_parameterization():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate as hydra_instantiate

    from difflab.cli.common import CONFIG_DIR

    for group in ("process", "parameterization", "optim"):
        for opt in sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")):
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
                node = compose("train", overrides=[f"{group}={opt}", "output=unused"])[group]
            ours, theirs = instantiate(plain(node)), hydra_instantiate(node)
            if group == "optim":  # `_partial_`: both build the same optimiser on parameters
                assert isinstance(ours, functools.partial)
                params = [torch.nn.Parameter(torch.zeros(2))]
                ours, theirs = ours(params), theirs(params)
                assert ours.defaults == theirs.defaults, opt
            assert type(ours) is type(theirs), (group, opt)
            if isinstance(ours, torch.nn.Module):
                t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
                assert torch.equal(ours.log_snr(t), theirs.log_snr(t)), (group, opt)


def test_instantiate_nested_partial_and_errors():
    spec = {"_target_": "torch.nn.Sequential", "_partial_": True}
    assert isinstance(instantiate(spec), functools.partial)
    built = instantiate({"_target_": "difflab.denoiser.Denoiser", "model": {"_target_": "torch.nn.Identity"},
                         "process": {"_target_": "difflab.processes.VPSDE"}, "parameterization": {"_target_": "difflab.parameterizations.Epsilon"}})
    assert type(built.process).__name__ == "VPSDE"
    with pytest.raises(ValueError, match="cannot import 'difflab.processes.NoSuch'"):
        locate("difflab.processes.NoSuch")
    with pytest.raises(ValueError, match="_target_"):
        instantiate({"lr": 1})


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1.0, "b": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1.0, "b": None}  # the previous result, intact
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary left behind
    save_npz(tmp_path / "s.npz", samples=np.ones((3, 2)), nfe=5)
    with np.load(tmp_path / "s.npz") as f:
        assert f["samples"].shape == (3, 2) and int(f["nfe"]) == 5
