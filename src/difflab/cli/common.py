"""What the console scripts share: Hydra's run as plain values for the library (the command
line's overrides, the output directory, the -m sweep), the resolvers of the configs, and the
config checks that compare with a fresh composition (`config_check` does the checking).

Entry points stay a few lines: compose (Hydra), instantiate, run. Only this package imports Hydra.
"""
from __future__ import annotations

from pathlib import Path

from ..config_check import CONFIG_DIR, UsageError, one_line  # noqa: F401 - the names every script (and test) uses
from ..config_check import check_override_types as _check_override_types
from ..config_check import did_you_mean as _did_you_mean
from ..runs import run_dir
from ..studies.overrides import job_dirname


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("difflab.job_dir", job_dirname, replace=True)
    # cached: every ${output} of one config (hydra.run.dir, hydra.sweep.dir, output) is the same timestamp
    OmegaConf.register_new_resolver("difflab.run_dir", run_dir, replace=True, use_cache=True)


_register_resolvers()  # also where a launcher (submitit, SLURM) unpickles a job: it imports this module


def task_overrides() -> list[str]:
    """The command line's overrides of this Hydra run ([] outside one, e.g. under the compose API)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    except Exception:  # noqa: BLE001
        return []


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def sweep_dir() -> Path | None:
    """The running -m sweep's directory (None outside one); its name names the sweep
    (output=runs/study -> "study": the W&B group of its jobs)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(str(HydraConfig.get().sweep.dir)) if in_multirun() else None


def output_dir(cfg) -> Path:
    """Hydra's job directory when run as a script (per job under -m), else `cfg.output`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.output)


def user_chose(group: str) -> bool:
    """Whether `group=` was given on the command line (not just the default)."""
    return any(o.split("=")[0].lstrip("+~") == group for o in task_overrides())


def check_override_types(cfg, config_name: str) -> None:
    """`config_check.check_override_types` on this run's overrides, against the defaults
    composed in the running Hydra."""
    from hydra import compose

    _check_override_types(cfg, task_overrides(), lambda overrides: compose(config_name, overrides=overrides))


def did_you_mean(text: str, config_name: str) -> str:
    """`config_check.did_you_mean` for Hydra's error text, composing afresh (Hydra has failed)."""
    import sys

    def compose(overrides):
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides)

    return _did_you_mean(text, sys.argv[1:], compose)
