"""A real one-node SLURM for the tests (Debian's slurm-wlm + munge, run as root).

`start()` writes a slurm.conf under a temporary directory (the settings docs/pitfalls.md lists as
working here), starts munged (if no munge socket answers), slurmctld and slurmd, and waits until
`sinfo` shows the node idle. `stop()` ends exactly the daemons it started, by their pids.
If `sinfo` already answers, the running SLURM is used and nothing is started or stopped.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CONF = """ClusterName=difflab
SlurmctldHost={host}
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmctldPort={port}
SlurmdPort={port1}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


def sinfo_ok(env=None) -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        r = _run("sinfo", "-h", "-o", "%t", env=env)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in r.stdout.split())


def unavailable_reason() -> str | None:
    """Why a SLURM cannot be started here (None if it can)."""
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(b)]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting a one-node SLURM needs root"
    return None


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.pids: list[int] = []
        self.env = dict(os.environ)

    def start(self, timeout: float = 60.0) -> "Cluster":
        if sinfo_ok():
            return self  # a SLURM is already running: use it as is
        why = unavailable_reason()
        if why:
            raise RuntimeError(why)
        d = self.root
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        port = 16817 + os.getpid() % 500 * 2
        conf = d / "slurm.conf"
        conf.write_text(CONF.format(host=host, d=d, cpus=os.cpu_count() or 1, port=port, port1=port + 1))
        self.env["SLURM_CONF"] = str(conf)
        self._munge()
        for daemon in ("slurmctld", "slurmd"):
            proc = subprocess.Popen([daemon, "-D", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=open(d / f"{daemon}.err", "w"), env=self.env, start_new_session=True)
            self.pids.append(proc.pid)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sinfo_ok(self.env):
                os.environ["SLURM_CONF"] = str(conf)
                return self
            time.sleep(0.5)
        logs = " | ".join((d / f).read_text()[-400:] for f in ("slurmctld.err", "slurmd.err", "slurmctld.log") if (d / f).exists())
        self.stop()
        raise RuntimeError(f"SLURM did not come up in {timeout:.0f} s: {logs}")

    def _munge(self) -> None:
        if _run("munge", "-n").returncode == 0:
            return  # a munged already answers
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
        for p in (key.parent, Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            p.mkdir(parents=True, exist_ok=True)
            shutil.chown(p, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        proc = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "-F"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.pids.append(proc.pid)
        for _ in range(50):
            if _run("munge", "-n").returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("munged did not start (see /var/log/munge/munged.log)")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.killpg(pid, signal.SIGTERM)  # its own session: the daemon and nothing else
            except ProcessLookupError:
                continue
        for pid in self.pids:
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                    os.waitpid(pid, os.WNOHANG)
                except (ProcessLookupError, ChildProcessError):
                    break
                time.sleep(0.1)
        self.pids.clear()
        if os.environ.get("SLURM_CONF") == self.env.get("SLURM_CONF"):
            os.environ.pop("SLURM_CONF", None)


# helpers of the tests that submit to this SLURM ---------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


def job_env(env=None) -> dict:
    """The environment of a command that submits difflab jobs: the checkout's src/, one thread, no W&B."""
    return dict(env or os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="disabled", HYDRA_FULL_ERROR="0")


def wait_until(what, predicate, timeout: float, proc=None):
    """predicate()'s first true value, polled every 0.2 s; fails after `timeout` s or when `proc` ends first."""
    t0 = time.time()
    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}: {proc.stderr.read()[-3000:]}")
        assert time.time() - t0 < timeout, f"no {what} after {timeout:.0f} s"
        time.sleep(0.2)
    return value


def job_state(job_id: str, env) -> dict[str, str]:
    """`scontrol show job`'s fields (JobState, Restarts, ...)."""
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text))


def job_folder(submitit: Path):
    """The job id, once submitit has made the job's folder (named by the id; array tasks "id_k").
    Its pickled jobs (`<uuid>.pkl`) appear first, and a uuid may start with a digit too."""
    if not submitit.is_dir():
        return None
    return next((p.name for p in submitit.iterdir() if p.is_dir() and re.fullmatch(r"\d+(_\d+)?", p.name)), None)


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM: the running one, else started here (as root) and stopped afterwards. Under
    CI=true a SLURM that cannot be started fails the test (tests/conftest.py turns skips into failures).
    A test module takes it with `from cluster import slurm` (a conftest.py here would replace
    tests/conftest.py as the module `conftest` that other test files import)."""
    if not sinfo_ok():
        why = unavailable_reason()
        if why:
            pytest.skip(f"no SLURM: {why}")
    with tempfile.TemporaryDirectory(prefix="difflab-slurm-") as d:
        cluster = Cluster(d).start()
        try:
            yield cluster
        finally:
            cluster.stop()
