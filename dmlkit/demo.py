"""``make demo``: k-means, then an SGD classifier, on data larger than one block, on an
embedded LocalCluster.

Run with ``python -m dmlkit.demo [--rows N] [--features D] [--clusters K]``.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--clusters", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--block-rows", type=int, default=500_000)
    parser.add_argument("--dashboard", action="store_true",
                        help="print the dashboard's address (on 127.0.0.1) and keep the "
                             "cluster open until Enter is pressed")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import dmlkit
    from dmlkit.datasets import make_blobs

    X, true_centers = make_blobs(args.rows, args.features, args.clusters, cluster_std=2.0,
                                 chunks=args.block_rows, random_state=0, dtype="float32")
    n_blocks = len(X.chunks[0])
    print(f"dmlkit {dmlkit.__version__}: KMeans on {args.rows:,} x {args.features} float32 "
          f"({X.nbytes / 2**20:.0f} MiB in {n_blocks} blocks of {args.block_rows:,} rows), "
          f"{args.clusters} clusters")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print(f"LocalCluster of {args.workers} single-thread worker processes on 127.0.0.1")
        if args.dashboard:
            print(f"dashboard: {client.dashboard_link}")
        print("The first run on this machine compiles dmlkit's numba kernels in each worker "
              "(a few seconds); they are cached on disk, and later runs load them in under "
              "a second.")
        t0 = time.perf_counter()
        km = dmlkit.KMeans(args.clusters, random_state=0, verbose=1).fit(X)
        elapsed = time.perf_counter() - t0
        # SGD: which of the true clusters is a point in?  (cluster 0 against the rest)
        y = km.predict(X) == km.predict(true_centers[:1].astype("float32"))[0]
        t1 = time.perf_counter()
        sgd = dmlkit.SGDClassifier(loss="log_loss", max_iter=3, tol=None, random_state=0,
                                   verbose=1).fit(X, y)
        sgd_elapsed = time.perf_counter() - t1
        acc = float((sgd.predict(X[:200_000]) == y[:200_000]).mean().compute())
        if args.dashboard:
            try:
                input("Press Enter to close the cluster and its dashboard. ")
            except (EOFError, OSError):  # no terminal
                pass
    import numpy as np

    d = np.sqrt(((true_centers[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1))
    print(f"iterations: {km.n_iter_}")
    print(f"inertia:    {km.inertia_:.6g}")
    print(f"time:       {elapsed:.2f} s (init + {km.n_iter_} Lloyd passes + final pass)")
    print(f"max distance from a true centre to the nearest found centre: {d.min(1).max():.3f}")
    print(f"SGDClassifier (log_loss, 3 epochs, cluster 0 vs rest): {sgd_elapsed:.2f} s, "
          f"accuracy {acc:.4f} on the first 200,000 rows")
    return km


if __name__ == "__main__":
    main()
