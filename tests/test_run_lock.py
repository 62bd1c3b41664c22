"""RunLock: a run removes its `.lock` however it ends, and two processes still never
hold the lock of one directory at once (also when one of them locks a `.lock` just removed)."""
import multiprocessing
import os
import time

import pytest

from difflab import utils
from difflab.utils import RunLock


def test_lock_removed_after_success_error_and_interrupt(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.path.is_file()
    assert not (tmp_path / ".lock").exists()
    with pytest.raises(RuntimeError), RunLock(tmp_path):
        raise RuntimeError("a run that fails inside its lock")
    assert not (tmp_path / ".lock").exists()
    for exc in (KeyboardInterrupt, SystemExit(143)):  # Ctrl-C; difflab-train's exit after SIGTERM
        with pytest.raises((KeyboardInterrupt, SystemExit)), RunLock(tmp_path):
            raise exc
        assert not (tmp_path / ".lock").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_second_acquirer_is_refused_while_the_first_holds_it(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ValueError, match="another process is writing"):
            RunLock(tmp_path).__enter__()
        assert (tmp_path / ".lock").is_file()  # the refused one removed nothing
    with RunLock(tmp_path):  # free again once the first ended
        pass


def test_an_acquirer_that_locks_a_removed_lock_file_starts_again(tmp_path, monkeypatch):
    """B opens `.lock`; A ends (removes the file, unlocks) before B's flock; B's flock of the
    removed file succeeds, and B must not count it: it locks the file now at the path instead."""
    a = RunLock(tmp_path).__enter__()
    real_open, calls = os.open, []

    def open_then_a_ends(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        calls.append(path)
        if len(calls) == 1:
            a.__exit__(None, None, None)
        return fd

    monkeypatch.setattr(utils.os, "open", open_then_a_ends)
    b = RunLock(tmp_path).__enter__()
    monkeypatch.setattr(utils.os, "open", real_open)
    assert len(calls) == 2  # the removed file, then the new one
    assert os.fstat(b._fd).st_ino == os.stat(tmp_path / ".lock").st_ino
    with pytest.raises(ValueError, match="another process is writing"):
        RunLock(tmp_path).__enter__()  # B really holds the directory
    b.__exit__(None, None, None)
    assert not (tmp_path / ".lock").exists()


def _contend(directory: str, seconds: float, queue) -> None:
    """Take the lock as often as possible; inside it, a marker made with O_EXCL proves no one else is in."""
    held = overlaps = 0
    marker = os.path.join(directory, "inside")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with RunLock(directory):
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    overlaps += 1
                    continue
                os.close(fd)
                held += 1
                os.unlink(marker)
        except ValueError:
            pass
    queue.put((held, overlaps))


def test_concurrent_acquirers_exclude_each_other(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), 1.5, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(o for _, o in results) == 0, results
    assert sum(h for h, _ in results) > 10, results  # they did take turns
    assert not (tmp_path / ".lock").exists()
