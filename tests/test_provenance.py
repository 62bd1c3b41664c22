"""Provenance: sample.json and every metrics.json say which checkpoint (path, SHA-256,
its hyper-parameters), which resolved config, which difflab version and which git commit made
them; a sample directory has its config.yaml."""
import hashlib
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml

from difflab.utils import git_commit, provenance

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"checkpoint", "checkpoint_sha256", "checkpoint_hparams", "config", "difflab_version", "git_commit"}
TINY = ["experiment=gmm", "data.num_train=512", "data.num_val=64", "data.batch_size=32", "model.hidden=16", "model.depth=1",
        "model.emb_dim=16", "callbacks=none", "threads=1", "trainer.val_check_interval=100000", "logger=none"]


def _cli(module: str, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    r = subprocess.run([sys.executable, "-m", f"difflab.cli.{module}", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_code(p: dict) -> None:
    assert p["difflab_version"] == version("difflab")
    assert (p["git_commit"] is None) == (git_commit() is None)
    if p["git_commit"] is not None:  # a commit of this checkout (HEAD may have moved on since the run)
        assert re.fullmatch(r"[0-9a-f]{40}", p["git_commit"])
        assert subprocess.run(["git", "cat-file", "-e", p["git_commit"] + "^{commit}"], cwd=ROOT).returncode == 0


def test_provenance_of_a_checkpoint_and_of_an_exact_model(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": {"model": {"_target_": "m", "hidden": (8, 8)}, "process": {"_target_": "p"}},
                "state_dict": {"w": torch.zeros(3)}}, ckpt)
    p = provenance({"seed": 1, "output": "runs/${now:%H}"}, ckpt, output="runs/x")
    assert p.keys() == KEYS
    assert p["checkpoint"] == str(ckpt.resolve()) and p["checkpoint_sha256"] == _sha(ckpt)
    assert p["checkpoint_hparams"] == {"model": {"_target_": "m", "hidden": [8, 8]}, "process": {"_target_": "p"}}
    assert p["config"] == {"seed": 1, "output": "runs/x"}  # output: the run's real directory
    _check_code(p)
    json.dumps(p)  # plain containers only
    exact = provenance({"seed": 1}, None)
    assert exact["checkpoint"] is exact["checkpoint_sha256"] is exact["checkpoint_hparams"] is None


def test_git_commit_is_the_checkout_head_once_per_process():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT / "src" / "difflab", capture_output=True, text=True)
    if head.returncode != 0 or "site-packages" in Path(__import__("difflab").__file__).parts:
        pytest.skip("difflab is not imported from a git checkout")
    first = git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}", first)
    assert git_commit.cache_info().currsize == 1 and git_commit() is first  # cached: git runs once


@pytest.mark.slow  # a 20-step training run with eval_at_end, then difflab-sample twice and difflab-eval (~30 s)
def test_sample_json_and_every_metrics_json_record_their_provenance(tmp_path):
    from hydra import compose, initialize_config_dir

    from difflab.cli.common import CONFIG_DIR
    from difflab.cli.evaluate import run

    out = tmp_path / "train"
    _cli("train", *TINY, "trainer.max_steps=20", "eval_at_end=[swd]", "evaluation.num_samples=64", "sampler.steps=2",
         f"output={out}")
    ckpt = out / "checkpoints" / "last.ckpt"
    # eval_at_end
    p = json.loads((out / "metrics.json").read_text())["provenance"]
    assert p.keys() == KEYS and p["checkpoint"] == str(ckpt.resolve()) and p["checkpoint_sha256"] == _sha(ckpt)
    assert p["checkpoint_hparams"]["model"]["hidden"] == 16
    assert p["config"]["trainer"]["max_steps"] == 20 and p["config"]["output"] == str(out)
    _check_code(p)
    # difflab-sample from the checkpoint, and from the oracle (no checkpoint)
    for name, args in (("s_ckpt", [f"ckpt_path={ckpt}"]), ("s_oracle", ["model=oracle"])):
        s = tmp_path / name
        _cli("sample", *args, "num_samples=32", "sampler.steps=2", "seed=3", f"output={s}")
        p = json.loads((s / "sample.json").read_text())["provenance"]
        assert p.keys() == KEYS
        assert p["config"]["seed"] == 3 and p["config"]["output"] == str(s) and p["config"]["sampler"]["steps"] == 2
        assert yaml.safe_load((s / "config.yaml").read_text()) == p["config"]
        _check_code(p)
        if name == "s_ckpt":
            assert p["checkpoint"] == str(ckpt.resolve()) and p["checkpoint_sha256"] == _sha(ckpt)
            assert p["checkpoint_hparams"]["process"]["_target_"] == "difflab.processes.VPSDE"
        else:
            assert p["checkpoint"] is None and p["checkpoint_sha256"] is None
            assert p["config"]["model"]["_target_"] == "difflab.models.GMMOracle"
    # difflab-eval: the returned dict and metrics.json agree, provenance included
    e = tmp_path / "eval"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=[f"ckpt_path={ckpt}", "metrics=[swd]", "num_samples=64", "sampler.steps=2", "threads=1",
                                         f"output={e}"])
    result = run(cfg, e)
    written = json.loads((e / "metrics.json").read_text())
    assert written.keys() == result.keys() and written["provenance"] == result["provenance"]
    p = written["provenance"]
    assert p["checkpoint_sha256"] == _sha(ckpt) and p["config"]["metrics"] == ["swd"] and p["config"]["output"] == str(e)
    _check_code(p)


def test_provenance_of_a_config_with_an_unresolvable_unused_node():
    """difflab-eval ckpt_path=... data=mnist: the unused oracle's ${data.means} cannot resolve; the
    provenance keeps that node unresolved and resolves the rest, instead of failing after the work."""
    from omegaconf import OmegaConf

    from difflab.utils import provenance

    cfg = OmegaConf.create({"data": {"root": "d", "n": "${seed}"}, "model": {"means": "${data.means}"}, "seed": 3})
    p = provenance(cfg)
    assert p["config"]["data"] == {"root": "d", "n": 3} and p["config"]["model"] == {"means": "${data.means}"}
