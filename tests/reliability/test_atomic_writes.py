"""A kill during a write never leaves a broken result: samples.npz, metrics.json and config.yaml
go through `difflab.utils` (temporary file in the same directory, then rename). A writer loops
over ever-changing content and is SIGKILLed at random moments; the file must always load."""
import json
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import ROOT, env

pytestmark = pytest.mark.slow
KILLS = 20
WRITER = {
    "npz": "from difflab.utils import save_npz\nimport numpy as np, itertools\n"
           "for i in itertools.count(): save_npz(P, samples=np.full((20000, 8), float(i)), nfe=i)",
    "json": "from difflab.utils import write_json\nimport itertools\n"
            "for i in itertools.count(): write_json(P, {'i': i, 'values': list(range(i % 5000))})",
    "yaml": "from difflab.utils import write_text\nimport itertools\n"
            "for i in itertools.count(): write_text(P, ''.join(f'key{k}: {i}\\n' for k in range(5000)))",
}


def check(kind, path):
    if kind == "npz":
        with np.load(path) as f:
            assert f["samples"].shape == (20000, 8) and float(f["samples"][0, 0]) == int(f["nfe"])
    elif kind == "json":
        d = json.loads(path.read_text())
        assert len(d["values"]) == d["i"] % 5000
    else:
        lines = path.read_text().splitlines()
        assert len(lines) == 5000 and len({ln.split(": ")[1] for ln in lines}) == 1


def temporaries(directory, path):
    """The temporary files of atomic writes to `path` (`.<name>.<random>.tmp` beside it)."""
    return {p.name for p in directory.iterdir() if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")}


@pytest.mark.parametrize("kind", list(WRITER))
def test_sigkill_during_writes_never_breaks_the_file(tmp_path, kind):
    """Every counted kill lands mid-write: the writer is killed only once a temporary of its own exists
    (a write in progress), and the kill counts when that write's temporary is left behind (SIGKILL
    runs no cleanup; a write that had already been renamed into place leaves none, and the writer is
    started again). After each kill the result is the previous complete version, or absent before
    the first complete write — never a half-written file."""
    rng = random.Random(0)
    path = tmp_path / f"result.{kind}"
    code = f"P = {str(path)!r}\n" + WRITER[kind]
    mid_write = attempts = 0
    while mid_write < KILLS:
        attempts += 1
        assert attempts <= 5 * KILLS, f"only {mid_write} of {attempts} kills landed during a write"
        before = temporaries(tmp_path, path)
        proc = subprocess.Popen([sys.executable, "-c", code], env=env(), cwd=ROOT)
        t0 = time.time()
        while not (temporaries(tmp_path, path) - before) and proc.poll() is None:  # this writer's first write has begun
            assert time.time() - t0 < 120, "the writer never started a write"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.05))  # into this write, or a later one
        proc.kill()
        proc.wait()
        if temporaries(tmp_path, path) - before:
            mid_write += 1  # the write in progress was cut: its temporary is left
        if path.exists():
            check(kind, path)  # the previous complete version, never a half-written one
    assert path.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert all(n.endswith(".tmp") for n in leftovers)  # only killed writers' temporaries, never the result
