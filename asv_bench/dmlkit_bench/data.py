"""Dense data sets: generators with fixed seeds, written once to ``.npy`` files under
:func:`~dmlkit_bench.settings.data_dir` and reused by every process, and the data
objects the runners take.

A data object (:class:`BlobsData`, :class:`ClassificationData`, and
:class:`~dmlkit_bench.text.TextData` for sparse input) gives a system its input in the
form it wants:

- ``train()`` / ``test()``: ``(X, y)`` in this process (numpy, or scipy CSR); ``y`` is
  None for clustering.  Loaded once and shared by every system until ``release()``.
- ``dask_train()``: ``(X, y)`` as dask arrays of ``block_rows``-row blocks whose tasks read
  their own rows from the file (so they have lineage); a cluster runner persists them.
- ``head(n)``: the first ``n`` training rows in memory, for warm-up fits.
- ``key``: identifies the data and its blocks (the cluster keeps one persisted copy per key).

Rows per block, unless given: what dmlkit picks for in-memory input, ``dmlkit.block-size``
(128 MiB by default) over the bytes of a row (:func:`block_rows`).
"""

from __future__ import annotations

import os

import numpy as np

from .settings import (
    N_CLUSTERS,
    N_FEATURES,
    N_ROWS,
    SEED,
    SGD_BLOCK_ROWS,
    SGD_FEATURES,
    SGD_TEST_ROWS,
    data_dir,
)

GEN_CHUNK_ROWS = 1 << 18
CENTER_SCALE = 0.5  # blobs overlap a lot, so Lloyd keeps moving for many iterations


def atomic_save(path, array):
    """``np.save`` to a temporary name, then rename: a killed run never leaves a torn file."""
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def block_rows(row_bytes) -> int:
    """Rows per block that dmlkit picks for in-memory input: ``dmlkit.block-size`` (its
    public setting, 128 MiB by default) over the bytes of one row."""
    import dmlkit
    from dask.utils import parse_bytes

    return max(1, int(parse_bytes(dmlkit.get_config("block-size")) // max(1, row_bytes)))


def _read_rows(path, start, stop):
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def dask_rows(path, chunk_rows=None):
    """A 1-d or 2-d ``.npy`` file as a dask array of ``chunk_rows``-row blocks (default
    :func:`block_rows`) whose tasks read their own rows."""
    import dask
    import dask.array as da

    mm = np.load(path, mmap_mode="r")
    n, rest = mm.shape[0], mm.shape[1:]
    if chunk_rows is None:
        chunk_rows = block_rows(mm.dtype.itemsize * int(np.prod(rest, dtype=np.int64)))
    read = dask.delayed(_read_rows, pure=True)
    parts = [da.from_delayed(read(path, s, min(n, s + chunk_rows)),
                             shape=(min(n, s + chunk_rows) - s,) + rest, dtype=mm.dtype,
                             meta=np.empty((0,) + rest, mm.dtype))
             for s in range(0, n, chunk_rows)]
    return da.concatenate(parts, axis=0)


class NpyData:
    """Training (and optionally test) ``.npy`` files: ``paths`` has ``X_train`` and
    optionally ``y_train``, ``X_test``, ``y_test``."""

    sparse = False

    def __init__(self, paths, block_rows=None, name="data"):
        self.paths = dict(paths)
        self.block_rows = block_rows
        self.name = name
        self._train = self._test = None

    @property
    def key(self):
        return (tuple(sorted(self.paths.items())), self.block_rows)

    @property
    def shape(self):
        return np.load(self.paths["X_train"], mmap_mode="r").shape

    @property
    def dtype(self):
        return np.load(self.paths["X_train"], mmap_mode="r").dtype

    def _load(self, split):
        X = np.load(self.paths[f"X_{split}"])
        y = np.load(self.paths[f"y_{split}"]) if f"y_{split}" in self.paths else None
        return X, y

    def train(self):
        if self._train is None:
            self._train = self._load("train")
        return self._train

    def test(self):
        if "X_test" not in self.paths:
            return None
        if self._test is None:
            self._test = self._load("test")
        return self._test

    def dask_train(self):
        rows = self.block_rows or block_rows(self.shape[1] * self.dtype.itemsize)
        X = dask_rows(self.paths["X_train"], rows)
        y = dask_rows(self.paths["y_train"], rows) if "y_train" in self.paths else None
        return X, y

    def head(self, n=4096):
        X = np.array(np.load(self.paths["X_train"], mmap_mode="r")[:n])
        y = (np.array(np.load(self.paths["y_train"], mmap_mode="r")[:n])
             if "y_train" in self.paths else None)
        return X, y

    def describe(self):
        n, d = self.shape
        nbytes = n * d * self.dtype.itemsize
        test = self.test_rows
        return (f"{self.name}: {n:,} x {d} {self.dtype}, {nbytes / 2**20:.0f} MiB"
                + (f" (+ {test:,} test rows)" if test else ""))

    @property
    def test_rows(self):
        if "X_test" not in self.paths:
            return 0
        return np.load(self.paths["X_test"], mmap_mode="r").shape[0]

    def release(self):
        self._train = self._test = None


# -- Gaussian blobs (KMeans) -----------------------------------------------------------
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
    """Gaussian blobs (float32, C order) that overlap, in an ``.npy`` file generated once;
    the path."""
    path = blobs_path(n_rows, n_features, n_clusters, seed)
    if os.path.exists(path):
        return path
    rng = np.random.default_rng([seed, n_features, n_clusters])
    true_centers = (rng.uniform(-1, 1, size=(n_clusters, n_features))
                    * CENTER_SCALE).astype(np.float32)
    tmp = f"{path}.{os.getpid()}.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                    shape=(n_rows, n_features))
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
    """The initial centres every system starts from: distinct rows drawn with a fixed
    seed (dense, also for CSR ``X``)."""
    rng = np.random.default_rng([seed, 12345])
    idx = np.sort(rng.choice(X.shape[0], size=n_clusters, replace=False))
    rows = X[idx]
    rows = rows.toarray() if hasattr(rows, "toarray") else rows
    return np.ascontiguousarray(rows, dtype=X.dtype)


class BlobsData(NpyData):
    """:func:`make_blobs_file`'s data (no labels, no test split)."""

    def __init__(self, path, block_rows=None):
        super().__init__({"X_train": path}, block_rows, name="Gaussian blobs")
        self.path = path


def blobs(n_rows=N_ROWS, n_features=N_FEATURES, n_clusters=N_CLUSTERS, seed=SEED,
          block_rows=None, dtype="float32") -> BlobsData:
    """The blobs data set (generated once) as a :class:`BlobsData`; ``dtype="float64"``:
    the same values widened (a file of its own, written once)."""
    path = make_blobs_file(n_rows, n_features, n_clusters, seed)
    if np.dtype(dtype) != np.float32:
        wide = path.replace("_float32.npy", f"_{np.dtype(dtype).name}.npy")
        if not os.path.exists(wide):
            src = np.load(path, mmap_mode="r")
            tmp = f"{wide}.{os.getpid()}.tmp"
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=src.shape)
            for start in range(0, src.shape[0], GEN_CHUNK_ROWS):
                out[start:start + GEN_CHUNK_ROWS] = src[start:start + GEN_CHUNK_ROWS]
            out.flush()
            del out
            os.replace(tmp, wide)
        path = wide
    return BlobsData(path, block_rows)


# -- dense binary classification (SGD, full-batch linear models) -----------------------
def classification_paths(n_rows=N_ROWS, n_features=SGD_FEATURES, n_test=SGD_TEST_ROWS,
                         seed=SEED, dtype="float64") -> dict:
    """{"X_train", "y_train", "X_test", "y_test"}: the ``.npy`` files of the dense problem."""
    stem = f"classification_{n_rows}+{n_test}x{n_features}_s{seed}_{np.dtype(dtype).name}"
    return {k: os.path.join(data_dir(), f"{stem}_{k}.npy")
            for k in ("X_train", "y_train", "X_test", "y_test")}


def make_classification_files(n_rows=N_ROWS, n_features=SGD_FEATURES, n_test=SGD_TEST_ROWS,
                              seed=SEED, dtype="float64") -> dict:
    """A dense binary problem, written once; the paths (:func:`classification_paths`).

    scikit-learn's ``make_classification(n_rows + n_test, n_features, n_informative=30,
    class_sep=0.8, random_state=seed)``, every column standardised over all the rows, then
    cast to ``dtype``; the first ``n_rows`` rows train, the last ``n_test`` test.  (Fewer
    than 32 features: ``n_informative = n_features - 2``.)  Labels are 0/1 int64.
    """
    paths = classification_paths(n_rows, n_features, n_test, seed, dtype)
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    from sklearn.datasets import make_classification

    X, y = make_classification(n_rows + n_test, n_features,
                               n_informative=min(30, max(2, n_features - 2)),
                               class_sep=0.8, random_state=seed)
    mean, std = X.mean(0), X.std(0)
    X -= mean
    X /= std
    X = X.astype(dtype, copy=False)
    atomic_save(paths["X_train"], X[:n_rows])
    atomic_save(paths["y_train"], y[:n_rows])
    atomic_save(paths["X_test"], X[n_rows:])
    atomic_save(paths["y_test"], y[n_rows:])
    return paths


class ClassificationData(NpyData):
    """:func:`make_classification_files`'s data: train and test (X, y)."""

    def __init__(self, paths, block_rows=SGD_BLOCK_ROWS):
        super().__init__(paths, block_rows, name="make_classification (standardised)")


def classification(n_rows=N_ROWS, n_features=SGD_FEATURES, n_test=SGD_TEST_ROWS, seed=SEED,
                   dtype="float64", block_rows=SGD_BLOCK_ROWS) -> ClassificationData:
    """The dense binary problem (generated once) as a :class:`ClassificationData`;
    ``block_rows=None``: dmlkit's own block size."""
    paths = make_classification_files(n_rows, n_features, n_test, seed, dtype)
    return ClassificationData(paths, block_rows)


def small_dask(X, y=None, parts=2):
    """An in-memory (X, y) as dask arrays of ``parts`` blocks (CSR blocks stay CSR)."""
    import dask
    import dask.array as da

    n = X.shape[0]
    step = max(1, -(-n // parts))
    Xs, ys = [], []
    for s in range(0, n, step):
        xb = X[s:s + step]
        Xs.append(da.from_delayed(dask.delayed(xb), shape=xb.shape, dtype=xb.dtype,
                                  meta=xb[:0]))
        if y is not None:
            ys.append(da.from_array(y[s:s + step], chunks=len(y[s:s + step])))
    return da.concatenate(Xs, axis=0), (da.concatenate(ys, axis=0) if y is not None else None)
