"""No `.lock` is left in a run directory after a finished, a failed or an interrupted run."""
import signal

import pytest

from .conftest import TINY, cli, start, wait_for

pytestmark = pytest.mark.slow


def test_no_lock_after_finished_and_failed_runs(tmp_path):
    out = tmp_path / "train"
    r = cli("train", *TINY, "trainer.max_steps=10", f"output={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / ".lock").exists()
    s = tmp_path / "sample"
    r = cli("sample", "model=oracle", "num_samples=64", "sampler.steps=2", f"output={s}")
    assert r.returncode == 0 and (s / "samples.npz").is_file() and not (s / ".lock").exists(), r.stderr[-2000:]
    e = tmp_path / "eval"
    r = cli("eval", "metrics=[swd]", "num_samples=64", "sampler.steps=2", f"output={e}")
    assert r.returncode == 0 and (e / "metrics.json").is_file() and not (e / ".lock").exists(), r.stderr[-2000:]
    # fails inside the lock, once training starts: a batch larger than the training set
    bad = tmp_path / "bad"
    r = cli("train", *TINY, "data.batch_size=4096", "trainer.max_steps=10", f"output={bad}")
    assert r.returncode == 2 and "smaller than one global batch" in r.stderr, r.stderr[-2000:]
    assert not (bad / ".lock").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name)
def test_no_lock_after_an_interrupted_run(tmp_path, sig):
    out = tmp_path / "run"
    proc = start("train", *TINY, "trainer.max_steps=100000", "checkpoint_every=10", f"output={out}")
    wait_for(out / "checkpoints" / "last.ckpt", proc)
    assert (out / ".lock").is_file()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert not (out / ".lock").exists()
