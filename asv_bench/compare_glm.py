"""Full-batch logistic regression to the optimum: dmlkit against scikit-learn's lbfgs,
scikit-learn-intelex, dask-ml and Spark MLlib, in one run.

    .venv/bin/python asv_bench/compare_glm.py                      # 2,000,000 x 50 float64
    .venv/bin/python asv_bench/compare_glm.py --text --rows 1000000  # hashed text (CSR)
    .venv/bin/python asv_bench/compare_glm.py --rows 20000 --repeats 1   # quick check

Every system fits to its own convergence at ``--tol`` (scikit-learn's rule for
scikit-learn, scikit-learn-intelex and dmlkit).  The optimum is scikit-learn's lbfgs at
tol=1e-10 (computed once, untimed); each fit's relative objective gap to it is shown,
so a system that stops early shows it.  Times: the fastest of ``--repeats`` interleaved
rounds (dask-ml, which runs minutes, once).  The systems are ``dmlkit_bench.runners.glm``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from dmlkit_bench import compare, data, text
from dmlkit_bench.runners import glm


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--block-rows", type=int, default=250_000,
                   help="rows per dask block of the cluster systems")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--systems", default=",".join(glm.SYSTEMS))
    p.add_argument("--skip", default="")
    p.add_argument("--data-dir", default=None, help="where the generated data is cached")
    p.add_argument("--spark-memory", default="8g", help="spark.driver.memory (spark)")
    p.add_argument("--text", action="store_true",
                   help="sparse hashed text (CSR; the systems that take it)")
    args = p.parse_args(argv)
    if args.text and args.systems == ",".join(glm.SYSTEMS):
        args.systems = ",".join(glm.SPARSE_SYSTEMS)
    names = compare.parse_systems(args.systems, glm.SYSTEMS)
    skip = set(compare.parse_systems(args.skip, glm.SYSTEMS))
    args.systems = [s for s in names if s not in skip]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        os.environ["DMLKIT_BENCH_DATA"] = args.data_dir
    compare.print_versions(extra=("sklearnex", "pyspark"), java="spark" in args.systems)
    if args.text:
        d = text.text(args.rows, 10_000, block_rows=args.block_rows)
    else:
        d = data.classification(args.rows, args.features, 10_000, block_rows=args.block_rows)
    X, y = d.train()
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = LogisticRegression(C=args.C, tol=1e-10, max_iter=10_000).fit(X, y)
    f_star = glm.objective(best, X, y, args.C)
    print(f"\n{d.describe()}; l2, C={args.C}, tol={args.tol}; optimum {f_star:.12f} "
          f"(sklearn lbfgs, tol=1e-10, untimed); dask blocks of {args.block_rows:,} rows\n")

    def info(name, model):
        gap = (glm.objective(model, X, y, args.C) - f_star) / abs(f_star)
        out = {"gap": f"{gap:.1e}", "n_iter": int(max(getattr(model, "n_iter_", [-1]) or [-1])),
               "passes": getattr(model, "n_passes_", "")}
        if hasattr(model, "jvm_gc_s_"):  # Spark: the JVM's garbage collection in the fit
            out["jvm_gc_s"] = f"{model.jvm_gc_s_:.2f}"
        return out

    settings = glm.GLMSettings(args.C, args.tol, spark_memory=args.spark_memory)
    with compare.Comparison(glm.SYSTEMS, args.systems, settings, d, info=info) as c:
        for name, runner in c.runners.items():
            if runner.uses_cluster:
                print(f"{name}: blocks per worker "
                      f"{sorted(c.cluster.placement(runner.X).values())}")
                break
        results, _ = c.rounds(args.repeats, once=("dask-ml",))
    print(f"\nfastest fit of each system ({args.repeats} interleaved round(s)):")
    times = compare.summary(results, glm.SYSTEMS, stat="min")
    print()
    for ref in ("sklearn", "sklearnex", "dask-ml", "spark"):
        for n in ("dmlkit-threads", "dmlkit-localcluster"):
            if ref in times and n in times:
                print(f"{n:<20} / {ref:<10}: {times[n] / times[ref]:.2f}x time")
    print(f"load average at the end: {compare.load_average()}")


if __name__ == "__main__":
    sys.exit(main())
