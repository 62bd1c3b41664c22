"""`difflab-train` end to end: writes config.yaml + checkpoints/last.ckpt, resumes with
ckpt_path=, and bad input gives one clear line, exit status 2 and nothing written over."""
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from difflab.cli import train as train_cli

pytestmark = pytest.mark.slow

TINY = ["data=gmm", "data.num_train=64", "data.num_val=16", "data.batch_size=16", "model.hidden=16", "model.depth=1",
        "trainer=cpu", "trainer.val_check_interval=2", "logger=csv", "callbacks=none", "+trainer.enable_progress_bar=false"]


def run_cli(monkeypatch, *args) -> int:
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["difflab-train", *args])
    try:
        train_cli.main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def snapshot(d: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_train_writes_resumes_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run_cli(monkeypatch, f"output={out}", "trainer.max_steps=3", *TINY) == 0
    assert (out / "config.yaml").is_file() and (out / "logs" / "metrics.csv").is_file()
    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 3 and ck["ema"]["num_updates"] == 3

    before = snapshot(out)
    capsys.readouterr()
    assert run_cli(monkeypatch, f"output={out}", "trainer.max_steps=3", *TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run" in err[0] and "ckpt_path=" in err[0]
    assert snapshot(out) == before

    assert run_cli(monkeypatch, f"output={out}", "trainer.max_steps=5", f"ckpt_path={out}/checkpoints/last.ckpt", *TINY) == 0
    ck = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["global_step"] == 5 and ck["ema"]["num_updates"] == 5

    from difflab.lit_module import load_denoiser

    loaded = load_denoiser(out / "checkpoints" / "last.ckpt")
    assert loaded.data_shape == (2,) and loaded.data_config["_target_"] == "difflab.data.GMMDataModule"


@pytest.mark.parametrize("bad, expect", [
    (["optim.lrr=1"], "lrr"),                                  # misspelled key
    (["process=foo"], "process/foo"),                          # unknown option
    (["data=digits", "model.dim=2"], "does not fit data of shape (1, 8, 8)"),  # model/data shapes
    (["data=cifar10", "data.root=/nonexistent/cifar"], "data.root=/nonexistent/cifar"),  # missing root
    (["data=gmm", "data.means=[[0,0,0],[1,1,1]]", "data.stds=[1,1]", "data.weights=[1,1]"], "data.dim=3"),
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt does not exist"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, bad, expect):
    out = tmp_path / "run"
    code = run_cli(monkeypatch, f"output={out}", "trainer.max_steps=1", "logger=csv", "trainer=cpu", *bad)
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("difflab-train: error: "), err
    assert not out.exists() or not any(out.iterdir())


def test_without_output_each_run_gets_its_own_timestamped_directory(tmp_path, monkeypatch):
    """No output=: runs/<date_time with microseconds> under the working directory, one per run (the
    default once resolved to null and Hydra refused it: the README's first train command failed)."""
    import re

    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "trainer.max_steps=2", *TINY) == 0
    assert run_cli(monkeypatch, "trainer.max_steps=2", *TINY) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", r.name) for r in runs)
    assert all((r / "checkpoints" / "last.ckpt").is_file() and (r / "config.yaml").is_file() for r in runs)


def test_a_run_directory_belongs_to_one_config(tmp_path, monkeypatch, capsys):
    """Another recipe trained into an existing run (output= + ckpt_path= of a toy2d run with
    experiment=gmm) is refused in one line naming the differing keys, data included, and nothing
    is written; resume=<run> with key=value overrides continues the run."""
    out = tmp_path / "toy"
    small = ["trainer.max_steps=2", "trainer.val_check_interval=2", "logger=csv", "callbacks=none",
             "+trainer.enable_progress_bar=false", "threads=1"]
    assert run_cli(monkeypatch, "experiment=toy2d", f"output={out}", *small) == 0
    before = snapshot(out)
    capsys.readouterr()
    code = run_cli(monkeypatch, "experiment=gmm", f"output={out}", f"ckpt_path={out}/checkpoints/last.ckpt", *small)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip() and not ln.startswith("  ")]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("difflab-train: error: ") and "data." in err[0] and f"resume={out}" in err[0], err[0]
    assert snapshot(out) == before

    assert run_cli(monkeypatch, f"resume={out}", "trainer.max_steps=4") == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_only_where_the_device_has_it_and_the_run_keeps_auto(tmp_path, monkeypatch, capsys, native):
    """trainer.precision=auto trains under bf16-mixed where `compat.native_bf16` says the device
    computes bf16 in hardware, else in 32-true; config.yaml keeps `auto` (so a rerun or resume on
    another machine is the same config) and the choice is printed once."""
    from difflab import compat

    asked = []
    monkeypatch.setattr(compat, "native_bf16", lambda device: asked.append(device) or native)
    out = tmp_path / "run"
    assert run_cli(monkeypatch, f"output={out}", "trainer.max_steps=2", "trainer.precision=auto", *TINY) == 0
    want = "bf16-mixed" if native else "32-true"
    assert asked == ["cpu"]  # trainer=cpu: the CPU is asked, whatever GPU the machine has
    assert f"precision: auto -> {want}" in capsys.readouterr().err
    assert "precision: auto" in (out / "config.yaml").read_text()
    # resumed with the same (auto) config: accepted, and the same choice again
    assert run_cli(monkeypatch, f"resume={out}", "trainer.max_steps=3") == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_trainer_precision_passes_lightning_values_through_and_picks_the_device(monkeypatch):
    from omegaconf import OmegaConf

    from difflab import compat
    from difflab.training import trainer_precision

    asked = []
    monkeypatch.setattr(compat, "native_bf16", lambda device: asked.append(device) or device == "cuda")
    for value in ("32-true", "bf16-mixed", "16-mixed", "bf16-true"):
        assert trainer_precision(OmegaConf.create({"precision": value, "accelerator": "cpu"})) == value
    assert asked == []
    assert trainer_precision(OmegaConf.create({"precision": "auto", "accelerator": "gpu"})) == "bf16-mixed"
    assert trainer_precision(OmegaConf.create({"precision": "auto", "accelerator": "cpu"})) == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trainer_precision(OmegaConf.create({"precision": "auto", "accelerator": "auto"})) == "32-true"
    assert asked == ["cuda", "cpu", "cpu"]
