"""Sweep studies: a `-m` sweep checked before any job runs (`sweeps`: no two jobs may compose
the same config, every job's process must build). The console scripts expand and compose the
grid with Hydra (`difflab.cli.sweep_check`) and hand the composed configs here; the study's
report (difflab-report): `jobs` reads a study's jobs, `table` writes report.md, `plots` its
PNGs, `wandb` reads the jobs from W&B runs, `common` what they share; `overrides` is the one codec
of a job's override string (`schedule=cosine,weighting=elbo`) and its directory name."""
