"""`difflab-report <multirun dir>`: one table (report.md) and plots of every job of a sweep.

    difflab-report runs/sweep_sw                # writes runs/sweep_sw/report.md and *.png
    difflab-report runs/nfe --out docs/studies/nfe
    difflab-report --wandb ENTITY/PROJECT --group sweep_sw   # the same from W&B runs (needs a key)

The W&B group of a `difflab-train -m ... logger=wandb` sweep is its output directory's name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="difflab-report", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path, nargs="?", help="the output directory of a -m sweep (holds one directory per job)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where report.md and the PNGs go (default: the sweep directory; with --wandb: report_<group>)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None, help="read the jobs from this W&B project's runs")
    parser.add_argument("--group", default=None, help="with --wandb: the W&B group of the sweep's runs (its output directory's name)")
    args = parser.parse_args(argv)
    if (args.multirun_dir is None) == (args.wandb is None) or bool(args.wandb) != bool(args.group):
        parser.error("give a multirun directory, or --wandb ENTITY/PROJECT with --group G")
    from ..progress import Progress, program
    from ..studies.jobs import study
    from ..studies.table import write_report, write_study

    try:
        with program("difflab-report"):  # the progress line of a long plotting step names the command
            if args.wandb:
                from ..studies.wandb import wandb_jobs

                out = args.out or Path(f"report_{args.group}")
                with Progress(f"reading the runs of W&B group {args.group}"):
                    jobs = wandb_jobs(args.wandb, args.group)
                path = write_study(study(jobs), out, args.group, f"in W&B {args.wandb}, group {args.group}")
            else:
                path = write_report(args.multirun_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"difflab-report: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(path)


if __name__ == "__main__":
    main()
