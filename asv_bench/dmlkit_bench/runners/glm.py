"""Full-batch logistic regression to the optimum: dmlkit (threads and LocalCluster)
against scikit-learn's lbfgs, scikit-learn-intelex and dask-ml.

Binary, l2 penalty with ``C``, every system with its own solver at ``tol`` (scikit-learn's
stopping rule for scikit-learn, scikit-learn-intelex and dmlkit: the largest gradient
component of the mean objective; dask-ml's lbfgs has its own).  The comparison reports
each fit's objective gap to the optimum, so a fast fit that stops short shows it.

- ``sklearn``: ``sklearn.linear_model.LogisticRegression`` (lbfgs) on the numpy array.
- ``sklearnex``: ``sklearnex.linear_model.LogisticRegression`` on the same.
- ``dmlkit-threads``: ``dmlkit.LogisticRegression`` on the same, no client.
- ``dmlkit-localcluster``: the same on the cluster, the data persisted there as a dask
  array of the data's ``block_rows``-row blocks.
- ``dask-ml``: ``dask_ml.linear_model.LogisticRegression(solver='lbfgs')`` on the same
  persisted arrays.
"""

from __future__ import annotations

import numpy as np

from .base import Runner


class GLMSettings:
    def __init__(self, C=1.0, tol=1e-4, max_iter=500):
        self.C, self.tol, self.max_iter = float(C), float(tol), int(max_iter)

    def kwargs(self, n_iter=None):
        return {"C": self.C, "tol": self.tol,
                "max_iter": self.max_iter if n_iter is None else n_iter}


def warm_dmlkit_glm():
    """A tiny dmlkit LogisticRegression on dask's synchronous scheduler: compiles or loads
    its kernels (in this process and, with ``client.run``, on every worker)."""
    import warnings

    import dask
    import dmlkit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((2048, 4))
    y = (X[:, 0] > 0).astype(np.int64)
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dmlkit.LogisticRegression(max_iter=3).fit(X, y)
    return True


class Sklearn(Runner):
    name = "sklearn"
    description = "numpy, lbfgs"
    module = "sklearn.linear_model"

    def estimator(self, n_iter=None, **params):
        import importlib

        cls = importlib.import_module(self.module).LogisticRegression
        return cls(**self.s.kwargs(n_iter), **params)


class Sklearnex(Sklearn):
    name = "sklearnex"
    description = "numpy, oneDAL"
    module = "sklearnex.linear_model"
    requires = ("sklearnex",)


class DmlkitThreads(Sklearn):
    name = "dmlkit-threads"
    description = "numpy, threads"
    module = "dmlkit.linear_model"
    worker_warmup = staticmethod(warm_dmlkit_glm)


class DmlkitLocalCluster(DmlkitThreads):
    name = "dmlkit-localcluster"
    description = "persisted dask, 2 procs"
    input = "dask"
    uses_cluster = True


class DaskML(Runner):
    name = "dask-ml"
    description = "persisted dask, 2 procs, lbfgs"
    requires = ("dask_ml",)
    input = "dask"
    uses_cluster = True

    def estimator(self, n_iter=None, **params):
        from dask_ml.linear_model import LogisticRegression

        kw = self.s.kwargs(n_iter)
        return LogisticRegression(solver="lbfgs", C=kw["C"], tol=kw["tol"],
                                  max_iter=kw["max_iter"], **params)


SYSTEMS = {r.name: r for r in (Sklearn, Sklearnex, DmlkitThreads, DmlkitLocalCluster, DaskML)}
SPARSE_SYSTEMS = ("sklearn", "sklearnex", "dmlkit-threads", "dmlkit-localcluster")


def objective(model, X, y, C):
    """scikit-learn's objective ``C sum log-loss + ||w||^2 / 2``, divided by ``C n``."""
    coef = np.asarray(model.coef_, dtype=np.float64).ravel()
    b = float(np.ravel(model.intercept_)[0]) if np.size(model.intercept_) else 0.0
    z = np.asarray(X @ coef).ravel() + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + coef @ coef / (2 * C * len(y)))
