"""The GMM oracle's default mixture and a sample distance with its noise floor, for sampler tests."""
import torch

from difflab.metrics.distances import sliced_wasserstein
from difflab.models import GMMOracle

#: data=gmm's default mixture
ORACLE = GMMOracle([[-2.5, -1.0], [2.5, -1.0], [0.0, 2.5]], [0.5, 0.4, 0.6], [0.3, 0.5, 0.2])
N = 4096


def reference_distance():
    """(d, floor): d(x) = sliced Wasserstein distance of N samples x to 4 exact N-sample references
    (mean over them, fixed projections); floor = d of exact samples (mean of 6), the value a perfect
    sampler reaches up to sample noise."""
    refs = [ORACLE.sample(N, generator=torch.Generator().manual_seed(1000 + k)) for k in range(4)]

    def d(x):
        return sum(sliced_wasserstein(x, r, 128, torch.Generator().manual_seed(7)) for r in refs) / len(refs)

    floor = sum(d(ORACLE.sample(N, generator=torch.Generator().manual_seed(2000 + j))) for j in range(6)) / 6
    return d, floor
