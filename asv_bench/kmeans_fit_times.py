"""Median whole-fit time of KMeans on the README's data, on local threads and on a
2-worker LocalCluster: for before/after comparisons of two dmlkit versions, one
process per version, alternated (e.g. ``PYTHONPATH=/path/to/old/worktree``)::

    for r in 1 2 3 4; do
        PYTHONPATH=/tmp/before .venv/bin/python asv_bench/kmeans_fit_times.py
        .venv/bin/python asv_bench/kmeans_fit_times.py
    done
    .venv/bin/python asv_bench/kmeans_fit_times.py --rows 20000 --fits 2   # quick check

Prints which dmlkit ran and the median of ``--fits`` fits (``--rows`` x 32 float32,
2,000,000 by default, 16 clusters, the same initial centres, 10 Lloyd iterations), after
one warm-up fit; the runners ``dmlkit-localcluster`` and ``dmlkit-threads`` of
``dmlkit_bench.runners.kmeans``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from dmlkit_bench import data
from dmlkit_bench.runners import kmeans


def _median_fit(runner, fits):
    runner.fit()  # warm-up
    times = []
    for _ in range(fits):
        t0 = time.perf_counter()
        runner.fit()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fits", type=int, default=7)
    ap.add_argument("--rows", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    import dmlkit

    d = data.blobs(args.rows, 32, 16, 0)
    settings = kmeans.KMeansSettings(data.initial_centers(d.train()[0], 16, 0), 10)
    medians = {}
    for system in ("dmlkit-localcluster", "dmlkit-threads"):
        with kmeans.kmeans_runner(system, settings) as runner:
            runner.prepare(d)
            medians[system] = _median_fit(runner, args.fits)
    print(f"{os.path.dirname(dmlkit.__file__)}: LocalCluster 2x1 "
          f"{medians['dmlkit-localcluster']:.4f} s, local threads "
          f"{medians['dmlkit-threads']:.4f} s (median of {args.fits} fits)")


if __name__ == "__main__":
    main()
