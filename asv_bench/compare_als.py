"""ALS seconds per iteration of dmlkit, implicit and Spark MLlib, measured in one run.

    .venv/bin/python asv_bench/compare_als.py                   # the README's table
    .venv/bin/python asv_bench/compare_als.py --data synthetic,movielens
    .venv/bin/python asv_bench/compare_als.py --ratings 1000000 --users 20000 --items 2000 \\
        --mode explicit
    .venv/bin/python asv_bench/compare_als.py --ratings 20000 --users 1000 --items 300 \\
        --factors 8 --iterations 2 --repeats 1                   # quick check

Options: --data synthetic,movielens  --mode explicit|implicit|both (--implicit)
--ratings --users --items --rank --noise --popularity (make_ratings) --factors
--regularization --alpha --cg-steps --iterations --repeats --systems --seed
--spark-memory --movielens PATH --data-dir --eval-users.  Each system runs in its own
child process.  The systems are the runners of ``dmlkit_bench.runners.als``; the method
and the output are described in ``asv_bench/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from dmlkit_bench import compare, ratings
from dmlkit_bench.monitor import ResourceMonitor
from dmlkit_bench.runners import als
from dmlkit_bench.settings import MOVIELENS, Benchmark

ORDER = ("implicit", "dmlkit-threads", "dmlkit-localcluster", "dmlkit-lc-state", "spark")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="synthetic",
                   help="comma-separated: synthetic, movielens (default synthetic)")
    p.add_argument("--mode", choices=("explicit", "implicit", "both"), default="both")
    p.add_argument("--implicit", action="store_true", help="same as --mode implicit")
    p.add_argument("--ratings", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--rank", type=int, default=ratings.PLANTED_RANK, help="planted rank")
    p.add_argument("--noise", type=float, default=ratings.NOISE)
    p.add_argument("--popularity", type=float, default=ratings.POPULARITY)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--regularization", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--cg-steps", type=int, default=3)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="rounds per system (min kept)")
    p.add_argument("--systems", default=",".join(ORDER),
                   help=f"comma-separated, from {', '.join(ORDER)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spark-memory", default="8g", help="spark.driver.memory")
    p.add_argument("--movielens", default=MOVIELENS, help="MovieLens ratings file")
    p.add_argument("--data-dir", default=None, help="where generated data is cached")
    p.add_argument("--eval-users", type=int, default=ratings.EVAL_USERS)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.implicit:
        args.mode = "implicit"
    args.modes = ["explicit", "implicit"] if args.mode == "both" else [args.mode]
    args.datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    if set(args.datasets) - {"synthetic", "movielens"} or not args.datasets:
        p.error("--data takes synthetic and/or movielens")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(ORDER)
    if unknown:
        p.error(f"unknown system(s) {sorted(unknown)}")
    args.systems = [s for s in ORDER if s in systems]
    if args.iterations < 2 or args.repeats < 1:
        p.error("--iterations must be >= 2 (time per iteration is a difference of two fits) "
                "and --repeats >= 1")
    return args


def datasets(args, announce=False):
    """[(label, {mode: RatingsData})] in the order asked; generates and caches the data."""
    out = []
    for name in args.datasets:
        if name == "synthetic":
            per_mode = {}
            for mode in args.modes:
                t0 = time.perf_counter()
                d = ratings.synthetic_data(mode == "implicit", args.ratings, args.users, args.items,
                                      rank=args.rank, noise=args.noise,
                                      popularity=args.popularity, seed=args.seed)
                if announce:
                    print(f"data ready in {time.perf_counter() - t0:.1f}s: "
                          f"{os.path.basename(d.train_path)}", flush=True)
                per_mode[mode] = d
            out.append((f"synthetic {args.ratings:,} ratings, {args.users:,} users x "
                        f"{args.items:,} items", per_mode))
        else:
            if ratings.movielens_paths(args.movielens, seed=args.seed) is None:
                if announce:
                    print(f"MovieLens skipped: {args.movielens} not found", flush=True)
                continue
            per_mode = {m: ratings.movielens_data(m == "implicit", args.movielens, seed=args.seed)
                        for m in args.modes}
            out.append((f"MovieLens ({os.path.basename(os.path.dirname(args.movielens))})",
                        per_mode))
    return out


# ----------------------------------------------------------------------------------
# child: one system, every data set and mode
# ----------------------------------------------------------------------------------
def run_child(args):
    warnings.simplefilter("ignore")
    settings = als.ALSSettings(args.factors, args.regularization, args.alpha, args.seed,
                               args.cg_steps, args.iterations, args.spark_memory)
    timer = Benchmark.timer
    results = []
    system = args.child
    t0 = time.perf_counter()
    runner = als.als_runner(system, settings)
    print(f"[{system}] started in {time.perf_counter() - t0:.1f}s (not timed)", flush=True)
    try:
        for label, per_mode in datasets(args):
            for mode, data in per_mode.items():
                t0 = time.perf_counter()
                runner.prepare(data)
                print(f"[{system}] {label}, {mode}: prepared and warmed in "
                      f"{time.perf_counter() - t0:.1f}s (not timed)", flush=True)
                rec = {"system": system, "data": label, "mode": mode, "t1": [], "tN": [],
                       "peak": [], "start": [], "other": [], "own": [], "gc": []}
                gc_seconds = getattr(runner, "gc_seconds", None)  # Spark's JVM
                model = None
                for r in range(args.repeats):
                    model = None
                    gc.collect()
                    t = timer()
                    runner.fit(1)
                    t1 = timer() - t
                    gc.collect()
                    gc0 = gc_seconds() if gc_seconds else None
                    with ResourceMonitor() as mon:
                        t = timer()
                        model = runner.fit(args.iterations)
                        tn = timer() - t
                    jvm_gc = gc_seconds() - gc0 if gc_seconds else None
                    rec["gc"].append(jvm_gc)
                    rec["t1"].append(t1)
                    rec["tN"].append(tn)
                    rec["peak"].append(mon.peak)
                    rec["start"].append(mon.start)
                    rec["other"].append(mon.other_cpu)
                    rec["own"].append(mon.own_cpu)
                    print(f"[{system}] {mode} round {r + 1}: fit(1) {t1:8.3f}s  "
                          f"fit({args.iterations}) {tn:8.3f}s  -> "
                          f"{(tn - t1) / (args.iterations - 1):7.3f} s/iteration  peak RSS "
                          f"{mon.peak / 2**20:6.0f} MiB (+{(mon.peak - mon.start) / 2**20:.0f})"
                          f"  other CPU {mon.other_cpu:.2f}  own CPU {mon.own_cpu:.2f}"
                          + ("" if jvm_gc is None else f"  JVM GC {jvm_gc:.2f}s"),
                          flush=True)
                U, V = runner.factors(model)
                if mode == "explicit" and system == "implicit":
                    rec["quality"] = None  # another objective: no RMSE to compare
                elif data.implicit:
                    rec["quality"] = ["p@10", ratings.precision_at_10(data, U, V, args.eval_users,
                                                                 seed=args.seed)]
                else:
                    rec["quality"] = ["rmse", ratings.heldout_rmse(data, U, V)]
                rec["describe"] = data.describe()
                rec["baseline"] = baseline(data, args)
                results.append(rec)
                del model, U, V
                runner.release()
                data.release()
    finally:
        runner.close()
    with open(args.out, "w") as f:
        json.dump(results, f)


def baseline(data, args):
    """Quality of a model without factors: the training mean (RMSE) or the most popular
    unseen items (precision@10)."""
    n_u, n_i = len(data.user_ids), len(data.item_ids)
    if data.implicit:
        counts = np.bincount(data.codes()[3], minlength=n_i).astype(np.float32)
        return ["p@10", ratings.precision_at_10(data, np.ones((n_u, 1), np.float32),
                                           counts[:, None], args.eval_users, seed=args.seed)]
    mean = float(data.train["rating"].mean())
    return ["rmse", ratings.heldout_rmse(data, np.ones((n_u, 1), np.float32),
                                    np.full((n_i, 1), mean, np.float32))]


# ----------------------------------------------------------------------------------
# parent: data, one child per system, the report
# ----------------------------------------------------------------------------------
def child_argv(args, system, out):
    return [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--child", system,
            "--out", out]


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        os.environ["DMLKIT_BENCH_DATA"] = args.data_dir
    if args.child:
        run_child(args)
        return
    compare.print_versions(extra=("implicit", "pyspark"), java=True)
    print(f"\nALS: factors={args.factors} regularization={args.regularization} "
          f"alpha={args.alpha} cg_steps={args.cg_steps} iterations={args.iterations} "
          f"seed={args.seed}; {args.repeats} round(s) per system, min kept\n", flush=True)
    found = datasets(args, announce=True)
    if not found:
        print("no data to run on")
        return
    results = []
    skipped = {}
    for system in args.systems:
        why = als.SYSTEMS[system].missing()
        if why:
            skipped[system] = why
            print(f"\n== {system}: SKIPPED: {why}", flush=True)
            continue
        print(f"\n== {system}", flush=True)
        fd, out = tempfile.mkstemp(suffix=".json", prefix=f"als-{system}-")
        os.close(fd)
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(child_argv(args, system, out))
            if proc.returncode != 0:
                skipped[system] = f"failed (exit status {proc.returncode}; see its output)"
                print(f"== {system}: FAILED with exit status {proc.returncode}", flush=True)
                continue
            with open(out) as f:
                results += json.load(f)
            print(f"== {system}: done in {time.perf_counter() - t0:.0f}s", flush=True)
        finally:
            os.remove(out)
    report(args, results, skipped)


def _fmt(x, spec):
    return "-" if x is None or not np.isfinite(x) else format(x, spec)


def report(args, results, skipped):
    n = args.iterations
    print(f"\n\nALS, factors={args.factors}, regularization={args.regularization}, "
          f"alpha={args.alpha}, {n} iterations; {args.repeats} round(s) per system.")
    print(f"s/iter = (min fit({n}) - min fit(1)) / {n - 1}: one-time setup inside fit "
          "cancels.  fit(N) s: whole fits (min).  Ratios are of s/iter (>1: slower).")
    print("peak RSS: MiB over the system's process tree (data in memory, dask workers, "
          "Spark's JVM); +RSS: peak minus the RSS at the fit's start; other: cores busy "
          "with other processes.")
    print("implicit (explicit mode) = implicit's HKV objective with its Cholesky solver: "
          "a speed reference, no RMSE.  Spark (implicit mode) scales the penalty by counts "
          "and solves rows exactly.")
    groups = {}
    for rec in results:
        groups.setdefault((rec["data"], rec["mode"]), []).append(rec)
    for (label, mode), recs in groups.items():
        spi = {}
        for rec in recs:
            spi[rec["system"]] = (min(rec["tN"]) - min(rec["t1"])) / (n - 1)
        ref_i, ref_s = spi.get("implicit"), spi.get("spark")
        print(f"\n{label} -- {mode} feedback")
        print(f"  {recs[0]['describe']}")
        qname = "test RMSE" if mode == "explicit" else "precision@10"
        head = (f"  {'system':<22} {'s/iter':>8} {'range':>15} {'/implicit':>9} {'/Spark':>7} "
                f"{'fit(1) s':>9} {f'fit({n}) s':>9} {'peak RSS':>9} {'+RSS':>7} "
                f"{'other':>6}  {qname}")
        print(head)
        print("  " + "-" * (len(head) - 2))
        for rec in recs:
            s = rec["system"]
            per = [(tn - t1) / (n - 1) for t1, tn in zip(rec["t1"], rec["tN"], strict=True)]
            name = s + (" (cholesky)" if s == "implicit" and mode == "explicit" else "")
            q = rec["quality"]
            grown = max(p - s0 for p, s0 in zip(rec["peak"], rec["start"], strict=True))
            print(f"  {name:<22} {spi[s]:8.3f} {f'{min(per):.3f}..{max(per):.3f}':>15} "
                  f"{_fmt(spi[s] / ref_i if ref_i else None, '9.2f'):>9} "
                  f"{_fmt(spi[s] / ref_s if ref_s else None, '7.2f'):>7} "
                  f"{min(rec['t1']):9.2f} {min(rec['tN']):9.2f} "
                  f"{max(rec['peak']) / 2**20:9.0f} "
                  f"{grown / 2**20:7.0f} "
                  f"{np.mean(rec['other']):6.2f}  {'n/a' if q is None else f'{q[1]:.4f}'}")
        b = recs[0]["baseline"]
        what = "training mean" if b[0] == "rmse" else "most popular unseen items"
        print(f"  (baseline without factors: {what} {b[1]:.4f})")

        def ratio(a, b_, spi=spi):
            if a in spi and b_ in spi:
                print(f"  {a + ' / ' + b_:<42} {spi[a] / spi[b_]:6.2f}x")

        ratio("dmlkit-threads", "implicit")
        ratio("dmlkit-localcluster", "implicit")
        ratio("dmlkit-lc-state", "dmlkit-localcluster")
        ratio("dmlkit-lc-state", "dmlkit-threads")
        ratio("spark", "dmlkit-threads")
        ratio("spark", "dmlkit-localcluster")
    for s, why in skipped.items():
        print(f"\n{s}: skipped: {why}")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
