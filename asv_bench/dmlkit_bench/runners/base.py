"""The runner: one compared system behind one interface.

Lifecycle (the same in the asv suite and in the comparison scripts)::

    runner = SomeRunner(settings, cluster)   # starts what it needs (a cluster, a JVM)
    runner.prepare(data)                     # untimed: its input form, persist, warm-up
    model = runner.fit()                     # timed, any number of times
    runner.fit(n_iter=1, checkpoint=path)    # another iteration count, extra parameters
    runner.release()                         # before the next data set
    runner.close()                           # at the end (also: ``with runner:``)

A subclass for a scikit-learn-like estimator only says where its input lives and how to
build the estimator::

    class SklearnSGD(Runner):
        name = "sklearn"
        description = "numpy, 1 thread"

        def estimator(self, n_iter=None, **params):
            from sklearn.linear_model import SGDClassifier

            return SGDClassifier(**self.s.kwargs(n_iter), **params)

Where the input lives (class attributes):

- ``input = "memory"`` (default): ``data.train()`` in this process (numpy or CSR), shared
  by every system of the process; no client.
- ``input = "dask"`` with ``uses_cluster = True``: ``data.dask_train()`` persisted on the
  :class:`~dmlkit_bench.cluster.DaskCluster` (one copy per data set, shared by the
  systems of that cluster); ``fit`` runs inside ``cluster.as_current()``.
- ``input = "dask"``, ``uses_cluster = False``: the dask arrays persisted in this process,
  fitted on dask's threaded scheduler.

Warm-up (in ``prepare``): ``worker_warmup`` (a module-level function, pickled by name)
runs in this process and, for cluster systems, on every worker; then a fit of
``warm_iter`` iterations on the first ``warm_rows`` rows, in the same form, so imports,
numba's dispatch and the client's first graphs are paid before any timing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings


class Runner:
    name = "?"
    description = ""  # input form and where it runs, for the report tables
    requires = ()  # importable modules it needs: without one, the system is skipped
    input = "memory"  # or "dask"
    uses_cluster = False
    warm_iter = 1
    warm_rows = 2048
    worker_warmup = None  # staticmethod: JIT warm-up, in this process and on every worker

    def __init__(self, settings=None, cluster=None):
        why = self.missing()
        if why:
            raise NotImplementedError(f"{self.name} skipped: {why}")
        self.s = settings
        self.cluster = cluster
        self._own_cluster = False
        if self.uses_cluster and cluster is None:
            from ..cluster import DaskCluster

            self.cluster = DaskCluster()
            self._own_cluster = True
        self.data = None
        self.X = self.y = None

    @classmethod
    def missing(cls):
        """Why this system cannot run here (a message), or None."""
        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None

    # -- to override -----------------------------------------------------------------
    def estimator(self, n_iter=None, **params):
        """A new unfitted estimator: ``n_iter`` iterations (epochs...; None: the
        settings' own), ``params`` passed on (e.g. ``checkpoint=``)."""
        raise NotImplementedError

    def fit_estimator(self, est, X, y):
        return est.fit(X) if y is None else est.fit(X, y)

    # -- the lifecycle ---------------------------------------------------------------
    def context(self):
        """Where fits run: the cluster (as the current client) or nowhere special."""
        if self.uses_cluster:
            return self.cluster.as_current()
        return contextlib.nullcontext()

    def prepare(self, data):
        self.data = data
        self.load(data)
        self.warm(data)

    def load(self, data):
        """Put the training data in this system's form."""
        if self.input == "memory":
            self.X, self.y = data.train()
        elif self.uses_cluster:
            self.X, self.y = self.cluster.persist_once(data.key, data.dask_train)
        else:
            import dask

            X, y = data.dask_train()
            with dask.config.set(scheduler="threads"):
                self.X, self.y = dask.persist(X, y)

    def warm(self, data):
        if self.worker_warmup is not None:
            type(self).worker_warmup()
            if self.uses_cluster:
                self.cluster.run(type(self).worker_warmup)
        Xs, ys = data.head(self.warm_rows)
        if self.input == "dask":
            from ..data import small_dask

            Xs, ys = small_dask(Xs, ys)
        self._fit(self.estimator(self.warm_iter), Xs, ys)

    def fit(self, n_iter=None, **params):
        """One fit on the prepared data; returns the fitted estimator."""
        return self._fit(self.estimator(n_iter, **params), self.X, self.y)

    def _fit(self, est, X, y):
        with self.context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.fit_estimator(est, X, y)

    def release(self):
        """Drop this system's hold on the data (the cluster's persisted copy too)."""
        if self.uses_cluster and self.cluster is not None and self.data is not None:
            self.cluster.forget(self.data.key)
        self.data = None
        self.X = self.y = None

    def close(self):
        self.release()
        if self._own_cluster and self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_runner(systems, name, settings=None, cluster=None):
    """``systems[name](settings, cluster)``; NotImplementedError (asv's skip) when that
    system cannot run here, ValueError for an unknown name."""
    if name not in systems:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(systems)}")
    return systems[name](settings, cluster)


def missing(systems, name):
    """Why system ``name`` of ``systems`` cannot run here, or None."""
    return systems[name].missing()
