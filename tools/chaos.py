"""Chaos trials per family: SIGKILL a random worker at a random moment of each fit
(sometimes a new worker joins mid-fit) on real ``dask scheduler`` / ``dask worker``
processes on 127.0.0.1, and count the fits that end with the fault-free model.

    python tools/chaos.py --trials 20 [--families kmeans,sgd,als] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask  # noqa: E402

from tests._chaos import run_trials  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--families", default="kmeans,sgd,als")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dask.config.set({"dmlkit.local-fit-bytes": 0})  # every fit on the cluster
    rows = []
    for family in args.families.split(","):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"dmlkit-chaos-{family}-") as tmp:
            out = run_trials(family, args.trials, tmp, seed=args.seed)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(out)
        print(json.dumps(out), flush=True)
    print("\n| family | trials | workers killed mid-fit | of them with a worker joining "
          "mid-fit | identical models |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['trials']} | {r['kills']} | {r['joined_mid_fit']} | "
              f"{r['identical']}/{r['trials']} |")
    return 0 if all(r["identical"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
