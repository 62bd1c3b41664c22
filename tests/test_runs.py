"""difflab.runs: the state of a job directory from the files in it (failed.json, metrics.json /
sample.json, last.ckpt against trainer.max_steps), the failed jobs of a sweep and their summary
lines; and what difflab's submitit launcher says of a job that died (from submitit's error)."""
import os
import time

import pytest
import torch
import yaml

from difflab.runs import FAILED, failed_jobs, job_state, last_line, record_failure, summary_lines


def job(tmp_path, name, max_steps=100, step=None, eval_at_end=False, results=None):
    d = tmp_path / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_steps": max_steps}, "eval_at_end": ["swd"] if eval_at_end else []}))
    if step is not None:
        (d / "checkpoints").mkdir()
        torch.save({"global_step": step, "state_dict": {}}, d / "checkpoints" / "last.ckpt")
    if results:
        (d / results).write_text("{}")
    return d


def test_job_state_from_the_files_of_a_job(tmp_path):
    assert job_state(job(tmp_path, "fresh")) == ("unfinished", "no checkpoint yet")
    assert job_state(job(tmp_path, "midway", step=40)) == ("unfinished", "last.ckpt at step 40 of 100")
    assert job_state(job(tmp_path, "trained", step=100)) == ("done", "")  # no eval_at_end: the final checkpoint is the result
    assert job_state(job(tmp_path, "to_score", step=100, eval_at_end=True)) == ("unfinished", "last.ckpt at step 100 of 100")
    assert job_state(job(tmp_path, "scored", step=100, eval_at_end=True, results="metrics.json")) == ("done", "")
    assert job_state(job(tmp_path, "sampled", results="sample.json")) == ("done", "")
    failed = job(tmp_path, "failed", step=40)
    record_failure(failed, "Traceback (most recent call last):\n  File x\nRuntimeError: boom\n", "the whole text")
    assert job_state(failed) == ("failed", "RuntimeError: boom")
    broken = job(tmp_path, "broken")
    (broken / "checkpoints").mkdir()
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"half a file")
    assert job_state(broken) == ("unfinished", "no checkpoint yet")


def test_failed_jobs_of_a_sweep_and_their_summary(tmp_path):
    old, new, done = (job(tmp_path, n) for n in ("a=1", "a=2", "a=3"))
    record_failure(old, "ValueError: earlier sweep")
    past = time.time() - 3600
    os.utime(old / FAILED, (past, past))
    started = time.time()
    record_failure(new, "training loss is inf at step 1")
    (tmp_path / ".submitit" / "12").mkdir(parents=True)
    (tmp_path / ".submitit" / "12" / FAILED).write_text('{"error": "not a job"}')
    assert failed_jobs(tmp_path) == [(old, "ValueError: earlier sweep"), (new, "training loss is inf at step 1")]
    assert failed_jobs(tmp_path, since=started) == [(new, "training loss is inf at step 1")]
    assert summary_lines("difflab-train", failed_jobs(tmp_path, since=started)) == [
        "difflab-train: 1 job failed; rerun the same command to run only the failed and unfinished ones",
        f"difflab-train: failed: {new}: training loss is inf at step 1"]
    assert summary_lines("difflab-train", []) == []
    assert last_line("\n\n") == "failed (no message)"


def test_what_the_launcher_says_of_a_job_that_died():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra_plugins.difflab_launchers.launchers import died

    class UncompletedJobError(Exception):
        pass

    class FailedJobError(Exception):
        pass

    killed = UncompletedJobError("Job 8547 (task: 0) with path /x/8547_0_result.pkl\nhas not produced any output (state: FINISHED)\n"
                                 "Error stream produced:\n----------------------------------------\nsome warning\n")
    assert died(killed) == ("the job ended without a result (killed, out of memory or past its time limit); submitit: "
                            "Job 8547 (task: 0) with path /x/8547_0_result.pkl has not produced any output (state: FINISHED)")
    crashed = FailedJobError("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call last):\n"
                             "  File \"x.py\", line 1\nMemoryError: out of memory\n----------------------\n"
                             "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /x/log.err\n")
    assert died(crashed) == "FailedJobError: MemoryError: out of memory"
