"""Checkpoints are checked before use: every unreadable, foreign, truncated or malicious file is
refused by train, sample and eval in one line (exit 2, nothing written, no code executed), and a
resume with another model, process, parameterization or data shape is refused naming the keys,
deleting nothing."""
import os
import pickle

import pytest
import torch

from .conftest import error_line, run_main, snapshot

pytestmark = pytest.mark.slow


class Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_checkpoints(tmp_path, good):
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "random": os.urandom(4096),
        "empty": b"",
    }
    out = {}
    for name, blob in files.items():
        (tmp_path / f"{name}.ckpt").write_bytes(blob)
        out[name] = tmp_path / f"{name}.ckpt"
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    out["foreign"] = tmp_path / "foreign.ckpt"
    with open(tmp_path / "malicious.ckpt", "wb") as f:
        pickle.dump({"state_dict": Payload(tmp_path / "PWNED")}, f)
    out["malicious"] = tmp_path / "malicious.ckpt"
    return out


@pytest.mark.parametrize("prog", ["train", "sample", "eval"])
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, gmm_run, capsys, monkeypatch, prog):
    for kind, path in bad_checkpoints(tmp_path, gmm_run / "checkpoints" / "last.ckpt").items():
        out = tmp_path / f"out-{kind}"
        extra = ["experiment=gmm", "callbacks=none"] if prog == "train" else []
        code, err = run_main(prog, [*extra, f"ckpt_path={path}", f"output={out}", "threads=1"], capsys, monkeypatch)
        lines = error_line(err)
        assert code == 2 and len(lines) == 1, (kind, err[-2000:])
        assert str(path) in lines[0] and "Traceback" not in err, (kind, lines)
        assert not out.exists(), kind
    assert not (tmp_path / "PWNED").exists()  # the malicious pickle never ran


MISMATCHES = [
    (["experiment=toy2d"], "process._target_"),
    (["experiment=gmm", "model.hidden=32"], "model.hidden"),
    (["experiment=gmm", "parameterization=v"], "parameterization._target_"),
    (["experiment=gmm", "data.means=[[0,0,0],[1,1,1],[2,2,2]]", "data.dim=3"], "data_shape"),
]


@pytest.mark.parametrize("args,key", MISMATCHES, ids=[m[1] for m in MISMATCHES])
def test_resume_with_another_configuration_is_refused(tmp_path, gmm_run, capsys, monkeypatch, args, key):
    before = snapshot(gmm_run)
    out = tmp_path / "new"
    code, err = run_main("train", [*args, "callbacks=none", f"ckpt_path={gmm_run / 'checkpoints' / 'last.ckpt'}", f"output={out}"],
                         capsys, monkeypatch)
    lines = error_line(err)
    assert code == 2 and len(lines) == 1 and key in lines[0], err[-2000:]
    assert not out.exists() and snapshot(gmm_run) == before


def test_a_refused_resume_deletes_nothing(gmm_run, capsys, monkeypatch):
    before = snapshot(gmm_run)
    code, err = run_main("train", [f"resume={gmm_run}", "model=unet_tiny"], capsys, monkeypatch)
    assert code == 2 and "model=unet_tiny changes it" in err
    assert snapshot(gmm_run) == before  # logs/metrics.csv, config.yaml and the checkpoint intact
