"""A dataset about three times the cluster's memory trains with bounded worker memory.

The data is written to disk as zarr, read back lazily (32 MiB chunks) and fitted once
(module fixture) on a 1-worker ``LocalCluster`` whose memory limit is a third of it,
while a thread polls the scheduler.  The binary labels of the SGD and logistic fits are
stored beside X (one int64 per row, chunk for chunk), so their passes read X once.
``cache='auto'`` must decide to stream the blocks from the store on every pass (nothing
of X persisted); no worker may be lost or restarted; and worker memory must stay
bounded: nothing spilled to disk, no pause.

Sizes: a worker that has imported dmlkit (numba, scikit-learn, scipy) and compiled its
kernels takes 400-500 MiB of process memory before holding any data, so the worker gets
1 GiB (spill at 70%: 717 MiB; 768 MiB left too little margin, a fresh-clone run spilled
one chunk).  One worker: the data is 3 x 1 GiB = 3 GiB, written once and read about ten
times, which keeps the test at a size that passes within its timeout on 2 busy cores
(two workers needed 6 GiB and took 330 s under load).  What a second worker would add
(blocks streamed to both) is shown by the resilience tests' streamed fits.  With cold
numba caches (a fresh clone) the peak measured 490-580 MiB, so the limit cannot shrink
with the data.  64 features: the same bytes as 16 features in a quarter of the rows, so
the work done per row (k-means|| sampling keys, SGD's per-row updates, label counts)
takes about a quarter less worker time; the bytes streamed, which this test is about,
are the same.

ALS reads 6M ratings (144 MiB) from parquet with selected columns on the same worker,
its factors kept there: it must lay out blocks sized to the worker's memory (before, one
block a side of 72 MB ran 1 GiB workers out of memory) and give the in-memory fit's
bits.  The run at three times the worker's memory (134M ratings) is
``asv_bench/als_scale.py --parquet``'s: minutes, not a test.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import warnings
from types import SimpleNamespace

import dask
import dask.array as da
import numpy as np
import pytest

from dmlkit.exceptions import ConvergenceWarning
from tests._cluster_procs import _labels_block, blobs

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

N_WORKERS = 1
WORKER_MEMORY = 1024 * 2**20
DATA_RATIO = 3  # data bytes / total memory limit of the cluster
N_FEATURES = 64
CHUNK_BYTES = 32 * 2**20


def _watch(dask_scheduler=None):
    """Runs on the scheduler: worker status and memory, and array chunks held in memory."""
    workers = {a: {"status": ws.status.name, "process": ws.memory.process,
                   "managed": ws.memory.managed, "spilled": ws.memory.spilled}
               for a, ws in dask_scheduler.workers.items()}
    # X's blocks are array chunks (tuple keys); the fit's own results are string keys.
    chunks = [ts for ts in dask_scheduler.tasks.values()
              if isinstance(ts.key, tuple) and ts.state == "memory"]
    return {"workers": workers, "chunks_in_memory": len(chunks),
            "chunks_wanted": sorted(str(ts.key) for ts in chunks if ts.who_wants)}


class _Watcher(threading.Thread):
    """Polls the scheduler during the fit (a pause can be brief)."""

    def __init__(self, client, every=0.05):
        super().__init__(daemon=True, name="ooc-watch")
        self.client, self.every = client, every
        self.stop = threading.Event()
        self.statuses = set()
        self.max_process = self.max_managed = self.max_spilled = 0
        self.max_chunks = 0
        self.wanted = set()
        self.error = None
        self.polls = 0

    def run(self):
        try:
            while not self.stop.is_set():
                snap = self.client.run_on_scheduler(_watch)
                self.polls += 1
                for w in snap["workers"].values():
                    self.statuses.add(w["status"])
                    self.max_process = max(self.max_process, w["process"])
                    self.max_managed = max(self.max_managed, w["managed"])
                    self.max_spilled = max(self.max_spilled, w["spilled"])
                self.max_chunks = max(self.max_chunks, snap["chunks_in_memory"])
                self.wanted.update(snap["chunks_wanted"])
                self.stop.wait(self.every)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _watched_fit(client, est, X, y=None):
    """Fit on ``client`` while a thread polls the scheduler; capture dmlkit's INFO logs.

    Returns (watcher, error or None, log messages, seconds)."""
    logger = logging.getLogger("dmlkit")
    records, old_level = _Records(), logger.level
    watcher = _Watcher(client)
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    watcher.start()
    t1 = time.perf_counter()
    error = None
    try:
        with client.as_current():
            est.fit(X) if y is None else est.fit(X, y)
    except Exception as e:  # noqa: BLE001 - every test reports it
        error = e
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
        logger.removeHandler(records)
        logger.setLevel(old_level)
    return watcher, error, records.messages, time.perf_counter() - t1


@pytest.fixture(scope="module")
def ooc_fit(tmp_path_factory):
    """Write 3 GiB of zarr (and its labels), fit KMeans, SGD and LogisticRegression on a
    1 GiB cluster; record what happened."""
    folder = tmp_path_factory.mktemp("ooc")
    total_memory = N_WORKERS * WORKER_MEMORY
    rows_per_chunk = CHUNK_BYTES // (N_FEATURES * 8)
    n_blocks = DATA_RATIO * total_memory // CHUNK_BYTES
    n_samples = n_blocks * rows_per_chunk
    try:
        t0 = time.perf_counter()
        X_gen = blobs(n_samples=n_samples, n_features=N_FEATURES, n_blocks=n_blocks)
        # The labels (a linear rule of the features) are stored beside X, chunk for chunk,
        # written in the same pass (each block of X is generated once): the fits read
        # them from the store instead of reading X a second time to derive them.
        y_gen = X_gen.map_blocks(_labels_block, drop_axis=1, dtype=np.int64,
                                 meta=np.empty((0,), np.int64))
        with dask.config.set(scheduler="threads"):
            dask.compute(
                da.to_zarr(X_gen, str(folder / "X.zarr"), mode="w", compressors=None,
                           compute=False),
                da.to_zarr(y_gen, str(folder / "y.zarr"), mode="w", compressors=None,
                           compute=False))
        t_write = time.perf_counter() - t0
        X = da.from_zarr(str(folder / "X.zarr"))
        y = da.from_zarr(str(folder / "y.zarr"))

        from dmlkit import KMeans

        with distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=1,
                                      processes=True, memory_limit=WORKER_MEMORY,
                                      host="127.0.0.1",
                                      dashboard_address="127.0.0.1:0") as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
            before = {a: (w["id"], w["name"]) for a, w in info.items()}
            pids = client.run(os.getpid)
            km = KMeans(n_clusters=8, max_iter=3, init_max_iter=2, random_state=0,
                        cache="auto")
            watcher, error, messages, t_fit = _watched_fit(client, km, X)
            # SGD on the same streamed data and its labels, both read from the store.
            from dmlkit import SGDClassifier

            sgd = SGDClassifier(loss="log_loss", max_iter=2, tol=None, random_state=0)
            # Compile the SGD kernel on the workers first: a cold numba cache costs LLVM
            # memory once per process, which is not what this test measures.
            with client.as_current():
                SGDClassifier(max_iter=1, tol=None).fit(X[:1000].compute(),
                                                        y[:1000].compute())
            w2, e2, m2, t2 = _watched_fit(client, sgd, X, y)
            sgd_run = SimpleNamespace(watcher=w2, error=e2, messages=m2, t_fit=t2, est=sgd,
                                      X=X, y=y)
            # Full-batch logistic regression: its label pass, its first evaluation and
            # one L-BFGS iteration (a pass per line-search trial), all streamed.
            from dmlkit import LogisticRegression

            glm = LogisticRegression(max_iter=1, tol=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=1, tol=0
                with client.as_current():  # compile first, as above
                    LogisticRegression(max_iter=1).fit(X[:1000].compute(), y[:1000].compute())
                w3, e3, m3, t3 = _watched_fit(client, glm, X, y)
            glm_run = SimpleNamespace(watcher=w3, error=e3, messages=m3, t_fit=t3, est=glm,
                                      X=X, y=y)
            als_run = _als_from_parquet(client, folder)
            info = client.scheduler_info(n_workers=-1)["workers"]
            res = SimpleNamespace(
                X=X, y=y, km=km, error=error, watcher=watcher, messages=messages, sgd=sgd_run,
                glm=glm_run, als=als_run,
                total_memory=total_memory, t_write=t_write, t_fit=t_fit,
                before=before, after={a: (w["id"], w["name"]) for a, w in info.items()},
                pids=pids, pids_after=client.run(os.getpid),
                worker_logs=client.get_worker_logs(),
                nanny_logs=client.get_worker_logs(nanny=True),
                events=client.get_events("all"))
        print(f"\n{X.nbytes / 2**30:.2f} GiB on {N_WORKERS} x {WORKER_MEMORY / 2**20:.0f} MiB: "
              f"write {t_write:.1f}s, fit {t_fit:.1f}s; peak worker process memory "
              f"{watcher.max_process / 2**20:.0f} MiB, managed "
              f"{watcher.max_managed / 2**20:.0f} MiB, spilled "
              f"{watcher.max_spilled / 2**20:.0f} MiB; at most {watcher.max_chunks} array "
              f"chunks in memory")
        yield res
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # GiBs: not left to tmp_path's retention


def test_kmeans_streams_data_three_times_cluster_memory(ooc_fit):
    """The fit completes, streams X from the store and keeps every worker."""
    r = ooc_fit
    assert r.error is None, r.error
    assert r.watcher.error is None, r.watcher.error
    assert r.watcher.polls > 10
    assert r.X.chunks[1] == (N_FEATURES,)
    assert set(r.X.chunks[0]) == {CHUNK_BYTES // (8 * N_FEATURES)}
    assert r.X.nbytes >= DATA_RATIO * r.total_memory
    assert r.y.chunks == (r.X.chunks[0],)  # the labels: one stored chunk per block of X

    # The driver chose to stream, and no block of X was persisted: no array chunk was
    # ever wanted by the client, and only a handful were in memory at any time.
    assert any("streaming" in m for m in r.messages), r.messages
    assert not any("persisted" in m for m in r.messages), r.messages
    assert r.watcher.wanted == set(), sorted(r.watcher.wanted)[:5]
    assert r.watcher.max_chunks <= 4 * N_WORKERS, r.watcher.max_chunks

    # No worker was lost, killed or restarted: same workers, same processes.
    assert len(r.before) == N_WORKERS
    assert r.after == r.before
    assert r.pids_after == r.pids
    for addr, logs in r.nanny_logs.items():
        bad = [m for _, m in logs if "restart" in m.lower() or "memory budget" in m]
        assert not bad, (addr, bad)
    removed = [msg for _, msg in r.events
               if isinstance(msg, dict) and msg.get("action") == "remove-worker"]
    assert not removed, removed

    # A sane model.
    km = r.km
    assert km.cluster_centers_.shape == (8, N_FEATURES)
    assert np.isfinite(km.cluster_centers_).all()
    assert np.isfinite(km.inertia_) and km.inertia_ > 0
    assert 1 <= km.n_iter_ <= 3


def test_streamed_fit_keeps_worker_memory_bounded(ooc_fit):
    """Bounded worker memory: nothing spilled, no pause, a few blocks managed at most."""
    r = ooc_fit
    assert r.error is None, r.error
    w = r.watcher
    assert w.max_spilled == 0, f"{w.max_spilled / 2**20:.0f} MiB spilled to disk"
    assert w.max_managed <= 8 * CHUNK_BYTES, f"{w.max_managed / 2**20:.0f} MiB managed"
    assert w.statuses == {"running"}, w.statuses
    for addr, logs in r.worker_logs.items():
        paused = [m for _, m in logs if "Pausing worker" in m]
        assert not paused, (addr, paused)
    assert w.max_process < 0.8 * WORKER_MEMORY


def _assert_streamed_and_bounded(r, run):
    """A later fit of the fixture streamed its blocks with bounded worker memory (a few
    blocks managed at most, less than one spilled), on the same workers; returns the
    estimator and a held-out sample (X, y) to score it on."""
    assert run.error is None, run.error
    assert any("streaming" in m for m in run.messages), run.messages
    w = run.watcher
    assert w.max_spilled < CHUNK_BYTES, f"{w.max_spilled / 2**20:.0f} MiB spilled to disk"
    assert w.max_managed <= 8 * CHUNK_BYTES, f"{w.max_managed / 2**20:.0f} MiB managed"
    assert w.statuses == {"running"}, w.statuses
    assert w.max_process < 0.8 * WORKER_MEMORY
    assert r.after == r.before and r.pids_after == r.pids
    assert np.isfinite(run.est.coef_).all()
    return run.est, (run.X[:50_000].compute(), run.y[:50_000].compute())


def test_sgd_streams_data_three_times_cluster_memory(ooc_fit):
    """SGD epochs stream the same data: bounded memory, same workers, a sound model."""
    est, sample = _assert_streamed_and_bounded(ooc_fit, ooc_fit.sgd)
    assert est.n_iter_ == 2
    assert est.score(*sample) > 0.9
    print(f"\nSGD, 2 epochs streamed: {ooc_fit.sgd.t_fit:.1f}s; peak worker process memory "
          f"{ooc_fit.sgd.watcher.max_process / 2**20:.0f} MiB")


def test_logistic_regression_streams_data_three_times_cluster_memory(ooc_fit):
    """Full-batch passes stream the same data: bounded memory, same workers."""
    est, sample = _assert_streamed_and_bounded(ooc_fit, ooc_fit.glm)
    assert est.n_iter_[0] == 1 and est.n_passes_ >= 2
    assert est.score(*sample) > 0.75  # one quasi-Newton step already separates the blobs
    print(f"\nLogisticRegression, 1 iteration ({est.n_passes_} passes) streamed: "
          f"{ooc_fit.glm.t_fit:.1f}s; peak worker process memory "
          f"{ooc_fit.glm.watcher.max_process / 2**20:.0f} MiB")


ALS_RATINGS = 6_000_000  # 144 MiB in memory; its two block layouts 137 MiB


def _als_from_parquet(client, folder):
    """ALS from ratings in parquet read with selected columns, on the fixture's 1 GiB
    worker, its factors kept there: the blocks it lays out are sized to the worker's
    memory (one 72 MB block per side ran 1 GiB workers out of memory before)."""
    import dask.dataframe as dd

    import dmlkit
    from dmlkit.datasets import make_ratings

    path = str(folder / "ratings")
    with dask.config.set(scheduler="threads"):
        make_ratings(100_000, 5_000, ALS_RATINGS, implicit=True, npartitions=6,
                     random_state=0).to_parquet(path)
    ratings = dd.read_parquet(path, columns=["user_id", "item_id", "rating"])

    def als(n_iter=2):
        return dmlkit.ALS(factors=8, iterations=n_iter, implicit=True, random_state=0)

    est = als()
    with dmlkit.config_context(driver_state_bytes=0):
        with client.as_current():  # numba's ALS kernels compiled on the worker first
            als(1).fit(ratings.partitions[0].head(1000, compute=False))
        watcher, error, messages, t_fit = _watched_fit(client, est, ratings)
    factors = ref = None
    if error is None:
        factors = client.compute(est.user_factors_).result()
        with dask.config.set(scheduler="threads"):  # the same data in this process
            ref = als().fit(ratings)
    return SimpleNamespace(watcher=watcher, error=error, messages=messages, t_fit=t_fit,
                           factors=factors, ref=ref)


def test_als_from_parquet_fits_a_small_worker(ooc_fit):
    """ALS lays out blocks a 1 GiB worker can build and hold (spilled if need be), with
    the in-memory fit's bits."""
    run = ooc_fit.als
    assert run.error is None, run.error
    laid_out = [re.search(r" in (\d+) \+ \d+ blocks", m) for m in run.messages]
    laid_out = [m for m in laid_out if m]
    assert laid_out, run.messages
    n_blocks = int(laid_out[0].group(1))
    # 12 bytes a rating at most 1/32 of the worker's memory per block
    assert n_blocks >= 12 * ALS_RATINGS / (WORKER_MEMORY / 32), laid_out
    w = run.watcher
    assert w.statuses == {"running"}, w.statuses
    assert w.max_process < 0.95 * WORKER_MEMORY
    assert ooc_fit.after == ooc_fit.before and ooc_fit.pids_after == ooc_fit.pids
    assert run.factors.tobytes() == run.ref.user_factors_.tobytes()
    print(f"\nALS, 2 iterations from parquet ({ALS_RATINGS:,} ratings, {n_blocks} blocks a "
          f"side): {run.t_fit:.1f}s; peak worker process memory {w.max_process / 2**20:.0f} "
          f"MiB, spilled {w.max_spilled / 2**20:.0f} MiB")
