import tempfile

import pytest

from cluster import Cluster, sinfo_ok, unavailable_reason


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM: the running one, else started here (as root) and stopped afterwards."""
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
