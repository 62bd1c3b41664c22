"""hydra-submitit-launcher, with what a sweep of training jobs needs on a cluster (the threads
facebookresearch/hydra#2479, #2824 and #1892):

- **A failed job does not stop or lose the others.** The plugin waits on its jobs in order and
  raises at the first one that died (killed, out of memory, timed out), leaving the rest
  unwatched. Here every job is waited for; one that died without a word gets `failed.json` in its
  directory with the last line of what submitit reports (a job that failed with an error wrote
  its own), and `difflab-train` ends with exit status 1 and one line per failed job.
- **`fail_fast=true`** (difflab's top-level option): the first failed job cancels the jobs not yet
  finished and stops the sweep.
- **`hydra.launcher.wait=false`**: submit every job, print the job ids and the sweep directory,
  and return at once; `difflab-report <sweep dir>` shows what has finished so far.
- **Job arrays**: submitit submits a sweep as one SLURM job array; `hydra.launcher.array_parallelism`
  caps how many of its tasks run at once.

Everything else — the executor, its parameters, the pickled job — is the plugin's own.
"""


import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError

log = logging.getLogger(__name__)

#: the sweep directory of the last sweep launched in this process (difflab-train's summary reads it)
LAST_SWEEP: Optional[Path] = None


class _Launcher(BaseSubmititLauncher):
    def __init__(self, wait: bool = True, **params: Any) -> None:
        self.wait = bool(wait)
        super().__init__(**params)

    def _executor(self):
        """The plugin's executor and parameters (hydra-submitit-launcher 1.2, `launch`)."""
        import submitit

        init_keys = {"max_num_timeout"}
        init_params = {"folder": self.params["submitit_folder"]}
        init_params.update({f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys})
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in init_keys | {"submitit_folder"}})
        return executor

    def _job_dir(self, overrides: Sequence[str]) -> Path:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        global LAST_SWEEP
        from difflab.runs import failure, record_failure

        assert self.config is not None and len(job_overrides) > 0
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        LAST_SWEEP = sweep_dir
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*params))
        except FailedJobError as e:  # sbatch refused: no SLURM here, a bad partition, ...
            from difflab.config_check import UsageError

            why = "; ".join(line.strip() for line in str(e).splitlines() if "fatal" in line or "error" in line)[-400:]
            raise UsageError(f"the {self._EXECUTOR} launcher could not submit the sweep ({why or str(e).strip()}); check that "
                             f"`sinfo` answers here and the hydra.launcher.* settings, or run the jobs on this machine "
                             f"with hydra/launcher=submitit_local") from None
        dirs = [self._job_dir(o) for o in job_overrides]
        if not self.wait:
            ids = " ".join(str(j.job_id) for j in jobs)
            print(f"submitted {len(jobs)} job{'s' if len(jobs) != 1 else ''} ({ids}) without waiting (wait=false); "
                  f"outputs in {sweep_dir}; `difflab-report {sweep_dir}` shows what has finished", flush=True)
            return []
        fail_fast = bool(self.config.get("fail_fast"))
        results: List[JobReturn] = []
        for k, (job, out) in enumerate(zip(jobs, dirs)):
            try:
                ret = job.results()[0]
            except Exception as e:  # noqa: BLE001 - the job died (killed, timed out, out of memory): record it, go on
                record_failure(out, died(e), str(e))
                print(f"job {job.job_id} ({out.name}): {died(e)}", file=sys.stderr, flush=True)
                ret = JobReturn(overrides=list(job_overrides[k]), status=JobStatus.COMPLETED)
            results.append(ret)
            if fail_fast and failure(out) is not None:
                for other in jobs[k + 1:]:
                    other.cancel(check=False)
                    # submitit's local cancel is a SIGINT to the job's controller, which a process started with
                    # SIGINT ignored (pytest-xdist workers, nohup) never sees: SIGTERM is what the controller
                    # forwards to its task, whose SaveLast saves and stops (a SLURM job's cancel is scancel)
                    controller = getattr(other, "_process", None)
                    if controller is not None and controller.poll() is None:
                        controller.send_signal(signal.SIGTERM)
                from difflab.cli.entry import StopSweep

                raise StopSweep(str(out))
        return results


def died(error: Exception) -> str:
    """What to say of a job that ended without a result, from submitit's error: an
    UncompletedJobError is a job that left no result (killed, out of memory, past its time limit);
    a FailedJobError carries the job's traceback between two dashed lines, whose last line is the error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    name = type(error).__name__
    if name == "UncompletedJobError" or not lines:
        return ("the job ended without a result (killed, out of memory or past its time limit); submitit: "
                + (" ".join(lines[:2]) if lines else name))
    dashes = [i for i, line in enumerate(lines) if line.startswith("---")]
    trace = lines[dashes[0] + 1:dashes[1]] if len(dashes) >= 2 else lines
    return f"{name}: {(trace or lines)[-1]}"


class LocalLauncher(_Launcher):
    _EXECUTOR = "local"


class SlurmLauncher(_Launcher):
    _EXECUTOR = "slurm"


@dataclass
class DifflabLocalConf(LocalQueueConf):
    _target_: str = "hydra_plugins.difflab_launchers.launchers.LocalLauncher"
    #: false: submit, print the job ids and the sweep directory, return at once
    wait: bool = True


@dataclass
class DifflabSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.difflab_launchers.launchers.SlurmLauncher"
    #: false: submit, print the job ids and the sweep directory, return at once
    wait: bool = True


def register() -> None:
    """Store the subclasses' configs under the plugin's own names (`hydra/launcher=submitit_local`,
    `submitit_slurm`) and under names of their own (`difflab_slurm`, which conf/hydra/launcher/slurm.yaml
    extends, so it is difflab's whoever composes it). Hydra's plugin scan executes
    every module of hydra_plugins once, in an order that depends on sys.path, so the plugin's own
    entries may land after these: difflab's console scripts call this again once the scan is done
    (difflab.cli.entry)."""
    store = ConfigStore.instance()
    for name, node in (("local", DifflabLocalConf), ("slurm", DifflabSlurmConf)):
        store.store(group="hydra/launcher", name=f"submitit_{name}", node=node, provider="difflab")
        store.store(group="hydra/launcher", name=f"difflab_{name}", node=node, provider="difflab")  # ours under any scan order


register()
