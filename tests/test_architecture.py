"""docs/architecture.md as tests: the layers and who may import whom, Hydra only in cli/, no
file over 400 lines. Imports are read from the source (AST), function-level ones included."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "difflab"

# lower layers never import higher ones (a module may import its own layer and below)
LAYERS = [
    ("utils", "processes", "parameterizations", "denoiser"),
    ("models", "data", "losses", "samplers", "likelihood", "metrics", "plotting", "loggers", "callbacks.ema", "fused"),
    ("lit_module", "checkpoints", "callbacks.checkpoint"),
    ("evaluation",),
    ("callbacks.eval", "callbacks", "report", "report_plots", "report_wandb", "studies"),
    ("cli",),
]


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


def modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join(parts) or "__init__", path


def imports_of(name: str, path: Path):
    """Absolute dotted names imported by a module (relative imports resolved)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(["difflab", *base] + ([node.module] if node.module else []))
                if node.module is None:  # from . import x: each name may be a module
                    yield from (f"{mod}.{a.name}" for a in node.names)
                    continue
                yield mod
            else:
                yield node.module


MODULES = [m for m in modules() if m[0] != "__init__"]


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_no_upward_imports(name, path):
    mine = layer_of(name)
    for imp in imports_of(name, path):
        if imp.startswith("difflab."):
            other = imp[len("difflab."):]
            assert layer_of(other) <= mine, f"difflab.{name} (layer {mine}) imports {imp} (layer {layer_of(other)})"


@pytest.mark.parametrize("name,path", MODULES, ids=[m[0] for m in MODULES])
def test_hydra_only_in_cli(name, path):
    if name.startswith("cli"):
        return
    hydra = [imp for imp in imports_of(name, path) if imp.split(".")[0] == "hydra"]
    assert not hydra, f"difflab.{name} imports {hydra}: library code takes plain arguments; Hydra stays in difflab.cli"


def test_no_file_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules (one concept each): {long}"
