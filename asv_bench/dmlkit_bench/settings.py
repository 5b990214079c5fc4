"""Sizes, the asv profile, where generated data is cached, and the asv ``Benchmark`` base.

Every size has a default for the figures quoted and an environment variable, so that a
smoke run of the asv suite can be small (see ``asv_bench/README.md``).  Nothing here
imports dmlkit, dask or scikit-learn: asv imports the benchmark modules to discover them.
"""

from __future__ import annotations

import os
import tempfile
import timeit


def env_int(name, default):
    value = os.environ.get(name)
    return int(float(value)) if value else default


def env_float(name, default):
    value = os.environ.get(name)
    return float(value) if value else default


SEED = 0

# -- KMeans (dense blobs) --------------------------------------------------------------
N_ROWS = env_int("DMLKIT_BENCH_ROWS", 2_000_000)  # also the SGD dense problem's rows
N_FEATURES = env_int("DMLKIT_BENCH_FEATURES", 32)
N_CLUSTERS = env_int("DMLKIT_BENCH_CLUSTERS", 16)
N_ITER = env_int("DMLKIT_BENCH_ITERS", 10)
KERNEL_ROWS = env_int("DMLKIT_BENCH_KERNEL_ROWS", 500_000)
SPARSE_FEATURES = 2**16  # hashed features of the sparse KMeans problem

# -- SGD (dense classification and hashed text) ----------------------------------------
SGD_FEATURES = env_int("DMLKIT_BENCH_SGD_FEATURES", 50)
SGD_TEST_ROWS = env_int("DMLKIT_BENCH_SGD_TEST_ROWS", 200_000)
SGD_BLOCK_ROWS = env_int("DMLKIT_BENCH_SGD_BLOCK_ROWS", 250_000)
SGD_EPOCHS = env_int("DMLKIT_BENCH_EPOCHS", 5)
TEXT_DOCS = env_int("DMLKIT_BENCH_SGD_DOCS", 200_000)
TEXT_TEST_DOCS = env_int("DMLKIT_BENCH_SGD_TEST_DOCS", 50_000)
TEXT_BLOCK_ROWS = env_int("DMLKIT_BENCH_SGD_DOC_BLOCK_ROWS", 50_000)
TEXT_HASH_FEATURES = 2**18
# "Time to reach scikit-learn's test accuracy": a fit counts when its accuracy is at
# least scikit-learn's minus this.
ACCURACY_TOLERANCE = 0.005

# -- ALS -------------------------------------------------------------------------------
ALS_RATINGS = env_int("DMLKIT_BENCH_ALS_RATINGS", 200_000)
ALS_USERS = env_int("DMLKIT_BENCH_ALS_USERS", 10_000)
ALS_ITEMS = env_int("DMLKIT_BENCH_ALS_ITEMS", 2_000)
ALS_FACTORS = env_int("DMLKIT_BENCH_ALS_FACTORS", 64)
ALS_ITERS = env_int("DMLKIT_BENCH_ALS_ITERS", 5)
ALS_REG = env_float("DMLKIT_BENCH_ALS_REG", 0.05)
ALS_ALPHA = env_float("DMLKIT_BENCH_ALS_ALPHA", 1.0)
SPARK_MEMORY = os.environ.get("DMLKIT_BENCH_ALS_SPARK_MEMORY", "8g")

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# <repo>/asv_bench/dmlkit_bench -> <repo>/../shared/data/... (editable install)
MOVIELENS = os.environ.get("DMLKIT_BENCH_MOVIELENS") or os.path.normpath(
    os.path.join(_PACKAGE, "..", "..", "..", "shared", "data", "movielens-100k",
                 "ratings.parquet"))


def data_dir() -> str:
    """Where generated data is cached: ``DMLKIT_BENCH_DATA``, or ``$TMPDIR/dmlkit-bench``."""
    d = os.environ.get("DMLKIT_BENCH_DATA") or os.path.join(tempfile.gettempdir(),
                                                            "dmlkit-bench")
    os.makedirs(d, exist_ok=True)
    return d


# -- the asv suite ---------------------------------------------------------------------
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
    """Base of the asv benchmarks: wall-clock time (the work runs in other threads and
    processes), one call per sample (a fit is long), one process per benchmark, no
    warm-up calls (setup warms the JIT explicitly)."""

    timer = timeit.default_timer
    number = 1
    rounds = 1
    warmup_time = 0
    repeat = _PROFILES[PROFILE]["repeat"]
    timeout = 600

    def close_all(self, *attrs):
        """Close ``self.<attr>`` for each attribute setup got to (asv also tears down after
        a setup that raised, e.g. NotImplementedError for a skipped system)."""
        for attr in attrs:
            obj = getattr(self, attr, None)
            if obj is not None:
                obj.close()
