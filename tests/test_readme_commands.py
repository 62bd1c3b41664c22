"""Every command of README.md runs as written.

Each command of the README's ```bash blocks is run, in README order, in one temporary directory
(later commands read what earlier ones wrote: runs/digits/checkpoints/last.ckpt, runs/nfe/...), with
`.venv` there pointing at this Python's environment. The only change to a command: SMALL's overrides
appended (Hydra's last value of a key wins), which shrink steps and sample counts. A command that
cannot run in a test is listed in NOT_RUN with the reason; a README command that is neither run nor
listed, a listed one the README no longer has, or an override for no command fails here.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: README commands that a test cannot run, each with the reason (the command exactly as the README has it).
NOT_RUN = {
    "make demo": "the demo itself (creates .venv, trains 12k steps): tests/test_demo.py runs the command it makes, "
                 "python -m difflab.cli.demo, end to end",
    "make test": "the whole suite, this test among it (.ci/run runs it on CI)",
    ".venv/bin/difflab-train experiment=mnist data.root=data output=runs/mnist":
        "16,000 steps on the official MNIST in ./data (docs/mnist.md); tests/test_mnist.py trains experiment=mnist "
        "for a few steps on the official files through the same CLI",
    "bash bench/mnist_protocol.sh runs/mnist data runs/mnist_eval":
        "10,000 samples and 50,000 ELBO draws of the model above, sizes the script fixes; tests/test_mnist.py "
        "scores a model by the same protocol at a small size",
}

#: Overrides appended to each run command that starts with the key (the first key that matches): the
#: small size of the run, nothing else.
SMALL = {
    ".venv/bin/difflab-train experiment=digits": "trainer.max_steps=20",
    ".venv/bin/difflab-sample ckpt_path=": "num_samples=256",
    ".venv/bin/difflab-train -m experiment=gmm": "trainer.max_steps=20 evaluation.mc_samples=20000 evaluation.num_samples=256",
    ".venv/bin/difflab-sample -m model=oracle": "num_samples=256",
}


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of README.md's ```bash blocks, in order: comment and blank lines dropped,
    backslash-continued lines joined into one."""
    text = (ROOT / "README.md").read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return commands


def planned(commands: list[str]) -> list[tuple[str, str | None]]:
    """(command, the command line to run, or None when NOT_RUN lists it)."""
    out = []
    for c in commands:
        if c in NOT_RUN:
            out.append((c, None))
            continue
        extra = next((v for k, v in SMALL.items() if c.startswith(k)), "")
        out.append((c, f"{c} {extra}".strip()))
    return out


def test_readme_commands_are_parsed():
    text = "x\n```bash\n# a comment\n.venv/bin/a b=1 \\\n    c=2\n\nmake x\n```\n```python\nnot=this\n```\n"
    assert readme_commands(text) == [".venv/bin/a b=1 c=2", "make x"]
    assert readme_commands()[:2] == ["make demo", "make test"]  # the README's first two commands


def test_every_readme_command_is_run_or_listed():
    commands = readme_commands()
    run = [c for c, line in planned(commands) if line is not None]
    stale = sorted(set(NOT_RUN) - set(commands))
    assert not stale, f"NOT_RUN lists commands the README does not have (drop them): {stale}"
    unused = sorted(k for k in SMALL if not any(c.startswith(k) for c in run))
    assert not unused, f"SMALL has overrides for no README command (drop them): {unused}"
    other = [c for c in run if not c.startswith(".venv/bin/difflab-")]
    assert not other, (f"README commands this test neither runs nor lists: {other}; list each in NOT_RUN with "
                       "the reason it cannot run in a test")
    assert len(run) >= 5, run  # the five of "What next" at least


def _outputs(command: str) -> list[str]:
    return [w.partition("=")[2] for w in shlex.split(command) if w.startswith("output=")]


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    venv = Path(sys.prefix)
    if not (venv / "bin" / "difflab-train").is_file():
        venv = ROOT / ".venv"
    assert (venv / "bin" / "difflab-train").is_file(), f"no difflab-train in {sys.prefix}/bin or {ROOT}/.venv/bin"
    (tmp_path / ".venv").symlink_to(venv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "MPLBACKEND": "Agg",
           "DIFFLAB_CACHE": str(tmp_path / ".cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    for command, line in planned(readme_commands()):
        if line is None:
            continue
        r = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README command failed (exit {r.returncode}): {line}\n{(r.stdout + r.stderr)[-3000:]}"
        for out in _outputs(command):
            assert (tmp_path / out).is_dir() and any((tmp_path / out).iterdir()), f"{line}: wrote nothing to {out}"
    assert (tmp_path / "runs" / "study" / "report.md").is_file()  # the report of the study
    assert (tmp_path / "runs" / "eval_nfe" / "metrics.json").is_file()  # a sweep's job dir, found in another order
