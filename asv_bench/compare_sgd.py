"""SGD logistic regression: dmlkit against scikit-learn and dask-ml, in one run.

    .venv/bin/python asv_bench/compare_sgd.py                      # the README's table
    .venv/bin/python asv_bench/compare_sgd.py --text --rows 1000000  # hashed text (CSR)
    .venv/bin/python asv_bench/compare_sgd.py --rows 20000 --test-rows 5000 \\
        --block-rows 5000 --repeats 1                               # quick check

Options: --rows --test-rows --features --epochs --block-rows --repeats --systems --skip
--seed --data-dir --text.  The systems are the runners of ``dmlkit_bench.runners.sgd``;
the method and the output are described in ``asv_bench/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys

from dmlkit_bench import compare, data, text
from dmlkit_bench.runners import sgd
from dmlkit_bench.settings import ACCURACY_TOLERANCE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000, help="training rows (documents)")
    p.add_argument("--test-rows", type=int, default=None,
                   help="held-out rows; default 200,000 (--text: rows / 4)")
    p.add_argument("--features", type=int, default=50, help="dense features")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--block-rows", type=int, default=250_000,
                   help="rows per dask block of the cluster systems")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved rounds, the fastest fit of each system kept "
                        "(dask-ml's LogisticRegression, which runs minutes, once)")
    p.add_argument("--systems", default=None,
                   help=f"comma-separated, from {', '.join(sgd.SYSTEMS)} (default all; "
                        "--text: all but dask-ml-logreg)")
    p.add_argument("--skip", default="", help="comma-separated systems to skip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="where the generated data is cached")
    p.add_argument("--text", action="store_true", help="sparse hashed text instead")
    args = p.parse_args(argv)
    table = sgd.SPARSE_SYSTEMS if args.text else sgd.SYSTEMS
    names = compare.parse_systems(args.systems or ",".join(table), table)
    skip = set(compare.parse_systems(args.skip, sgd.SYSTEMS))
    args.systems = [s for s in names if s not in skip]
    if args.test_rows is None:
        args.test_rows = args.rows // 4 if args.text else 200_000
    if args.repeats < 1 or args.epochs < 1:
        p.error("--repeats and --epochs must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.data_dir:
        os.environ["DMLKIT_BENCH_DATA"] = args.data_dir
    compare.print_versions()
    if args.text:
        d = text.text(args.rows, args.test_rows, seed=args.seed, block_rows=args.block_rows)
    else:
        d = data.classification(args.rows, args.features, args.test_rows, args.seed,
                                block_rows=args.block_rows)
    print(f"\n{d.describe()}; {args.epochs} epochs of log_loss SGD; dask blocks of "
          f"{args.block_rows:,} rows\n")

    with compare.Comparison(sgd.SYSTEMS, args.systems, sgd.SGDSettings(args.epochs, seed=0), d,
                            info=lambda name, m: {"accuracy": sgd.test_accuracy(m, d)}) as c:
        results, _ = c.rounds(args.repeats, once=("dask-ml-logreg",))
    print(f"\nfastest fit of each system ({args.repeats} interleaved round(s)):")
    times = compare.summary(results, sgd.SYSTEMS, stat="min")
    accs = {n: runs[0].info["accuracy"] for n, runs in results.items()}
    print()
    sk = "sklearn"
    for n in times:
        if n != sk and sk in times:
            reached = "" if accs[n] >= accs[sk] - ACCURACY_TOLERANCE else \
                f"  (does NOT reach sklearn's accuracy - {ACCURACY_TOLERANCE})"
            print(f"{n:<22} / sklearn: {times[n] / times[sk]:.2f}x time, accuracy "
                  f"{accs[n] - accs[sk]:+.4f}{reached}")
    lc = "dmlkit-localcluster"
    for other in ("dask-ml-incremental", "dask-ml-logreg"):
        if other in times and lc in times:
            print(f"{other:<22} / {lc}: {times[other] / times[lc]:.2f}x")
    print(f"load average at the end: {compare.load_average()}")


if __name__ == "__main__":
    sys.exit(main())
