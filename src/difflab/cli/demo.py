"""`make demo` = `python -m difflab.cli.demo output=runs/demo`: train the `digits` recipe on the
CPU, evaluate its EMA weights with difflab-eval, write `<output>/report.md` with a sample grid, a
loss curve and `metrics.json` (the work and its numbers: `difflab.demo`).

Any other `key=value` is passed to difflab-train (e.g. `trainer.max_steps=500`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from .. import demo as _demo
from ..config_check import CONFIG_DIR, UsageError
from ..progress import program
from ..utils import quiet_console

PROG = _demo.PROG


def parse_args(argv: list[str]) -> tuple[Path, list[str]]:
    out, rest = Path("runs/demo"), []
    for a in argv:
        if "=" not in a and not a.startswith("~"):
            raise UsageError(f"arguments are key=value overrides, got {a!r}; e.g. output=runs/demo trainer.max_steps=500")
        if a.startswith("output="):
            out = Path(a.split("=", 1)[1])
        else:
            rest.append(a)
    return out, rest


def compose(config_name: str, overrides: list[str]):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return _compose(config_name, overrides=overrides)


def demo(out: Path, overrides: list[str], **options) -> dict:
    """`difflab.demo.demo` on difflab's configs."""
    return _demo.demo(out, overrides, compose, **options)


def main(argv: list[str] | None = None) -> None:
    from hydra.errors import HydraException

    quiet_console()
    try:
        out, overrides = parse_args(sys.argv[1:] if argv is None else argv)
        with program(PROG):
            metrics = demo(out, overrides)
    except (UsageError, ValueError, FileNotFoundError, HydraException) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"{PROG}: wrote {out / 'report.md'}: {metrics['classifier_confident']:.1%} of samples classified confidently, "
          f"{metrics['classes_covered']}/10 classes")


if __name__ == "__main__":
    main()
