"""`remember_no_cuda`: without a GPU, `torch.cuda.is_available()` stops asking NVML on every call
(Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 makes every Adam step do so otherwise)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    import lightning  # sets PYTORCH_NVML_BASED_CUDA_CHECK=1
    import torch
    import torch.cuda as cuda
    calls = []
    real = cuda._device_count_nvml
    cuda._device_count_nvml = lambda *a, **k: calls.append(1) or real(*a, **k)
    from difflab.compat import remember_no_cuda
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    def steps(n):
        for _ in range(n):
            opt.zero_grad(); (p * p).sum().backward(); opt.step()
    before = len(calls); steps(5); per_step_before = (len(calls) - before) / 5
    did = remember_no_cuda()
    before = len(calls); steps(5); per_step_after = (len(calls) - before) / 5
    print(json.dumps(dict(env=os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"), did=did, before=per_step_before,
                          after=per_step_after, available=torch.cuda.is_available(), count=torch.cuda.device_count())))
""")


@pytest.mark.skipif(torch.cuda.is_available() or not torch.backends.cuda.is_built(), reason="a machine without a GPU, torch built with CUDA")
def test_adam_steps_stop_asking_nvml_once_no_gpu_is_remembered():
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["env"] == "1" and got["did"] is True
    assert got["before"] >= 1 and got["after"] == 0  # NVML asked on every step before, never after
    assert got["available"] is False and got["count"] == 0


def test_left_alone_where_cuda_visible_devices_is_set(monkeypatch):
    from difflab.compat import remember_no_cuda

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "_cached_device_count", None, raising=False)
    assert remember_no_cuda() is False and torch.cuda._cached_device_count is None


def test_left_alone_where_a_gpu_is_present(monkeypatch):
    from difflab.compat import remember_no_cuda

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "_cached_device_count", None, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert remember_no_cuda() is False and torch.cuda._cached_device_count is None
