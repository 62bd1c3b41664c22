"""Shared by the benchmarks: the `--device` / `--compile` argument checks, and the result files
(one JSON line per result as it comes, and a JSON file with the machine and the command at the end)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def device_and_compiles(ap, device: str, compile: str) -> tuple[torch.device, list[bool]]:
    """`--device` as a torch.device and `--compile` (off, on or off,on) as flags; a bad value
    exits 2 through `ap.error`, naming the option."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        ap.error(f"--device {device!r}: {e}")
    compiles = compile.split(",")
    if set(compiles) - {"on", "off"}:
        ap.error(f"--compile takes off, on or off,on, got {compile!r}")
    return dev, [c == "on" for c in compiles]


def append_jsonl(path, bench: str, row: dict) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"bench": bench, **row}) + "\n")


def write_results(out, default: Path, device: torch.device, results: list) -> Path:
    out = Path(out or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
                command="python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")
    return out
