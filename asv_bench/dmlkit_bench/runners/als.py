"""ALS matrix factorisation: dmlkit (threads and LocalCluster) against implicit and Spark.

All systems get the same ``factors``, ``regularization``, ``alpha``, iteration count and
seed (:class:`ALSSettings`), float32 factors, and a
:class:`~dmlkit_bench.ratings.RatingsData`:

- ``dmlkit-threads``: ``dmlkit.recommendation.ALS`` on the pandas training frame, no
  client (dask's threaded scheduler, one thread per core).
- ``dmlkit-localcluster``: the same on the cluster, the training frame persisted there
  as a dask DataFrame before the timings, cut the way dmlkit cuts in-memory input: pieces
  of about ``dmlkit.block-size`` bytes, at least one per worker thread.
- ``dmlkit-lc-state``: the same, with the factors kept on the workers between
  half-iterations (``dmlkit.driver-state-bytes`` 0), as for a model too big for the client.
- ``implicit``: ``implicit.cpu.als.AlternatingLeastSquares(num_threads=2)`` on a user x
  item CSR built beforehand, BLAS limited to one thread (``threadpoolctl``), as implicit
  recommends.  implicit 0.7 takes the stored value as the confidence itself; dmlkit and
  Spark use ``1 + alpha * r``.  So that all three solve the same problem the matrix holds
  ``1 + alpha * r`` and implicit gets ``alpha=1``.  implicit has no explicit-feedback
  mode: on explicit data it runs its Hu-Koren-Volinsky objective with the Cholesky
  solver (``use_cg=False``: per row, one k x k system formed from the row's ratings and
  solved, the work shape of ALS-WR) as a speed reference only; its RMSE is not
  comparable.  On implicit data it runs its default CG solver (3 steps, as dmlkit).
- ``spark``: ``pyspark.ml.recommendation.ALS`` on ``local[2]`` (``spark.driver.memory``
  ``DMLKIT_BENCH_ALS_SPARK_MEMORY``, 8g), the training data read from parquet and cached
  beforehand; the JVM starts with the runner.  Its ``fit`` is eager (the factors are
  computed and counted inside it).  Skipped without pyspark or Java.

The objectives: explicit feedback is ALS-WR in dmlkit and Spark (the penalty scaled by
each row's number of ratings).  Implicit feedback (Hu, Koren and Volinsky) is solved
with an unscaled penalty by dmlkit and implicit, but with the ALS-WR scaling by Spark
(and by an exact Cholesky solve per row rather than 3 CG steps): Spark's implicit fit is
a different, heavier computation.

``runner.factors(model)`` returns every system's (user, item) factors aligned to the
data's sorted ids, for :func:`~dmlkit_bench.ratings.quality`.
"""

from __future__ import annotations

import contextlib
import gc
import warnings

import numpy as np

from ..ratings import ALS_SEED, align
from ..settings import ALS_ALPHA, ALS_FACTORS, ALS_ITERS, ALS_REG, SPARK_MEMORY
from ..spark import jvm_gc_seconds, spark_missing, start_spark, stop_spark
from .base import Runner, make_runner


class ALSSettings:
    """The hyper-parameters every system gets."""

    def __init__(self, factors=ALS_FACTORS, regularization=ALS_REG, alpha=ALS_ALPHA,
                 seed=ALS_SEED, cg_steps=3, iterations=ALS_ITERS, spark_memory=SPARK_MEMORY):
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.cg_steps = int(cg_steps)
        self.iterations = int(iterations)
        self.spark_memory = spark_memory

    def dmlkit(self, implicit, iterations, **params):
        from dmlkit.recommendation import ALS

        return ALS(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                   iterations=iterations, implicit=implicit, cg_steps=self.cg_steps,
                   random_state=self.seed, dtype="float32", **params)


def warm_als():
    """Tiny dmlkit ALS fits (explicit and implicit) on dask's synchronous scheduler:
    compiles or loads from numba's cache every kernel a fit calls.  Runs on every worker
    with ``client.run`` (a worker has no default client, so dmlkit computes locally)."""
    import dask
    import pandas as pd
    from dmlkit.recommendation import ALS

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user_id": rng.integers(0, 50, 2000), "item_id": rng.integers(0, 40, 2000),
                       "rating": rng.integers(1, 6, 2000).astype(np.float32)})
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for implicit in (False, True):
            ALS(factors=8, iterations=1, implicit=implicit, random_state=0).fit(df)
    # The parallel build of the Y^T Y kernel (implicit feedback), which the fits above
    # do not reach: it runs only on 8,192 rows or more (and first loads numba's
    # threading layer).  Otherwise a benchmark's first fit pays ~0.3 s for it.
    from dmlkit.recommendation._kernels_cpu import gram

    for dtype in (np.float32, np.float64):
        gram(np.ones((16_384, 8), dtype=dtype), n_threads=2)
    return True


class _ALSRunner(Runner):
    """ALS systems: ``fit(n_iter)`` runs ``n_iter`` iterations (the settings' by default)."""

    def _iterations(self, n_iter):
        return self.s.iterations if n_iter is None else int(n_iter)

    def factors(self, model):
        """(user factors, item factors) aligned to the data's sorted ids."""
        raise NotImplementedError


class DmlkitThreads(_ALSRunner):
    name = "dmlkit-threads"
    description = "pandas, threads"

    def load(self, data):
        self.X = data.train

    def warm(self, data):
        warm_als()
        if self.uses_cluster:
            self.cluster.run(warm_als)
        with self.context():  # the path this mode takes, on a small frame
            self.s.dmlkit(data.implicit, 1).fit(self.small(data))

    def small(self, data):
        return data.head()

    def estimator(self, n_iter=None, **params):
        return self.s.dmlkit(self.data.implicit, self._iterations(n_iter), **params)

    def factors(self, model):
        return (align(model.user_ids_, model.user_factors_, self.data.user_ids),
                align(model.item_ids_, model.item_factors_, self.data.item_ids))


class DmlkitLocalCluster(DmlkitThreads):
    """The training frame persisted on the cluster as a dask DataFrame of pieces of about
    ``dmlkit.block-size`` bytes (the public setting dmlkit cuts in-memory input by), at
    least one per worker thread."""

    name = "dmlkit-localcluster"
    description = "persisted dask, 2 procs"
    input = "dask"
    uses_cluster = True

    def load(self, data):
        self.X = self.cluster.persist_once(data.key, lambda: (self.dask_frame(data),))[0]

    def dask_frame(self, data):
        import dask.dataframe as dd
        import dmlkit
        from dask.utils import parse_bytes

        size = parse_bytes(dmlkit.get_config("block-size"))
        n_parts = max(self.cluster.total_threads, -(-data.nbytes() // size))
        return dd.from_pandas(data.train, npartitions=min(n_parts, len(data.train)),
                              sort=False)

    def small(self, data):
        import dask.dataframe as dd

        return dd.from_pandas(data.head(), npartitions=2, sort=False)


class DmlkitClusterState(DmlkitLocalCluster):
    """``dmlkit-localcluster`` with the factors kept on the cluster between
    half-iterations (``dmlkit.driver-state-bytes`` 0: the path a model too big for the
    client takes), to measure what that path costs against the client path."""

    name = "dmlkit-lc-state"
    description = "persisted dask, 2 procs, factors on the workers"

    def context(self):
        import dmlkit

        stack = contextlib.ExitStack()
        stack.enter_context(super().context())
        stack.enter_context(dmlkit.config_context(driver_state_bytes=0))
        return stack

    def factors(self, model):
        def get(a):  # a dask array (kept on the workers: needs the client) or numpy
            return a.compute() if hasattr(a, "compute") else np.asarray(a)

        with self.cluster.as_current():
            U, V = get(model.user_factors_), get(model.item_factors_)
            uid, iid = get(model.user_ids_), get(model.item_ids_)
        return align(uid, U, self.data.user_ids), align(iid, V, self.data.item_ids)


class Implicit(_ALSRunner):
    """implicit's CPU ALS, 2 threads, BLAS on one thread (threadpoolctl)."""

    name = "implicit"
    description = "CSR, 2 threads"
    requires = ("implicit",)

    def __init__(self, settings=None, cluster=None, num_threads=2):
        super().__init__(settings, cluster)
        # Imported first: a BLAS library loaded (by scipy) after ``threadpool_limits``
        # is entered would keep its threads, and implicit would warn and oversubscribe.
        import implicit.cpu.als  # noqa: F401
        import scipy.linalg  # noqa: F401

        self.num_threads = num_threads

    def estimator(self, n_iter=None, **params):
        from implicit.cpu.als import AlternatingLeastSquares

        # alpha=1 and C = 1 + alpha * r: implicit's confidence is C itself, so this is
        # dmlkit's and Spark's confidence 1 + alpha * r.
        return AlternatingLeastSquares(factors=self.s.factors,
                                       regularization=self.s.regularization, alpha=1.0,
                                       iterations=self._iterations(n_iter),
                                       use_cg=self.data.implicit, num_threads=self.num_threads,
                                       random_state=self.s.seed, calculate_training_loss=False,
                                       **params)

    def load(self, data):
        r = data.train["rating"].to_numpy(dtype=np.float32)
        self.X = data.csr(1.0 + self.s.alpha * r)

    def warm(self, data):
        self.fit(1)  # imports, thread pool

    def fit_estimator(self, est, X, y):
        est.fit(X, show_progress=False)
        return est

    def fit(self, n_iter=None, **params):
        from threadpoolctl import threadpool_limits

        # the estimator is built inside the limit too: it checks the BLAS threads (one,
        # so no warning)
        with threadpool_limits(1, "blas"):
            return super().fit(n_iter, **params)

    def factors(self, model):
        return np.asarray(model.user_factors), np.asarray(model.item_factors)


class Spark(_ALSRunner):
    """Spark MLlib's ALS on ``local[2]``; ``fit`` is eager (the factors are computed and
    counted inside it)."""

    name = "spark"
    description = "cached DataFrame, local[2]"

    @classmethod
    def missing(cls):
        return spark_missing()

    def __init__(self, settings=None, cluster=None):
        super().__init__(settings, cluster)
        self.spark = start_spark(self.s.spark_memory, app="dmlkit-bench-als")

    def estimator(self, n_iter=None, **params):
        from pyspark.ml.recommendation import ALS

        return ALS(rank=self.s.factors, maxIter=self._iterations(n_iter),
                   regParam=self.s.regularization, implicitPrefs=self.data.implicit,
                   alpha=self.s.alpha, userCol="user_id", itemCol="item_id",
                   ratingCol="rating", seed=self.s.seed, nonnegative=False, **params)

    def load(self, data):
        from pyspark.sql import functions as F

        df = self.spark.read.parquet(data.train_path).select(
            F.col("user_id").cast("int"), F.col("item_id").cast("int"),
            F.col("rating").cast("float"))
        self.X = df.cache()
        self.X.count()

    def warm(self, data):
        small = self.X.limit(5000).cache()
        small.count()
        self.estimator(1).fit(small)  # JIT, classes, BLAS loading
        small.unpersist()

    def factors(self, model):
        def get(frame):
            pdf = frame.toPandas()
            F = np.stack(pdf["features"].to_numpy()).astype(np.float32) if len(pdf) else \
                np.zeros((0, self.s.factors), np.float32)
            return pdf["id"].to_numpy(dtype=np.int64), F

        uid, U = get(model.userFactors)
        iid, V = get(model.itemFactors)
        return align(uid, U, self.data.user_ids), align(iid, V, self.data.item_ids)

    def release(self):
        if self.X is not None:
            self.X.unpersist()
        super().release()

    def gc_seconds(self):
        """The JVM's garbage collection time so far (seconds)."""
        return jvm_gc_seconds(self.spark)

    def close(self):
        super().close()
        stop_spark(self.spark)


SYSTEMS = {r.name: r for r in (DmlkitThreads, DmlkitLocalCluster, DmlkitClusterState,
                               Implicit, Spark)}


def als_runner(system, settings=None, cluster=None):
    """The runner of ``system``; NotImplementedError (asv's skip) when it cannot run."""
    return make_runner(SYSTEMS, system, settings or ALSSettings(), cluster)


def seconds_per_iteration(runner, iterations, timer):
    """(fit with ``iterations`` - fit with 1) / (iterations - 1): one-time setup cancels.
    Returns (seconds per iteration, time of 1, time of ``iterations``, last model)."""
    gc.collect()
    t0 = timer()
    runner.fit(1)
    t1 = timer()
    gc.collect()
    t2 = timer()
    model = runner.fit(iterations)
    t3 = timer()
    one, full = t1 - t0, t3 - t2
    spi = (full - one) / (iterations - 1) if iterations > 1 else full
    return spi, one, full, model
