"""A -m sweep survives a failed job on Hydra's basic launcher; tests/slurm/test_launchers.py
runs the same sweep through submitit_local and SLURM, and a killed job there.

The sweep: 3 jobs of the gmm recipe (8 steps, eval_at_end=[swd]) over optim.lr = 1e-3, 1e30, 2e-3.
At lr = 1e30 the first Adam step sends the weights to ~1e30 and the loss is inf at step 1, which
difflab-train refuses ("training loss is inf", a real divergence, nothing staged). What must hold:
- the other two jobs run and keep their metrics.json;
- the sweep's exit status is non-zero, with one line naming the failed job (its directory and the
  error's last line) after a line that counts the failures;
- difflab-report shows the failed job as a row with its state, and its error under the table;
- rerunning the same command runs only the failed and unfinished jobs: no file of a finished job is
  rewritten (mtimes), the failed job runs again (its failed.json is new);
- fail_fast=true stops the sweep at its first failed job: the jobs after it never start.
"""
import json
import os
import sys
import time
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

pytestmark = pytest.mark.slow

LRS = ("0.001", "1e+30", "0.002")  # the job directories' names: Hydra writes the swept floats back like this
SWEEP = ["experiment=gmm", "trainer.max_steps=8", "trainer.val_check_interval=4", "checkpoint_every=0", "logger=csv",
         "eval_at_end=[swd]", "evaluation.num_samples=64", "evaluation.num_reference=256", "sampler.steps=4", "threads=1"]


def run_main(module, argv, monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of a console script's main() run in this process."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    try:
        module.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return code, capsys.readouterr().err


def mtimes(job: Path) -> dict[str, int]:
    return {p.relative_to(job).as_posix(): p.stat().st_mtime_ns for p in sorted(job.rglob("*")) if p.is_file()}


def summary(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("difflab-train: failed: ")]


def test_a_failed_job_does_not_stop_the_sweep_and_a_rerun_runs_only_it(tmp_path, monkeypatch, capsys):
    from difflab.cli import report, train

    out = tmp_path / "sweep"
    argv = ["difflab-train", "-m", "optim.lr=1e-3,1e30,2e-3", *SWEEP, f"output={out}"]
    code, err = run_main(train, argv, monkeypatch, capsys)
    assert code == 1, err[-2000:]
    jobs = {lr: out / f"optim.lr={lr}" for lr in LRS}
    for lr in ("0.001", "0.002"):
        assert "swd" in json.loads((jobs[lr] / "metrics.json").read_text()), lr
    failed = jobs["1e+30"]
    assert not (failed / "metrics.json").exists()
    record = json.loads((failed / "failed.json").read_text())
    assert "training loss is inf" in record["error"]
    assert "difflab-train: 1 job failed" in err
    assert summary(err) == [f"difflab-train: failed: {failed}: {record['error']}"]

    # the report: every job a row, the failed one with its state and its error under the table
    code, _ = run_main(report, ["difflab-report", str(out)], monkeypatch, capsys)
    assert code == 0
    text = (out / "report.md").read_text()
    assert "| optim.lr | state |" in text
    assert "| 1e+30 | failed |" in text and "| 0.001 | done |" in text and "| 0.002 | done |" in text
    assert f"`optim.lr=1e+30`: failed: {record['error']}" in text

    # one finished job loses its metrics.json (as if killed during its evaluation): unfinished
    (jobs["0.002"] / "metrics.json").unlink()
    code, _ = run_main(report, ["difflab-report", str(out)], monkeypatch, capsys)
    assert "| 0.002 | unfinished (last.ckpt at step 8 of 8) |" in (out / "report.md").read_text()

    before = {lr: mtimes(j) for lr, j in jobs.items()}
    time.sleep(0.05)
    code, err = run_main(train, argv, monkeypatch, capsys)
    assert code == 1 and summary(err) == [f"difflab-train: failed: {failed}: {record['error']}"], err[-2000:]
    assert mtimes(jobs["0.001"]) == before["0.001"]  # finished: untouched
    assert (jobs["0.002"] / "metrics.json").is_file()  # unfinished: completed
    assert mtimes(failed)["failed.json"] > before["1e+30"]["failed.json"]  # failed: run again


def test_fail_fast_stops_at_the_first_failed_job(tmp_path, monkeypatch, capsys):
    from difflab.cli import train

    out = tmp_path / "sweep"
    code, err = run_main(train, ["difflab-train", "-m", "optim.lr=1e30,1e-3", *SWEEP, "fail_fast=true", f"output={out}"],
                         monkeypatch, capsys)
    assert code == 1, err[-2000:]
    assert "fail_fast=true: the sweep stopped at its first failed job" in err
    assert len(summary(err)) == 1 and "optim.lr=1e+30" in summary(err)[0]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["optim.lr=1e+30"]  # the second job never started


def test_an_unexpected_error_in_a_job_is_recorded_with_its_traceback(tmp_path, monkeypatch, capsys):
    """Not only difflab's one-line errors: any exception of a job (here a RuntimeError from inside
    training) is recorded with its last line (and the traceback in `detail`), and the sweep goes on."""
    from difflab.cli import train

    real = train.train

    def flaky(cfg, out):
        if float(cfg.optim.lr) > 1.5e-3:
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed.")
        return real(cfg, out)

    monkeypatch.setattr(train, "train", flaky)
    out = tmp_path / "sweep"
    code, err = run_main(train, ["difflab-train", "-m", "optim.lr=2e-3,1e-3", *SWEEP, f"output={out}"], monkeypatch, capsys)
    assert code == 1
    record = json.loads((out / "optim.lr=0.002" / "failed.json").read_text())
    assert record["error"] == "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed."
    assert "Traceback" in record["detail"] and "flaky" in record["detail"]
    assert (out / "optim.lr=0.001" / "metrics.json").is_file()
    assert summary(err) == [f"difflab-train: failed: {out / 'optim.lr=0.002'}: {record['error']}"]


def test_a_single_run_still_fails_with_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    """Outside a sweep nothing changes: one line, exit status 2, no failed.json, no directory left."""
    from difflab.cli import train

    out = tmp_path / "run"
    code, err = run_main(train, ["difflab-train", "optim.lr=1e30", *SWEEP, f"output={out}"], monkeypatch, capsys)
    assert code == 2 and "training loss is inf" in err
    assert not (out / "failed.json").exists()


def test_a_sweep_sbatch_refuses_is_one_line_and_exit_2(tmp_path):
    """hydra/launcher=slurm where sbatch refuses the submission (no SLURM reachable, a bad partition):
    one line naming the launcher, sbatch's own error and what to try, exit status 2, no traceback."""
    import subprocess

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\nexit 1\n")
    (fake / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
               HYDRA_FULL_ERROR="0", WANDB_MODE="disabled")
    r = subprocess.run([sys.executable, "-m", "difflab.cli.train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=nope",
                        "optim.lr=1e-3,2e-3", *SWEEP, f"output={tmp_path / 'sweep'}"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("difflab-train: error: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "the slurm launcher could not submit the sweep" in lines[0] and "Invalid partition name specified" in lines[0]
    assert "hydra/launcher=submitit_local" in lines[0]
