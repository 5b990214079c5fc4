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
- ``spark``: ``pyspark.ml.classification.LogisticRegression`` on ``local[2]``
  (``spark.driver.memory`` 8g, ``DMLKIT_BENCH_ALS_SPARK_MEMORY``); dense only.  Its
  objective is the mean log-loss + ``regParam / 2 ||w||^2``, which is scikit-learn's
  divided by ``C n`` with ``regParam = 1 / (C n)``, ``standardization=False``,
  ``elasticNetParam=0``; ``tol`` is the same number, but Spark's L-BFGS (breeze) stops on
  the relative change of the objective or the gradient's norm, not on the largest
  gradient component.  The training data (written once as parquet next to the ``.npy``
  files, ``features`` assembled, cut into the data's ``block_rows``-row partitions) is
  a cached DataFrame, counted before the timings.  What its ``fit`` does besides L-BFGS
  (a pass for the feature statistics, blocking and persisting the rows, as Spark does
  on every fit) is timed.  The fitted model is handed back as ``coef_``, ``intercept_``
  and ``n_iter_`` (Spark's ``totalIterations``), plus ``jvm_gc_s_``, the JVM's garbage
  collection time during the fit.
"""

from __future__ import annotations

import os

import numpy as np

from ..settings import SPARK_MEMORY
from ..spark import jvm_gc_seconds, spark_missing, start_spark, stop_spark
from .base import Runner


class GLMSettings:
    def __init__(self, C=1.0, tol=1e-4, max_iter=500, spark_memory=SPARK_MEMORY):
        self.C, self.tol, self.max_iter = float(C), float(tol), int(max_iter)
        self.spark_memory = spark_memory

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


class SparkModel:
    """A fitted Spark model as the comparison reads it (scikit-learn's attributes)."""

    def __init__(self, model, gc_seconds):
        self.model = model
        self.coef_ = np.asarray(model.coefficients.toArray(), dtype=np.float64)[None, :]
        self.intercept_ = np.array([model.intercept], dtype=np.float64)
        self.n_iter_ = [int(model.summary.totalIterations)]
        self.jvm_gc_s_ = gc_seconds


class Spark(Runner):
    """Spark MLlib's LogisticRegression on ``local[2]`` (L-BFGS), a cached DataFrame."""

    name = "spark"
    description = "cached DataFrame, local[2], L-BFGS"
    warm_rows = 20_000

    @classmethod
    def missing(cls):
        return spark_missing()

    def __init__(self, settings=None, cluster=None):
        super().__init__(settings, cluster)
        self.spark = start_spark(self.s.spark_memory, app="dmlkit-bench-glm")
        self.n_rows = None

    def estimator(self, n_iter=None, **params):
        from pyspark.ml.classification import LogisticRegression

        return LogisticRegression(featuresCol="features", labelCol="label", family="binomial",
                                  regParam=1.0 / (self.s.C * self.n_rows), elasticNetParam=0.0,
                                  standardization=False, fitIntercept=True, tol=self.s.tol,
                                  maxIter=self.s.max_iter if n_iter is None else n_iter,
                                  **params)

    @staticmethod
    def parquet(data):
        """The training rows as parquet (``f0``.. float64, ``label`` float64), written once
        next to the data's ``.npy`` file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = data.paths["X_train"][:-len(".npy")] + "_spark.parquet"
        if os.path.exists(path):
            return path
        X = np.load(data.paths["X_train"], mmap_mode="r")
        y = np.load(data.paths["y_train"], mmap_mode="r")
        names = [f"f{j}" for j in range(X.shape[1])] + ["label"]
        schema = pa.schema([(n, pa.float64()) for n in names])
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with pq.ParquetWriter(tmp, schema) as w:
                for a in range(0, X.shape[0], 1 << 18):
                    block = np.asarray(X[a:a + (1 << 18)], dtype=np.float64)
                    cols = [pa.array(block[:, j]) for j in range(X.shape[1])]
                    cols.append(pa.array(np.asarray(y[a:a + (1 << 18)], dtype=np.float64)))
                    w.write_table(pa.Table.from_arrays(cols, schema=schema))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def load(self, data):
        if data.sparse:
            raise NotImplementedError("the spark runner takes the dense problem only")
        from pyspark.ml.feature import VectorAssembler

        n, d = data.shape
        self.n_rows = n
        df = self.spark.read.parquet(self.parquet(data))
        parts = max(1, -(-n // (data.block_rows or n)))
        df = VectorAssembler(inputCols=[f"f{j}" for j in range(d)], outputCol="features") \
            .transform(df).select("features", "label").repartition(parts)
        self.X = df.cache()
        if self.X.count() != n:
            raise RuntimeError("the Spark DataFrame lost rows")
        self.y = None

    def warm(self, data):
        small = self.X.limit(self.warm_rows).cache()
        small.count()
        self.fit_estimator(self.estimator(5), small, None)  # JIT, classes, BLAS loading
        small.unpersist()

    def fit_estimator(self, est, X, y):
        gc0 = jvm_gc_seconds(self.spark)
        model = est.fit(X)
        return SparkModel(model, jvm_gc_seconds(self.spark) - gc0)

    def release(self):
        if self.X is not None:
            self.X.unpersist()
        super().release()

    def close(self):
        super().close()
        stop_spark(self.spark)


SYSTEMS = {r.name: r for r in (Sklearn, Sklearnex, DmlkitThreads, DmlkitLocalCluster, DaskML,
                               Spark)}
SPARSE_SYSTEMS = ("sklearn", "sklearnex", "dmlkit-threads", "dmlkit-localcluster")


def objective(model, X, y, C):
    """scikit-learn's objective ``C sum log-loss + ||w||^2 / 2``, divided by ``C n``."""
    coef = np.asarray(model.coef_, dtype=np.float64).ravel()
    b = float(np.ravel(model.intercept_)[0]) if np.size(model.intercept_) else 0.0
    z = np.asarray(X @ coef).ravel() + b
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + coef @ coef / (2 * C * len(y)))
