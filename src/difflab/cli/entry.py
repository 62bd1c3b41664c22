"""`hydra_entry`: a `run(cfg, output_dir)` function as a console script's `main()` — the sweep
check before any job (`sweep_check`), Hydra's composition, and user errors as one line with exit
status 2 (`common`). The top of the cli package: it imports both, neither imports it."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable

from ..utils import quiet_console
from .common import CONFIG_DIR, UsageError, _remove_if_empty, check_override_types, did_you_mean, one_line, output_dir


class _Captured(dict):
    """The real stderr while Hydra composes; pickles as an empty dict, so launchers that pickle
    the task function (submitit, SLURM) never try to pickle an open file."""

    def __reduce__(self):
        return (dict, ())


def hydra_entry(config_name: str, prog: str) -> Callable[[Callable], Callable[[], None]]:
    """Decorate `run(cfg, output_dir)` into a console-script `main()`.

    Config errors (unknown option, misspelled key) and `UsageError`/`ValueError` raised while
    building objects end the program with one clear line and exit status 2.
    """

    def wrap(run: Callable[[Any, Path], Any]) -> Callable[[], None]:
        import hydra
        from hydra.errors import InstantiationException

        captured = _Captured()

        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        def _hydra_main(cfg) -> None:
            if "stderr" in captured:  # composition succeeded: the real stderr again
                sys.stderr = captured.pop("stderr")
            out = output_dir(cfg)
            try:
                check_override_types(cfg, config_name)
                run(cfg, out)
            except (UsageError, ValueError, InstantiationException, FileNotFoundError) as e:
                msg = str(e).strip().splitlines()
                text = next((m for m in reversed(msg) if m.strip()), type(e).__name__) if isinstance(e, InstantiationException) else " ".join(msg)
                print(f"{prog}: error: {text}", file=sys.stderr)
                _remove_if_empty(out)
                sys.exit(2)

        @functools.wraps(run)
        def main() -> None:
            import io
            import os

            from .sweep_check import check_sweep_argv

            # a -m sweep whose jobs would repeat each other is refused before any job; the job
            # directories are named after the swept overrides only
            dirname = check_sweep_argv(config_name, prog)
            if dirname:
                sys.argv = [*sys.argv, dirname]
            quiet_console()  # Lightning's advertisement and the warnings that are wrong for difflab, by message

            if os.environ.get("HYDRA_FULL_ERROR") != "1" and not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") or a.startswith(("--cfg", "--info", "-c")) for a in sys.argv[1:]):
                captured["stderr"] = sys.stderr  # Hydra's multi-line config errors, condensed below
                sys.stderr = io.StringIO()
            try:
                _hydra_main()
            except SystemExit as e:  # Hydra exits 1 on config errors; ours is 2
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    if text.strip():
                        print(f"{prog}: error: {one_line(text)}{did_you_mean(text, config_name)}", file=sys.stderr)
                if e.code == 1:  # Hydra's config errors; our own codes (2, 128 + signal) pass through
                    sys.exit(2)
                raise
            finally:
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    sys.stderr.write(text)

        return main

    return wrap
