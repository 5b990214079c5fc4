"""Shared pieces of dmlkit's benchmark suite.

- :class:`Benchmark`: the base class (wall-clock timer, one fit per sample).
- Sizes and profile, from environment variables so that a smoke run can be small::

      DMLKIT_BENCH_ROWS=20000 DMLKIT_BENCH_KERNEL_ROWS=20000 DMLKIT_BENCH_PROFILE=fast \\
          ../.venv/bin/asv run --python=same --quick --show-stderr

  ``DMLKIT_BENCH_ROWS`` (2,000,000), ``DMLKIT_BENCH_FEATURES`` (32),
  ``DMLKIT_BENCH_CLUSTERS`` (16), ``DMLKIT_BENCH_ITERS`` (10),
  ``DMLKIT_BENCH_KERNEL_ROWS`` (500,000), ``DMLKIT_BENCH_PROFILE`` (fast, regular, large)
  and ``DMLKIT_BENCH_DATA`` (where generated data is cached; default
  ``$TMPDIR/dmlkit-bench``).
- A blobs generator with a fixed seed, written once to an ``.npy`` file and reused by
  every benchmark process (and by ``asv_bench/compare_kmeans.py``).
- The systems compared on k-means (dmlkit on threads, dmlkit on a ``LocalCluster``,
  scikit-learn, dask-ml), all started from the same initial centres.

Nothing here is imported from dmlkit at module level, so that ``asv`` can discover the
benchmarks quickly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import timeit

import numpy as np


def _env_int(name, default):
    value = os.environ.get(name)
    return int(float(value)) if value else default


N_ROWS = _env_int("DMLKIT_BENCH_ROWS", 2_000_000)
N_FEATURES = _env_int("DMLKIT_BENCH_FEATURES", 32)
N_CLUSTERS = _env_int("DMLKIT_BENCH_CLUSTERS", 16)
N_ITER = _env_int("DMLKIT_BENCH_ITERS", 10)
KERNEL_ROWS = _env_int("DMLKIT_BENCH_KERNEL_ROWS", 500_000)
SEED = 0
DTYPE = np.float32

PROFILE = os.environ.get("DMLKIT_BENCH_PROFILE", "regular")
_PROFILES = {
    # repeat: asv's (min_repeat, max_repeat, max_time) or a fixed count
    "fast": {"repeat": 1},
    "regular": {"repeat": (1, 3, 120.0)},
    "large": {"repeat": (3, 7, 600.0)},
}
if PROFILE not in _PROFILES:
    raise ValueError(f"DMLKIT_BENCH_PROFILE must be one of {sorted(_PROFILES)}, got {PROFILE!r}")


class Benchmark:
    """Base class: wall-clock time (the work runs in other threads and processes), one
    call per sample (a fit is long), one process per benchmark, no warm-up calls (setup
    warms the JIT explicitly)."""

    timer = timeit.default_timer
    number = 1
    rounds = 1
    warmup_time = 0
    repeat = _PROFILES[PROFILE]["repeat"]
    timeout = 600


# ----------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------
GEN_CHUNK_ROWS = 1 << 18
CENTER_SCALE = 0.5  # blobs overlap a lot, so Lloyd keeps moving for many iterations


def data_dir() -> str:
    d = os.environ.get("DMLKIT_BENCH_DATA") or os.path.join(tempfile.gettempdir(), "dmlkit-bench")
    os.makedirs(d, exist_ok=True)
    return d


def blobs_path(n_rows, n_features, n_clusters, seed=SEED) -> str:
    name = f"blobs_{n_rows}x{n_features}_k{n_clusters}_s{seed}_float32.npy"
    return os.path.join(data_dir(), name)


def _blobs_chunk(i, n_rows, n_features, n_clusters, seed, true_centers):
    # Row chunk i depends only on (seed, shape, i): a smaller data set is a prefix of a
    # larger one, and the bytes never depend on how many chunks were generated.
    rng = np.random.default_rng([seed, n_features, n_clusters, i])
    m = min(GEN_CHUNK_ROWS, n_rows - i * GEN_CHUNK_ROWS)
    labels = rng.integers(n_clusters, size=m)
    X = rng.standard_normal((m, n_features), dtype=np.float32)
    X += true_centers[labels]
    return X


def make_blobs_file(n_rows=N_ROWS, n_features=N_FEATURES, n_clusters=N_CLUSTERS,
                    seed=SEED) -> str:
    """Gaussian blobs (float32, C order) in an ``.npy`` file, generated once; the path.

    The write goes to a temporary name first, so a killed run never leaves a torn file.
    """
    path = blobs_path(n_rows, n_features, n_clusters, seed)
    if os.path.exists(path):
        return path
    rng = np.random.default_rng([seed, n_features, n_clusters])
    true_centers = (rng.uniform(-1, 1, size=(n_clusters, n_features))
                    * CENTER_SCALE).astype(np.float32)
    tmp = f"{path}.{os.getpid()}.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=DTYPE, shape=(n_rows, n_features))
    try:
        for i in range((n_rows + GEN_CHUNK_ROWS - 1) // GEN_CHUNK_ROWS):
            start = i * GEN_CHUNK_ROWS
            chunk = _blobs_chunk(i, n_rows, n_features, n_clusters, seed, true_centers)
            out[start:start + len(chunk)] = chunk
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_blobs(path, mmap=False) -> np.ndarray:
    """The whole data set in memory (or memory-mapped, read-only)."""
    return np.load(path, mmap_mode="r" if mmap else None)


def initial_centers(X, n_clusters=N_CLUSTERS, seed=SEED) -> np.ndarray:
    """The initial centres every system starts from: distinct rows drawn with a fixed seed."""
    rng = np.random.default_rng([seed, 12345])
    idx = np.sort(rng.choice(X.shape[0], size=n_clusters, replace=False))
    return np.ascontiguousarray(X[idx], dtype=X.dtype)


def block_rows(n_features, itemsize) -> int:
    """Rows per block that dmlkit itself picks for in-memory input (``dmlkit.block-size``,
    128 MiB by default)."""
    import dask
    from dask.utils import parse_bytes

    import dmlkit  # noqa: F401 - registers the dmlkit config defaults

    size = parse_bytes(dask.config.get("dmlkit.block-size"))
    return max(1, size // (n_features * itemsize))


def _read_rows(path, start, stop):
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def dask_blobs(path, chunk_rows=None):
    """The ``.npy`` file as a dask array whose tasks read their own rows (with lineage)."""
    import dask
    import dask.array as da

    mm = np.load(path, mmap_mode="r")
    n, d = mm.shape
    if chunk_rows is None:
        chunk_rows = block_rows(d, mm.dtype.itemsize)
    read = dask.delayed(_read_rows, pure=True)
    parts = [da.from_delayed(read(path, s, min(n, s + chunk_rows)),
                             shape=(min(n, s + chunk_rows) - s, d), dtype=mm.dtype,
                             meta=np.empty((0, d), mm.dtype))
             for s in range(0, n, chunk_rows)]
    return da.concatenate(parts, axis=0)


def inertia(X, centers, chunk_rows=1 << 16) -> float:
    """Sum of squared distances of the rows of X to their nearest centre, in float64 (the
    same measure for every system: dask-ml's ``inertia_`` is a sum of unsquared
    distances)."""
    C = np.asarray(centers, dtype=np.float64)
    c2 = (C * C).sum(axis=1)
    total = 0.0
    for s in range(0, X.shape[0], chunk_rows):
        x = np.asarray(X[s:s + chunk_rows], dtype=np.float64)
        d2 = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ C.T) + c2[None, :]
        total += float(np.maximum(d2.min(axis=1), 0.0).sum())
    return total


# ----------------------------------------------------------------------------------
# clusters and the systems compared
# ----------------------------------------------------------------------------------
SYSTEMS = ("dmlkit-threads", "dmlkit-localcluster", "sklearn", "dask-ml")
EXTRA_SYSTEMS = ("dask-ml-threads",)


class DaskCluster:
    """``LocalCluster(n_workers=2, threads_per_worker=1)`` and a Client that is *not*
    made the global default: work runs on it inside :meth:`as_current` only, so
    systems that must not see a client (threads, scikit-learn) can share the process."""

    def __init__(self, processes=True, n_workers=2, threads_per_worker=1):
        from distributed import Client, LocalCluster

        # Tasks refer to this module's functions (block readers, warm-up) by name: the
        # worker processes must be able to import the ``benchmarks`` package, which asv
        # imports by path only.  Spawned workers start from this process's sys.path.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if root not in sys.path:
            sys.path.insert(0, root)
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if root not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])

        self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                    processes=processes, dashboard_address=None,
                                    # no dashboard; its bare HTTP server on a free port
                                    scheduler_kwargs={"dashboard_address": ":0"},
                                    silence_logs=logging.WARNING)
        self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(n_workers, timeout=120)

    def as_current(self):
        return self.client.as_current()

    def persist(self, X):
        from distributed import wait

        X = self.client.persist(X)
        with self.as_current():
            wait(X, timeout=120)
        return X

    def placement(self, X):
        """{worker address: number of X's blocks it holds}."""
        from distributed import futures_of

        who = self.client.who_has(futures_of(X))
        out = {}
        for workers in who.values():
            for w in workers:
                out[w] = out.get(w, 0) + 1
        return out

    def warm(self):
        """Load the numba kernels (dmlkit's and dask-ml's) on every worker."""
        self.client.run(warm_kernels)

    def close(self):
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.cluster.close()


def warm_kernels():
    """Compile or load from numba's cache every kernel a fit calls (small inputs:
    numba specialises on dtype and layout, not on shape)."""
    from dask_ml.cluster.k_means import _centers_dense

    from dmlkit.cluster import _kernels_cpu

    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 4), dtype=np.float32)
    C = X[:3].copy()
    for t in (1, 2):
        _kernels_cpu.assign_partial_sums_block(X, None, C, n_threads=t)
        _kernels_cpu.labels_sqdist_block(X, C, n_threads=t)
    _centers_dense(X, np.zeros(len(X), np.int32), 3)
    return True


def kmeans_fitter(system, init, max_iter, *, X=None, Xd=None, cluster=None):
    """A zero-argument callable running one fit of ``system`` from ``init`` with exactly
    ``max_iter`` Lloyd iterations (tol=0, n_init=1); it returns the fitted estimator.

    ``X`` is the numpy data (dmlkit-threads, scikit-learn); ``Xd`` a dask array (persisted
    on ``cluster`` for the -localcluster systems and dask-ml).
    """
    k = init.shape[0]
    if system == "dmlkit-threads":
        import dmlkit

        def fit():
            return dmlkit.KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=0.0,
                                 random_state=0).fit(X)
    elif system == "dmlkit-localcluster":
        import dmlkit

        def fit():
            with cluster.as_current():
                return dmlkit.KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter,
                                     tol=0.0, random_state=0).fit(Xd)
    elif system == "sklearn":
        from sklearn.cluster import KMeans

        def fit():
            return KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=0.0,
                          algorithm="lloyd", random_state=0).fit(X)
    elif system in ("dask-ml", "dask-ml-threads"):
        from dask_ml.cluster import KMeans

        ctx = cluster.as_current if system == "dask-ml" else contextlib.nullcontext

        def fit():
            with ctx():
                return KMeans(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=0.0,
                              random_state=0).fit(Xd)
    else:
        raise ValueError(f"unknown system {system!r}; known: {SYSTEMS + EXTRA_SYSTEMS}")
    return fit


def needs_numpy(system) -> bool:
    return system in ("dmlkit-threads", "sklearn")


def needs_cluster(system) -> bool:
    return system in ("dmlkit-localcluster", "dask-ml")


def warm_fit(system, path, init, cluster=None):
    """A tiny fit of ``system``: imports, numba dispatch, the client's first graphs."""
    small = np.array(load_blobs(path, mmap=True)[:2048])
    Xd = None
    if not needs_numpy(system):
        import dask.array as da

        Xd = da.from_array(small, chunks=(1024, small.shape[1]))
    kmeans_fitter(system, init, 2, X=small, Xd=Xd, cluster=cluster)()


class KMeansCase:
    """Everything one system needs for a fit: data in the right form, a cluster when
    it uses one (``processes`` picks worker processes or in-process workers), warm JIT."""

    def __init__(self, system, path, n_clusters=N_CLUSTERS, max_iter=N_ITER, processes=True):
        self.system = system
        self.path = path
        mm = load_blobs(path, mmap=True)
        self.init = initial_centers(mm, n_clusters)
        self.X = load_blobs(path) if needs_numpy(system) else None
        self.cluster = None
        self.Xd = None
        try:
            if needs_cluster(system):
                self.cluster = DaskCluster(processes=processes)
                self.Xd = self.cluster.persist(dask_blobs(path))
                self.cluster.warm()
            elif system == "dask-ml-threads":
                self.Xd = dask_blobs(path).persist()
            warm_kernels()
            warm_fit(system, path, self.init, self.cluster)
            self.fit = kmeans_fitter(system, self.init, max_iter, X=self.X, Xd=self.Xd,
                                     cluster=self.cluster)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


# ----------------------------------------------------------------------------------
# peak memory and CPU use of a process tree (for the comparison script)
# ----------------------------------------------------------------------------------
class ResourceMonitor:
    """While active, samples the resident memory of this process plus its children (the
    dask worker processes) in a thread, and counts the CPU time the rest of the machine
    used meanwhile (other processes competing for the cores make timings noisy).

    After exit: ``start`` and ``peak`` RSS in bytes, ``other_cpu`` the mean number of
    cores busy with processes outside this tree, ``own_cpu`` the same for this tree.
    """

    def __init__(self, interval=0.01):
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self.interval = interval
        self.start = self.peak = 0
        self.other_cpu = self.own_cpu = float("nan")
        self._stop = threading.Event()
        self._thread = None

    def _tree(self):
        procs = [self._proc]
        with contextlib.suppress(self._psutil.Error):
            procs += self._proc.children(recursive=True)
        return procs

    def _rss(self):
        total = 0
        for p in self._tree():
            with contextlib.suppress(self._psutil.Error):
                total += p.memory_info().rss
        return total

    def _cpu(self):
        """(machine busy CPU seconds, this tree's CPU seconds, wall time)."""
        t = self._psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        own = {}
        for p in self._tree():
            with contextlib.suppress(self._psutil.Error):
                c = p.cpu_times()
                own[p.pid] = c.user + c.system
        return busy, own, timeit.default_timer()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._cpu0 = self._cpu()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        busy1, own1, t1 = self._cpu()
        busy0, own0, t0 = self._cpu0
        wall = max(t1 - t0, 1e-9)
        own = sum(v - own0.get(pid, 0.0) for pid, v in own1.items())
        self.own_cpu = own / wall
        self.other_cpu = max(0.0, (busy1 - busy0) - own) / wall
        return False
