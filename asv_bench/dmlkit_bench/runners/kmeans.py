"""KMeans: dmlkit (threads and LocalCluster) against scikit-learn and dask-ml.

Every system starts from the same initial centres (:class:`KMeansSettings`) and runs
exactly ``max_iter`` Lloyd iterations (``tol=0, n_init=1``), on dense blobs
(:class:`~dmlkit_bench.data.BlobsData`) or hashed text in CSR
(:class:`~dmlkit_bench.text.TextData`; the systems with ``sparse = True``).

- ``dmlkit-threads``: ``dmlkit.KMeans`` on the numpy array (or CSR matrix), no client:
  dask's threaded scheduler.
- ``dmlkit-localcluster``: the same on the cluster, on the dask array persisted there
  before the timings (what a dask user does), in the blocks dmlkit picks itself for
  in-memory input (``dmlkit.block-size``).
- ``sklearn``: ``sklearn.cluster.KMeans(algorithm="lloyd")`` (dense or sparse Lloyd).
- ``sklearnex``: scikit-learn-intelex's ``sklearnex.cluster.KMeans(algorithm="lloyd")``
  (oneDAL; dense only here), when installed (the ``bench`` extra).
- ``dask-ml``: ``dask_ml.cluster.KMeans`` on the same persisted dask array and cluster.
- ``dask-ml-threads`` (not in the default set): dask-ml on a dask array of the same
  blocks in this process, no client.
"""

from __future__ import annotations

import numpy as np

from .base import Runner, make_runner


class KMeansSettings:
    """What every system gets: the initial centres (so ``n_clusters``) and the number of
    Lloyd iterations (``tol=0``, ``n_init=1``: none stops early)."""

    def __init__(self, init, max_iter=10, seed=0):
        self.init = np.asarray(init)
        self.max_iter = int(max_iter)
        self.seed = seed

    def kwargs(self, n_iter=None):
        return dict(n_clusters=self.init.shape[0], init=self.init, n_init=1,
                    max_iter=self.max_iter if n_iter is None else n_iter, tol=0.0,
                    random_state=self.seed)


def warm_dmlkit_kmeans():
    """Compile or load from numba's cache every kernel a dmlkit KMeans fit calls, dense
    float32 and CSR float64, with 1 and 2 threads (numba specialises on dtype and layout,
    not on shape).  Runs on every worker with ``client.run``."""
    import scipy.sparse as sp
    from dmlkit.cluster import _kernels_cpu

    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 4), dtype=np.float32)
    for block in (X, sp.csr_matrix(X.astype(np.float64))):
        C = np.asarray(block[:3].toarray() if sp.issparse(block) else block[:3])
        for t in (1, 2):
            _kernels_cpu.assign_partial_sums_block(block, None, C, n_threads=t)
            _kernels_cpu.labels_sqdist_block(block, C, n_threads=t)
    return True


def warm_dask_ml_kmeans():
    """A tiny dask-ml KMeans fit on dask's synchronous scheduler (its numba kernels)."""
    import warnings

    import dask
    import dask.array as da
    from dask_ml.cluster import KMeans

    X = np.random.default_rng(0).standard_normal((2048, 4), dtype=np.float32)
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        KMeans(n_clusters=3, init=X[:3], n_init=1, max_iter=2, random_state=0).fit(
            da.from_array(X, chunks=1024))
    return True


class _KMeansRunner(Runner):
    def fit_estimator(self, est, X, y):
        return est.fit(X)  # unsupervised: the text data's labels are not passed


class DmlkitThreads(_KMeansRunner):
    name = "dmlkit-threads"
    description = "numpy, threads"
    sparse = True
    warm_iter = 2
    worker_warmup = staticmethod(warm_dmlkit_kmeans)

    def estimator(self, n_iter=None, **params):
        import dmlkit

        return dmlkit.KMeans(**self.s.kwargs(n_iter), **params)


class DmlkitLocalCluster(DmlkitThreads):
    name = "dmlkit-localcluster"
    description = "persisted dask, 2 procs"
    input = "dask"
    uses_cluster = True


class Sklearn(_KMeansRunner):
    name = "sklearn"
    description = "numpy, OpenMP"
    sparse = True
    warm_iter = 2

    def estimator(self, n_iter=None, **params):
        from sklearn.cluster import KMeans

        return KMeans(algorithm="lloyd", **self.s.kwargs(n_iter), **params)


class Sklearnex(Sklearn):
    name = "sklearnex"
    description = "numpy, oneDAL"
    requires = ("sklearnex",)
    sparse = False

    def estimator(self, n_iter=None, **params):
        from sklearnex.cluster import KMeans

        return KMeans(algorithm="lloyd", **self.s.kwargs(n_iter), **params)


class DaskML(_KMeansRunner):
    name = "dask-ml"
    description = "persisted dask, 2 procs"
    requires = ("dask_ml",)
    sparse = False
    input = "dask"
    uses_cluster = True
    warm_iter = 2
    worker_warmup = staticmethod(warm_dask_ml_kmeans)

    def estimator(self, n_iter=None, **params):
        from dask_ml.cluster import KMeans

        return KMeans(**self.s.kwargs(n_iter), **params)


class DaskMLThreads(DaskML):
    name = "dask-ml-threads"
    description = "dask, threads"
    uses_cluster = False


SYSTEMS = {r.name: r for r in (DmlkitThreads, DmlkitLocalCluster, Sklearn, Sklearnex, DaskML)}
EXTRA_SYSTEMS = {DaskMLThreads.name: DaskMLThreads}
ALL_SYSTEMS = {**SYSTEMS, **EXTRA_SYSTEMS}
SPARSE_SYSTEMS = {n: r for n, r in ALL_SYSTEMS.items() if r.sparse}


def kmeans_runner(system, settings, cluster=None):
    return make_runner(ALL_SYSTEMS, system, settings, cluster)


def inertia(X, centers, chunk_rows=1 << 15) -> float:
    """Sum of squared distances of the rows of X (dense or CSR) to their nearest centre,
    in float64: the same measure for every system (dask-ml's ``inertia_`` is a sum of
    unsquared distances)."""
    import scipy.sparse as sp

    C = np.asarray(centers, dtype=np.float64)
    c2 = (C * C).sum(axis=1)
    total = 0.0
    for s in range(0, X.shape[0], chunk_rows):
        if sp.issparse(X):
            x = X[s:s + chunk_rows]
            x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
            xc = np.asarray(x @ C.T)
        else:
            x = np.asarray(X[s:s + chunk_rows], dtype=np.float64)
            x2 = (x * x).sum(axis=1)
            xc = x @ C.T
        d2 = x2[:, None] - 2.0 * xc + c2[None, :]
        total += float(np.maximum(d2.min(axis=1), 0.0).sum())
    return total
