"""scikit-learn's own test files, run against dmlkit's estimators (tools/sklearn_parity.py).

Each family's file runs in a subprocess (the harness swaps scikit-learn's classes for
dmlkit's, which must not leak into this session); at least 95% of its selected tests
must pass.  The selection and the counting are described in the harness's docstring.

The harness runs are mostly one busy thread each, so they are all started together, when
the first of their tests runs, and the long ``sgd`` file (many tiny 1000-epoch fits) is
split into ``SHARDS`` interleaved parts (``tests/_parity_shard.py``), each in its own
process: the parts' counts add up to those of one run of the whole file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tools" / "sklearn_parity.py"
MIN_PASS_RATE = 0.95
FAMILIES = ["kmeans", "sgd"]
SHARDS = {"kmeans": 1, "sgd": 2}
TIMEOUT = 1700
COUNTED = ("passed", "failed", "skipped", "xfailed", "selected", "not_run")


def _selected_families(session):
    """The families whose test this session runs (all of them unless deselected)."""
    return {item.callspec.params["family"] for item in session.items
            if getattr(item, "originalname", None) == "test_sklearn_test_file_passes"}


def _start(family, shard, n_shards, folder):
    env = dict(os.environ)
    args = [sys.executable, str(HARNESS), family, "--json", str(folder / "counts.json"),
            "--failures", str(folder / "failures.txt")]
    if n_shards > 1:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["DMLKIT_PARITY_SHARD"] = f"{shard}/{n_shards}"
        args += ["-p", "tests._parity_shard"]
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def harness_runs(request, tmp_path_factory):
    """{family: [(process, folder) per shard]}: every selected family's harness runs, all
    started at once; output goes to files (a full pipe would stall a process that nobody
    reads yet).  Whatever is still running at the end of the module is killed."""
    runs = {}
    try:
        for family in sorted(_selected_families(request.session)):
            n = SHARDS[family]
            runs[family] = []
            for shard in range(n):
                folder = tmp_path_factory.mktemp(f"parity-{family}-{shard}")
                runs[family].append((_start(family, shard, n, folder), folder))
        yield runs
    finally:
        for shards in runs.values():
            for proc, _ in shards:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _result(proc, folder):
    """The counts of one finished harness run (asserting that it finished) and its failed
    tests."""
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    counts_path, failures_path = folder / "counts.json", folder / "failures.txt"
    stdout = (folder / "stdout.txt").read_text(errors="replace")
    stderr = (folder / "stderr.txt").read_text(errors="replace")
    assert counts_path.exists(), f"the harness did not finish:\n{stdout[-3000:]}\n" \
                                 f"{stderr[-3000:]}"
    counts = json.loads(counts_path.read_text())
    assert counts["pytest_exit_code"] in (0, 1), stdout[-3000:]
    failures = failures_path.read_text() if failures_path.exists() else ""
    return counts, failures


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("family", FAMILIES)
def test_sklearn_test_file_passes(family, harness_runs):
    results = [_result(proc, folder) for proc, folder in harness_runs[family]]
    counts = {k: sum(c[k] for c, _ in results) for k in COUNTED}
    failures = "".join(f for _, f in results)
    assert counts["selected"] > 0 and counts["not_run"] == 0
    ran = counts["selected"] - counts["skipped"] - counts["xfailed"]
    pass_rate = counts["passed"] / ran if ran > 0 else 0.0
    assert pass_rate >= MIN_PASS_RATE, (
        f"{family}: {counts['passed']} of {counts['selected']} passed "
        f"({pass_rate:.3f}); failures:\n{failures}")
