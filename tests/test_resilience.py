"""A worker SIGKILLed mid-fit does not fail the fit and does not change its result.

Real processes on 127.0.0.1: one ``dask scheduler`` and three ``dask worker --no-nanny``
(one thread each).  Each kill removes a worker for good: the module's tests share one
cluster (``shared_proc_cluster``), which starts each test with three live workers (a new
process replaces the one killed by the test before) and no task left on the scheduler
(``proc_cluster``, a fresh cluster per test, serves the GLM and ALS tests).  The data is
generated inside the graph, block by block, from random streams keyed by the block
index, so a lost block is recomputed from lineage and comes back the same bytes.

Each faulty fit runs in a thread while the main thread watches the scheduler's task keys
(``dmlkit-kmeans-<step>-<token>-<pass>[-<block>]``) and, at the chosen moment (during
k-means|| init, or after a few Lloyd passes), SIGKILLs the worker whose loss hurts most
(the most results held nowhere else).  The fit must finish with the fault-free fit's
centres, inertia and iteration count, bit for bit.
"""

from __future__ import annotations

import time

import dask
import numpy as np
import pytest

from tests._cluster_procs import (
    FitThread,
    as_fresh,
    blobs,
    parse_key,
    running_cluster,
    wait_for_passes,
)

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_WORKERS = 3
# tol=0 and overlapping blobs: all 30 Lloyd iterations run, so a kill after the third
# is well inside the fit.
PARAMS = dict(n_clusters=8, random_state=0, max_iter=30, tol=0)


@pytest.fixture
def proc_cluster(tmp_path):
    """A fresh scheduler + 3 worker processes and a Client on them; always torn down.

    The client is not made the global default: tests make it current (``as_current``)
    around the fits that should run on it, so a fit outside that block runs locally.
    """
    with running_cluster(tmp_path, n_workers=N_WORKERS) as (cluster, client):
        yield cluster, client


@pytest.fixture(scope="module")
def _module_proc_cluster(tmp_path_factory):
    """One scheduler + 3 worker processes for a module's tests; always torn down."""
    with running_cluster(tmp_path_factory.mktemp("proc-cluster"),
                         n_workers=N_WORKERS) as running:
        yield running


@pytest.fixture
def shared_proc_cluster(_module_proc_cluster):
    """The module's cluster as a fresh one would be: ``N_WORKERS`` live workers (new
    processes replace those killed before) and no task left of earlier fits.  Starting a
    cluster and warming its workers (imports, numba caches) costs more than a test's fit.
    """
    return as_fresh(*_module_proc_cluster, N_WORKERS)


def _data():
    return blobs(n_samples=300_000, n_features=16, n_blocks=8)


def _estimator(**kw):
    from dmlkit import KMeans

    return KMeans(**{**PARAMS, **kw})


def _fit_on(client, X, **kw):
    with client.as_current():
        return _estimator(**kw).fit(X)


def _assert_same_model(got, ref):
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    assert got.inertia_ == ref.inertia_
    assert got.n_iter_ == ref.n_iter_


def _workers(client):
    return client.scheduler_info(n_workers=-1)["workers"]


def _victim(snap, prefer_init):
    """The worker whose loss hurts most: the most results held nowhere else (of the init
    state first, when asked), then the most results."""
    def score(a):
        return (len(snap["unique_init"][a]) if prefer_init else 0,
                len(snap["unique"][a]), snap["held"][a], a)

    return max(snap["held"], key=score)


def _step(key):
    p = parse_key(key)
    return None if p is None else p[0]


def _fit_with_a_kill(cluster, client, step, n_passes, prefer_init, cache):
    """Fit in a thread; SIGKILL one worker once ``n_passes`` passes of ``step`` appeared.

    Returns (estimator, what the kill hit) after checking that the worker really died
    mid-fit, stayed dead, and that what only it held was recomputed.
    """
    pids = cluster.worker_pids(client)
    fit = FitThread(_estimator(cache=cache), _data(), client)
    with distributed.get_task_stream(client=client) as stream:
        fit.start()
        try:
            snap = wait_for_passes(client, fit, step, n_passes)
            addr = _victim(snap, prefer_init)
            proc = cluster.process_of(client, addr)
            assert fit.is_alive(), "the fit ended before the kill"
            killed_at = time.time()  # the task stream's time base (same host)
            cluster.kill_worker(proc)
            assert fit.is_alive(), "the fit ended before the kill"
        finally:
            fit.join(timeout=240)
    assert not fit.is_alive(), "the fit did not finish after the worker was killed"
    if fit.error is not None:
        raise fit.error

    # The worker really died and did not come back (no nanny); the others are the same
    # processes as before.
    assert proc.poll() == -9
    assert addr in pids and addr not in _workers(client)
    assert len(_workers(client)) == N_WORKERS - 1
    assert cluster.worker_pids(client) == {a: p for a, p in pids.items() if a != addr}

    # The scheduler saw an unexpected loss: the tasks the worker was running and the
    # results only it held go back to be recomputed from lineage; no scattered data
    # (which has no lineage) was lost.
    removal = [msg for _, msg in client.get_events(addr)
               if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
    assert len(removal) == 1, client.get_events(addr)
    removal = removal[0]
    assert not removal["expected"]
    assert not removal["lost-scattered-tasks"], removal
    hit = {"processing": sorted(map(str, removal["processing-tasks"])),
           "lost": sorted(map(str, removal["lost-computed-tasks"])),
           "snapshot": snap}
    assert hit["processing"] or hit["lost"], "the kill hit neither a running task nor data"
    # Input blocks are read by every later pass: each one lost was computed again.
    after = {str(t["key"]) for t in stream.data
             if min(s["start"] for s in t["startstops"]) > killed_at}
    lost_blocks = {k for k in hit["lost"] if k.startswith("(")}
    assert lost_blocks <= after, f"lost input blocks never recomputed: {lost_blocks - after}"
    print(f"\n{step}, cache={cache!r}: killed {addr} when passes {snap['seen']} had appeared (fit "
          f"{fit.seconds:.2f}s); it was running {hit['processing']} and was the only holder "
          f"of {hit['lost']}")
    return fit.est, hit


def test_reference_fit_on_process_cluster(shared_proc_cluster):
    """(a) The fault-free fit on the process cluster is repeatable, and the same bits as
    on dask's local threaded scheduler (fixed reduction tree, per-block streams)."""
    cluster, client = shared_proc_cluster
    X = _data()
    t0 = time.perf_counter()
    ref = _fit_on(client, X)
    print(f"\nreference fit on the process cluster: {time.perf_counter() - t0:.2f}s")
    assert ref.n_iter_ == PARAMS["max_iter"]
    assert np.isfinite(ref.cluster_centers_).all() and ref.inertia_ > 0
    _assert_same_model(_fit_on(client, X), ref)
    # No current client here: the driver runs on local threads.
    with dask.config.set(scheduler="threads"):
        local = _estimator().fit(X)
    _assert_same_model(local, ref)
    assert len(_workers(client)) == N_WORKERS


@pytest.mark.parametrize("cache", ["auto", False], ids=["cached", "streamed"])
@pytest.mark.parametrize(
    "step,n_passes,prefer_init",
    [
        # k-means|| init: round 0 is done (with cached input its per-block state is
        # persisted on the workers) and round 1 has been submitted when the worker dies.
        pytest.param("init", 2, True, id="during-kmeans-parallel-init"),
        # Lloyd: three passes have appeared; with cached input the dead worker's blocks
        # are lost and rebuilt from lineage.
        pytest.param("lloyd", 3, False, id="after-3-lloyd-iterations"),
    ],
)
def test_worker_killed_mid_fit_same_model(shared_proc_cluster, step, n_passes, prefer_init,
                                          cache):
    """(b), (c) SIGKILL one worker mid-fit: the fit completes with the same model."""
    cluster, client = shared_proc_cluster
    ref = _fit_on(client, _data(), cache=cache)  # fault-free, on the still complete cluster
    est, hit = _fit_with_a_kill(cluster, client, step, n_passes, prefer_init, cache)
    hit_steps = {_step(k) for k in hit["processing"] + hit["lost"]}
    running_steps = {_step(k) for k in hit["processing"]}
    seen_steps = {_step(k) for k in hit["snapshot"]["tasks"]}
    if step == "init":
        # Killed inside init: no Lloyd pass had started; with cached input the worker
        # held (or was computing) per-block init state, which was lost.
        assert "lloyd" not in seen_steps | running_steps, hit
        if cache != False:  # noqa: E712 - the parameter is 'auto' or False
            assert any(s is not None and s.startswith("init") for s in hit_steps), hit
    else:
        assert len(hit["snapshot"]["seen"]) >= n_passes
        assert "init" not in running_steps, hit
    _assert_same_model(est, ref)
