"""A worker SIGKILLed mid-fit does not fail the fit and does not change its result.

Real processes on 127.0.0.1: one ``dask scheduler`` and three ``dask worker --no-nanny``
(one thread each), a fresh cluster per test.  The data is generated inside the graph,
block by block from streams keyed by the block index, so a lost block is recomputed
from lineage and comes back the same bytes.  Each faulty fit runs in a thread while the
main thread watches the scheduler's task keys and kills the worker holding the most
data at the chosen moment (during k-means|| init, or after a few Lloyd passes); the fit
must finish with the fault-free fit's centres, inertia and iteration count, bit for bit.
"""

from __future__ import annotations

import time

import dask
import numpy as np
import pytest

import dmlkit._core.driver as driver_mod

from tests._cluster_procs import FitThread, ProcCluster, blobs, parse_key, wait_for_passes

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_WORKERS = 3
PARAMS = dict(n_clusters=8, random_state=0, max_iter=30, tol=0)


@pytest.fixture
def proc_cluster(tmp_path):
    """A fresh scheduler + 3 worker processes and a Client on them; always torn down."""
    cluster = ProcCluster(tmp_path, n_workers=N_WORKERS, memory_limit="2GiB")
    client = None
    try:
        cluster.start()
        client = distributed.Client(cluster.address, timeout=60, set_as_default=True)
        client.wait_for_workers(N_WORKERS, timeout=120)
        yield cluster, client
    finally:
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - the cluster is killed next anyway
                pass
        cluster.close()
        assert cluster.alive_pids() == [], "cluster processes left behind"


def _data():
    return blobs(n_samples=300_000, n_features=16, n_blocks=8)


def _fit(X, **kw):
    from dmlkit import KMeans

    return KMeans(**{**PARAMS, **kw}).fit(X)


def _assert_same_model(got, ref):
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    assert got.inertia_ == ref.inertia_
    assert got.n_iter_ == ref.n_iter_


def _n_workers(client):
    return len(client.scheduler_info(n_workers=-1)["workers"])


def _victim(cluster, client, snap, prefer_init=False):
    """The worker whose loss hurts most: the most keys held nowhere else (the most init
    state held nowhere else, if asked), then the most keys."""
    def score(a):
        return (len(snap["unique_init"][a]) if prefer_init else 0,
                len(snap["unique"][a]), snap["held"][a], a)

    addr = max(snap["held"], key=score)
    return addr, cluster.process_of(client, addr)


def _faulty_fit(cluster, client, step, n_passes, prefer_init):
    X = _data()
    pids = cluster.worker_pids(client)
    fit = FitThread(_make_estimator(), X)
    with distributed.get_task_stream(client=client) as stream:
        fit.start()
        try:
            snap = wait_for_passes(client, fit, step, n_passes)
            addr, proc = _victim(cluster, client, snap, prefer_init)
            assert fit.is_alive(), "the fit ended before the kill"
            cluster.kill_worker(proc)
            killed_at = time.time()
            assert fit.is_alive(), "the fit ended before the kill"
        finally:
            fit.join(timeout=240)
    assert not fit.is_alive(), "the fit did not finish after the worker was killed"
    if fit.error is not None:
        raise fit.error
    # The worker really died and did not come back; the others are the same processes.
    assert proc.poll() == -9
    assert addr in pids and addr not in client.scheduler_info(n_workers=-1)["workers"]
    assert _n_workers(client) == N_WORKERS - 1
    remaining = cluster.worker_pids(client)
    assert remaining == {a: p for a, p in pids.items() if a != addr}
    # What only the dead worker held was recomputed from lineage: tasks that had finished
    # before the kill, or input blocks (computed once, when cached), ran after it.
    done_before = {str(t["key"]) for t in stream.data
                   if max(s["stop"] for s in t["startstops"]) < killed_at}
    after = {str(t["key"]) for t in stream.data
             if min(s["start"] for s in t["startstops"]) > killed_at}
    rerun = {k for k in after if k in done_before or k.startswith("(")}
    lost = snap["unique"][addr]
    print(f"\n{step}: killed {addr} after passes {snap['seen']}, holding {len(lost)} keys no "
          f"other worker had: {sorted(lost)}; fit {fit.seconds:.2f}s; recomputed {len(rerun)} "
          f"tasks: {sorted(rerun)}")
    if lost:
        assert rerun, f"the dead worker held {lost} but nothing was recomputed"
    return fit.est, snap, killed_at


def _make_estimator():
    from dmlkit import KMeans

    return KMeans(**PARAMS)


def test_reference_fit_on_process_cluster(proc_cluster, monkeypatch):
    """(a) The fault-free fit on the process cluster: repeatable, and the same bits as
    on dask's local threaded scheduler (fixed reduction tree, per-block streams)."""
    cluster, client = proc_cluster
    X = _data()
    t0 = time.perf_counter()
    ref = _fit(X)
    t_fit = time.perf_counter() - t0
    assert ref.n_iter_ == PARAMS["max_iter"]  # tol=0: runs every iteration
    assert np.isfinite(ref.cluster_centers_).all() and ref.inertia_ > 0
    again = _fit(X)
    _assert_same_model(again, ref)
    # Same bits without any client (local threads), same blocks, same seed.
    with monkeypatch.context() as m:
        m.setattr(driver_mod, "get_client_or_none", lambda: None)
        with dask.config.set(scheduler="threads"):
            local = _fit(X)
    _assert_same_model(local, ref)
    assert _n_workers(client) == N_WORKERS
    print(f"reference fit {t_fit:.2f}s")


@pytest.mark.parametrize(
    "step,n_passes,prefer_init",
    [
        # k-means|| init: round 0's per-block state is persisted on the workers and
        # round 1 has been submitted when the worker dies.
        pytest.param("init", 2, True, id="during-kmeans-parallel-init"),
        # Lloyd: three passes seen; the cached input blocks of the dead worker are lost.
        pytest.param("lloyd", 3, False, id="after-3-lloyd-iterations"),
    ],
)
def test_worker_killed_mid_fit_same_model(proc_cluster, step, n_passes, prefer_init):
    """(b), (c) SIGKILL one worker mid-fit: the fit completes with the same model."""
    cluster, client = proc_cluster
    ref = _fit(_data())  # fault-free, on the same (still complete) cluster
    est, snap, _ = _faulty_fit(cluster, client, step, n_passes, prefer_init)
    steps_at_kill = {p[0] for p in map(parse_key, snap["tasks"]) if p is not None}
    if step == "init":
        # Killed during init: no Lloyd pass had been submitted yet.
        assert "lloyd" not in steps_at_kill, sorted(snap["tasks"])
        assert any(snap["held_init"].values()), "no init state was held on any worker"
    else:
        assert len(snap["seen"]) >= n_passes
    _assert_same_model(est, ref)
