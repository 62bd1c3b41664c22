import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def all_processes():
    """One instance of every process and schedule, with ids for parametrize."""
    from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, SubVPSDE

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
