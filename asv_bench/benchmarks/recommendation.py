"""ALS matrix factorisation: dmlkit (threads and LocalCluster) against implicit and Spark.

The systems are the runners of ``dmlkit_bench.runners.als`` (what each one runs, and how
the objectives differ, is described there), all with the same ``factors``,
``regularization``, ``alpha``, iteration count and seed, float32 factors.  Spark is
skipped (setup raises NotImplementedError) without pyspark or Java.

Data (``dmlkit_bench.ratings``):

- :class:`ALSExplicit`, :class:`ALSImplicit`, :class:`ALSRatio`: ``make_ratings`` with
  ``DMLKIT_BENCH_ALS_RATINGS`` (200,000) ratings, ``DMLKIT_BENCH_ALS_USERS`` (10,000)
  users, ``DMLKIT_BENCH_ALS_ITEMS`` (2,000) items; explicit "stars" or implicit counts.
  10% of the ratings are held out.
- :class:`ALSMovieLens`: MovieLens 100k (``DMLKIT_BENCH_MOVIELENS``; skipped when absent),
  the same 90/10 split; in implicit mode the star ratings are the interaction strengths.

Other sizes: ``DMLKIT_BENCH_ALS_FACTORS`` (64), ``DMLKIT_BENCH_ALS_ITERS`` (5),
``DMLKIT_BENCH_ALS_REG`` (0.05), ``DMLKIT_BENCH_ALS_ALPHA`` (1.0).

Benchmarks per (system, mode):

- ``time_fit``: one whole fit of ``DMLKIT_BENCH_ALS_ITERS`` iterations (each system's
  own setup inside ``fit`` included: dmlkit's id scan and shuffle, Spark's blocking).
- ``track_seconds_per_iteration``: (fit with N iterations - fit with 1) / (N - 1), both
  measured in the call: the one-time setup inside ``fit`` cancels out.
- ``track_test_rmse`` (explicit) / ``track_precision_at_10`` (implicit): on the held-out
  ratings, from each system's factors, computed the same way for all.
- ``track_peak_memory``: peak RSS (MiB) of the process tree (this process, the dask
  worker processes, Spark's JVM) during a fit, the training data held in memory included.
- ``track_time_ratio_vs_implicit`` (:class:`ALSRatio`): the system's seconds per
  iteration over implicit's, both measured in one process, one after the other.
- :class:`ALSMovieLens`, per (system, mode): ``track_seconds_per_iteration`` and
  ``track_quality`` (test RMSE for explicit, precision@10 for implicit feedback).
"""

import sys

from dmlkit_bench import ratings
from dmlkit_bench.monitor import ResourceMonitor
from dmlkit_bench.runners import als
from dmlkit_bench.settings import ALS_ITEMS, ALS_ITERS, ALS_RATINGS, ALS_USERS, MOVIELENS, Benchmark

MODES = list(ratings.MODES)



def _synthetic_paths():
    return {m: ratings.synthetic_paths(ALS_RATINGS, ALS_USERS, ALS_ITEMS,
                                       implicit=m == "implicit") for m in MODES}


def _prepared(system, data):
    runner = als.als_runner(system, als.ALSSettings())
    try:
        runner.prepare(data)
    except BaseException:
        runner.close()
        raise
    return runner


class _ALSBase(Benchmark):
    """One system's runner per benchmark process, prepared on the subclass's data."""

    timeout = 900
    mode = "explicit"
    params = (list(als.SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        # asv runs one setup_cache per function (file and line) and shares its result
        # with every class using it: both modes' data, each class picks its own.
        return _synthetic_paths()

    def setup(self, cached, system):
        self.data = ratings.RatingsData("synthetic", *cached[self.mode], self.mode == "implicit")
        self.runner = _prepared(system, self.data)

    def teardown(self, cached, system):
        self.close_all("runner")

    def time_fit(self, cached, system):
        self.runner.fit(ALS_ITERS)

    def track_seconds_per_iteration(self, cached, system):
        return als.seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]

    track_seconds_per_iteration.unit = "seconds"

    def track_peak_memory(self, cached, system):
        with ResourceMonitor() as mon:
            self.runner.fit(ALS_ITERS)
        return mon.peak_mib

    track_peak_memory.unit = "MiB"


class ALSExplicit(_ALSBase):
    """Explicit feedback (ALS-WR) on synthetic stars: speed, test RMSE, peak memory."""

    def track_test_rmse(self, cached, system):
        if system == "implicit":
            return float("nan")  # implicit fits another objective: no RMSE to compare
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return ratings.heldout_rmse(self.data, U, V)

    track_test_rmse.unit = "RMSE"


class ALSImplicit(_ALSBase):
    """Implicit feedback (HKV) on synthetic counts: speed, precision@10, peak memory."""

    mode = "implicit"

    def track_precision_at_10(self, cached, system):
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return ratings.precision_at_10(self.data, U, V)

    track_precision_at_10.unit = "precision@10"


class ALSRatio(Benchmark):
    """Seconds per iteration over implicit's, both measured in one process (implicit
    first), on the synthetic data of either mode."""

    timeout = 900
    params = ([s for s in als.SYSTEMS if s != "implicit"], MODES)
    param_names = ["system", "mode"]

    def setup_cache(self):
        return _synthetic_paths()

    def setup(self, cached, system, mode):
        self.data = ratings.RatingsData("synthetic", *cached[mode], mode == "implicit")
        self.ref = _prepared("implicit", self.data)
        try:
            self.runner = _prepared(system, self.data)
        except BaseException:
            self.close_all("ref")
            raise

    def teardown(self, cached, system, mode):
        self.close_all("runner", "ref")

    def track_time_ratio_vs_implicit(self, cached, system, mode):
        ref = als.seconds_per_iteration(self.ref, ALS_ITERS, self.timer)[0]
        own = als.seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]
        print(f"{system} ({mode}): {own:.4g} s/iteration; implicit {ref:.4g} s/iteration",
              file=sys.stderr)
        return own / ref

    track_time_ratio_vs_implicit.unit = "ratio"


class ALSMovieLens(Benchmark):
    """MovieLens 100k (skipped when the file is absent): speed and quality per mode."""

    timeout = 900
    params = (list(als.SYSTEMS), MODES)
    param_names = ["system", "mode"]

    def setup_cache(self):
        return ratings.movielens_paths(MOVIELENS)

    def setup(self, cached, system, mode):
        if cached is None:
            raise NotImplementedError(f"MovieLens not found at {MOVIELENS} "
                                      "(set DMLKIT_BENCH_MOVIELENS)")
        self.data = ratings.RatingsData("MovieLens", *cached, mode == "implicit")
        self.runner = _prepared(system, self.data)

    def teardown(self, cached, system, mode):
        self.close_all("runner")

    def track_seconds_per_iteration(self, cached, system, mode):
        return als.seconds_per_iteration(self.runner, ALS_ITERS, self.timer)[0]

    track_seconds_per_iteration.unit = "seconds"

    def track_quality(self, cached, system, mode):
        """Test RMSE (explicit; NaN for implicit, another objective) or precision@10."""
        if mode == "explicit" and system == "implicit":
            return float("nan")
        U, V = self.runner.factors(self.runner.fit(ALS_ITERS))
        return ratings.quality(self.data, U, V)[1]

    track_quality.unit = "RMSE (explicit) / precision@10 (implicit)"
