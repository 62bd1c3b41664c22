import contextlib
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
# under pytest-xdist (`make test` runs 2 workers) each worker gets its share of the cores: 2 workers
# with 2 intra-op threads each on 2 cores made a threaded test 20x slower (OpenMP oversubscription)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


# the longest files first (minutes each on 2 cores): `make test` hands whole files to its 2 workers
# (--dist loadfile), and a long file started last would run alone at the end
LONG_FILES = ("test_demo.py", "test_train_gmm.py", "slurm/test_launchers.py", "reliability/test_interrupts.py",
              "test_processes.py", "test_train_edm_flow.py")


@contextlib.contextmanager
def torch_globals_restored():
    """Put back the process-wide numerics a CLI run sets for speed (difflab-train's
    float32 matmul precision "high", resolve_device's cudnn.benchmark; their TF32 flags):
    left set, they leaked from in-process CLI tests into later exactness tests on CUDA."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.get_float32_matmul_precision(), cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved[1:]


@pytest.fixture(autouse=True)
def _torch_globals():
    with torch_globals_restored():
        yield


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.path.as_posix()
        return next((i for i, name in enumerate(LONG_FILES) if path.endswith("/" + name)), len(LONG_FILES))

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept


#: The only skips a CI run (CI=true) accepts, each for hardware that CI's machine cannot have. Any
#: other skip — missing data (MNIST), a missing service (SLURM), a missing package (wandb, diffusers,
#: the submitit plugin) — fails the run there, naming the test and its reason, so a green CI means
#: every test ran.
DEVICE_ONLY_SKIPS = {
    "a machine without a GPU, torch built with CUDA": "tests/test_no_cuda_cache.py checks CUDA-less start-up; on a GPU host it cannot run",
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") != "true" or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
    if not any(allowed in reason for allowed in DEVICE_ONLY_SKIPS):
        rep.outcome = "failed"
        rep.longrepr = (f"{item.nodeid} skipped under CI=true ({reason}); only the device-only skips of "
                        f"tests/conftest.py DEVICE_ONLY_SKIPS are allowed there: install or start what it needs")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (a module-level importorskip) fails too under CI=true."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") == "true" and rep.skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
        if not any(allowed in reason for allowed in DEVICE_ONLY_SKIPS):
            rep.outcome = "failed"
            rep.longrepr = f"{collector.nodeid} skipped under CI=true ({reason}): install or start what it needs"


def pytest_addoption(parser):
    parser.addoption("--device", default=None,
                     help="device for the device-sensitive tests (cpu, cuda, cuda:1); default: $DIFFLAB_TEST_DEVICE or cpu")


def test_device(config) -> torch.device:
    """The device the device-sensitive tests run on: --device, else DIFFLAB_TEST_DEVICE, else cpu."""
    name = config.getoption("--device") or os.environ.get("DIFFLAB_TEST_DEVICE") or "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device={name} / DIFFLAB_TEST_DEVICE={name} but torch sees no CUDA device")
    return dev


test_device.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """Where device-sensitive tests put models and data (CPU on CPU-only CI; `--device cuda`
    or DIFFLAB_TEST_DEVICE=cuda on a GPU machine). Generators must be built on it too."""
    return test_device(request.config)


def all_processes():
    """One instance of every process and schedule, with ids for parametrize."""
    from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, Flow, SubVPSDE

    torch.manual_seed(0)
    return {
        "ddpm_linear": DDPM(1000, "linear"),
        "ddpm_cosine": DDPM(1000, "cosine"),
        "snr_linear": ContinuousSNR("linear", -10, 10),
        "snr_cosine": ContinuousSNR("cosine", -10, 10),
        "snr_learned": ContinuousSNR("learned", -8, 9, hidden=64).double(),
        "vp": VPSDE(0.1, 20.0),
        "subvp": SubVPSDE(0.1, 20.0),
        "ve": VESDE(0.01, 50.0),
        "flow": Flow(),
    }


PROCESS_IDS = list(all_processes().keys())


@pytest.fixture(params=PROCESS_IDS)
def process(request):
    return all_processes()[request.param]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests (~20x faster than two on a loaded
    2-core machine); restores the previous count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def elbo_gap_per_dim(den, process, oracle, time_sampling: str, n: int = 20000, reps: int = 5):
    """(mean, standard error) in nats/dim of the continuous-time ELBO (Kingma et al. 2021, averaged over
    `reps` time draws) minus the mixture's exact NLL (the oracle's closed-form log density), on
    n fresh oracle samples. The bound holds when mean > −4 se."""
    from difflab.losses import continuous_elbo

    x = oracle.sample(n, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        elbo = torch.stack([continuous_elbo(den, process, x, generator=torch.Generator().manual_seed(k),
                                            time_sampling=time_sampling).total.double() for k in range(reps)]).mean(0)
    gap = elbo - (-oracle.log_prob(x.double()))
    dim = x[0].numel()
    return float(gap.mean()) / dim, float(gap.std() / math.sqrt(len(gap))) / dim


#: unpacks the official MNIST IDX files (kept beside the project) into torchvision's layout, checking their sums
MNIST_TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "mnist-root"


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A data root holding MNIST/raw: $DIFFLAB_MNIST_ROOT, else the official files unpacked into a temporary
    directory. Missing: a failure under CI=true (the conftest hook), a skip elsewhere."""
    given = os.environ.get("DIFFLAB_MNIST_ROOT")
    if given and (Path(given) / "MNIST" / "raw").is_dir():
        return Path(given)
    why = f"the official MNIST: {MNIST_TOOL} is missing (set DIFFLAB_MNIST_ROOT to a directory holding MNIST/raw)"
    if MNIST_TOOL.is_file():
        root = tmp_path_factory.mktemp("mnist")
        r = subprocess.run(["bash", str(MNIST_TOOL), str(root)], capture_output=True, text=True)
        if r.returncode == 0:
            return root
        why = f"the official MNIST: {MNIST_TOOL} failed: {r.stderr.strip()[-300:]}"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
