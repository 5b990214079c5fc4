"""A misconfigured cluster gives a clear error before the first pass, never a hang.

Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1: a worker that cannot
import dmlkit, and one that runs another numba, are simulated with a ``--preload``
module (the way a worker built from another image would differ).
"""

import time

import numpy as np
import pytest

import dmlkit
from dmlkit.exceptions import ClusterError
from tests._cluster_procs import ProcCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

X = np.random.default_rng(0).standard_normal((500, 3))
y = (X[:, 0] > 0).astype(int)


def test_a_client_without_workers_waits_a_bounded_time_then_says_so(caplog):
    from distributed import Client, LocalCluster

    ref = dmlkit.KMeans(2, random_state=0).fit(X)  # no cluster: local threads
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as lc, \
            Client(lc) as client, dmlkit.config_context(wait_for_workers="1s"):
        t0 = time.perf_counter()
        with pytest.raises(ClusterError, match="has no workers .*waited 1 s"):
            dmlkit.KMeans(2, random_state=0).fit(X)
        assert time.perf_counter() - t0 < 30
        assert "no workers yet" in caplog.text
        with pytest.raises(ClusterError, match="has no workers"):
            dmlkit.SGDClassifier().fit(X, y)
        # a worker that joins in time is waited for
        lc.scale(1)
        with dmlkit.config_context(wait_for_workers="60s"):
            km = dmlkit.KMeans(2, random_state=0).fit(X)
        assert client.scheduler_info()["workers"]
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def _preload(tmp_path, name, code):
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    return ["--preload", str(path)]


@pytest.fixture
def proc_cluster(tmp_path):
    cluster = ProcCluster(tmp_path, n_workers=1).start()
    try:
        yield cluster
    finally:
        cluster.close()


def _client(cluster, n_workers):
    from distributed import Client

    client = Client(cluster.address, timeout=60)
    client.wait_for_workers(n_workers, timeout=120)
    return client


def test_workers_that_cannot_import_dmlkit_are_named(proc_cluster, tmp_path):
    proc_cluster.add_worker(_preload(tmp_path, "no_dmlkit",
                                     "import sys\nsys.modules['dmlkit'] = None\n"))
    with _client(proc_cluster, 2) as client:
        bad = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
               if w["name"] == "w1"]
        t0 = time.perf_counter()
        with pytest.raises(ClusterError, match="cannot import dmlkit") as err:
            dmlkit.KMeans(2, random_state=0).fit(X)
        assert time.perf_counter() - t0 < 60
        assert bad[0] in str(err.value)
        good = [a for a in client.scheduler_info(n_workers=-1)["workers"] if a not in bad]
        assert good[0] not in str(err.value)


def test_workers_with_other_versions_are_named_with_both_versions(proc_cluster, tmp_path):
    import numba

    proc_cluster.add_worker(_preload(tmp_path, "old_numba",
                                     "import numba\nnumba.__version__ = '0.50.0'\n"))
    with _client(proc_cluster, 2) as client:
        with pytest.raises(ClusterError, match=rf"numba 0\.50\.0 \(here {numba.__version__}\)"):
            dmlkit.SGDClassifier(max_iter=2, tol=None).fit(X, y)
        # the good worker alone passes: without the bad one the fit runs
        bad = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
               if w["name"] == "w1"]
        client.retire_workers(bad)
        deadline = time.monotonic() + 60
        while len(client.scheduler_info(n_workers=-1)["workers"]) > 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        m = dmlkit.SGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
        assert m.coef_.shape == (1, 3)
