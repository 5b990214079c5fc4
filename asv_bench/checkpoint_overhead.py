"""What checkpointing every iteration costs: the same fit with and without ``checkpoint=``.

On the README's benchmark data (``compare_kmeans.py``: 2,000,000 x 32 float32 blobs, 16
clusters, 10 Lloyd iterations; ``compare_sgd.py``: 2,000,000 x 50 float64,
``log_loss``, 5 epochs), on local threads and, with ``--cluster``, on a LocalCluster of 2
single-thread workers, on a dask array persisted there (the checkpoint is written by
the client either way).  The two
variants alternate, ``--repeats`` times each after a warm-up, and the table reports the
medians and their ratio.  The checkpoint folder is a fresh temporary folder per fit (a
local disk), ``checkpoint_interval=1``.  Whole-fit ratios move by a few % from run to
run on a shared machine, so the script also times the checkpoint code itself (the
fingerprint, opening the folder, every save) and reports its share of the fit.

    .venv/bin/python asv_bench/checkpoint_overhead.py [--repeats 5] [--cluster]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks import common as bc  # noqa: E402


def kmeans_case(args):
    from dmlkit import KMeans

    path = bc.make_blobs_file(2_000_000, 32, 16, 0)
    X = bc.load_blobs(path)
    init = bc.initial_centers(X, 16, 0)

    def fit(checkpoint, X, y):
        return KMeans(16, init=init, n_init=1, max_iter=10, tol=0,
                      checkpoint=checkpoint).fit(X)

    return "KMeans, 2,000,000 x 32 float32, 10 iterations", X, None, fit


def sgd_case(args):
    from sklearn.datasets import make_classification

    from dmlkit import SGDClassifier

    X, y = make_classification(2_000_000, 50, n_informative=30, class_sep=0.8,
                               random_state=0)
    X = (X - X.mean(0)) / X.std(0)

    def fit(checkpoint, X, y):
        return SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0,
                             checkpoint=checkpoint).fit(X, y)

    return "SGDClassifier, 2,000,000 x 50 float64, 5 epochs", X, y, fit


_SPENT = [0.0]  # seconds spent in the checkpoint code (fingerprint, open, bind, saves)


def _timed(fn):
    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPENT[0] += time.perf_counter() - t0
    return wrapped


def instrument():
    """Time the checkpoint code itself: the wall-time ratio of whole fits is within
    the machine's noise (a few %), this share is not."""
    from dmlkit._core import checkpoint, loop

    loop.fit_fingerprint = _timed(loop.fit_fingerprint)
    for name in ("__init__", "bind", "load", "save"):
        setattr(checkpoint.CheckpointStore, name,
                _timed(getattr(checkpoint.CheckpointStore, name)))


def measure(fit, repeats, X, y):
    times = {"none": [], "every": []}
    shares = []
    fit(None, X, y)  # warm-up: kernels compiled and loaded
    for r in range(repeats):
        for variant in (("none", "every") if r % 2 == 0 else ("every", "none")):
            folder = tempfile.mkdtemp(prefix="dmlkit-ckpt-")
            try:
                _SPENT[0] = 0.0
                t0 = time.perf_counter()
                est = fit(folder if variant == "every" else None, X, y)
                times[variant].append(time.perf_counter() - t0)
                if variant == "every":
                    shares.append(_SPENT[0] / times[variant][-1])
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    out = {k: statistics.median(v) for k, v in times.items()}
    out["share"] = statistics.median(shares)
    return out, est


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cluster", action="store_true", help="also on a 2-worker LocalCluster")
    ap.add_argument("--cases", default="kmeans,sgd")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import dask

    dask.config.set({"dmlkit.local-fit-bytes": 0})
    instrument()
    cases = {"kmeans": kmeans_case, "sgd": sgd_case}
    rows = []
    for name in args.cases.split(","):
        title, X, y, fit = cases[name](args)
        places = [("local threads", None)]
        if args.cluster:
            places.append(("LocalCluster 2 x 1", "cluster"))
        for place, kind in places:
            if kind is None:
                med, est = measure(fit, args.repeats, X, y)
            else:
                import dask.array as da
                from distributed import Client, LocalCluster, wait

                with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0", host="127.0.0.1") as lc, \
                        Client(lc) as client:
                    # persisted once on the workers, in the blocks dmlkit picks for numpy
                    block = bc.block_rows(X.shape[1], X.dtype.itemsize)
                    Xd = client.persist(da.from_array(X, chunks=(block, X.shape[1])))
                    yd = None if y is None else client.persist(da.from_array(y, chunks=block))
                    wait([Xd] + ([yd] if yd is not None else []))
                    med, est = measure(fit, args.repeats, Xd, yd)
            ratio = med["every"] / med["none"]
            rows.append((title, place, med["none"], med["every"], ratio, med["share"]))
            print(f"{title}, {place}: {med['none']:.3f} s without, {med['every']:.3f} s with "
                  f"a checkpoint every iteration: {ratio:.3f}x; checkpoint code "
                  f"{100 * med['share']:.2f}% of the fit ({est.n_iter_} iterations)",
                  flush=True)
    print("\n| fit | where | without | checkpoint every iteration | ratio | time in "
          "checkpoint code |\n|---|---|---|---|---|---|")
    for title, place, a, b, r, share in rows:
        print(f"| {title} | {place} | {a:.2f} s | {b:.2f} s | {r:.3f}x | {100 * share:.2f}% |")


if __name__ == "__main__":
    main()
