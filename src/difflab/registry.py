"""Registries of named parts (weightings: `losses.weighting`; metrics: `evaluation.metrics`), so
that adding one is one function and one YAML (docs/architecture.md, "Adding a part").

A `Registry` maps names to `Entry`s (the function and what the caller needs to know about it,
e.g. a metric's kind) and is also a live, read-only sequence of its names, in registration order:
`WEIGHTINGS`, `METRICS`, `SAMPLE_METRICS`, ... are registries or views of one, so `name in
WEIGHTINGS`, `list(METRICS)` and every "must be one of" message show what is registered now, a
user's parts included. Built-in parts are registered by the same decorators as a user's.

A name is looked up in the registry; a dotted path (`my_pkg.power_weighting`, as a `_target_`)
imports its module, which registers the function if a decorator does so, else the function is
registered under the path itself with the defaults of `register`. `load_config` registers the
`_target_` of a YAML file (a user's `conf/metric/<name>.yaml`) under the file's name.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .utils import locate


@dataclass(frozen=True)
class Entry:
    """A registered part: its `name`, the function `fn`, and `info` (e.g. {"kind": "sample"})."""

    name: str
    fn: Callable
    info: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def parameters(self) -> tuple[str, ...]:
        """The names of `fn`'s keyword-usable parameters (what a caller may pass it)."""
        return tuple(p.name for p in inspect.signature(self.fn).parameters.values()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def call(self, available: Mapping[str, Any], **fixed):
        """`fn` called with the arguments it names, taken from `available` (then `fixed`)."""
        given = {**available, **fixed}
        return self.fn(**{k: given[k] for k in self.parameters if k in given})


class Names(Sequence):
    """A live, read-only tuple of names (compares, adds and prints as the tuple it is now)."""

    def names(self) -> tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i):
        return self.names()[i]

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name) -> bool:
        return name in self.names()

    def __add__(self, other):
        return self.names() + tuple(other)

    def __radd__(self, other):
        return tuple(other) + self.names()

    def __eq__(self, other):
        return self.names() == (tuple(other) if isinstance(other, (tuple, list, Names)) else other)

    def __hash__(self):
        return id(self)

    def __repr__(self) -> str:
        return repr(self.names())


class Registry(Names):
    """name → `Entry` for one kind of part (`what`: "weighting", "metric"), in registration order."""

    def __init__(self, what: str, defaults: Mapping[str, Any] | None = None):
        self.what, self.defaults = what, dict(defaults or {})
        self._entries: dict[str, Entry] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def register(self, name: str, fn: Callable, **info) -> Entry:
        """Register `fn` under `name` (again: replaced, so a reloaded module re-registers)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        entry = Entry(name, fn, {**self.defaults, **info})
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget `name` (tests that register a part of their own)."""
        self._entries.pop(name, None)

    def decorator(self, *names: str, **info) -> Callable[[Callable], Callable]:
        """`@registry.decorator("a", "b", kind=...)`: register the function under each name."""
        def wrap(fn: Callable) -> Callable:
            for name in names or (fn.__name__,):
                self.register(name, fn, **info)
            return fn
        return wrap

    def view(self, **info) -> "View":
        """The live names whose entries have these `info` values (e.g. kind="sample")."""
        return View(self, info)

    def get(self, name: str) -> Entry:
        """The entry of `name`: a registered name, else a dotted path to a function (imported and
        registered under the path); ValueError listing the registered names otherwise."""
        entry = self.find(name)
        if entry is None:
            raise ValueError(f"{self.what} must be one of {self.names()} (or a dotted path to a function), got {name!r}")
        return entry

    def find(self, name) -> Entry | None:
        if not isinstance(name, str):
            return None
        if name in self._entries:
            return self._entries[name]
        if "." not in name.strip("."):
            return None
        try:
            fn = locate(name)
        except ValueError:  # no such module or attribute (an error inside the user's module is raised as it is)
            return None
        if name in self._entries:  # the module registered it under the path itself
            return self._entries[name]
        for entry in self._entries.values():  # a decorated function: the same entry, also under its path
            if entry.fn is fn:
                return entry
        return self.register(name, fn) if callable(fn) else None

    def load_config(self, path: str | Path) -> Entry:
        """Register a YAML file's `_target_` under the file's name: its other keys are `info` when
        they are keys of the registry's defaults (a metric's `kind`), else fixed keyword options of
        the function (as a sampler's YAML gives its options)."""
        from omegaconf import OmegaConf

        path = Path(path)
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if not isinstance(spec, dict) or "_target_" not in spec:
            raise ValueError(f"{path}: a {self.what} config needs a _target_ (a dotted path to its function)")
        fn = locate(spec.pop("_target_"))
        info = {k: spec.pop(k) for k in list(spec) if k in self.defaults}
        if spec:
            unknown = sorted(set(spec) - set(inspect.signature(fn).parameters))
            if unknown:
                raise ValueError(f"{path}: {self.what} {fn.__name__} has no option {unknown[0]}")
            fn = functools.wraps(fn)(functools.partial(fn, **spec))
        return self.register(path.stem, fn, **info)

    def discover(self, config_dirs: Sequence[str | Path], group: str) -> list[str]:
        """Register every `<dir>/<group>/*.yaml` of the config directories (e.g. those of
        `hydra.searchpath`) not registered yet; returns the names added."""
        added = []
        for d in config_dirs:
            for path in sorted((Path(d) / group).glob("*.yaml")):
                if path.stem not in self._entries:
                    added.append(self.load_config(path).name)
        return added


class View(Names):
    """The names of a registry whose entries match `info` (live)."""

    def __init__(self, registry: Registry, info: Mapping[str, Any]):
        self.registry, self.info = registry, dict(info)

    def names(self) -> tuple[str, ...]:
        return tuple(n for n, e in self.registry._entries.items() if all(e.info.get(k) == v for k, v in self.info.items()))
