"""Median whole-fit time of KMeans on the README's data, on local threads and on a
2-worker LocalCluster: for before/after comparisons of two dmlkit versions, one
process per version, alternated (e.g. ``PYTHONPATH=/path/to/old/worktree``)::

    for r in 1 2 3 4; do
        PYTHONPATH=/tmp/before .venv/bin/python asv_bench/kmeans_fit_times.py
        .venv/bin/python asv_bench/kmeans_fit_times.py
    done

Prints which dmlkit ran and the median of ``--fits`` fits (2,000,000 x 32 float32,
16 clusters, the same initial centres, 10 Lloyd iterations), after one warm-up fit.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks import common as bc  # noqa: E402


def _median_fit(X, init, fits):
    from dmlkit import KMeans

    def fit():
        return KMeans(16, init=init, n_init=1, max_iter=10, tol=0).fit(X)

    fit()  # warm-up
    times = []
    for _ in range(fits):
        t0 = time.perf_counter()
        fit()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fits", type=int, default=7)
    args = ap.parse_args(argv)
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import dmlkit

    path = bc.make_blobs_file(2_000_000, 32, 16, 0)
    X = bc.load_blobs(path)
    init = bc.initial_centers(X, 16, 0)
    rows = bc.block_rows(32, X.dtype.itemsize)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster, Client(cluster) as c:
        Xd = c.persist(da.from_array(X, chunks=(rows, 32)))
        wait(Xd)
        on_cluster = _median_fit(Xd, init, args.fits)
    threads = _median_fit(X, init, args.fits)
    print(f"{os.path.dirname(dmlkit.__file__)}: LocalCluster 2x1 {on_cluster:.4f} s, "
          f"local threads {threads:.4f} s (median of {args.fits} fits)")


if __name__ == "__main__":
    main()
