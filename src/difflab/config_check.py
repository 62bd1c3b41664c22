"""A command's config checked against what the user typed, and config errors as one line.

`UsageError` is a user mistake (a bad option, a missing file, shapes that don't fit): the
console scripts print it as one line saying what to change and exit with status 2, nothing
written. The checks here take the composed config, the command line's overrides and, where they
compare with the defaults, a `compose(overrides)` function: this leaf module never imports Hydra
(difflab.cli composes), only OmegaConf.

- `check_override_types`: `trainer.max_steps=abc` refused naming the expected type;
  `check_added_key`: `+key=value` that nothing reads refused, with the key probably meant;
- `one_line` / `did_you_mean`: Hydra's multi-line config error (captured from stderr) as one line,
  with the misspelled key's likely spelling.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

#: difflab's own config directory (`conf/`, the Hydra config_path of every console script)
CONFIG_DIR = Path(__file__).resolve().parent / "conf"

#: compose(overrides) -> the command's config composed with these overrides (Hydra's compose API)
Compose = Callable[[list], Any]


class UsageError(Exception):
    """A user mistake (bad option, missing file, shapes that don't fit): printed as one
    line saying what to change, exit status 2, nothing written."""


def group_overrides(args: Iterable[str], config_dir: Path = CONFIG_DIR) -> list[str]:
    """The group choices among command-line arguments (`model=mlp`, not `model.hidden=8`)."""
    def group(a: str) -> bool:
        key = a.split("=")[0].lstrip("+")
        return "=" in a and not a.startswith(("-", "~", "hydra")) and "." not in key and (config_dir / key).is_dir()

    return [a for a in args if group(a)]


def check_override_types(cfg, overrides: Sequence[str], compose: Compose) -> None:
    """A key=value override whose value has the wrong type for the key (trainer.max_steps=abc)
    is refused naming the key and the expected type, before anything runs. `compose` gives the
    defaults to compare with (the command's config with the group choices of `overrides` only)."""
    from omegaconf import OmegaConf

    def scalar(o: str) -> bool:  # a key=value override (not a group choice such as model=mlp)
        key = o.lstrip("+").split("=")[0]
        return "." in key or (key in cfg and not OmegaConf.is_config(cfg[key]))

    dotted = [o for o in overrides if "=" in o and not o.startswith(("hydra", "~")) and scalar(o)]
    if not dotted:
        return
    try:
        base = compose(group_overrides(overrides))
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

    from .utils import flatten

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


def did_you_mean(text: str, args: Sequence[str], compose: Compose) -> str:
    """"; did you mean trainer.max_steps?" for a misspelled key in Hydra's error text (`args`: the
    command line, whose group choices `compose` applies)."""
    import difflib
    import re

    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if not m:
        return ""
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        from omegaconf import OmegaConf

        cfg = compose(group_overrides(args))
        node = OmegaConf.select(cfg, parent) if parent else cfg
        names = list(node.keys()) if OmegaConf.is_dict(node) else []
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return ""
    close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {parent + '.' if parent else ''}{close[0]}?"
    other = suggest_key(cfg, key)  # a key of another node: max_steps -> trainer.max_steps
    return f"; did you mean {other}?" if other else ""


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


def refuse_existing(path: Path, overwrite) -> None:
    """A result already there is kept unless the user says overwrite=true."""
    if path.exists() and not bool(overwrite):
        raise UsageError(f"{path} already exists; choose another output=... or pass overwrite=true")


def remove_if_empty(path: Path) -> None:
    """Hydra creates the run directory before the checks run: a refused run leaves no empty one."""
    try:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    except OSError:
        pass
