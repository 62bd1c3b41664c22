"""Small shared helpers with no difflab imports: plain containers, `_target_` specs, atomic files.

- `plain(x)`: OmegaConf containers → dicts/lists (resolved), tuples → lists; safe to store in
  a checkpoint read back with `torch.load(weights_only=True)`.
- `instantiate(spec, **kwargs)`: build an object from a `{"_target_": "module.attr", ...}` dict
  (nested specs are built first; `_partial_: true` returns a `functools.partial`). This is the
  subset of Hydra's `instantiate` the library needs, so library code never imports Hydra.
- `atomic_write(path)`: a temporary file in the same directory (unique per process), renamed
  onto `path` only once it is complete, so a killed run never leaves half a result.
- `destroy_process_group_at_exit()`: a gloo process group is torn down before the interpreter
  exits (see its docstring: otherwise about one ddp_spawn CPU worker in ten dies of SIGABRT).
- `quiet_console()`: Lightning's and torch's messages that are advertisement or wrong for difflab
  silenced, each by its own message pattern (every other warning still shows).
- `RunLock(dir)`: an exclusive lock on a run directory, its `.lock` file removed when the run ends.
- `provenance(cfg, ckpt_path)`: where a result came from (checkpoint and its SHA-256, resolved
  config, difflab version, git commit), the `provenance` entry of sample.json and metrics.json.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping


def plain(x: Any) -> Any:
    """DictConfig/ListConfig → dict/list (resolved), Mapping → dict, tuple → list."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency, but the library works without it
        pass
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def locate(path: str) -> Any:
    """The object named by a dotted path `package.module.attr` (attributes may nest)."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"_target_ must be a dotted path such as difflab.processes.VPSDE, got {path!r}")
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name is not None and not ".".join(parts[:i]).startswith(e.name):
                raise  # the module exists but one of its own imports is missing
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"cannot import {path!r}: no such module or attribute (check the _target_ spelling)")


def is_spec(x: Any) -> bool:
    return isinstance(x, Mapping) and "_target_" in x


def instantiate(spec: Mapping, **kwargs) -> Any:
    """Build `spec["_target_"](**rest, **kwargs)`; nested `_target_` dicts are built first.
    With `_partial_: true` the result is `functools.partial(target, **rest, **kwargs)`."""
    if not is_spec(spec):
        raise ValueError(f"expected a config with a _target_, got {spec!r}")
    spec = plain(spec)
    target = locate(spec.pop("_target_"))
    partial = bool(spec.pop("_partial_", False))
    spec.pop("_convert_", None)
    args = {k: (instantiate(v) if is_spec(v) else v) for k, v in spec.items()}
    args.update(kwargs)
    return functools.partial(target, **args) if partial else target(**args)


def _destroy_process_group() -> None:
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if torch.torch_version.TorchVersion(torch.__version__) < (2, 8):
            # Before torch 2.8 (pytorch/pytorch#154976) the group's destructor holds the GIL while it
            # joins gloo's worker threads, and a worker that is still freeing its last collective's
            # tensors waits for the GIL: a deadlock at exit (seen with torch 2.4: 1 ddp_spawn run in
            # 4 hung in ~ProcessGroupGloo). Sleeping releases the GIL so those workers finish first.
            time.sleep(0.2)
        dist.destroy_process_group()


def destroy_process_group_at_exit() -> None:
    """Destroy this process's default process group when the interpreter exits (once per process).

    Lightning registers this for NCCL only (`lightning.fabric.utilities.distributed.
    _init_dist_connection`). A gloo group still alive at interpreter exit lets a worker thread be
    destroyed while joinable: "terminate called without an active exception", SIGABRT, and
    `ProcessExitedException` in the parent although training finished. Measured with torch 2.14.1 +
    Lightning 2.6 on 2 ddp_spawn CPU workers (tests/test_ddp.py's run, repeated): 3 aborts in 25
    runs without this, 0 in 50 with it. Called from the hooks that run inside every worker
    (`DiffusionModule.setup`, `EvalCallback.setup`); a no-op without a process group."""
    import atexit

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        atexit.unregister(_destroy_process_group)  # one handler however many hooks call this
        atexit.register(_destroy_process_group)


#: (message regex, category) of the warnings `quiet_console` silences, each with why it is noise here
QUIET_WARNINGS = (
    # torch >= 2.9 deprecates LeafSpec, which Lightning's own `utilities/_pytree.py` still uses:
    # nothing a difflab user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # rows are logged every log_every_n_steps optimiser steps counted across epochs
    # (`_batches_that_stepped`): an epoch shorter than the interval loses no row
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning),
    # difflab resumes exactly without a stateful loader: `data.base.StepSampler` starts where
    # `trainer.global_step` says the run is (the checkpoint's step), which Lightning cannot see
    (r"You're resuming from a checkpoint that ended before the epoch ended", Warning),
    # Lightning's hint on a login node with SLURM installed; a job inside an allocation never sees it
    (r"The `srun` command is available", Warning),
)
#: Lightning's info messages dropped by `quiet_console` (an advertisement)
QUIET_INFO = (r"litlogger",)


class _DropMessages(logging.Filter):
    def __init__(self, patterns):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(p.search(text) for p in self.patterns)


def quiet_console() -> None:
    """Silence the console messages listed in `QUIET_WARNINGS` and `QUIET_INFO` (and nothing else)
    in this process. Idempotent; called by every console script before it composes its config."""
    import warnings

    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)  # where Lightning's rank_zero_info writes
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(QUIET_INFO))


def _umask() -> int:
    """The process's umask (read by setting and restoring it: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a unique temporary file beside `path`; on success fsync it and rename it onto
    `path` (atomic on POSIX), on error remove it. Readers see the old file or the new one, with
    the mode a plain `open` gives under the umask (not mkstemp's private 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make results unreadable to the group
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_safe(v: Any) -> Any:
    """NaN/inf → None, tensors → lists, tuples → lists, recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if hasattr(v, "tolist") and callable(v.tolist):
        return json_safe(v.tolist())
    return v


def write_json(path: str | os.PathLike, obj: Mapping) -> Path:
    """Write `obj` as sorted, indented JSON atomically (NaN/inf become null)."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(json_safe(obj), indent=2, sort_keys=True) + "\n")
    return Path(path)


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """`numpy.savez` atomically (a kill during the write leaves the previous file intact)."""
    import numpy as np

    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout difflab is imported from (once per process), None when it
    is not one (an installed wheel, no git, a checkout without commits)."""
    import subprocess

    here = Path(__file__).resolve().parent
    if "site-packages" in here.parts or "dist-packages" in here.parts:
        return None  # installed: a git repository around the environment is someone else's
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = r.stdout.strip()
    return commit if r.returncode == 0 and len(commit) >= 40 else None


def difflab_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("difflab")
    except PackageNotFoundError:
        return None


def checkpoint_hparams(path: str | os.PathLike) -> dict | None:
    """A checkpoint's `hyper_parameters` (the model, process, parameterization, loss and data it
    was trained with), read memory-mapped (the weights are not loaded); None when unreadable."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - provenance is a record, not a check (the checkpoint was read before)
        return None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    return plain(hp) if isinstance(hp, Mapping) else None


def flatten(node: Any, prefix: str = "") -> dict:
    """{dotted key: value} of every leaf of a plain nested dict (an empty dict is a leaf)."""
    out = {}
    for k, v in (node.items() if isinstance(node, dict) else ()):
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def resolved_config(cfg: Any) -> Any:
    """`plain(cfg)`, or, where a node cannot be resolved (an unused group's interpolation, e.g. the
    oracle's ${data.means} under data=mnist with a checkpoint), each top-level node resolved on its
    own and the ones that fail kept unresolved: provenance never costs a result."""
    try:
        return plain(cfg)
    except Exception:  # noqa: BLE001 - omegaconf's interpolation errors
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(cfg, resolve=False)
        out = {}
        for key in raw:
            try:
                out[key] = plain(cfg[key])
            except Exception:  # noqa: BLE001
                out[key] = raw[key]
        return out


def provenance(cfg: Any = None, ckpt_path: str | os.PathLike | None = None, **settings: Any) -> dict:
    """Where a result came from, stored under "provenance" in sample.json and metrics.json: the
    checkpoint (absolute path, SHA-256 and the hyper-parameters it was trained with; None for an
    exact model), the command's resolved config as plain containers (with a checkpoint, its own
    model, process and data replace the config's: see checkpoint_hparams), the difflab version and
    the git commit (None where unknown). `settings` replace config keys whose resolved value is
    not what the run used (output=<the run's directory>: a timestamp resolves anew)."""
    config = resolved_config(cfg) if cfg is not None else None
    if isinstance(config, dict):
        config.update(settings)
    ckpt = Path(ckpt_path).resolve() if ckpt_path else None
    return {"checkpoint": str(ckpt) if ckpt else None, "checkpoint_sha256": sha256_file(ckpt) if ckpt else None,
            "checkpoint_hparams": checkpoint_hparams(ckpt) if ckpt else None,
            "config": config, "difflab_version": difflab_version(), "git_commit": git_commit()}


class RunLock:
    """An exclusive lock on a run directory (`<dir>/.lock`, fcntl.flock): a second process that
    wants to write into the same directory is refused at once instead of mixing its files in.
    The kernel drops the lock when the process dies, so a killed run never leaves it held.

    The run removes `.lock` when it ends (success, error, SIGTERM or Ctrl-C: whatever leaves the
    `with`), while it still holds the lock. A process that opened the file just before it was
    removed may then lock that removed file: after locking, `__enter__` checks that the file it
    holds is still the one at `<dir>/.lock` (same device and inode) and starts again otherwise, so
    two processes never both hold the lock of one directory."""

    #: attempts to lock a `.lock` that other runs keep removing and re-creating under us
    ATTEMPTS = 100

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / ".lock"
        self._fd: int | None = None

    def _refused(self) -> ValueError:
        return ValueError(f"another process is writing to {self.path.parent} (it holds {self.path}); "
                          "wait for it to finish or choose another output=")

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(self.ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refused() from None
            held = os.fstat(fd)
            try:
                now = os.stat(self.path)
                current = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
            except FileNotFoundError:
                current = False
            if current:
                self._fd = fd  # the file stays empty: taking the lock changes nothing a refused run must leave as it was
                return self
            os.close(fd)  # its holder ended and removed it: lock the file now at the path
        raise self._refused()

    def __exit__(self, *exc) -> None:
        import fcntl

        if self._fd is not None:
            with contextlib.suppress(OSError):  # removed while held: whoever opened it meanwhile starts again
                self.path.unlink()
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
