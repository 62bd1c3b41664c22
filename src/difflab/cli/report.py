"""`difflab-report <multirun dir>`: one table (report.md) and plots of every job of a sweep.

    difflab-report runs/sweep_sw                # writes runs/sweep_sw/report.md and *.png
    difflab-report runs/nfe --out docs/studies/nfe
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="difflab-report", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path, help="the output directory of a -m sweep (holds one directory per job)")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the PNGs go (default: the sweep directory)")
    args = parser.parse_args(argv)
    from ..report import write_report

    try:
        path = write_report(args.multirun_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"difflab-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
