"""Lloyd iterations per second of dmlkit, scikit-learn and dask-ml, measured in one run.

    .venv/bin/python asv_bench/compare_kmeans.py --repeats 5          # the README's table
    .venv/bin/python asv_bench/compare_kmeans.py --rows 100000 --repeats 1   # quick check
    .venv/bin/python asv_bench/compare_kmeans.py --sparse --repeats 5  # hashed text (CSR)
    .venv/bin/python asv_bench/compare_kmeans.py --marginal --repeats 5  # one more iteration

Whole fits (the default) include each system's fixed costs: scikit-learn's input
checks (about 0.5 s here), and the closing pass: scikit-learn, scikit-learn-intelex and
dmlkit on in-memory input compute ``labels_`` in the fit; dmlkit on dask input (the
LocalCluster system) computes the final inertia in a pass and leaves ``labels_`` a lazy
dask array.  ``--marginal`` times what an iteration costs instead: every round fits
each system with ``--iters + 1`` and with 1 iteration, and reports (difference) /
``--iters``, in which the fixed costs cancel.

Options: --rows --features --clusters --iters --repeats --systems --seed --data-dir
--float64 --marginal.
The systems are the runners of ``dmlkit_bench.runners.kmeans``; the method and the
output are described in ``asv_bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from dmlkit_bench import compare, data, text
from dmlkit_bench.runners import kmeans
from dmlkit_bench.settings import SPARSE_FEATURES

SPARSE_ROWS = 200_000
SPARSE_SYSTEMS = ("dmlkit-threads", "sklearn", "dmlkit-localcluster")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=None,
                   help="rows (documents with --sparse); default 2,000,000 (200,000)")
    p.add_argument("--features", type=int, default=None,
                   help="default 32 (2^16 hashed features with --sparse)")
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--iters", type=int, default=10, help="Lloyd iterations (max_iter; tol=0)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    p.add_argument("--systems", default=None,
                   help=f"comma-separated, from {', '.join(kmeans.ALL_SYSTEMS)} (default "
                        f"{', '.join(kmeans.SYSTEMS)}; with --sparse from "
                        f"{', '.join(SPARSE_SYSTEMS)}, default the first two)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="where the generated data is cached")
    p.add_argument("--sparse", action="store_true",
                   help="hashed text (CSR) instead of dense blobs")
    p.add_argument("--float64", action="store_true",
                   help="the dense blobs widened to float64 (default float32)")
    p.add_argument("--marginal", action="store_true",
                   help="time one more Lloyd iteration: fits of --iters + 1 against 1")
    args = p.parse_args(argv)
    if args.sparse:
        args.rows = args.rows or SPARSE_ROWS
        args.features = args.features or SPARSE_FEATURES
        known, default = SPARSE_SYSTEMS, SPARSE_SYSTEMS[:2]
    else:
        args.rows = args.rows or 2_000_000
        args.features = args.features or 32
        known, default = tuple(kmeans.ALL_SYSTEMS), tuple(kmeans.SYSTEMS)
    args.systems = compare.parse_systems(args.systems or ",".join(default), known)
    if args.repeats < 1 or args.iters < 1:
        p.error("--repeats and --iters must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        os.environ["DMLKIT_BENCH_DATA"] = args.data_dir
    compare.print_versions()

    t0 = time.perf_counter()
    if args.sparse:
        d = text.text(args.rows, 0, args.features, args.seed)
        kind = f"hashed text, {args.rows:,} x {args.features:,} CSR"
    else:
        dtype = "float64" if args.float64 else "float32"
        d = data.blobs(args.rows, args.features, args.clusters, args.seed, dtype=dtype)
        kind = f"{args.rows:,} x {args.features} {dtype}"
    X = d.train()[0]
    init = data.initial_centers(X, args.clusters, args.seed)
    if np.unique(init, axis=0).shape[0] < args.clusters:
        raise SystemExit("the drawn initial centres are not distinct; try another --seed")
    print(f"\ndata: {d.describe()}, {args.clusters} clusters, {args.iters} Lloyd iterations, "
          f"{args.repeats} repeats (ready in {time.perf_counter() - t0:.1f}s)")
    rows = d.rows_per_block() if args.sparse else data.block_rows(
        args.features * X.dtype.itemsize)
    print(f"dask blocks of the cluster systems: {rows:,} rows (dmlkit's block size), "
          f"{-(-X.shape[0] // rows)} block(s)\n")

    settings = kmeans.KMeansSettings(init, args.iters)
    with compare.Comparison(kmeans.ALL_SYSTEMS, args.systems, settings, d,
                            info=lambda name, est: {"n_iter": int(est.n_iter_)}) as c:
        for name, runner in c.runners.items():
            if runner.uses_cluster:
                print(f"{name}: blocks per worker "
                      f"{sorted(c.cluster.placement(runner.X).values())}")
                break
        if args.marginal:
            return marginal(args, kind, c)
        results, last = c.rounds(args.repeats)
    inertias = {s: kmeans.inertia(X, m.cluster_centers_) for s, m in last.items()}
    if args.sparse and "sklearn" in last and "dmlkit-threads" in last:
        a, b = last["sklearn"], last["dmlkit-threads"]
        same = np.mean(np.asarray(a.labels_) == np.asarray(b.labels_))
        diff = np.abs(a.cluster_centers_ - b.cluster_centers_).max()
        print(f"\ndmlkit-threads against sklearn: {same:.6f} of the labels equal, centres "
              f"within {diff:.2e}")
    report(args, kind, results, inertias, c.table)


def marginal(args, kind, c):
    """Seconds per Lloyd iteration, fixed costs cancelled: every round fits each system
    with ``iters + 1`` and 1 iteration (rounds alternate which comes first)."""
    per = {n: [] for n in c.names}
    for r in range(args.repeats):
        counts = (args.iters + 1, 1) if r % 2 == 0 else (1, args.iters + 1)
        timed = {}
        for n_iter in counts:
            results, _ = c.rounds(1, fit_kwargs={"n_iter": n_iter})
            for name, fits in results.items():
                if fits[0].info["n_iter"] != n_iter:
                    raise SystemExit(f"{name} ran {fits[0].info['n_iter']} iterations, not "
                                     f"{n_iter}: the marginal time would be wrong")
                timed.setdefault(name, {})[n_iter] = fits[0].seconds
        for name, t in timed.items():
            per[name].append((t[args.iters + 1] - t[1]) / args.iters)
    print(f"\nKMeans Lloyd, {kind}, k={args.clusters}: one more iteration (fits of "
          f"{args.iters + 1} against 1 iteration, tol=0, same init), {args.repeats} rounds")
    print(f"{'system':<22} {'ms/iter median':>15} {'min':>8} {'max':>8}")
    spi = {}
    for name, xs in per.items():
        spi[name] = compare.median(xs)
        print(f"{name:<22} {spi[name] * 1e3:15.1f} {min(xs) * 1e3:8.1f} {max(xs) * 1e3:8.1f}")
    ratios(spi, (("dmlkit-threads", "sklearn"), ("dmlkit-threads", "sklearnex"),
                 ("dmlkit-localcluster", "sklearn"), ("dmlkit-localcluster", "sklearnex"),
                 ("dmlkit-localcluster", "dmlkit-threads"), ("dask-ml", "dmlkit-localcluster")))
    return 0


def ratios(spi, pairs):
    """The ratio lines of seconds per iteration ``spi`` for ``pairs``, and the load."""
    print()
    for a, b in pairs:
        compare.ratio_line(a, b, spi, "s/iter")
    print(f"load average at the end: {compare.load_average()}")


def report(args, kind, results, inertias, table):
    ref_name = "sklearn" if "sklearn" in inertias else next(iter(inertias))
    spi = {}
    desc = {s: table[s].description for s in results}
    if args.sparse:
        desc = {s: d.replace("numpy", "scipy CSR").replace("dask", "CSR blocks")
                for s, d in desc.items()}
    w = max(24, *map(len, desc.values()))
    head = (f"{'system':<20} {'input':<{w}} {'n_iter':>6} {'s/iter':>8} {'min':>8} {'max':>8} "
            f"{'fit s':>7} {'peak RSS':>9} {'+RSS':>7} {'other':>6}  inertia vs {ref_name}")
    print(f"\nKMeans Lloyd, {kind}, k={args.clusters}, max_iter={args.iters}, tol=0, same "
          f"init; median of {args.repeats} interleaved repeats")
    print("(seconds per iteration = fit time / n_iter_; RSS in MiB over this process and its "
          "worker processes; other = cores used by other processes)")
    print(head)
    print("-" * len(head))
    for s, runs in results.items():
        per = [f.seconds / f.info["n_iter"] for f in runs]
        spi[s] = compare.median(per)
        n_iter = sorted({f.info["n_iter"] for f in runs})
        peak = max(f.monitor.peak_mib for f in runs)
        grown = max(f.monitor.grown_mib for f in runs)
        other = sum(f.monitor.other_cpu for f in runs) / len(runs)
        rel = inertias[s] / inertias[ref_name] - 1.0
        print(f"{s:<20} {desc[s]:<{w}} {'/'.join(map(str, n_iter)):>6} "
              f"{spi[s]:8.4f} {min(per):8.4f} {max(per):8.4f} "
              f"{compare.median([f.seconds for f in runs]):7.2f} {peak:9.0f} {grown:7.0f} "
              f"{other:6.2f}  {rel:+.2e}")
    ratios(spi, (("dmlkit-localcluster", "sklearn"), ("dask-ml", "dmlkit-localcluster"),
                 ("dmlkit-threads", "sklearn"), ("dmlkit-threads", "sklearnex"),
                 ("dmlkit-localcluster", "sklearnex"), ("dask-ml-threads", "dmlkit-threads")))


if __name__ == "__main__":
    sys.exit(main())
