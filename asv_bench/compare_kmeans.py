"""Lloyd iterations per second of dmlkit, scikit-learn and dask-ml, measured in one run.

How to run (from the repository root; no Makefile needed)::

    # the full comparison: 2,000,000 x 32 float32, 16 clusters, 10 iterations, 3 repeats
    .venv/bin/python asv_bench/compare_kmeans.py

    # a quick check that everything works
    .venv/bin/python asv_bench/compare_kmeans.py --rows 100000 --repeats 1

    # options: --rows --features --clusters --iters --repeats --systems --seed
    #          --data-dir (cached data; default $TMPDIR/dmlkit-bench)

    # sparse (hashed text): 200,000 documents x 2^16 features, CSR float64, ~38
    # non-zeros a row, 16 clusters, 10 iterations, dmlkit (threads) against scikit-learn
    .venv/bin/python asv_bench/compare_kmeans.py --sparse --repeats 5

Systems (``--systems``, default the first four):

- ``dmlkit-threads``: ``dmlkit.KMeans`` on the numpy array, no client (dask's threaded
  scheduler, 2 threads).
- ``dmlkit-localcluster``: ``dmlkit.KMeans`` on a ``LocalCluster(n_workers=2,
  threads_per_worker=1, processes=True)``, on a dask array persisted there once before
  the timings (what a dask user does), in the blocks dmlkit picks itself for numpy input
  (``dmlkit.block-size``, 128 MiB).
- ``sklearn``: ``sklearn.cluster.KMeans(algorithm="lloyd")`` on the numpy array.
- ``dask-ml``: ``dask_ml.cluster.KMeans`` on the same persisted dask array and cluster.
- ``dask-ml-threads`` (optional): dask-ml on a dask array of the same blocks, no client.

``--sparse``: the hashed bag-of-words corpus of the asv suite (``benchmarks/common.py``,
``make_text_file``: ~40 tokens a document, ``HashingVectorizer(alternate_sign=False,
norm='l2')``) with ``--features`` hashed features (default 2^16 there) and ``--rows``
documents (default 200,000), as one scipy CSR matrix.  Systems (default the first two):
``dmlkit-threads`` (the CSR matrix, no client: dmlkit's CSR row blocks on dask's
threaded scheduler), ``sklearn`` (``KMeans(algorithm="lloyd")``, its sparse Lloyd, on the
same matrix), and ``dmlkit-localcluster`` (a dask array of the same CSR blocks persisted
on a 2-worker LocalCluster).  Initial centres: ``--clusters`` distinct rows, dense.

Every system starts from the same initial centres (16 distinct rows drawn with a fixed
seed) with ``n_init=1, max_iter=--iters, tol=0``, on the same data (Gaussian blobs that
overlap, so nobody converges early; cached as ``.npy``).  The repeats are interleaved
(round r runs every system, in an order rotated by r) and the table reports the median.
Time per iteration = wall time of the whole ``fit`` / the estimator's ``n_iter_`` (so it
includes each system's input checks and final labels/inertia pass, spread over the
iterations).  Peak RSS is sampled every 10 ms over this process and its children (the
worker processes, which hold the persisted data); "+RSS" is the peak minus the RSS when
the fit started.  "other CPU" is the mean number of cores other processes on the machine
used during the fits: above ~0.2 the timings are disturbed.  Inertia is recomputed in
float64 from each system's centres, the same way for all.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmarks import common as bc  # noqa: E402

SPARSE_SYSTEMS = ("dmlkit-threads", "sklearn", "dmlkit-localcluster")
SPARSE_ROWS = 200_000
SPARSE_FEATURES = 2**16
DESCRIPTIONS = {
    "dmlkit-threads": "numpy, threads",
    "dmlkit-localcluster": "persisted dask, 2 procs",
    "sklearn": "numpy, OpenMP",
    "dask-ml": "persisted dask, 2 procs",
    "dask-ml-threads": "dask, threads",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=32)
    p.add_argument("--clusters", type=int, default=16)
    p.add_argument("--iters", type=int, default=10, help="Lloyd iterations (max_iter; tol=0)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median)")
    p.add_argument("--systems", default=",".join(bc.SYSTEMS),
                   help=f"comma-separated, from {', '.join(bc.SYSTEMS + bc.EXTRA_SYSTEMS)}")
    p.add_argument("--seed", type=int, default=bc.SEED)
    p.add_argument("--data-dir", default=None, help="where the generated data is cached")
    p.add_argument("--sparse", action="store_true",
                   help="hashed text (CSR) instead of dense blobs; systems: "
                        f"{', '.join(SPARSE_SYSTEMS)} (default the first two)")
    args = p.parse_args(argv)
    if args.sparse:
        given = set(argv if argv is not None else sys.argv[1:])
        if not any(a.startswith("--rows") for a in given):
            args.rows = SPARSE_ROWS
        if not any(a.startswith("--features") for a in given):
            args.features = SPARSE_FEATURES
        if not any(a.startswith("--systems") for a in given):
            args.systems = ",".join(SPARSE_SYSTEMS[:2])
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    known = SPARSE_SYSTEMS if args.sparse else bc.SYSTEMS + bc.EXTRA_SYSTEMS
    unknown = set(args.systems) - set(known)
    if unknown:
        p.error(f"unknown system(s) {sorted(unknown)}")
    if args.repeats < 1 or args.iters < 1:
        p.error("--repeats and --iters must be >= 1")
    return args


def print_versions():
    import dask
    import dask_ml
    import distributed
    import numba
    import psutil
    import scipy
    import sklearn
    import threadpoolctl

    import dmlkit
    from dmlkit._core.numba_utils import parallel_available

    parallel_available()  # loads numba's threading layer
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none loaded"
    print(f"python {platform.python_version()}  ({platform.platform()})")
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"dmlkit {dmlkit.__version__} | scikit-learn {sklearn.__version__} | dask-ml "
          f"{dask_ml.__version__} | dask {dask.__version__} | distributed "
          f"{distributed.__version__}")
    print(f"numpy {np.__version__} | scipy {scipy.__version__} | numba {numba.__version__} "
          f"(threading layer {layer}) | threadpoolctl {threadpoolctl.__version__}")
    for lib in threadpoolctl.threadpool_info():
        print(f"  {lib['user_api']}: {lib['internal_api']} {lib.get('version')} "
              f"num_threads={lib['num_threads']} ({os.path.basename(lib['filepath'])})")


def timed_rounds(args, fits):
    """Every system's fit ``args.repeats`` times, rotating the order each round; returns
    ({system: [(seconds, n_iter, monitor)]}, {system: its last fitted estimator})."""
    results = {s: [] for s in args.systems}
    last = {}
    print("\nfits (seconds, n_iter, +RSS MiB, other CPU):")
    for r in range(args.repeats):
        order = args.systems[r % len(args.systems):] + args.systems[:r % len(args.systems)]
        for s in order:
            gc.collect()
            with bc.ResourceMonitor() as mon:
                t = bc.Benchmark.timer()
                est = fits[s]()
                dt = bc.Benchmark.timer() - t
            results[s].append((dt, int(est.n_iter_), mon))
            last[s] = est
            print(f"  round {r + 1} {s:<20} {dt:8.3f}s  n_iter={est.n_iter_:<3d} "
                  f"+{(mon.peak - mon.start) / 2**20:7.0f}  {mon.other_cpu:5.2f}",
                  flush=True)
            del est
    return results, last


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        os.environ["DMLKIT_BENCH_DATA"] = args.data_dir
    print_versions()
    if args.sparse:
        return main_sparse(args)

    t0 = time.perf_counter()
    path = bc.make_blobs_file(args.rows, args.features, args.clusters, args.seed)
    X = bc.load_blobs(path)
    init = bc.initial_centers(X, args.clusters, args.seed)
    rows = bc.block_rows(args.features, X.dtype.itemsize)
    print(f"\ndata: {args.rows:,} x {args.features} {X.dtype}, {X.nbytes / 2**20:.0f} MiB, "
          f"{args.clusters} clusters, {args.iters} Lloyd iterations, {args.repeats} repeats "
          f"({path}, ready in {time.perf_counter() - t0:.1f}s)")
    print(f"dask blocks: {rows:,} rows (dmlkit's choice for numpy input), "
          f"{-(-args.rows // rows)} block(s)")

    cluster = None
    try:
        fits = {}
        if any(bc.needs_cluster(s) for s in args.systems):
            t0 = time.perf_counter()
            cluster = bc.DaskCluster(processes=True, n_workers=2, threads_per_worker=1)
            Xd = cluster.persist(bc.dask_blobs(path, rows))
            cluster.warm()
            print(f"LocalCluster(n_workers=2, threads_per_worker=1, processes=True): data "
                  f"persisted, blocks per worker {sorted(cluster.placement(Xd).values())} "
                  f"({time.perf_counter() - t0:.1f}s)")
        bc.warm_kernels()
        for s in args.systems:
            if bc.needs_cluster(s):
                xd = Xd
            elif s == "dask-ml-threads":
                import dask.array as da

                xd = da.from_array(X, chunks=(rows, args.features))
            else:
                xd = None
            bc.warm_fit(s, path, init, cluster)
            fits[s] = bc.kmeans_fitter(s, init, args.iters, X=X, Xd=xd, cluster=cluster)

        results, last = timed_rounds(args, fits)
    finally:
        if cluster is not None:
            cluster.close()

    inertias = {s: bc.inertia(X, last[s].cluster_centers_) for s in args.systems}
    report(args, results, inertias)


# -- sparse (hashed text) ------------------------------------------------------------
SPARSE_DESCRIPTIONS = {
    "dmlkit-threads": "scipy CSR, threads",
    "sklearn": "scipy CSR, OpenMP",
    "dmlkit-localcluster": "persisted CSR blocks, 2 procs",
}


def sparse_fitter(system, init, max_iter, X, Xd=None, cluster=None):
    """One fit of ``system`` from ``init``, exactly ``max_iter`` Lloyd iterations unless
    the centres stop moving (tol=0, n_init=1)."""
    k = init.shape[0]
    kw = dict(n_clusters=k, init=init, n_init=1, max_iter=max_iter, tol=0.0, random_state=0)
    if system == "sklearn":
        from sklearn.cluster import KMeans

        return lambda: KMeans(algorithm="lloyd", **kw).fit(X)
    import dmlkit

    if system == "dmlkit-threads":
        return lambda: dmlkit.KMeans(**kw).fit(X)

    def fit():
        with cluster.as_current():
            return dmlkit.KMeans(**kw).fit(Xd)

    return fit


def sparse_inertia(X, centers, chunk_rows=1 << 15):
    """float64 inertia of CSR X on ``centers``, the same way for every system."""
    C = np.asarray(centers, dtype=np.float64)
    c2 = (C * C).sum(axis=1)
    total = 0.0
    for s in range(0, X.shape[0], chunk_rows):
        x = X[s:s + chunk_rows]
        x2 = np.asarray(x.multiply(x).sum(axis=1)).ravel()
        d2 = x2[:, None] - 2.0 * np.asarray(x @ C.T) + c2[None, :]
        total += float(np.maximum(d2.min(axis=1), 0.0).sum())
    return total


def main_sparse(args):
    import dask.array as da
    import scipy.sparse as sp

    t0 = time.perf_counter()
    path = bc.make_text_file(n_docs=args.rows, n_test=0, n_features=args.features,
                             seed=args.seed)
    X, _ = bc.load_text(path, "train")
    X = X.astype(np.float64).tocsr()
    rng = np.random.default_rng([args.seed, 12345])
    idx = np.sort(rng.choice(X.shape[0], size=args.clusters, replace=False))
    init = np.ascontiguousarray(X[idx].toarray())
    if np.unique(init, axis=0).shape[0] < args.clusters:
        raise SystemExit("the drawn initial centres are not distinct; try another --seed")
    nnz = X.nnz / X.shape[0]
    mib = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    print(f"\ndata: {X.shape[0]:,} documents x {X.shape[1]:,} hashed features, CSR "
          f"{X.dtype}, {nnz:.1f} non-zeros a row, {mib:.0f} MiB, {args.clusters} clusters, "
          f"{args.iters} Lloyd iterations, {args.repeats} repeats ({path}, ready in "
          f"{time.perf_counter() - t0:.1f}s)")
    from dmlkit._core.blocks import from_csr_views

    blocks = from_csr_views(X)
    print(f"dmlkit's blocks for this matrix: {len(blocks.chunks[0])} of "
          f"{blocks.chunks[0][0]:,} rows")

    cluster = Xd = None
    try:
        if "dmlkit-localcluster" in args.systems:
            t0 = time.perf_counter()
            cluster = bc.DaskCluster(processes=True, n_workers=2, threads_per_worker=1)
            Xd = cluster.persist(da.from_array(X, chunks=(blocks.chunks[0][0], X.shape[1]),
                                               asarray=False, fancy=False))
            cluster.warm()
            print(f"LocalCluster(n_workers=2, threads_per_worker=1): CSR blocks persisted "
                  f"({time.perf_counter() - t0:.1f}s)")
        small = X[:4096]
        for s in args.systems:  # warm-up: imports, numba's dispatch, the client's graphs
            sparse_fitter(s, init, 2, small, None if Xd is None else Xd[:4096], cluster)()
        fits = {s: sparse_fitter(s, init, args.iters, X, Xd, cluster) for s in args.systems}
        results, last = timed_rounds(args, fits)
    finally:
        if cluster is not None:
            cluster.close()
    assert sp.issparse(X)
    inertias = {s: sparse_inertia(X, last[s].cluster_centers_) for s in args.systems}
    ref_name = "sklearn" if "sklearn" in inertias else args.systems[0]
    if "sklearn" in last and "dmlkit-threads" in last:
        same = np.mean(np.asarray(last["sklearn"].labels_)
                       == np.asarray(last["dmlkit-threads"].labels_))
        diff = np.abs(last["sklearn"].cluster_centers_
                      - last["dmlkit-threads"].cluster_centers_).max()
        print(f"\ndmlkit-threads against sklearn: {same:.6f} of the labels equal, centres "
              f"within {diff:.2e}")
    spi = {}
    head = (f"{'system':<20} {'input':<30} {'n_iter':>6} {'s/iter':>8} {'min':>8} {'max':>8} "
            f"{'fit s':>7} {'+RSS':>7} {'other':>6}  inertia vs {ref_name}")
    print(f"\nKMeans Lloyd on hashed text, {X.shape[0]:,} x {X.shape[1]:,} CSR, "
          f"k={args.clusters}, max_iter={args.iters}, tol=0, same init; median of "
          f"{args.repeats} interleaved repeats")
    print(head)
    print("-" * len(head))
    for s, runs in results.items():
        per = [dt / n for dt, n, _ in runs]
        spi[s] = statistics.median(per)
        n_iter = sorted({n for _, n, _ in runs})
        extra = max(m.peak - m.start for _, _, m in runs) / 2**20
        other = statistics.mean(m.other_cpu for _, _, m in runs)
        rel = inertias[s] / inertias[ref_name] - 1.0
        print(f"{s:<20} {SPARSE_DESCRIPTIONS[s]:<30} {'/'.join(map(str, n_iter)):>6} "
              f"{spi[s]:8.4f} {min(per):8.4f} {max(per):8.4f} "
              f"{statistics.median(dt for dt, _, _ in runs):7.2f} {extra:7.0f} {other:6.2f}  "
              f"{rel:+.2e}")
    print()
    for a in ("dmlkit-threads", "dmlkit-localcluster"):
        if a in spi and "sklearn" in spi:
            print(f"{a + ' / sklearn':<45} {spi[a] / spi['sklearn']:6.2f}x  "
                  f"(s/iter, >1: {a} slower)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def report(args, results, inertias):
    ref = inertias.get("sklearn", next(iter(inertias.values())))
    ref_name = "sklearn" if "sklearn" in inertias else args.systems[0]
    spi = {}
    head = (f"{'system':<20} {'input':<24} {'n_iter':>6} {'s/iter':>8} {'min':>8} {'max':>8} "
            f"{'fit s':>7} {'peak RSS':>9} {'+RSS':>7} {'other':>6}  inertia vs {ref_name}")
    print(f"\nKMeans Lloyd, {args.rows:,} x {args.features} float32, k={args.clusters}, "
          f"max_iter={args.iters}, tol=0, same init; median of {args.repeats} interleaved "
          "repeats")
    print("(seconds per iteration = fit time / n_iter_; RSS in MiB over this process and its "
          "worker processes; other = cores used by other processes)")
    print(head)
    print("-" * len(head))
    for s, runs in results.items():
        per = [dt / n for dt, n, _ in runs]
        spi[s] = statistics.median(per)
        n_iter = sorted({n for _, n, _ in runs})
        peak = max(m.peak for _, _, m in runs) / 2**20
        extra = max(m.peak - m.start for _, _, m in runs) / 2**20
        other = statistics.mean(m.other_cpu for _, _, m in runs)
        rel = inertias[s] / ref - 1.0
        print(f"{s:<20} {DESCRIPTIONS[s]:<24} {'/'.join(map(str, n_iter)):>6} {spi[s]:8.4f} "
              f"{min(per):8.4f} {max(per):8.4f} {statistics.median(dt for dt, _, _ in runs):7.2f} "
              f"{peak:9.0f} {extra:7.0f} {other:6.2f}  {rel:+.2e}")
    print()

    def ratio(a, b):
        if a in spi and b in spi:
            print(f"{a + ' / ' + b:<45} {spi[a] / spi[b]:6.2f}x  (s/iter, >1: {a} slower)")

    ratio("dmlkit-localcluster", "sklearn")
    ratio("dask-ml", "dmlkit-localcluster")
    ratio("dmlkit-threads", "sklearn")
    ratio("dask-ml-threads", "dmlkit-threads")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
