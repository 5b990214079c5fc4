"""What checkpointing every iteration costs: the same fit with and without ``checkpoint=``.

    .venv/bin/python asv_bench/checkpoint_overhead.py --repeats 7 --cluster  # README table
    .venv/bin/python asv_bench/checkpoint_overhead.py --rows 20000 --repeats 1 --cluster

KMeans (blobs, 16 clusters, 10 Lloyd iterations) and SGDClassifier (``log_loss``, 5
epochs) on ``--rows`` rows, on local threads and, with ``--cluster``, on a LocalCluster
of 2 single-thread workers (the runners ``dmlkit-threads`` and ``dmlkit-localcluster``
of ``dmlkit_bench.runners``), each fit alternately without and with
``checkpoint=<fresh folder>``; the method and the output are described in
``asv_bench/README.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings

from dmlkit_bench import data
from dmlkit_bench.cluster import DaskCluster
from dmlkit_bench.runners import kmeans, sgd


def kmeans_case(args):
    d = data.blobs(args.rows, 32, 16, 0)
    init = data.initial_centers(d.train()[0], 16, 0)
    return (f"KMeans, {args.rows:,} x 32 float32, 10 iterations", d, kmeans.SYSTEMS,
            kmeans.KMeansSettings(init, 10))


def sgd_case(args):
    d = data.classification(args.rows, 50, min(200_000, args.rows // 4), block_rows=None)
    return (f"SGDClassifier, {args.rows:,} x 50 float64, 5 epochs", d, sgd.SYSTEMS,
            sgd.SGDSettings(5))


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


def measure(runner, repeats):
    """Median fit time without and with a checkpoint every iteration (alternated), the
    median share of the checkpoint code, and the last model."""
    times = {"none": [], "every": []}
    shares = []
    runner.fit()  # warm-up: kernels compiled and loaded
    for r in range(repeats):
        for variant in (("none", "every") if r % 2 == 0 else ("every", "none")):
            folder = tempfile.mkdtemp(prefix="dmlkit-ckpt-")
            try:
                _SPENT[0] = 0.0
                t0 = time.perf_counter()
                est = runner.fit(checkpoint=folder if variant == "every" else None)
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
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of both data sets")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import dask

    dask.config.set({"dmlkit.local-fit-bytes": 0})
    instrument()
    cases = {"kmeans": kmeans_case, "sgd": sgd_case}
    rows = []
    cluster = DaskCluster() if args.cluster else None
    try:
        for name in args.cases.split(","):
            title, d, systems, settings = cases[name](args)
            places = [("local threads", "dmlkit-threads")]
            if args.cluster:
                # persisted once on the workers, in the blocks dmlkit picks for numpy
                places.append(("LocalCluster 2 x 1", "dmlkit-localcluster"))
            for place, system in places:
                with systems[system](settings, cluster) as runner:
                    runner.prepare(d)
                    med, est = measure(runner, args.repeats)
                ratio = med["every"] / med["none"]
                rows.append((title, place, med["none"], med["every"], ratio, med["share"]))
                print(f"{title}, {place}: {med['none']:.3f} s without, {med['every']:.3f} s "
                      f"with a checkpoint every iteration: {ratio:.3f}x; checkpoint code "
                      f"{100 * med['share']:.2f}% of the fit ({est.n_iter_} iterations)",
                      flush=True)
            d.release()
    finally:
        if cluster is not None:
            cluster.close()
    print("\n| fit | where | without | checkpoint every iteration | ratio | time in "
          "checkpoint code |\n|---|---|---|---|---|---|")
    for title, place, a, b, r, share in rows:
        print(f"| {title} | {place} | {a:.2f} s | {b:.2f} s | {r:.3f}x | {100 * share:.2f}% |")


if __name__ == "__main__":
    main()
