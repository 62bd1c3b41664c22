"""`bench/gpu_check.sh`, the one script a lent GPU runs (minutes of a 15-minute budget), checked on
the CPU: every stage runs and writes valid JSON lines, and every benchmark command in it parses
and validates (`--check`: recipes compose, precisions and compile values exist, the peer library
imports), so a renamed flag or recipe cannot waste a GPU run. The script runs with a stand-in
`$PYTHON` that records its calls, skips pip and pytest, and adds `--check --device cpu` to the
benchmarks; nothing is installed or measured."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"

STAND_IN = """#!/usr/bin/env bash
printf '%s\\t%s\\n' "${DIFFLAB_TEST_DEVICE:-}" "$*" >> "$CALLS"
case "$1" in
  -m) exit 0 ;;                     # pip install / pytest: not run here
  -c) echo "0.0+stand-in"; exit 0 ;;  # torch.__version__
  bench/*) exec "$REAL_PY" "$@" --check --device cpu ;;
esac
echo "stand-in python: unexpected call: $*" >&2
exit 3
"""


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_every_stage_runs_and_every_benchmark_command_validates(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(STAND_IN)
    fake.chmod(0o755)
    out, calls = tmp_path / "out", tmp_path / "calls.tsv"
    env = {**os.environ, "PYTHON": str(fake), "REAL_PY": sys.executable, "CALLS": str(calls), "OUT": str(out)}
    env.pop("DIFFLAB_TEST_DEVICE", None)
    r = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(s) for s in (out / "gpu_check.jsonl").read_text().splitlines()]  # every line is JSON
    stages = {d["stage"]: d for d in lines if "stage" in d}
    expected = ["device", "fast_suite_cuda", "recipe_throughput_compile", "recipe_throughput_eager", "sampling_throughput"]
    assert [s for s in stages if s != "install"] == expected
    logs = {p.name: p.read_text() for p in out.glob("*.log")}
    for name in expected:
        assert stages[name]["rc"] == 0, (name, stages[name], logs)
    recorded = [row.split("\t") for row in calls.read_text().splitlines()]
    pytest_calls = [(dev, args) for dev, args in recorded if args.startswith("-m pytest")]
    assert len(pytest_calls) == 1 and pytest_calls[0][0] == "cuda"  # the fast suite on CUDA
    assert '-m not slow' in pytest_calls[0][1] and pytest_calls[0][1].endswith(" tests")
    benches = [args for _, args in recorded if args.startswith("bench/")]
    assert [b.split()[0] for b in benches] == ["bench/recipe_throughput.py"] * 2 + ["bench/sampling_throughput.py"]
    # what --check validated is what the script asks for (not a default the stand-in fell back to)
    checked = "\n".join(logs.values())
    assert "ddpm_cifar10 bf16-mixed compile=on" in checked and "ddpm_cifar10 32-true compile=off" in checked
    assert "ddpm_cifar10 bf16-true compile=off" in checked


@pytest.mark.parametrize("bench, args, message", [
    ("recipe_throughput.py", ["--recipes", "ddpm_cifar1O"], "--recipes"),
    ("recipe_throughput.py", ["--precisions", "bf16"], "bf16-mixed"),
    ("recipe_throughput.py", ["--compile", "yes"], "--compile"),
    ("recipe_throughput.py", ["--block", "0"], "--block"),
    ("recipe_throughput.py", ["--override", "model.nope=1"], "--override"),
    ("sampling_throughput.py", ["--precision", "bf16-mixed"], "--precision"),
    ("sampling_throughput.py", ["--compile", "true"], "--compile"),
])
def test_check_refuses_what_a_gpu_run_would_fail_on(bench, args, message):
    r = subprocess.run([sys.executable, f"bench/{bench}", *args, "--check", "--device", "cpu"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and message in r.stderr, r.stderr
