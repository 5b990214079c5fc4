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
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
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


# ==================================================================================
# SGD (linear models): data sets and the systems compared
# ==================================================================================
# Sizes, from environment variables as above:
#   DMLKIT_BENCH_ROWS (2,000,000) training rows of the dense problem,
#   DMLKIT_BENCH_SGD_FEATURES (50), DMLKIT_BENCH_SGD_TEST_ROWS (200,000),
#   DMLKIT_BENCH_SGD_BLOCK_ROWS (250,000) rows per block of the dense dask array,
#   DMLKIT_BENCH_EPOCHS (5) passes over the data,
#   DMLKIT_BENCH_SGD_DOCS (200,000) training documents of the hashed-text problem,
#   DMLKIT_BENCH_SGD_TEST_DOCS (50,000), DMLKIT_BENCH_SGD_DOC_BLOCK_ROWS (50,000).
SGD_FEATURES = _env_int("DMLKIT_BENCH_SGD_FEATURES", 50)
SGD_TEST_ROWS = _env_int("DMLKIT_BENCH_SGD_TEST_ROWS", 200_000)
SGD_BLOCK_ROWS = _env_int("DMLKIT_BENCH_SGD_BLOCK_ROWS", 250_000)
SGD_EPOCHS = _env_int("DMLKIT_BENCH_EPOCHS", 5)
TEXT_DOCS = _env_int("DMLKIT_BENCH_SGD_DOCS", 200_000)
TEXT_TEST_DOCS = _env_int("DMLKIT_BENCH_SGD_TEST_DOCS", 50_000)
TEXT_BLOCK_ROWS = _env_int("DMLKIT_BENCH_SGD_DOC_BLOCK_ROWS", 50_000)
TEXT_HASH_FEATURES = 2**18
TEXT_VOCAB = 50_000
TEXT_CHUNK_DOCS = 1 << 14
# "Time to reach scikit-learn's test accuracy": a fit counts when its accuracy is at
# least scikit-learn's minus this.
ACCURACY_TOLERANCE = 0.005

SGD_SYSTEMS = ("sklearn", "dmlkit-threads", "dmlkit-localcluster", "dask-ml-incremental",
               "dask-ml-logreg")
SGD_SPARSE_SYSTEMS = ("sklearn", "dmlkit-threads", "dmlkit-localcluster",
                      "dask-ml-incremental")


def _atomic_save(path, array):
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def classification_paths(n_rows=N_ROWS, n_features=SGD_FEATURES, n_test=SGD_TEST_ROWS,
                         seed=SEED) -> dict:
    """{"X_train", "y_train", "X_test", "y_test"}: the ``.npy`` files of the dense problem."""
    stem = f"classification_{n_rows}+{n_test}x{n_features}_s{seed}_float64"
    return {k: os.path.join(data_dir(), f"{stem}_{k}.npy")
            for k in ("X_train", "y_train", "X_test", "y_test")}


def make_classification_files(n_rows=N_ROWS, n_features=SGD_FEATURES, n_test=SGD_TEST_ROWS,
                              seed=SEED) -> dict:
    """The dense binary problem of ``asv_bench/compare_sgd.py``, written once; the paths.

    scikit-learn's ``make_classification(n_rows + n_test, n_features, n_informative=30,
    class_sep=0.8, random_state=seed)``, every column standardised over all the rows,
    float64; the first ``n_rows`` rows train, the last ``n_test`` test.  (Fewer than 32
    features: ``n_informative = n_features - 2``.)
    """
    paths = classification_paths(n_rows, n_features, n_test, seed)
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    from sklearn.datasets import make_classification

    X, y = make_classification(n_rows + n_test, n_features,
                               n_informative=min(30, max(2, n_features - 2)),
                               class_sep=0.8, random_state=seed)
    # (X - mean) / std in place: the same bits as compare_sgd.py's expression.
    mean, std = X.mean(0), X.std(0)
    X -= mean
    X /= std
    X = X.astype(np.float64, copy=False)
    _atomic_save(paths["X_train"], X[:n_rows])
    _atomic_save(paths["y_train"], y[:n_rows])
    _atomic_save(paths["X_test"], X[n_rows:])
    _atomic_save(paths["y_test"], y[n_rows:])
    return paths


def dask_rows(path, chunk_rows):
    """A 1-d or 2-d ``.npy`` file as a dask array of ``chunk_rows``-row blocks whose tasks
    read their own rows (with lineage)."""
    import dask
    import dask.array as da

    mm = np.load(path, mmap_mode="r")
    n, rest = mm.shape[0], mm.shape[1:]
    read = dask.delayed(_read_rows, pure=True)
    parts = [da.from_delayed(read(path, s, min(n, s + chunk_rows)),
                             shape=(min(n, s + chunk_rows) - s,) + rest, dtype=mm.dtype,
                             meta=np.empty((0,) + rest, mm.dtype))
             for s in range(0, n, chunk_rows)]
    return da.concatenate(parts, axis=0)


# -- hashed text ---------------------------------------------------------------------
def _text_model(seed, vocab=TEXT_VOCAB):
    """Cumulative token distributions of the two classes.

    Base frequencies follow Zipf-Mandelbrot (1 / (rank + 2.7)); 30% of the tokens lean
    to one class or the other, by a log-odds ratio drawn from an exponential of mean 0.8.
    A linear model on the hashed counts then reaches ~89% test accuracy (the Bayes
    classifier ~97%), the same at 5,000 documents as at 200,000.
    """
    rng = np.random.default_rng([seed, vocab, 1])
    base = 1.0 / (np.arange(1, vocab + 1) + 2.7)
    lean = rng.choice([-1.0, 0.0, 1.0], size=vocab, p=[0.15, 0.7, 0.15])
    log_ratio = lean * rng.exponential(0.8, size=vocab)
    cdfs = []
    for sign in (-0.5, 0.5):
        p = base * np.exp(sign * log_ratio)
        cdfs.append(np.cumsum(p / p.sum()))
    return cdfs


def make_text_documents(n_docs, seed=SEED, split=0, start=0):
    """Documents ``start .. start + n_docs`` of a split (0: train, 1: test) of the synthetic
    corpus, and their 0/1 labels: ~40 tokens ``w<id>`` each (20 + Poisson(20)).

    Generated in chunks of ``TEXT_CHUNK_DOCS`` documents, chunk i from the seed
    (seed, split, i) only: a smaller corpus is a prefix of a larger one.
    """
    if start % TEXT_CHUNK_DOCS:
        raise ValueError(f"start must be a multiple of {TEXT_CHUNK_DOCS}")
    cdfs = _text_model(seed)
    words = [f"w{i}" for i in range(TEXT_VOCAB)]
    docs, labels = [], []
    stop = start + n_docs
    for i in range(start // TEXT_CHUNK_DOCS, (stop + TEXT_CHUNK_DOCS - 1) // TEXT_CHUNK_DOCS):
        # The whole chunk is drawn (its draws do not depend on how much of it is used).
        rng = np.random.default_rng([seed, split, i])
        m = min(TEXT_CHUNK_DOCS, stop - i * TEXT_CHUNK_DOCS)
        y = rng.integers(2, size=TEXT_CHUNK_DOCS)
        lengths = 20 + rng.poisson(20, size=TEXT_CHUNK_DOCS)
        u = rng.random(int(lengths.sum()))
        y, lengths = y[:m], lengths[:m]
        u = u[:int(lengths.sum())]
        tok = np.where(np.repeat(y, lengths) == 1,
                       np.searchsorted(cdfs[1], u, side="right"),
                       np.searchsorted(cdfs[0], u, side="right"))
        tok = np.minimum(tok, TEXT_VOCAB - 1).tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        docs += [" ".join([words[t] for t in tok[a:b]])
                 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        labels.append(y)
    return docs, np.concatenate(labels) if labels else np.empty(0, np.int64)


def hash_documents(docs, n_features=TEXT_HASH_FEATURES):
    """scikit-learn's ``HashingVectorizer(n_features, alternate_sign=False, norm='l2')``:
    a float64 CSR matrix."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hv = HashingVectorizer(n_features=n_features, alternate_sign=False, norm="l2")
    return hv.transform(docs).tocsr()


def text_path(n_docs=TEXT_DOCS, n_test=TEXT_TEST_DOCS, n_features=TEXT_HASH_FEATURES,
              seed=SEED) -> str:
    name = f"text_{n_docs}+{n_test}_v{TEXT_VOCAB}_h{n_features}_s{seed}_float64.npz"
    return os.path.join(data_dir(), name)


def make_text_file(n_docs=TEXT_DOCS, n_test=TEXT_TEST_DOCS, n_features=TEXT_HASH_FEATURES,
                   seed=SEED) -> str:
    """The hashed corpus (train and test CSR matrices and labels) in one ``.npz``,
    generated once; the path.  Keys ``{split}_{data,indices,indptr,y}`` and
    ``n_features``; read it with :func:`load_text`."""
    import scipy.sparse as sp

    path = text_path(n_docs, n_test, n_features, seed)
    if os.path.exists(path):
        return path
    arrays = {"n_features": np.array(n_features)}
    for split, name, n in ((0, "train", n_docs), (1, "test", n_test)):
        parts, labels = [], []
        for s in range(0, n, 4 * TEXT_CHUNK_DOCS):  # bounded memory for the strings
            docs, y = make_text_documents(min(4 * TEXT_CHUNK_DOCS, n - s), seed, split, s)
            parts.append(hash_documents(docs, n_features))
            labels.append(y)
        X = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_features))
        X.sort_indices()
        arrays.update({f"{name}_data": X.data, f"{name}_indices": X.indices,
                       f"{name}_indptr": X.indptr,
                       f"{name}_y": np.concatenate(labels) if labels else np.empty(0, int)})
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_text(path, split="train", start=0, stop=None):
    """(CSR matrix, labels) of rows ``start:stop`` of a split of :func:`make_text_file`'s
    file."""
    import scipy.sparse as sp

    with np.load(path) as f:
        indptr = f[f"{split}_indptr"]
        n, d = len(indptr) - 1, int(f["n_features"])
        stop = n if stop is None else min(stop, n)
        a, b = int(indptr[start]), int(indptr[stop])
        data = np.array(f[f"{split}_data"][a:b])
        indices = np.array(f[f"{split}_indices"][a:b])
        y = np.array(f[f"{split}_y"][start:stop])
    X = sp.csr_matrix((data, indices, indptr[start:stop + 1] - a), shape=(stop - start, d))
    return X, y


def _read_text_X(path, split, start, stop):
    return load_text(path, split, start, stop)[0]


def _read_text_y(path, split, start, stop):
    return load_text(path, split, start, stop)[1]


def dask_text(path, chunk_rows=TEXT_BLOCK_ROWS, split="train"):
    """(X, y) of a split as dask arrays of ``chunk_rows``-row blocks, X's blocks scipy
    CSR matrices (``meta`` an empty ``csr_matrix``), each task reading its own rows."""
    import dask
    import dask.array as da
    import scipy.sparse as sp

    with np.load(path) as f:
        n = len(f[f"{split}_indptr"]) - 1
        d = int(f["n_features"])
        y_dtype = f[f"{split}_y"].dtype
    read_X = dask.delayed(_read_text_X, pure=True)
    read_y = dask.delayed(_read_text_y, pure=True)
    Xs, ys = [], []
    for s in range(0, n, chunk_rows):
        e = min(n, s + chunk_rows)
        Xs.append(da.from_delayed(read_X(path, split, s, e), shape=(e - s, d),
                                  dtype=np.float64, meta=sp.csr_matrix((0, d))))
        ys.append(da.from_delayed(read_y(path, split, s, e), shape=(e - s,), dtype=y_dtype,
                                  meta=np.empty((0,), y_dtype)))
    return da.concatenate(Xs, axis=0), da.concatenate(ys, axis=0)


# -- the data behind one benchmark, dense or text -----------------------------------
class DenseSGDData:
    """The dense problem's files (:func:`make_classification_files`)."""

    sparse = False

    def __init__(self, paths, block_rows=SGD_BLOCK_ROWS):
        self.paths = paths
        self.block_rows = block_rows

    def train(self):
        return np.load(self.paths["X_train"]), np.load(self.paths["y_train"])

    def test(self):
        return np.load(self.paths["X_test"]), np.load(self.paths["y_test"])

    def dask_train(self):
        return (dask_rows(self.paths["X_train"], self.block_rows),
                dask_rows(self.paths["y_train"], self.block_rows))

    def head(self, n=4096):
        X = np.array(np.load(self.paths["X_train"], mmap_mode="r")[:n])
        return X, np.array(np.load(self.paths["y_train"], mmap_mode="r")[:n])


class TextSGDData:
    """The hashed-text problem's file (:func:`make_text_file`)."""

    sparse = True

    def __init__(self, path, block_rows=TEXT_BLOCK_ROWS):
        self.path = path
        self.block_rows = block_rows

    def train(self):
        return load_text(self.path, "train")

    def test(self):
        return load_text(self.path, "test")

    def dask_train(self):
        return dask_text(self.path, self.block_rows, "train")

    def head(self, n=4096):
        return load_text(self.path, "train", 0, n)


def _small_dask(X, y, parts=2):
    """An in-memory (X, y) as dask arrays of ``parts`` blocks (CSR blocks stay CSR)."""
    import dask
    import dask.array as da

    n = X.shape[0]
    step = max(1, -(-n // parts))
    Xs, ys = [], []
    for s in range(0, n, step):
        xb, yb = X[s:s + step], y[s:s + step]
        Xs.append(da.from_delayed(dask.delayed(xb), shape=xb.shape, dtype=xb.dtype,
                                  meta=xb[:0]))
        ys.append(da.from_array(yb, chunks=len(yb)))
    return da.concatenate(Xs, axis=0), da.concatenate(ys, axis=0)


def sgd_kwargs(epochs=SGD_EPOCHS):
    return {"loss": "log_loss", "max_iter": epochs, "tol": None, "random_state": 0}


def check_dmlkit_accepts(X, y):
    """A one-epoch dmlkit fit of (X, y) (also a warm-up); ``NotImplementedError`` (asv's
    skip) when dmlkit rejects sparse input with its TypeError."""
    import dmlkit

    try:
        dmlkit.SGDClassifier(**sgd_kwargs(1)).fit(X, y)
    except TypeError as e:
        if "sparse" in str(e).lower():
            raise NotImplementedError(f"dmlkit does not take sparse input yet ({e})") from e
        raise


def warm_sgd(sparse=False):
    """A tiny dmlkit SGD fit on dask's synchronous scheduler: compiles or loads from
    numba's cache the kernels a fit calls.  Run on every worker with ``client.run`` (a
    worker has no default client, so dmlkit computes locally there)."""
    import warnings

    import dask

    import dmlkit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dmlkit.SGDClassifier(**sgd_kwargs(2)).fit(X, y)
        if sparse:
            import scipy.sparse as sp

            with contextlib.suppress(TypeError):  # sparse not supported yet
                dmlkit.SGDClassifier(**sgd_kwargs(2)).fit(sp.csr_matrix(X), y)
    return True


def sgd_fitter(system, epochs=SGD_EPOCHS, *, X=None, y=None, Xd=None, yd=None, cluster=None):
    """A zero-argument callable running one fit of ``system`` (``epochs`` passes of
    log-loss SGD, ``tol=None``; dask-ml's LogisticRegression to its own convergence); it
    returns the fitted estimator.

    ``X, y`` in memory (numpy or CSR) for scikit-learn and dmlkit-threads; ``Xd, yd`` dask
    arrays persisted on ``cluster`` for the others.
    """
    import warnings

    kw = sgd_kwargs(epochs)

    def quiet(fn):
        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn()
        return fit

    if system == "sklearn":
        from sklearn.linear_model import SGDClassifier

        return quiet(lambda: SGDClassifier(**kw).fit(X, y))
    if system == "dmlkit-threads":
        import dmlkit

        return quiet(lambda: dmlkit.SGDClassifier(**kw).fit(X, y))
    if system == "dmlkit-localcluster":
        import dmlkit

        def fit():
            with cluster.as_current():
                return dmlkit.SGDClassifier(**kw).fit(Xd, yd)
        return quiet(fit)
    if system == "dask-ml-incremental":
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier

        def fit():
            # A RandomState (not a seed): another block order each epoch, the same orders
            # each run.
            inc = Incremental(SGDClassifier(loss="log_loss", random_state=0),
                              random_state=np.random.RandomState(0))
            with cluster.as_current():
                for _ in range(epochs):
                    inc.partial_fit(Xd, yd, classes=[0, 1])
            return inc
        return quiet(fit)
    if system == "dask-ml-logreg":
        from dask_ml.linear_model import LogisticRegression

        def fit():
            with cluster.as_current():
                return LogisticRegression(max_iter=100).fit(Xd, yd)
        return quiet(fit)
    raise ValueError(f"unknown system {system!r}; known: {SGD_SYSTEMS}")


def accuracy(model, X, y) -> float:
    """Fraction of rows of (X, y) the model labels right (predicted on this process)."""
    import dask

    pred = model.predict(X)
    if dask.is_dask_collection(pred):
        pred = pred.compute(scheduler="threads")
    return float(np.mean(np.asarray(pred).astype(y.dtype) == y))


class SGDCase:
    """Everything one system needs for a fit: data in the right form (``data`` a
    :class:`DenseSGDData` or :class:`TextSGDData`), a ``LocalCluster(2 workers x 1
    thread)`` when it uses one, with the training data persisted on it, warm JIT.

    ``train`` reuses an in-memory (X, y) already loaded.
    """

    def __init__(self, system, data, epochs=SGD_EPOCHS, train=None):
        self.system = system
        self.data = data
        self.cluster = None
        self.X = self.y = self.Xd = self.yd = None
        in_memory = system in ("sklearn", "dmlkit-threads")
        try:
            if system.startswith("dmlkit"):
                # Fails fast (asv skips) while dmlkit rejects sparse input; warms the JIT.
                Xs, ys = data.head()
                check_dmlkit_accepts(*((Xs, ys) if in_memory else _small_dask(Xs, ys)))
            if in_memory:
                self.X, self.y = train if train is not None else data.train()
            else:
                self.cluster = DaskCluster()
                Xd, yd = data.dask_train()
                self.Xd, self.yd = self.cluster.persist(Xd), self.cluster.persist(yd)
                if system.startswith("dmlkit"):
                    self.cluster.client.run(warm_sgd, data.sparse)
            self.fit = sgd_fitter(system, epochs, X=self.X, y=self.y, Xd=self.Xd, yd=self.yd,
                                  cluster=self.cluster)
            self._warm(epochs)
        except BaseException:
            self.close()
            raise

    def _warm(self, epochs):
        """One tiny fit the same way (imports, the client's first graphs)."""
        Xs, ys = self.data.head(2048)
        if self.system in ("sklearn", "dmlkit-threads"):
            sgd_fitter(self.system, 1, X=Xs, y=ys)()
        else:
            Xd, yd = _small_dask(Xs, ys)
            sgd_fitter(self.system, 1, Xd=Xd, yd=yd, cluster=self.cluster)()

    def test_accuracy(self, model) -> float:
        X, y = self.data.test()
        return accuracy(model, X, y)

    def close(self):
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
