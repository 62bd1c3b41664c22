"""docs/architecture.md as tests: the layers and who may import whom, no import cycle, Hydra only
in cli/, no private attribute of Lightning, torch or Hydra outside difflab/compat.py, every module
of callbacks/ a Callback, no file over 400 lines. Imports are read from the source (AST),
function-level ones included."""
import ast
import functools
import importlib
import inspect
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "difflab"

# lower layers never import higher ones (a module may import its own layer and below)
LAYERS = [
    ("utils", "compat", "progress", "processes", "parameterizations", "denoiser", "config_check", "registry"),
    ("models", "data", "losses", "samplers", "likelihood", "metrics", "plotting", "loggers", "ema", "fused"),
    ("lit_module", "checkpoints", "runs"),
    ("evaluation",),
    ("callbacks",),
    ("training", "demo", "scoring", "studies"),  # each command's work, from a composed config
    ("cli",),
]
# import cycles allowed for now, each one exactly this set of modules
KNOWN_CYCLES: list[set[str]] = []  # none left: studies.table / studies.plots share the leaf studies.common


def layer_of(module: str) -> int:
    """Layer of a dotted module name below difflab (longest matching prefix)."""
    best, depth = None, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = i, name.count(".")
    if best is None:
        raise AssertionError(f"difflab.{module} is in no layer of docs/architecture.md: add it to LAYERS and the doc")
    return best


def test_the_doc_shows_every_layer():
    """docs/architecture.md's layer diagram lists each module of LAYERS on its own layer's line."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\s*layer (\d+)\s+(.*)$", doc, re.M)}
    assert sorted(lines) == list(range(len(LAYERS))), f"the diagram's layers {sorted(lines)} are not LAYERS' 0..{len(LAYERS) - 1}"
    for i, names in enumerate(LAYERS):
        words = set(re.findall(r"[A-Za-z_]+", lines[i]))
        missing = [n for n in names if n not in words]
        assert not missing, f"docs/architecture.md's layer {i} line does not show {missing}"
    described = {n for row in re.findall(r"^\| (.+?) \|", doc, re.M) for n in re.findall(r"`([\w.]+)`", row)}
    undescribed = [n for names in LAYERS for n in names if n not in described]
    assert not undescribed, f"docs/architecture.md's module table has no row for {undescribed}"


def modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts) or "__init__", path


def imports_of(name: str, path: Path, tree=None):
    """Absolute dotted names imported by a module (relative imports resolved)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree or ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level <= len(package) + 1, f"difflab.{name}: a relative import beyond the difflab package"
                base = package[: len(package) - node.level + 1]
                mod = ".".join(["difflab", *base] + ([node.module] if node.module else []))
                if node.module is None:  # from . import x: each name may be a module
                    yield from (f"{mod}.{a.name}" for a in node.names)
                    continue
                yield mod
            else:
                yield node.module


MODULES = [m for m in modules() if m[0] != "__init__"]
NAMES = {m[0] for m in MODULES}


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_no_upward_imports(name, path):
    mine = layer_of(name)
    for imp in imports_of(name, path):
        if imp.startswith("difflab."):
            other = imp[len("difflab."):]
            assert layer_of(other) <= mine, f"difflab.{name} (layer {mine}) imports {imp} (layer {layer_of(other)})"


def import_graph() -> dict[str, set[str]]:
    """{module: the difflab modules it imports}, an imported name resolved to the module that holds it."""
    graph = {}
    for name, path in MODULES:
        graph[name] = set()
        for imp in imports_of(name, path):
            if imp.startswith("difflab."):
                parts = imp[len("difflab."):].split(".")
                target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in NAMES), None)
                assert target is not None, f"difflab.{name} imports {imp}, which is no module of difflab"
                if target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, f"import cycles (module- or function-level imports): {[sorted(c) for c in found]}"


def test_the_cycle_check_sees_function_level_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "cli.sweep_check" in graph["cli.entry"]  # a function-level import (hydra_entry's main)


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_hydra_only_in_cli(name, path):
    if name.startswith("cli"):
        return
    hydra = [imp for imp in imports_of(name, path) if imp.split(".")[0] == "hydra"]
    assert not hydra, f"difflab.{name} imports {hydra}: library code takes plain arguments; Hydra stays in difflab.cli"


def test_callbacks_are_callbacks():
    """callbacks/ holds Lightning callbacks only (one layer: the EMA is `difflab.ema`)."""
    from lightning.pytorch.callbacks import Callback

    for name, _ in MODULES:
        if name.startswith("callbacks."):
            mod = importlib.import_module(f"difflab.{name}")
            assert any(isinstance(v, type) and issubclass(v, Callback) and v.__module__ == mod.__name__ for v in vars(mod).values()), \
                f"difflab.{name} defines no Callback: it belongs outside callbacks/"


def test_the_console_scripts_are_thin():
    """cli/ composes and hands the config to the library (issue 30): at most 800 lines in all."""
    lines = sum(len(p.read_text().splitlines()) for p in (SRC / "cli").glob("*.py"))
    assert lines <= 800, f"src/difflab/cli holds {lines} lines: move the work into library modules"


def test_no_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules (one concept each): {long}"


# ----------------------------------------------------------------------------- private APIs
# Private attributes (a leading underscore) of Lightning, torch and Hydra change without notice;
# difflab/compat.py is the one module that touches them (tests/test_compat.py pins each use).
FOREIGN = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "hydra")
PRIVATE_OK_IN = {"compat"}
# private attributes of other libraries' objects, which compat.py does not cover
OTHER_LIBRARIES = {
    "_json_dict",  # wandb's run summary (studies.wandb)
}


def _private(attr: str) -> bool:
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def _foreign(qualname: str) -> bool:
    return qualname.split(".")[0] in FOREIGN


@functools.lru_cache(maxsize=None)
def _private_names_of(cls: type) -> frozenset:
    """Private names a foreign class (and its foreign bases) defines: class attributes, methods, and
    the `self._x` its source sets or reads."""
    names = set()
    for c in cls.__mro__:
        if not _foreign(c.__module__):
            continue
        names |= {n for n in vars(c) if _private(n)}
        try:
            names |= _self_attributes(inspect.getsourcefile(c))
        except TypeError:  # a class of torch._C
            pass
    return frozenset(n for n in names if _private(n))


@functools.lru_cache(maxsize=None)
def _self_attributes(path: str | None) -> frozenset:
    """The `self._x` of a source file (its classes' instance attributes)."""
    return frozenset(re.findall(r"\bself\.(_[A-Za-z]\w*)", Path(path).read_text())) if path else frozenset()


@functools.lru_cache(maxsize=None)
def foreign_private_names() -> frozenset:
    """Private names of the Lightning and torch objects difflab code holds (trainer, loops, module,
    optimiser, tensor, loggers, callbacks): never difflab's own, whoever sets them."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.loops import _FitLoop, _TrainingEpochLoop  # noqa: the checker's own business
    from lightning.pytorch.callbacks import RichProgressBar

    classes = [pl.Trainer, pl.LightningModule, pl.LightningDataModule, pl.Callback, RichProgressBar, CSVLogger, WandbLogger,
               _FitLoop, _TrainingEpochLoop, torch.nn.Module, torch.Tensor, torch.optim.Optimizer, torch.optim.Adam,
               torch.optim.lr_scheduler.LambdaLR, torch.utils.data.DataLoader, torch.Generator]
    names = set().union(*(_private_names_of(c) for c in classes))
    return frozenset(names | {n for n in dir(torch.cuda) if _private(n)})


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _aliases(name: str, tree) -> dict[str, str]:
    """{local name: absolute dotted name} of every import in the module (function-level ones too)."""
    package = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(["difflab", *base] + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                out[a.asname or a.name] = f"{mod}.{a.name}"
    return out


def _load(dotted: str):
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for p in parts[n:]:
            obj = getattr(obj, p, None)
        return obj
    return None


def _foreign_ancestry(cls_node, classes: dict, aliases: dict, seen=()) -> frozenset:
    """Private names that the foreign classes among a class's ancestors define."""
    names = set()
    for base in cls_node.bases:
        dotted = _dotted(base)
        if dotted is None:
            continue
        root, *rest = dotted.split(".")
        if not rest and root in classes and root not in seen:
            names |= _foreign_ancestry(classes[root], classes, aliases, (*seen, root))
        elif root in aliases and (_foreign(aliases[root]) or aliases[root].startswith("difflab.")):
            obj = _load(".".join([aliases[root], *rest]))
            if isinstance(obj, type):
                names |= _private_names_of(obj)
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def own_private_names() -> frozenset:
    """Private names difflab defines itself (functions, classes, modules, attributes it assigns on
    self or cls, keys of __dict__), less those a Lightning or torch object has."""
    names = {p.stem for p in SRC.rglob("_*.py")}
    for name, path in MODULES:
        if name in PRIVATE_OK_IN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
                        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"):
                            names.add(sub.attr)
                        elif isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and isinstance(sub.slice.value, str):
                            names.add(sub.slice.value)
            elif isinstance(node, ast.Call) and _dotted(node.func) == "object.__setattr__" and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant):
                names.add(node.args[1].value)
    return frozenset(n for n in names if isinstance(n, str) and _private(n)) - foreign_private_names()


def private_api_uses(name: str, source: str, own: frozenset) -> list[str]:
    """Where a module's code touches a private attribute of Lightning, torch or Hydra: a private
    module or name imported from them, a private attribute of one of their modules or classes, of
    an object that is not difflab's own, or one that a Lightning/torch base class defines, used or
    overridden by a subclass (`self._x`, `def _x`, `super()._x`)."""
    tree = ast.parse(source)
    aliases = _aliases(name, tree)
    foreign_aliases = {k for k, v in aliases.items() if _foreign(v)}
    hits = []

    def hit(node, what):
        hits.append(f"difflab.{name}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                if not (isinstance(node, ast.ImportFrom) and node.level) and _foreign(mod):
                    names = mod.split(".") + ([a.name for a in node.names] if isinstance(node, ast.ImportFrom) else [])
                    if any(_private(p) for p in names):
                        hit(node, f"imports a private name of {mod}")
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    in_foreign_subclass = {}  # id(node) -> private names of the class's foreign ancestors
    for cls in classes.values():
        inherited = _foreign_ancestry(cls, classes, aliases)
        if not inherited:
            continue
        for stmt in cls.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name in inherited:
                hit(stmt, f"overrides {stmt.name}, private to a Lightning/torch base class")
        for sub in ast.walk(cls):
            in_foreign_subclass[id(sub)] = inherited

    def attribute(node, obj, attr: str):
        if not _private(attr):
            return
        dotted = _dotted(obj) if obj is not None else None
        if dotted is not None and dotted.split(".")[0] in foreign_aliases:
            hit(node, f"{dotted}.{attr} is private to {aliases[dotted.split('.')[0]].split('.')[0]}")
        elif dotted in ("self", "cls"):
            if attr in in_foreign_subclass.get(id(node), ()):
                hit(node, f"{dotted}.{attr} is private to a Lightning/torch base class")
        elif attr not in own and attr not in OTHER_LIBRARIES and not attr.startswith("_difflab") \
                and not (attr.endswith("_") and not attr.endswith("__")):  # `_target_`: a config key
            hit(node, f"{ast.unparse(obj) if obj is not None else '?'}.{attr}: a private attribute that difflab does not define")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            attribute(node, node.value, node.attr)
        elif isinstance(node, ast.Call):
            fn = _dotted(node.func)
            if fn in ("getattr", "hasattr", "setattr", "delattr", "object.__setattr__", "object.__getattribute__") \
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                target = node.args[0]
                in_foreign_subclass[id(target)] = in_foreign_subclass.get(id(node), ())
                fake = ast.Attribute(value=target, attr=node.args[1].value, lineno=node.lineno)
                in_foreign_subclass[id(fake)] = in_foreign_subclass.get(id(node), ())
                attribute(fake, target, node.args[1].value)
        elif isinstance(node, ast.Compare):  # `name == "_current_fx_name"` in a __setattr__
            for c in [node.left, *node.comparators]:
                if isinstance(c, ast.Constant) and isinstance(c.value, str) and re.fullmatch(r"_[A-Za-z]\w*", c.value) \
                        and c.value in foreign_private_names():
                    hit(node, f"compares with {c.value!r}, private to Lightning/torch")
    return hits


SOURCES = [m for m in MODULES if m[0] not in PRIVATE_OK_IN]


@pytest.mark.parametrize("name,path", SOURCES, ids=[m[0] for m in SOURCES])
def test_no_private_api_outside_compat(name, path):
    hits = private_api_uses(name, path.read_text(), own_private_names())
    assert not hits, "private Lightning/torch/Hydra API outside difflab/compat.py (move it there, with a test in " \
                     "tests/test_compat.py):\n" + "\n".join(hits)


PRIVATE_USES = {  # private uses allowed in compat.py only: those moved there, and others the check must catch
    "trainer._logger_connector.should_update_logs": "def f(trainer):\n    return trainer._logger_connector.should_update_logs",
    "self.trainer._logger_connector": "import lightning as L\nclass M(L.LightningModule):\n"
                                      "    def f(self):\n        return self.trainer._logger_connector",
    "loop._batches_that_stepped = n": "def f(trainer):\n    trainer.fit_loop.epoch_loop._batches_that_stepped = 1",
    "getattr(loop, '_batches_that_stepped')": "def f(loop):\n    return getattr(loop, '_batches_that_stepped', None)",
    "name == '_current_fx_name'": "def __setattr__(self, name, value):\n    if name == '_current_fx_name':\n        pass",
    "torch._foreach_norm": "import torch\ntorch._foreach_norm([torch.ones(2)])",
    "torch.cuda._cached_device_count": "import torch\ntorch.cuda._cached_device_count = 0",
    "from torch import cuda; cuda._initialized": "from torch import cuda\nx = cuda._initialized",
    "hydra._internal": "from hydra._internal.core_plugins.basic_sweeper import BasicSweeper",
    "torch.utils._foreach_utils": "def f():\n    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices",
    "optimizer._step_supports_amp_scaling": "def f(optimizer):\n    optimizer._step_supports_amp_scaling = True",
    "t._version": "def f(t):\n    return t._version",
    "self._trainer in a LightningModule": "import lightning as L\nclass M(L.LightningModule):\n"
                                          "    def f(self):\n        return self._trainer",
    "override of a private hook": "from lightning.pytorch.callbacks import RichProgressBar\nclass B(RichProgressBar):\n"
                                  "    def _get_train_description(self, epoch):\n        return ''",
    "super()._load_from_state_dict": "from torch import nn\nclass P(nn.Module):\n    def load(self, *a):\n"
                                     "        super()._load_from_state_dict(*a)",
    "nn.Module subclass through a difflab base": "from difflab.processes.base import Process\nclass P(Process):\n"
                                                 "    def f(self):\n        return self._modules",
}


@pytest.mark.parametrize("snippet", PRIVATE_USES.values(), ids=list(PRIVATE_USES))
def test_the_private_api_check_catches(snippet):
    assert private_api_uses("snippet", snippet, own_private_names()), snippet


def test_the_private_api_check_leaves_difflab_names_alone():
    ok = ("class A:\n    def __init__(self):\n        self._x = 1\n    def f(self, other):\n        return other._saved + self._x\n"
          "def g(cfg):\n    return cfg.model._target_\n")
    assert not private_api_uses("snippet", ok, own_private_names() | {"_saved"})


# ----------------------------------------------------------------------------- tests
def test_no_test_file_imports_another_test_file():
    """Shared test helpers live in tests/helpers/ (or a conftest / a folder's helper module such as
    tests/slurm/cluster.py), never in a test file another test file imports: a test module's
    import then runs its fixtures' module-level code twice and ties unrelated files together."""
    import ast

    tests = Path(__file__).resolve().parent
    bad = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + ([a.name for a in node.names] if not node.module else [])
            for name in names:
                if any(part.startswith("test_") for part in name.split(".")):
                    bad.append(f"{path.relative_to(tests)}:{node.lineno} imports {name}")
    assert not bad, bad
