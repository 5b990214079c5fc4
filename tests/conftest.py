import os

import dask
import numpy as np
import pytest

from dmlkit._core.dispatch import has_cupy_device

# The tests fit small data on real clusters to test the cluster path: by default such
# fits would be solved in the client process (``dmlkit.local-fit-bytes``).  The tests of
# that rule set it themselves.
dask.config.set({"dmlkit.local-fit-bytes": 0})


def pytest_collection_modifyitems(config, items):
    if has_cupy_device():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def client():
    """A real 2-worker LocalCluster client, shared by the session's tests."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def with_client(client):
    """Make the session client the default one for the duration of a test."""
    with client.as_current():
        yield client


@pytest.fixture(params=["sync", "threads"])
def scheduler(request):
    import dask

    with dask.config.set(scheduler=request.param):
        yield request.param


@pytest.fixture
def global_random_seed():
    return int(os.environ.get("DMLKIT_TEST_SEED", "42"))


@pytest.fixture
def rng(global_random_seed):
    return np.random.default_rng(global_random_seed)
