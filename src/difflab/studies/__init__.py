"""Sweep studies: a `-m` sweep checked before any job runs (`sweeps`: no two jobs may compose
the same config, every job's process must build). The console scripts expand and compose the
grid with Hydra (`difflab.cli.sweep_check`) and hand the composed configs here; the study's
report is `difflab.report` (difflab-report)."""
