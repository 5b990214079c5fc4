"""ALS matrix factorisation: dmlkit (threads and LocalCluster) against implicit and Spark.

Systems (``ALS_SYSTEMS``), all with the same ``factors``, ``regularization``, ``alpha``,
iteration count and seed, float32 factors:

- ``dmlkit-threads``: ``dmlkit.recommendation.ALS`` on the pandas training frame, no
  client (dask's threaded scheduler, one thread per core).
- ``dmlkit-localcluster``: the same on a ``LocalCluster(n_workers=2,
  threads_per_worker=1)`` (worker processes), the training frame persisted there as a
  dask DataFrame in setup (as many partitions as dmlkit cuts a pandas frame into).
- ``implicit``: ``implicit.cpu.als.AlternatingLeastSquares(num_threads=2)`` on a
  user x item CSR built in setup, BLAS limited to one thread (``threadpoolctl``), as
  implicit recommends.  implicit 0.7 takes the stored value as the confidence itself;
  dmlkit and Spark use ``1 + alpha * r``.  So that all three solve the same problem the
  matrix holds ``1 + alpha * r`` and implicit gets ``alpha=1``.  implicit has no
  explicit-feedback mode: on explicit data it runs its Hu-Koren-Volinsky objective with
  the Cholesky solver (``use_cg=False``: per row, one k x k system formed from the row's
  ratings and solved, the work shape of ALS-WR) as a speed reference only; its RMSE
  is not comparable.  On implicit data it runs its default CG solver (3 steps, as
  dmlkit).
- ``spark``: ``pyspark.ml.recommendation.ALS`` on ``local[2]``
  (``spark.driver.memory`` ``DMLKIT_BENCH_ALS_SPARK_MEMORY``, 8g), the training data read
  from parquet and cached in setup; the JVM starts in setup.  Skipped (setup raises
  NotImplementedError) without pyspark or Java.

The objectives: explicit feedback is ALS-WR in dmlkit and Spark (the penalty scaled by
each row's number of ratings).  Implicit feedback (Hu, Koren and Volinsky) is solved with
an unscaled penalty by dmlkit and implicit, but with the ALS-WR scaling by Spark (and by
an exact Cholesky solve per row rather than 3 CG steps): Spark's implicit fit is a
different, heavier computation.

Data:

- :class:`ALSExplicit`, :class:`ALSImplicit`, :class:`ALSRatio`: ``make_ratings``
  (``dmlkit.datasets``) with ``DMLKIT_BENCH_ALS_RATINGS`` (200,000) ratings,
  ``DMLKIT_BENCH_ALS_USERS`` (10,000) users, ``DMLKIT_BENCH_ALS_ITEMS`` (2,000) items,
  planted rank 8, noise 0.1, Zipf item popularity, seed 0; explicit "stars" or implicit
  interaction counts.  10% of the ratings (drawn with a fixed seed) are held out.
- :class:`ALSMovieLens`: MovieLens 100k (``DMLKIT_BENCH_MOVIELENS``, default
  ``<repo>/../shared/data/movielens-100k/ratings.parquet``; skipped when absent), the
  same 90/10 split; in implicit mode the star ratings are the interaction strengths.

Splits are written once as parquet under ``DMLKIT_BENCH_DATA`` (default
``asv_bench/.cache/``, git-ignored) and reused by every process and by
``asv_bench/compare_als.py``.  Other sizes: ``DMLKIT_BENCH_ALS_FACTORS`` (64),
``DMLKIT_BENCH_ALS_ITERS`` (5), ``DMLKIT_BENCH_ALS_REG`` (0.05), ``DMLKIT_BENCH_ALS_ALPHA``
(1.0).

Benchmarks per (system, mode):

- ``time_fit``: one whole fit of ``DMLKIT_BENCH_ALS_ITERS`` iterations (each system's
  own setup inside ``fit`` included: dmlkit's id scan and shuffle, Spark's blocking).
- ``track_seconds_per_iteration``: (fit with N iterations - fit with 1) / (N - 1), both
  measured in the call: the one-time setup inside ``fit`` cancels out.
- ``track_test_rmse`` (explicit) / ``track_precision_at_10`` (implicit): on the held-out
  ratings, from each system's factors, computed the same way for all (pairs with an id
  unseen in training left out; precision@10 over up to 2,000 held-out users, training
  items filtered).
- ``track_peak_memory``: peak RSS (MiB) of the process tree (this process, the dask
  worker processes, Spark's JVM) during a fit, the training data held in memory included.
- ``track_time_ratio_vs_implicit`` (:class:`ALSRatio`): the system's seconds per
  iteration over implicit's, both measured in one process, one after the other.
- :class:`ALSMovieLens`, per (system, mode): ``track_seconds_per_iteration`` and
  ``track_quality`` (test RMSE for explicit, precision@10 for implicit feedback).

Every setup builds the system's input before the timings and runs a tiny warm-up fit
(numba JIT, Spark's JVM).  asv measures in a fresh process per benchmark, and these
machines are often shared: for figures to quote, ``asv_bench/compare_als.py`` runs
every system in one go, several rounds, and prints the other processes' CPU use.

On synthetic implicit data the precision@10 of every system is below the popularity
baseline: ``make_ratings`` draws *which* items a user has from item popularity alone
(the planted factors only set the counts), so it compares systems, not absolute skill.

A smoke run::

    DMLKIT_BENCH_ALS_RATINGS=50000 DMLKIT_BENCH_ALS_USERS=2000 DMLKIT_BENCH_ALS_ITEMS=500 \\
    DMLKIT_BENCH_PROFILE=fast \\
        ../.venv/bin/asv run --python=same --quick --show-stderr --bench recommendation
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import shutil
import sys
import warnings

import numpy as np

from .common import Benchmark, DaskCluster, ResourceMonitor, _env_int

# ----------------------------------------------------------------------------------
# sizes and settings
# ----------------------------------------------------------------------------------


def _env_float(name, default):
    value = os.environ.get(name)
    return float(value) if value else default


ALS_RATINGS = _env_int("DMLKIT_BENCH_ALS_RATINGS", 200_000)
ALS_USERS = _env_int("DMLKIT_BENCH_ALS_USERS", 10_000)
ALS_ITEMS = _env_int("DMLKIT_BENCH_ALS_ITEMS", 2_000)
ALS_FACTORS = _env_int("DMLKIT_BENCH_ALS_FACTORS", 64)
ALS_ITERS = _env_int("DMLKIT_BENCH_ALS_ITERS", 5)
ALS_REG = _env_float("DMLKIT_BENCH_ALS_REG", 0.05)
ALS_ALPHA = _env_float("DMLKIT_BENCH_ALS_ALPHA", 1.0)
SPARK_MEMORY = os.environ.get("DMLKIT_BENCH_ALS_SPARK_MEMORY", "8g")
ALS_SEED = 0
TEST_FRACTION = 0.1
EVAL_USERS = 2000  # users sampled for precision@10
PLANTED_RANK, NOISE, POPULARITY = 8, 0.1, 1.0

ALS_SYSTEMS = ("dmlkit-threads", "dmlkit-localcluster", "implicit", "spark")
MODES = ("explicit", "implicit")

_HERE = os.path.dirname(os.path.abspath(__file__))
ASV_ROOT = os.path.dirname(_HERE)
REPO_ROOT = os.path.dirname(ASV_ROOT)
MOVIELENS = os.environ.get("DMLKIT_BENCH_MOVIELENS") or os.path.normpath(
    os.path.join(REPO_ROOT, "..", "shared", "data", "movielens-100k", "ratings.parquet"))


def cache_dir() -> str:
    """Where generated ratings are kept: ``DMLKIT_BENCH_DATA`` or ``asv_bench/.cache``."""
    d = os.environ.get("DMLKIT_BENCH_DATA") or os.path.join(ASV_ROOT, ".cache")
    os.makedirs(d, exist_ok=True)
    return d


# ----------------------------------------------------------------------------------
# data: cached train / test splits as parquet
# ----------------------------------------------------------------------------------
def _write_parquet(df, path):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        df.to_parquet(tmp, index=False, row_group_size=1 << 20)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _split(df, test_fraction, seed):
    """(train, test): each rating held out with probability ``test_fraction``."""
    rng = np.random.default_rng([seed, 90210])
    test = rng.random(len(df)) < test_fraction
    return (df[~test].reset_index(drop=True), df[test].reset_index(drop=True))


def synthetic_paths(n_ratings=ALS_RATINGS, n_users=ALS_USERS, n_items=ALS_ITEMS, *,
                    implicit=False, rank=PLANTED_RANK, noise=NOISE, popularity=POPULARITY,
                    seed=ALS_SEED, test_fraction=TEST_FRACTION):
    """(train, test) parquet paths of a ``make_ratings`` data set, generated once.

    Columns ``user_id`` (int64), ``item_id`` (int64), ``rating`` (float32).
    """
    kind = "implicit" if implicit else "explicit"
    stem = (f"ratings_{kind}_{n_users}u_{n_items}i_{n_ratings}r_rank{rank}_noise{noise:g}_"
            f"pop{popularity:g}_s{seed}_test{test_fraction:g}")
    paths = tuple(os.path.join(cache_dir(), f"{stem}_{p}.parquet") for p in ("train", "test"))
    if all(os.path.exists(p) for p in paths):
        return paths
    import dask

    from dmlkit.datasets import make_ratings

    ddf = make_ratings(n_users, n_items, n_ratings, rank=rank, noise=noise,
                       popularity=popularity, implicit=implicit, random_state=seed)
    with dask.config.set(scheduler="threads"):
        df = ddf.compute().reset_index(drop=True)
    for part, path in zip(_split(df, test_fraction, seed), paths, strict=True):
        _write_parquet(part, path)
    return paths


def movielens_paths(path=MOVIELENS, *, seed=ALS_SEED, test_fraction=TEST_FRACTION):
    """(train, test) parquet paths of a MovieLens file's 90/10 split, or None if absent."""
    if not os.path.exists(path):
        return None
    st = os.stat(path)
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    parent = os.path.basename(os.path.dirname(os.path.normpath(path)))
    stem = f"movielens_{parent}_{name}_{st.st_size}_s{seed}_test{test_fraction:g}"
    paths = tuple(os.path.join(cache_dir(), f"{stem}_{p}.parquet") for p in ("train", "test"))
    if all(os.path.exists(p) for p in paths):
        return paths
    from dmlkit.datasets import load_movielens

    df = load_movielens(path).compute()[["user_id", "item_id", "rating"]]
    df = df.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float32})
    for part, out in zip(_split(df.reset_index(drop=True), test_fraction, seed), paths,
                         strict=True):
        _write_parquet(part, out)
    return paths


class RatingsData:
    """One train/test split, loaded lazily, with the pieces every system needs.

    ``user_ids`` / ``item_ids``: the sorted distinct ids of the training ratings; factors
    of every system are returned aligned to them (row j belongs to id j).
    """

    def __init__(self, name, train_path, test_path, implicit):
        self.name = name
        self.train_path = train_path
        self.test_path = test_path
        self.implicit = bool(implicit)
        self.mode = "implicit" if implicit else "explicit"
        self._train = self._test = self._codes = self._seen = None

    @property
    def train(self):
        if self._train is None:
            import pandas as pd

            self._train = pd.read_parquet(self.train_path)
        return self._train

    @property
    def test(self):
        if self._test is None:
            import pandas as pd

            self._test = pd.read_parquet(self.test_path)
        return self._test

    def codes(self):
        """(user_ids, item_ids, user codes, item codes) of the training ratings."""
        if self._codes is None:
            u = self.train["user_id"].to_numpy()
            i = self.train["item_id"].to_numpy()
            uids, ucodes = np.unique(u, return_inverse=True)
            iids, icodes = np.unique(i, return_inverse=True)
            self._codes = (uids, iids, ucodes.astype(np.int32), icodes.astype(np.int32))
        return self._codes

    @property
    def user_ids(self):
        return self.codes()[0]

    @property
    def item_ids(self):
        return self.codes()[1]

    def csr(self, values):
        """Users x items CSR (codes) of the training pairs holding ``values``."""
        import scipy.sparse as sp

        uids, iids, uc, ic = self.codes()
        m = sp.csr_matrix((np.asarray(values, dtype=np.float32), (uc, ic)),
                          shape=(len(uids), len(iids)))
        m.sum_duplicates()
        m.sort_indices()
        return m

    def seen(self):
        if self._seen is None:
            self._seen = self.csr(np.ones(len(self.train), dtype=np.float32))
        return self._seen

    def head(self, n=5000):
        return self.train.iloc[:n].copy()

    def describe(self):
        tr, te = self.train, self.test
        return (f"{self.name} ({self.mode}): {len(tr):,} training + {len(te):,} held-out "
                f"ratings, {len(self.user_ids):,} users x {len(self.item_ids):,} items "
                f"(density {len(tr) / (len(self.user_ids) * len(self.item_ids)):.2%})")

    def release(self):
        self._train = self._test = self._codes = self._seen = None


def synthetic_data(implicit, n_ratings=ALS_RATINGS, n_users=ALS_USERS, n_items=ALS_ITEMS,
                   **kw):
    train, test = synthetic_paths(n_ratings, n_users, n_items, implicit=implicit, **kw)
    return RatingsData(f"synthetic {n_ratings:,} ratings", train, test, implicit)


def movielens_data(implicit, path=MOVIELENS, **kw):
    paths = movielens_paths(path, **kw)
    if paths is None:
        return None
    return RatingsData("MovieLens 100k" if "100k" in path else "MovieLens", *paths, implicit)


# ----------------------------------------------------------------------------------
# quality, computed the same way from every system's factors
# ----------------------------------------------------------------------------------
def align(ids, F, want):
    """Rows of ``F`` (factors of ``ids``) reordered to ``want``; unseen ids get NaN."""
    import pandas as pd

    F = np.asarray(F, dtype=np.float32)
    ids = np.asarray(ids)
    if ids.shape == want.shape and np.array_equal(ids, want):
        return F
    pos = pd.Index(ids).get_indexer(want)
    out = np.full((len(want), F.shape[1]), np.nan, dtype=np.float32)
    out[pos >= 0] = F[pos[pos >= 0]]
    return out


def heldout_rmse(data, U, V):
    """RMSE on the held-out ratings of (user, item) pairs both seen in training."""
    import pandas as pd

    from dmlkit.metrics import rmse

    test = data.test
    u = pd.Index(data.user_ids).get_indexer(test["user_id"])
    i = pd.Index(data.item_ids).get_indexer(test["item_id"])
    keep = (u >= 0) & (i >= 0)
    pred = np.einsum("ij,ij->i", U[u[keep]].astype(np.float64), V[i[keep]].astype(np.float64))
    keep_pred = np.isfinite(pred)
    r = test["rating"].to_numpy(dtype=np.float64)[keep][keep_pred]
    return float(rmse(r, pred[keep_pred]))


def precision_at_10(data, U, V, n_users=EVAL_USERS, k=10, seed=ALS_SEED):
    """Precision@k of the top-k unseen items of up to ``n_users`` held-out users (drawn
    with a fixed seed) against their held-out items (``dmlkit.metrics.precision_at_k``)."""
    import pandas as pd

    from dmlkit.metrics import precision_at_k

    test = data.test
    codes = pd.Index(data.user_ids).get_indexer(test["user_id"])
    users = np.unique(codes[codes >= 0])
    rng = np.random.default_rng([seed, 10])
    if len(users) > n_users:
        users = np.sort(rng.choice(users, n_users, replace=False))
    seen = data.seen()
    rows, cols = [], []
    Vt = np.nan_to_num(V.astype(np.float32)).T
    for s in range(0, len(users), 512):
        us = users[s:s + 512]
        S = np.nan_to_num(U[us].astype(np.float32), nan=0.0) @ Vt
        sub = seen[us]
        S[np.repeat(np.arange(len(us)), np.diff(sub.indptr)), sub.indices] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        rows.append(np.repeat(us, k))
        cols.append(top.ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    recs = pd.DataFrame({"user_id": data.user_ids[rows], "item_id": data.item_ids[cols],
                         "rank": np.tile(np.arange(1, k + 1), len(users))})
    rel = test[test["user_id"].isin(data.user_ids[users])][["user_id", "item_id"]]
    return float(precision_at_k(recs, rel, k=k))


def quality(data, U, V):
    """("rmse", value) for explicit data, ("p@10", value) for implicit data."""
    if data.implicit:
        return "p@10", precision_at_10(data, U, V)
    return "rmse", heldout_rmse(data, U, V)


# ----------------------------------------------------------------------------------
# the systems
# ----------------------------------------------------------------------------------
def spark_missing():
    """Why Spark cannot run here (a message), or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install pyspark)"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) \
            and shutil.which("java") is None:
        return "no Java runtime found (java on PATH or JAVA_HOME)"
    return None


def implicit_missing():
    if importlib.util.find_spec("implicit") is None:
        return "the implicit library is not installed (pip install implicit)"
    return None


def missing(system):
    if system == "spark":
        return spark_missing()
    if system == "implicit":
        return implicit_missing()
    return None


def warm_als():
    """Tiny dmlkit ALS fits (explicit and implicit) on dask's synchronous scheduler:
    compiles or loads from numba's cache every kernel a fit calls.  Run on every worker
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


class ALSSettings:
    """The hyper-parameters every system gets."""

    def __init__(self, factors=ALS_FACTORS, regularization=ALS_REG, alpha=ALS_ALPHA,
                 seed=ALS_SEED, cg_steps=3):
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.cg_steps = int(cg_steps)

    def dmlkit(self, data, iterations):
        from dmlkit.recommendation import ALS

        return ALS(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                   iterations=iterations, implicit=data.implicit, cg_steps=self.cg_steps,
                   random_state=self.seed, dtype="float32")


class _Runner:
    """One system: ``prepare(data)`` (untimed: conversions, persist, warm-up), then
    ``fit(iterations)`` any number of times, ``factors(model)`` aligned to the data's
    ids, ``release()`` before the next data set, ``close()`` at the end."""

    name = "?"
    data = None

    def prepare(self, data):
        self.data = data

    def fit(self, iterations):
        raise NotImplementedError

    def factors(self, model):
        raise NotImplementedError

    def release(self):
        self.data = None

    def close(self):
        self.release()


class DmlkitThreads(_Runner):
    name = "dmlkit-threads"

    def __init__(self, settings):
        self.s = settings

    def prepare(self, data):
        super().prepare(data)
        warm_als()
        self.s.dmlkit(data, 1).fit(data.head())  # the client-side path, this mode

    def fit(self, iterations):
        return self.s.dmlkit(self.data, iterations).fit(self.data.train)

    def factors(self, model):
        return (align(model.user_ids_, model.user_factors_, self.data.user_ids),
                align(model.item_ids_, model.item_factors_, self.data.item_ids))


class DmlkitLocalCluster(DmlkitThreads):
    """``LocalCluster(n_workers=2, threads_per_worker=1)``, the training frame persisted
    on it as a dask DataFrame of as many partitions as dmlkit cuts a pandas frame into."""

    name = "dmlkit-localcluster"

    def __init__(self, settings):
        super().__init__(settings)
        self.cluster = DaskCluster(processes=True, n_workers=2, threads_per_worker=1)
        self.ddf = None
        try:
            self.cluster.client.run(warm_als)
        except BaseException:
            self.cluster.close()
            raise

    def prepare(self, data):
        import dask.dataframe as dd

        _Runner.prepare(self, data)
        n_parts = max(1, min(32, len(data.train) // 250_000))
        self.ddf = self.cluster.persist(dd.from_pandas(data.train, npartitions=n_parts,
                                                       sort=False))
        small = dd.from_pandas(data.head(), npartitions=2, sort=False)
        with self.cluster.as_current():
            self.s.dmlkit(data, 1).fit(small)

    def fit(self, iterations):
        with self.cluster.as_current():
            return self.s.dmlkit(self.data, iterations).fit(self.ddf)

    def release(self):
        self.ddf = None
        super().release()

    def close(self):
        self.release()
        self.cluster.close()


class Implicit(_Runner):
    """implicit's CPU ALS, 2 threads, BLAS on one thread (threadpoolctl)."""

    name = "implicit"

    def __init__(self, settings, num_threads=2):
        # Imported first: a BLAS library loaded (by scipy) after ``threadpool_limits``
        # is entered would keep its threads, and implicit would warn and oversubscribe.
        import implicit.cpu.als  # noqa: F401
        import scipy.linalg  # noqa: F401

        self.s = settings
        self.num_threads = num_threads
        self.C = None

    def _model(self, iterations):
        from implicit.cpu.als import AlternatingLeastSquares

        # alpha=1 and C = 1 + alpha * r: implicit's confidence is C itself, so this is
        # dmlkit's and Spark's confidence 1 + alpha * r.
        return AlternatingLeastSquares(factors=self.s.factors,
                                       regularization=self.s.regularization, alpha=1.0,
                                       iterations=iterations, use_cg=self.data.implicit,
                                       num_threads=self.num_threads,
                                       random_state=self.s.seed,
                                       calculate_training_loss=False)

    def prepare(self, data):
        super().prepare(data)
        r = data.train["rating"].to_numpy(dtype=np.float32)
        self.C = data.csr(1.0 + self.s.alpha * r)
        self.fit(1)  # warm-up (imports, thread pool)

    def fit(self, iterations):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = self._model(iterations)  # checks the BLAS threads: one, no warning
            model.fit(self.C, show_progress=False)
        return model

    def factors(self, model):
        return np.asarray(model.user_factors), np.asarray(model.item_factors)

    def release(self):
        self.C = None
        super().release()


def start_spark(memory=SPARK_MEMORY, cores=2):
    """A ``local[cores]`` SparkSession (the JVM starts here); raises NotImplementedError
    without pyspark or Java."""
    why = spark_missing()
    if why:
        raise NotImplementedError(f"Spark skipped: {why}")
    warnings.filterwarnings("ignore", module="pyspark")
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support.*")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName("dmlkit-bench-als")
             .config("spark.driver.memory", memory)
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class Spark(_Runner):
    """Spark MLlib's ALS on ``local[2]``; ``fit`` is eager (the factors are computed and
    counted inside it)."""

    name = "spark"

    def __init__(self, settings, memory=SPARK_MEMORY):
        self.s = settings
        self.spark = start_spark(memory)
        self.df = None

    def _als(self, iterations):
        from pyspark.ml.recommendation import ALS

        return ALS(rank=self.s.factors, maxIter=iterations, regParam=self.s.regularization,
                   implicitPrefs=self.data.implicit, alpha=self.s.alpha, userCol="user_id",
                   itemCol="item_id", ratingCol="rating", seed=self.s.seed,
                   nonnegative=False)

    def prepare(self, data):
        from pyspark.sql import functions as F

        super().prepare(data)
        df = self.spark.read.parquet(data.train_path).select(
            F.col("user_id").cast("int"), F.col("item_id").cast("int"),
            F.col("rating").cast("float"))
        self.df = df.cache()
        self.df.count()
        small = self.df.limit(5000).cache()
        small.count()
        self._als(1).fit(small)  # warm-up: JIT, classes, BLAS loading
        small.unpersist()

    def fit(self, iterations):
        return self._als(iterations).fit(self.df)

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
        if self.df is not None:
            self.df.unpersist()
            self.df = None
        super().release()

    def close(self):
        self.release()
        with contextlib.suppress(Exception):
            self.spark.stop()
        # The JVM exits when its stdin closes; wait for it, so that it neither outlives
        # this benchmark (memory) nor writes into the next one's output.
        with contextlib.suppress(Exception):
            from pyspark import SparkContext

            gateway = SparkContext._gateway
            proc = getattr(gateway, "proc", None)
            gateway.shutdown()
            SparkContext._gateway = SparkContext._jvm = None
            if proc is not None:
                proc.stdin.close()
                proc.wait(timeout=60)


def make_runner(system, settings, spark_memory=SPARK_MEMORY):
    """The runner of ``system``; NotImplementedError (asv's skip) when it cannot run."""
    why = missing(system)
    if why:
        raise NotImplementedError(f"{system} skipped: {why}")
    if system == "dmlkit-threads":
        return DmlkitThreads(settings)
    if system == "dmlkit-localcluster":
        return DmlkitLocalCluster(settings)
    if system == "implicit":
        return Implicit(settings)
    if system == "spark":
        return Spark(settings, spark_memory)
    raise ValueError(f"unknown system {system!r}; known: {ALS_SYSTEMS}")


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


# ----------------------------------------------------------------------------------
# asv benchmarks
# ----------------------------------------------------------------------------------
class _ALSBase(Benchmark):
    """One system's runner per benchmark process, prepared on the subclass's data."""

    timeout = 900
    mode = "explicit"
    params = (list(ALS_SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        # asv runs one setup_cache per function (file and line) and shares its result
        # with every class using it: both modes' data, each class picks its own.
        return {m: synthetic_paths(ALS_RATINGS, ALS_USERS, ALS_ITEMS, implicit=m == "implicit")
                for m in MODES}

    def _data(self, cached):
        return RatingsData("synthetic", *cached[self.mode], self.mode == "implicit")

    def setup(self, cached, system):
        self.data = self._data(cached)
        self.runner = make_runner(system, ALSSettings())
        try:
            self.runner.prepare(self.data)
        except BaseException:
            self.runner.close()
            raise

    def teardown(self, cached, system):
        self.runner.close()

    def time_fit(self, cached, system):
        self.runner.fit(ALS_ITERS)

    def track_seconds_per_iteration(self, cached, system):
        return seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]

    track_seconds_per_iteration.unit = "seconds"

    def track_peak_memory(self, cached, system):
        with ResourceMonitor() as mon:
            self.runner.fit(ALS_ITERS)
        return mon.peak / 2**20

    track_peak_memory.unit = "MiB"


class ALSExplicit(_ALSBase):
    """Explicit feedback (ALS-WR) on synthetic stars: speed, test RMSE, peak memory."""

    def track_test_rmse(self, cached, system):
        if system == "implicit":
            return float("nan")  # implicit fits another objective: no RMSE to compare
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return heldout_rmse(self.data, U, V)

    track_test_rmse.unit = "RMSE"


class ALSImplicit(_ALSBase):
    """Implicit feedback (HKV) on synthetic counts: speed, precision@10, peak memory."""

    mode = "implicit"

    def track_precision_at_10(self, cached, system):
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return precision_at_10(self.data, U, V)

    track_precision_at_10.unit = "precision@10"


class ALSRatio(Benchmark):
    """Seconds per iteration over implicit's, both measured in one process (implicit
    first), on the synthetic data of either mode."""

    timeout = 900
    params = ([s for s in ALS_SYSTEMS if s != "implicit"], list(MODES))
    param_names = ["system", "mode"]

    def setup_cache(self):
        return {m: synthetic_paths(ALS_RATINGS, ALS_USERS, ALS_ITEMS, implicit=m == "implicit")
                for m in MODES}

    def setup(self, cached, system, mode):
        self.data = RatingsData("synthetic", *cached[mode], mode == "implicit")
        self.ref = make_runner("implicit", ALSSettings())
        self.runner = None
        try:
            self.ref.prepare(self.data)
            self.runner = make_runner(system, ALSSettings())
            self.runner.prepare(self.data)
        except BaseException:
            self.teardown(cached, system, mode)
            raise

    def teardown(self, cached, system, mode):
        for r in (self.runner, self.ref):
            if r is not None:
                r.close()

    def track_time_ratio_vs_implicit(self, cached, system, mode):
        ref = seconds_per_iteration(self.ref, ALS_ITERS, self.timer)[0]
        own = seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]
        print(f"{system} ({mode}): {own:.4g} s/iteration; implicit {ref:.4g} s/iteration",
              file=sys.stderr)
        return own / ref

    track_time_ratio_vs_implicit.unit = "ratio"


class ALSMovieLens(Benchmark):
    """MovieLens 100k (skipped when the file is absent): speed and quality per mode."""

    timeout = 900
    params = (list(ALS_SYSTEMS), list(MODES))
    param_names = ["system", "mode"]

    def setup_cache(self):
        return movielens_paths(MOVIELENS)

    def setup(self, cached, system, mode):
        if cached is None:
            raise NotImplementedError(f"MovieLens not found at {MOVIELENS} "
                                      "(set DMLKIT_BENCH_MOVIELENS)")
        self.data = RatingsData("MovieLens", *cached, mode == "implicit")
        self.runner = make_runner(system, ALSSettings())
        try:
            self.runner.prepare(self.data)
        except BaseException:
            self.runner.close()
            raise

    def teardown(self, cached, system, mode):
        self.runner.close()

    def track_seconds_per_iteration(self, cached, system, mode):
        return seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]

    track_seconds_per_iteration.unit = "seconds"

    def track_quality(self, cached, system, mode):
        """Test RMSE (explicit; NaN for implicit, another objective) or precision@10."""
        if mode == "explicit" and system == "implicit":
            return float("nan")
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return quality(self.data, U, V)[1]

    track_quality.unit = "RMSE (explicit) / precision@10 (implicit)"
