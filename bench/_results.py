"""Result files shared by the benchmarks: one JSON line per result as it comes, and a JSON
file with the machine and the command at the end."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


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
