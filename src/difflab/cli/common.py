"""Shared plumbing of the console scripts: user errors → exit 2, output directories, builders
(the Hydra entry itself is `entry.hydra_entry`).

Entry points stay a few lines: compose (Hydra), instantiate, run. Library functions never
take a Hydra config; only this package reads `DictConfig`s.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from ..utils import flatten, plain

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


class UsageError(Exception):
    """A user mistake (bad option, missing file, shapes that don't fit): printed as one
    line saying what to change, exit status 2, nothing written."""


#: a job directory name longer than this (bytes) is replaced by a hash (file systems allow 255)
MAX_DIRNAME = 200


def job_dirname(overrides: str) -> str:
    """A -m job's directory name (`hydra.sweep.subdir`): its swept overrides, as Hydra's
    override_dirname gives them (`schedule=cosine,weighting=elbo`); `overrides-<sha1>` of them when
    they hold a '/' (a path as value) or exceed MAX_DIRNAME bytes. "" (nothing swept): the job
    writes into the sweep's output directory itself."""
    import hashlib

    if "/" in overrides or len(overrides.encode()) > MAX_DIRNAME:
        return "overrides-" + hashlib.sha1(overrides.encode()).hexdigest()[:12]
    return overrides


def run_dir(resume) -> str:
    """`output`'s default: the run being resumed (`resume=DIR`), else runs/<timestamp with
    microseconds>. (`${oc.select:resume,...}` returned the null of an unset `resume`, and Hydra
    refused a null run directory.)"""
    from datetime import datetime

    return str(resume) if resume is not None else f"runs/{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("difflab.job_dir", job_dirname, replace=True)
    # cached: every ${output} of one config (hydra.run.dir, hydra.sweep.dir, output) is the same timestamp
    OmegaConf.register_new_resolver("difflab.run_dir", run_dir, replace=True, use_cache=True)


_register_resolvers()  # also where a launcher (submitit, SLURM) unpickles a job: it imports this module


def task_overrides() -> list[str]:
    """The command line's overrides of this Hydra run ([] outside one, e.g. under the compose API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except Exception:  # noqa: BLE001
        return []


def _group_overrides(args) -> list[str]:
    """The group choices among command-line arguments (`model=mlp`, not `model.hidden=8`)."""
    def group(a: str) -> bool:
        key = a.split("=")[0].lstrip("+")
        return "=" in a and not a.startswith(("-", "~", "hydra")) and "." not in key and (CONFIG_DIR / key).is_dir()

    return [a for a in args if group(a)]


def check_override_types(cfg, config_name: str) -> None:
    """A key=value override whose value has the wrong type for the key (trainer.max_steps=abc)
    is refused naming the key and the expected type, before anything runs."""
    from hydra import compose
    from omegaconf import OmegaConf

    def scalar(o: str) -> bool:  # a key=value override (not a group choice such as model=mlp)
        key = o.lstrip("+").split("=")[0]
        return "." in key or (key in cfg and not OmegaConf.is_config(cfg[key]))

    dotted = [o for o in task_overrides() if "=" in o and not o.startswith(("hydra", "~")) and scalar(o)]
    if not dotted:
        return
    try:
        base = compose(config_name, overrides=_group_overrides(task_overrides()))
    except Exception:  # noqa: BLE001 - the real composition succeeded; nothing to compare with
        return
    for o in dotted:
        if o.startswith("+"):
            check_added_key(base, *o.lstrip("+").split("=", 1))
    for o in dotted:
        key, _, value = o.lstrip("+").partition("=")
        default = OmegaConf.select(base, key, default=None, throw_on_resolution_failure=False)
        new = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if default is None or new is None:
            continue
        if isinstance(default, bool):
            ok, kind = isinstance(new, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = isinstance(new, int) and not isinstance(new, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(new, (int, float)) and not isinstance(new, bool), "a number"
        else:
            continue
        if not ok:
            raise UsageError(f"{key}={value}: expected {kind} (default {default})")


# config nodes handed whole to a constructor or a sampler, which refuse an option they do not take
_OPEN_NODES = ("trainer", "sampler")


def suggest_key(base, key: str) -> str | None:
    """The config key a user probably meant by `key`: one with the same last part (the shortest),
    else the closest dotted key, else the closest last part."""
    import difflib

    from omegaconf import OmegaConf

    keys = [k for k in flatten(OmegaConf.to_container(base, resolve=False)) if k != "_target_" and not k.startswith("hydra.")]
    leaf = key.rpartition(".")[2]
    same = sorted((k for k in keys if k.rpartition(".")[2] == leaf and k != key), key=len)
    if same:
        return same[0]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaves = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in keys], n=1, cutoff=0.75)
    return next((k for k in keys if leaves and k.rpartition(".")[2] == leaves[0]), None)


def check_added_key(base, key: str, value: str) -> None:
    """`+key=value` (or `++`) adds a key to the config; one that no part of difflab reads would be
    silently ignored (Hydra's advice for `max_steps=100` is `+max_steps=100`, which trains with its
    default). Allowed only inside a node handed whole to a constructor (one with `_target_`, the
    trainer, the sampler), which refuses an option it does not take; else refused with the key
    the user probably meant."""
    from omegaconf import OmegaConf

    parent = key.rpartition(".")[0]
    node = OmegaConf.select(base, parent, default=None, throw_on_resolution_failure=False) if parent else base
    if OmegaConf.select(base, key, default=None, throw_on_resolution_failure=False) is not None:
        return
    if parent and OmegaConf.is_dict(node) and ("_target_" in node or parent.split(".")[0] in _OPEN_NODES):
        return
    close = suggest_key(base, key)
    hint = f"; did you mean {close}={value}?" if close else "; `--cfg job` lists the keys"
    raise UsageError(f"+{key}={value}: nothing reads {key}{hint}")


def did_you_mean(text: str, config_name: str) -> str:
    """"; did you mean trainer.max_steps?" for a misspelled key in Hydra's error text."""
    import difflib
    import re

    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if not m:
        return ""
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=_group_overrides(sys.argv[1:]))
        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = list(node.keys()) if OmegaConf.is_dict(node) else []
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return ""
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {parent + '.' if parent else ''}{close[0]}?"
    other = suggest_key(cfg, key)  # a key of another node: max_steps -> trainer.max_steps
    return f"; did you mean {other}?" if other else ""


def _remove_if_empty(path: Path) -> None:
    """Hydra creates the run directory before the checks run: a refused run leaves no empty one."""
    try:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    except OSError:
        pass


def one_line(text: str) -> str:
    """Hydra's multi-line config error as one line: the message, the available options
    as a comma list, without the search path and the HYDRA_FULL_ERROR hint."""
    parts: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or "HYDRA_FULL_ERROR" in line or line.startswith(("full_key:", "object_type=", "To append to your config")):
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
    """The `device` option (auto: CUDA when present). On CUDA, cuDNN autotunes each convolution
    once (`cudnn.benchmark`, as trainer=gpu does): sampling calls the network at one shape."""
    if name in (None, "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device={name} asked for, but no CUDA device is available; use device=cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def instantiate(node, what: str, **kwargs):
    """hydra.utils.instantiate with an error that names the config group."""
    from hydra.utils import instantiate as _inst

    try:
        return _inst(node, **kwargs)
    except Exception as e:  # InstantiationException, a missing interpolation, a bad argument
        cause = e.__cause__ or e
        if isinstance(cause, UsageError):
            raise cause from None
        text = " ".join(str(cause).strip().splitlines()[:1]) or type(cause).__name__
        raise UsageError(f"could not build {what}: {text}") from e


def user_chose(group: str) -> bool:
    """Whether `group=` was given on the command line (not just the default)."""
    return any(o.split("=")[0].lstrip("+~") == group for o in task_overrides())


def build_oracle(data_cfg):
    """The exact GMM of a data=gmm config (means/stds/weights)."""
    from ..evaluation import mixture_of

    oracle = mixture_of(plain(data_cfg))
    if oracle is None:
        raise UsageError("model=oracle needs a Gaussian-mixture data set: add data=gmm (and data.means/stds/weights)")
    return oracle


def _data_name(spec) -> str:
    return str((spec or {}).get("_target_", "?")).rsplit(".", 1)[-1]


def build_target(cfg, device, data_chosen: bool = False):
    """What sample/eval run on (an `evaluation.EvalTarget`): the EMA denoiser of `ckpt_path`
    with its own process and data (`data_chosen`: data= was typed, and must name the same data
    set), or an exact model of the `model` group (model=oracle: the GMM's posterior mean)."""
    from ..evaluation import from_checkpoint, from_exact_model, mixture_of

    if cfg.get("ckpt_path"):
        path = Path(str(cfg.ckpt_path))
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={path} does not exist; give a checkpoint written by difflab-train "
                             "(<run dir>/checkpoints/last.ckpt)")
        target = from_checkpoint(path, device=device, use_ema=bool(cfg.get("use_ema", True)), compile=plain(cfg.get("compile", False)))
        if data_chosen:
            asked = plain(cfg.data)
            if _data_name(asked) != _data_name(target.data_spec):
                raise UsageError(
                    f"the checkpoint was trained on data {_data_name(target.data_spec)} but data={_data_name(asked)} was asked; "
                    "drop the data= override (the checkpoint's own data is used) or pass a checkpoint trained on that data")
            target.data_spec, target.mixture = asked, mixture_of(asked)
        if not target.data_spec:
            raise UsageError("the checkpoint holds no data config; pass data=... matching what it was trained on")
        return target
    node = cfg.get("model")
    if node is None or node.get("_target_") is None:
        raise UsageError("nothing to sample from: pass ckpt_path=<run>/checkpoints/last.ckpt (a difflab-train checkpoint) "
                         "or model=oracle (the exact denoiser of data=gmm)")
    model = instantiate(node, "model")
    if not callable(getattr(model, "denoiser", None)):
        raise UsageError(f"model={_data_name(plain(node))} is an untrained network: pass ckpt_path=<run>/checkpoints/last.ckpt "
                         "(or model=oracle, the exact denoiser of data=gmm)")
    process, param = instantiate(cfg.process, "process"), instantiate(cfg.parameterization, "parameterization")
    dim = getattr(model, "dim", None)
    shape = tuple(cfg.data.get("shape") or (dim,))
    if dim is not None and math.prod(shape) != dim:
        raise UsageError(f"data.shape={list(shape)} has {math.prod(shape)} entries but the model has {dim} dims")
    return from_exact_model(model, process, param, plain(cfg.data), shape, device)


def refuse_existing(path: Path, overwrite) -> None:
    """A result already there is kept unless the user says overwrite=true."""
    if path.exists() and not bool(overwrite):
        raise UsageError(f"{path} already exists; choose another output=... or pass overwrite=true")


SMALL_MODEL = 2_000_000  # parameters: below this, one CPU thread beats torch's default on a busy machine


def set_threads(n, model=None) -> None:
    """torch CPU threads: an integer, or "auto"/None — one thread for a small model (fewer than
    2M parameters, the MLP recipes and the oracle), torch's default otherwise. Measured on a busy
    2-core machine: 300 steps of the gmm MLP took 181 s with the default, 8 s with one thread."""
    if n in (None, "auto"):
        if model is not None and sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
            torch.set_num_threads(1)
        return
    try:
        count = int(n)
    except (TypeError, ValueError):
        count = 0
    if isinstance(n, bool) or count < 1:
        raise UsageError(f"threads must be a positive integer or auto, got {n}")
    torch.set_num_threads(count)
