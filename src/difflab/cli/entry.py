"""`hydra_entry`: a `run(cfg, output_dir)` function as a console script's `main()` — the sweep
check before any job (`sweep_check`), Hydra's composition, and user errors as one line with exit
status 2 (`common`). The top of the cli package: it imports both, neither imports it."""
from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from ..config_check import CONFIG_DIR, UsageError, one_line, remove_if_empty
from ..runs import clear_failure, failed_jobs, record_failure, summary_lines
from ..utils import quiet_console
from .common import check_override_types, did_you_mean, in_multirun, output_dir, sweep_dir


class StopSweep(BaseException):
    """`fail_fast=true`: the first failed job of a -m sweep stops the sweep (a BaseException, so
    Hydra's launcher, which records a job's Exception and goes on, lets it through)."""


class _Captured(dict):
    """The real stderr while Hydra composes; pickles as an empty dict, so launchers that pickle
    the task function (submitit, SLURM) never try to pickle an open file."""

    def __reduce__(self):
        return (dict, ())


USAGE_ERROR = f"{UsageError.__module__}.{UsageError.__qualname__}: "  # how Hydra's traceback ends for one


def hydra_entry(config_name: str, prog: str) -> Callable[[Callable], Callable[[], None]]:
    """Decorate `run(cfg, output_dir)` into a console-script `main()`.

    Config errors (unknown option, misspelled key) and `UsageError`/`ValueError` raised while
    building objects end the program with one clear line and exit status 2.
    """

    def wrap(run: Callable[[Any, Path], Any]) -> Callable[[], None]:
        import hydra
        from hydra.errors import InstantiationException

        captured = _Captured()
        sweep: dict[str, Any] = {}  # this process's -m sweep: its directory (set by its first job)

        @hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
        def _hydra_main(cfg) -> None:
            if "stderr" in captured:  # composition succeeded: the real stderr again
                sys.stderr = captured.pop("stderr")
            quiet_console()  # again in a job that submitit or SLURM started in a process of its own
            out = output_dir(cfg)
            multirun = in_multirun()
            # a job run by this process's own sweep (basic launcher), not by submitit/SLURM elsewhere
            here = multirun and sweep.get("pid") == os.getpid()
            if multirun:  # a job of a -m sweep: starting again, it is no longer failed
                sweep.setdefault("dir", sweep_dir())
                sweep["jobs"] = sweep.get("jobs", 0) + 1
                clear_failure(out)
            try:
                check_override_types(cfg, config_name)
                discover_user_parts()
                run(cfg, out)
            except (UsageError, ValueError, InstantiationException, FileNotFoundError) as e:
                msg = str(e).strip().splitlines()
                text = next((m for m in reversed(msg) if m.strip()), type(e).__name__) if isinstance(e, InstantiationException) else " ".join(msg)
                if not here:  # in this process's own sweep, the summary at its end says it
                    print(f"{prog}: error: {text}", file=sys.stderr)
                if not multirun:
                    remove_if_empty(out)
                    sys.exit(2)
                job_failed(cfg, out, text)
            except Exception as e:  # noqa: BLE001 - in a sweep, an error of one job is recorded and the others go on
                if not multirun:
                    raise
                detail = traceback.format_exc()
                print(detail, file=sys.stderr, end="")
                job_failed(cfg, out, f"{type(e).__name__}: {e}", detail)

        def job_failed(cfg, out: Path, error: str, detail: str | None = None) -> None:
            """A job of a -m sweep failed: record it in its directory (the report shows it, the
            summary names it, a rerun runs it again); the sweep goes on unless fail_fast=true."""
            record_failure(out, error, detail)
            if cfg.get("fail_fast"):
                raise StopSweep(f"{out}: {error}")

        @functools.wraps(run)
        def main() -> None:
            import io
            import os

            from .sweep_check import check_sweep_argv

            use_difflab_launchers()
            sweep.clear()  # a main() called again in one process (tests) starts a new sweep
            sweep["pid"] = os.getpid()

            # a -m sweep whose jobs would repeat each other is refused before any job; the job
            # directories are named after the swept overrides only
            dirname = check_sweep_argv(config_name, prog)
            if dirname:
                sys.argv = [*sys.argv, dirname]
            quiet_console()  # Lightning's advertisement and the warnings that are wrong for difflab, by message

            if os.environ.get("HYDRA_FULL_ERROR") != "1" and not any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info") or a.startswith(("--cfg", "--info", "-c")) for a in sys.argv[1:]):
                captured["stderr"] = sys.stderr  # Hydra's multi-line config errors, condensed below
                sys.stderr = io.StringIO()
            started = time.time()
            try:
                _hydra_main()
            except StopSweep:
                _summarise(prog, _failed_in(sweep.get("dir") or launched_sweep(), started), stopped=True)
                sys.exit(1)
            except SystemExit as e:  # Hydra exits 1 on config errors; ours is 2
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    usage = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith(USAGE_ERROR)]
                    if usage:  # a UsageError outside any job (a launcher that cannot submit): its message alone
                        print(f"{prog}: error: {usage[-1]}", file=sys.stderr)
                    elif text.strip():
                        print(f"{prog}: error: {one_line(text)}{did_you_mean(text, config_name)}", file=sys.stderr)
                if e.code == 1:  # Hydra's config errors; our own codes (2, 128 + signal) pass through
                    sys.exit(2)
                raise
            finally:
                if "stderr" in captured:
                    text, sys.stderr = sys.stderr.getvalue(), captured.pop("stderr")
                    sys.stderr.write(text)
            failed = _failed_in(sweep.get("dir") or launched_sweep(), started)
            if failed and len(failed) == sweep.get("jobs") and len({error for _, error in failed}) == 1:
                # every job of the sweep failed the same way: the command is wrong, as a single run says
                print(f"{prog}: error: {failed[0][1]}", file=sys.stderr)
                sys.exit(2)
            if _summarise(prog, failed):
                sys.exit(1)

        return main

    return wrap


def discover_user_parts() -> None:
    """A user's metric YAMLs (`metric/<name>.yaml` in a config directory of hydra.searchpath) are
    registered before the run (docs/evaluation.md, "Adding a metric"); weightings and samplers
    need nothing: their YAML's `_target_` names the function."""
    from hydra.core.hydra_config import HydraConfig

    from ..evaluation.metrics import discover_metrics

    dirs = [s["path"] for s in HydraConfig.get().runtime.config_sources if s["schema"] == "file"]
    if dirs:
        discover_metrics(dirs)


def use_difflab_launchers() -> None:
    """`hydra/launcher=submitit_local` and `=slurm` run difflab's subclass of the submitit plugin's
    launcher (hydra_plugins/difflab_launchers: failed jobs recorded, fail_fast, wait=false): its
    configs replace the plugin's under the same names once Hydra has scanned its plugins."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # the scan (once per process), which stores every plugin's configs
    try:
        from hydra_plugins.difflab_launchers.launchers import register
    except ImportError:  # hydra-submitit-launcher is not installed: Hydra's own launchers only
        return
    register()


def launched_sweep() -> Path | None:
    """The directory of the -m sweep that difflab's submitit launcher (hydra_plugins/difflab_launchers)
    launched from this process: its jobs ran elsewhere, so no job of it set `sweep`."""
    mod = sys.modules.get("hydra_plugins.difflab_launchers.launchers")
    return getattr(mod, "LAST_SWEEP", None) if mod else None


def _failed_in(directory, started: float) -> list[tuple[Path, str]]:
    """(job directory, error) of the jobs of the sweep in `directory` that failed since `started`."""
    return failed_jobs(directory, since=started) if directory is not None else []


def _summarise(prog: str, failed: list[tuple[Path, str]], stopped: bool = False) -> bool:
    """After a -m sweep: one line per job that failed in it; True if any did."""
    lines = summary_lines(prog, failed)
    if stopped:
        lines.insert(0, f"{prog}: fail_fast=true: the sweep stopped at its first failed job")
    for line in lines:
        print(line, file=sys.stderr)
    return bool(failed)
