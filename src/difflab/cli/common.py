"""Shared plumbing of the console scripts: Hydra entry, user errors → exit 2, builders.

Entry points stay a few lines: compose (Hydra), instantiate, run. Library functions never
take a Hydra config; only this package reads `DictConfig`s.
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import torch

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


class UsageError(Exception):
    """A user mistake (bad option, missing file, shapes that don't fit): printed as one
    line saying what to change, exit status 2, nothing written."""


def hydra_entry(config_name: str, prog: str) -> Callable[[Callable], Callable[[], None]]:
    """Decorate `run(cfg, output_dir)` into a console-script `main()`.

    Config errors (unknown option, misspelled key) and `UsageError`/`ValueError` raised while
    building objects end the program with one clear line and exit status 2.
    """

    def wrap(run: Callable[[Any, Path], Any]) -> Callable[[], None]:
        import hydra
        from hydra.errors import InstantiationException

        captured: dict = {}

        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        def _hydra_main(cfg) -> None:
            if "stderr" in captured:  # composition succeeded: the real stderr again
                sys.stderr = captured.pop("stderr")
            try:
                run(cfg, output_dir(cfg))
            except (UsageError, ValueError, InstantiationException, FileNotFoundError) as e:
                msg = str(e).strip().splitlines()
                text = next((m for m in reversed(msg) if m.strip()), type(e).__name__) if isinstance(e, InstantiationException) else " ".join(msg)
                print(f"{prog}: error: {text}", file=sys.stderr)
                sys.exit(2)

        @functools.wraps(run)
        def main() -> None:
            import io
            import os

            if os.environ.get("HYDRA_FULL_ERROR") != "1" and not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") or a.startswith(("--cfg", "--info", "-c")) for a in sys.argv[1:]):
                captured["stderr"] = sys.stderr  # Hydra's multi-line config errors, condensed below
                sys.stderr = io.StringIO()
            try:
                _hydra_main()
            except SystemExit as e:  # Hydra exits 1 on config errors; ours is 2
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    if text.strip():
                        print(f"{prog}: error: {one_line(text)}", file=sys.stderr)
                if e.code not in (0, None):
                    sys.exit(2)
                raise
            finally:
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    sys.stderr.write(text)

        return main

    return wrap


def one_line(text: str) -> str:
    """Hydra's multi-line config error as one line: the message, the available options
    as a comma list, without the search path and the HYDRA_FULL_ERROR hint."""
    parts: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or "HYDRA_FULL_ERROR" in line or line.startswith(("full_key:", "object_type=")):
            continue
        if line.startswith("Config search path"):
            break
        if raw.startswith("\t"):
            options.append(line)
            continue
        if options:
            parts[-1] += " " + ", ".join(options)
            options = []
        parts.append(line.rstrip(".:") + (":" if line.endswith(":") else ""))
    if options and parts:
        parts[-1] += " " + ", ".join(options)
    return "; ".join(parts)


def output_dir(cfg) -> Path:
    """Hydra's job directory when run as a script (per job under -m), else `cfg.output`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output)


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name} asked for, but no CUDA device is available; use device=cpu")
    return dev


def instantiate(node, what: str):
    """hydra.utils.instantiate with an error that names the config group."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as _inst

    try:
        return _inst(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise UsageError(f"could not build {what}: {cause}") from e


def build_process(cfg):
    return instantiate(cfg.process, "process")


def build_parameterization(cfg):
    return instantiate(cfg.parameterization, "parameterization")


def is_oracle(cfg) -> bool:
    return cfg.get("model") is not None and cfg.model.get("name") == "oracle"


def build_oracle(data_cfg):
    """The GMM oracle from data=gmm's means/stds/weights."""
    from ..models import GMMOracle

    if data_cfg is None or "means" not in data_cfg:
        raise UsageError("model=oracle needs a Gaussian-mixture data set: add data=gmm (and data.means/stds/weights)")
    from omegaconf import OmegaConf

    return GMMOracle(
        OmegaConf.to_container(data_cfg.means), OmegaConf.to_container(data_cfg.stds), OmegaConf.to_container(data_cfg.weights)
    )


def write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (a killed run never leaves half a file); NaN/inf become null."""

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if torch.is_tensor(v):
            return clean(v.tolist())
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
