"""Run scikit-learn's own test files against dmlkit's estimators.

    python tools/sklearn_parity.py {kmeans,sgd} [--failures PATH] [--json PATH]
                                               [extra pytest args]

The test file of the *installed* scikit-learn is run with pytest (located through
``sklearn.__file__``, never copied into this repository), with dmlkit's estimators
substituted for scikit-learn's by a plugin defined here:

- ``kmeans``: ``sklearn/cluster/tests/test_k_means.py``.  ``sklearn.cluster.KMeans``
  is ``dmlkit.KMeans`` while the test module is imported, so its
  ``from sklearn.cluster import KMeans`` (and the parametrisations built from it) bind
  dmlkit's class; scikit-learn's is put back once collection ends, because dmlkit's
  k-means|| init itself fits scikit-learn's KMeans on its few candidates.
- ``sgd``: ``sklearn/linear_model/tests/test_sgd.py``.  ``sklearn.linear_model
  .SGDClassifier`` / ``SGDRegressor`` are dmlkit's for the whole run: the test file
  looks them up as ``linear_model.SGDClassifier`` when a test runs and subclasses them
  (``_SparseSGDClassifier``...) when it is imported.

The substitution is checked after collection (the run aborts if the test module did
not get dmlkit's classes, so scikit-learn is never measured against itself).

Selection (everything else in the file is deselected and not counted):

- ``kmeans``: tests of the ``KMeans`` estimator only.  Deselected: every
  parametrisation with ``MiniBatchKMeans``, every ``test_minibatch_*`` test, and the
  tests of module-level functions and private helpers: ``test_k_means_function``
  (``k_means``), ``test_kmeans_plusplus_*`` (``kmeans_plusplus``),
  ``test_relocate_empty_clusters``, ``test_euclidean_distance``, ``test_inertia``,
  ``test_is_same_clustering`` (``_k_means_common`` helpers),
  ``test_minibatch_update_consistency`` / ``test_minibatch_reassign``
  (``_labels_inertia``, ``_mini_batch_step``) and ``test_sample_weight_init`` /
  ``test_sample_weight_zero`` (which call the private method
  ``KMeans._init_centroids``).
- ``sgd``: tests of ``SGDClassifier`` and ``SGDRegressor``.  Deselected: every test or
  parametrisation of ``SGDOneClassSVM`` (``test_*oneclass*``, ``test_ocsvm_*``,
  ``test_sgd_one_class_svm_*`` and the ``SGDOneClassSVM`` / ``SparseSGDOneClassSVM``
  parameters), and the five tests of scikit-learn's Cython loss objects
  (``test_loss_hinge``, ``test_gradient_squared_hinge``, ``test_loss_modified_huber``,
  ``test_loss_epsilon_insensitive``, ``test_loss_squared_epsilon_insensitive``: they
  call ``sklearn.linear_model._sgd_fast`` and no estimator).

The float32 parametrisations that scikit-learn's conftest skips unless
``SKLEARN_RUN_FLOAT32_TESTS=1`` are run (the variable is set to 1 unless already set):
dmlkit keeps float32 input float32.

Counting: a test fails when any of its phases (setup, call, teardown) fails or
errors; skipped and xfailed tests (skips and xfails written in scikit-learn's file)
are counted apart.  The pass rate is passed / (selected - skipped - xfailed).

Options: ``--failures PATH`` writes one line per failed test (node id, then the
first line of its error); ``--json PATH`` writes the counts as JSON.  Any other
argument goes to pytest (e.g. ``-k warm_start``, ``--tb=short``, ``-x``).
No network is needed; scikit-learn's network tests are skipped by its conftest.

Runtime on two shared cores: ``sgd`` 1.5-2 min (many 1000-epoch fits of a few rows:
dmlkit's per-epoch scheduling, about 2 ms, is most of it), ``kmeans`` about 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pytest

FAMILIES = {
    "kmeans": "cluster/tests/test_k_means.py",
    "sgd": "linear_model/tests/test_sgd.py",
}

KMEANS_DESELECT = {
    "test_k_means_function", "test_relocate_empty_clusters", "test_euclidean_distance",
    "test_inertia", "test_is_same_clustering", "test_minibatch_update_consistency",
    "test_minibatch_reassign", "test_sample_weight_init", "test_sample_weight_zero",
}
SGD_DESELECT = {
    "test_loss_hinge", "test_gradient_squared_hinge", "test_loss_modified_huber",
    "test_loss_epsilon_insensitive", "test_loss_squared_epsilon_insensitive",
}


def _test_file(family):
    import sklearn

    return Path(sklearn.__file__).parent / FAMILIES[family]


class ParityPlugin:
    """Substitutes dmlkit's estimators, selects the tests and records the outcomes."""

    def __init__(self, family):
        self.family = family
        self.outcomes = {}  # nodeid -> "passed" | "failed" | "skipped" | "xfailed"
        self.errors = {}  # nodeid -> first line of the first error
        self.n_selected = 0
        self._saved = []

    # -- substitution ---------------------------------------------------------------
    def _patch(self, module, name, value):
        self._saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def pytest_configure(self, config):
        import sklearn.cluster
        import sklearn.linear_model

        import dmlkit

        if self.family == "kmeans":
            self._patch(sklearn.cluster, "KMeans", dmlkit.KMeans)
        else:
            self._patch(sklearn.linear_model, "SGDClassifier", dmlkit.SGDClassifier)
            self._patch(sklearn.linear_model, "SGDRegressor", dmlkit.SGDRegressor)

    def pytest_unconfigure(self, config):
        for module, name, value in reversed(self._saved):
            setattr(module, name, value)
        self._saved.clear()

    def _check_substituted(self, items):
        import dmlkit

        modules = {item.module for item in items if hasattr(item, "module")}
        for mod in modules:
            if self.family == "kmeans":
                ok = mod.KMeans is dmlkit.KMeans
            else:
                lm = mod.linear_model
                ok = (lm.SGDClassifier is dmlkit.SGDClassifier
                      and issubclass(mod._SparseSGDRegressor, dmlkit.SGDRegressor))
            if not ok:
                raise pytest.UsageError(f"{mod.__name__} did not get dmlkit's estimators")

    # -- selection ------------------------------------------------------------------
    def _keep(self, item):
        name = item.originalname if hasattr(item, "originalname") else item.name
        params = getattr(getattr(item, "callspec", None), "params", {})
        values = [getattr(v, "__name__", None) for v in params.values()]
        if self.family == "kmeans":
            return not (name in KMEANS_DESELECT or name.startswith(
                ("test_minibatch", "test_kmeans_plusplus")) or "MiniBatchKMeans" in values)
        lowered = name.lower()
        return not (name in SGD_DESELECT or "oneclass" in lowered or "ocsvm" in lowered
                    or "one_class" in lowered
                    or any(v and "OneClassSVM" in v for v in values))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        self._check_substituted(items)
        keep = [it for it in items if self._keep(it)]
        dropped = [it for it in items if not self._keep(it)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        self.n_selected = len(keep)
        if self.family == "kmeans":
            # the test module has bound dmlkit's class; scikit-learn's KMeans is needed
            # back (dmlkit's k-means|| reduces its candidates with it)
            self.pytest_unconfigure(config)

    # -- outcomes -------------------------------------------------------------------
    def pytest_runtest_logreport(self, report):
        nid = report.nodeid
        if report.failed:
            self.outcomes[nid] = "failed"
            if nid not in self.errors:
                self.errors[nid] = _first_error_line(report)
        elif report.skipped and nid not in self.outcomes:
            self.outcomes[nid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        elif report.when == "call" and report.passed and nid not in self.outcomes:
            self.outcomes[nid] = "passed"

    def summary(self):
        counts = {k: 0 for k in ("passed", "failed", "skipped", "xfailed")}
        for outcome in self.outcomes.values():
            counts[outcome] += 1
        counts["selected"] = self.n_selected
        counts["not_run"] = self.n_selected - len(self.outcomes)  # e.g. stopped by -x
        ran = self.n_selected - counts["skipped"] - counts["xfailed"]
        counts["pass_rate"] = counts["passed"] / ran if ran > 0 else 0.0
        return counts


def _first_error_line(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"[{report.when}] " + (lines[0] if lines else "?")


def run(family, pytest_args=(), failures=None, json_path=None):
    """Run one family's scikit-learn test file; returns the counts (a dict)."""
    os.environ.setdefault("SKLEARN_RUN_FLOAT32_TESTS", "1")
    test_file = _test_file(family)
    site = test_file.parents[3]  # the directory that holds the sklearn package
    plugin = ParityPlugin(family)
    args = [str(test_file), "-q", "--tb=no", "-p", "no:cacheprovider",
            "-c", os.devnull, "--rootdir", str(site), "--confcutdir", str(site),
            "-o", "timeout=600", *pytest_args]
    start = time.perf_counter()
    rc = pytest.main(args, plugins=[plugin])
    seconds = time.perf_counter() - start
    counts = dict(plugin.summary(), family=family, seconds=round(seconds, 1),
                  pytest_exit_code=int(rc), test_file=str(test_file))
    if rc not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        counts["pass_rate"] = 0.0  # collection or usage error: nothing trustworthy ran
    print(f"\nscikit-learn parity, {family} ({test_file}):")
    print(f"  selected {counts['selected']}, passed {counts['passed']}, failed "
          f"{counts['failed']}, skipped {counts['skipped']}, xfailed {counts['xfailed']}"
          + (f", not run {counts['not_run']}" if counts["not_run"] else ""))
    print(f"  pass rate {counts['pass_rate']:.3f}  ({seconds:.1f} s)")
    if failures:
        with open(failures, "w") as f:
            for nid in sorted(n for n, o in plugin.outcomes.items() if o == "failed"):
                f.write(f"{nid}\t{plugin.errors.get(nid, '?')}\n")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(counts, f, indent=1)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--failures", help="write the failed tests and their first error "
                                           "line to this file")
    parser.add_argument("--json", dest="json_path", help="write the counts to this file")
    known, rest = parser.parse_known_args(argv)
    counts = run(known.family, rest, known.failures, known.json_path)
    return 0 if counts["pytest_exit_code"] in (0, 1) else counts["pytest_exit_code"]


if __name__ == "__main__":
    sys.exit(main())
