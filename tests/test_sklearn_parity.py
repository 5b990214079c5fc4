"""scikit-learn's own test files, run against dmlkit's estimators (tools/sklearn_parity.py).

Each family's file runs in a subprocess (the harness swaps scikit-learn's classes for
dmlkit's, which must not leak into this session); at least 95% of its selected tests
must pass.  The selection and the counting are described in the harness's docstring.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tools" / "sklearn_parity.py"
MIN_PASS_RATE = 0.95


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("family", ["kmeans", "sgd"])
def test_sklearn_test_file_passes(family, tmp_path):
    counts_path, failures_path = tmp_path / "counts.json", tmp_path / "failures.txt"
    proc = subprocess.run(
        [sys.executable, str(HARNESS), family, "--json", str(counts_path),
         "--failures", str(failures_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1700)
    assert counts_path.exists(), f"the harness did not finish:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    counts = json.loads(counts_path.read_text())
    assert counts["pytest_exit_code"] in (0, 1), proc.stdout[-3000:]
    assert counts["selected"] > 0 and counts["not_run"] == 0
    failures = failures_path.read_text() if failures_path.exists() else ""
    assert counts["pass_rate"] >= MIN_PASS_RATE, (
        f"{family}: {counts['passed']} of {counts['selected']} passed "
        f"({counts['pass_rate']:.3f}); failures:\n{failures}")
