"""SGD logistic regression: dmlkit (threads and LocalCluster) against scikit-learn and dask-ml.

Binary classification, ``log_loss``, ``epochs`` passes, ``tol=None``, ``random_state=0``,
on dense data (:class:`~dmlkit_bench.data.ClassificationData`) or hashed text in CSR
(:class:`~dmlkit_bench.text.TextData`; the systems with ``sparse = True``).

- ``sklearn``: ``sklearn.linear_model.SGDClassifier`` on the numpy array (or CSR).
- ``dmlkit-threads``: ``dmlkit.SGDClassifier`` on the same, no client.
- ``dmlkit-localcluster``: the same on the cluster, the training data persisted there as
  a dask array of the data's ``block_rows``-row blocks (CSR blocks for text).
- ``dask-ml-incremental``: ``dask_ml.wrappers.Incremental(SGDClassifier(loss='log_loss'))``,
  one sequential ``partial_fit`` pass over the blocks per epoch, on the same persisted
  arrays (a ``RandomState(0)``: another block order each epoch, the same orders each run).
- ``dask-ml-logreg``: ``dask_ml.linear_model.LogisticRegression`` (dense only), which
  runs to its own convergence (``max_iter=100``), not ``epochs``.
"""

from __future__ import annotations

import numpy as np

from .base import Runner, make_runner


class SGDSettings:
    def __init__(self, epochs=5, loss="log_loss", seed=0):
        self.epochs = int(epochs)
        self.loss = loss
        self.seed = seed

    def kwargs(self, n_iter=None):
        return {"loss": self.loss, "max_iter": self.epochs if n_iter is None else n_iter,
                "tol": None, "random_state": self.seed}


def warm_dmlkit_sgd():
    """Tiny dmlkit SGD fits (dense and CSR) on dask's synchronous scheduler: compiles or
    loads from numba's cache the kernels a fit calls.  Runs on every worker with
    ``client.run`` (a worker has no default client, so dmlkit computes locally there)."""
    import warnings

    import dask
    import dmlkit
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for Xb in (X, sp.csr_matrix(X)):
            dmlkit.SGDClassifier(**SGDSettings().kwargs(2)).fit(Xb, y)
    return True


class Sklearn(Runner):
    name = "sklearn"
    description = "numpy/CSR, 1 thread"
    sparse = True

    def estimator(self, n_iter=None, **params):
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(**self.s.kwargs(n_iter), **params)


class DmlkitThreads(Runner):
    name = "dmlkit-threads"
    description = "numpy/CSR, threads"
    sparse = True
    worker_warmup = staticmethod(warm_dmlkit_sgd)

    def estimator(self, n_iter=None, **params):
        import dmlkit

        return dmlkit.SGDClassifier(**self.s.kwargs(n_iter), **params)


class DmlkitLocalCluster(DmlkitThreads):
    name = "dmlkit-localcluster"
    description = "persisted dask, 2 procs"
    input = "dask"
    uses_cluster = True


class _PartialFitEpochs:
    """``epochs`` calls of ``partial_fit`` on the whole (dask) data set."""

    def __init__(self, est, epochs, classes):
        self.est, self.epochs, self.classes = est, epochs, classes

    def fit(self, X, y):
        for _ in range(self.epochs):
            self.est.partial_fit(X, y, classes=self.classes)
        return self.est


class DaskMLIncremental(Runner):
    name = "dask-ml-incremental"
    description = "persisted dask, 2 procs"
    requires = ("dask_ml",)
    sparse = True
    input = "dask"
    uses_cluster = True

    def estimator(self, n_iter=None, **params):
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier

        inc = Incremental(SGDClassifier(loss=self.s.loss, random_state=self.s.seed, **params),
                          random_state=np.random.RandomState(self.s.seed))
        return _PartialFitEpochs(inc, self.s.epochs if n_iter is None else n_iter, [0, 1])


class DaskMLLogReg(Runner):
    name = "dask-ml-logreg"
    description = "persisted dask, 2 procs"
    requires = ("dask_ml",)
    sparse = False
    input = "dask"
    uses_cluster = True

    def estimator(self, n_iter=None, **params):
        from dask_ml.linear_model import LogisticRegression

        # runs to its own convergence: the warm-up alone passes n_iter
        return LogisticRegression(max_iter=100 if n_iter is None else n_iter, **params)


SYSTEMS = {r.name: r for r in (Sklearn, DmlkitThreads, DmlkitLocalCluster, DaskMLIncremental,
                               DaskMLLogReg)}
SPARSE_SYSTEMS = {n: r for n, r in SYSTEMS.items() if r.sparse}


def sgd_runner(system, settings, cluster=None):
    return make_runner(SYSTEMS, system, settings, cluster)


def accuracy(model, X, y) -> float:
    """Fraction of rows of (X, y) the model labels right (predicted in this process)."""
    import dask

    pred = model.predict(X)
    if dask.is_dask_collection(pred):
        pred = pred.compute(scheduler="threads")
    return float(np.mean(np.asarray(pred).astype(y.dtype) == y))


def test_accuracy(model, data) -> float:
    """:func:`accuracy` on the data's test split."""
    X, y = data.test()
    return accuracy(model, X, y)
