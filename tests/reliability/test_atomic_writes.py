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


@pytest.mark.parametrize("kind", list(WRITER))
def test_sigkill_during_writes_never_breaks_the_file(tmp_path, kind):
    rng = random.Random(0)
    path = tmp_path / f"result.{kind}"
    code = f"P = {str(path)!r}\n" + WRITER[kind]
    killed = 0
    while killed < KILLS:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env(), cwd=ROOT)
        while not path.exists() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        killed += 1
        check(kind, path)  # the previous complete version, never a half-written one
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert all(n.endswith(".tmp") for n in leftovers)  # only a killed writer's temporary, never the result
