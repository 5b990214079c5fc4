"""SGD logistic regression: dmlkit (threads and LocalCluster) against scikit-learn and dask-ml.

Two problems, both binary, ``log_loss``, ``DMLKIT_BENCH_EPOCHS`` (5) epochs, ``tol=None``,
``random_state=0`` (dask-ml's LogisticRegression runs to its own convergence); the
systems are the runners of ``dmlkit_bench.runners.sgd``:

- **dense** (:class:`SGDDense`): the data of ``asv_bench/compare_sgd.py``, scikit-learn's
  ``make_classification`` (2,000,000 training + 200,000 test rows, 50 float64 features,
  standardised).  Systems: ``sklearn``, ``dmlkit-threads`` (numpy input, no client),
  ``dmlkit-localcluster`` (``LocalCluster`` of 2 workers x 1 thread, the training data
  persisted on it in setup as a dask array of 250,000-row blocks), ``dask-ml-incremental``
  (``Incremental(SGDClassifier(loss='log_loss'))``, one ``partial_fit`` per epoch on the
  same persisted array), ``dask-ml-logreg`` (``dask_ml.linear_model.LogisticRegression``).
- **hashed text** (:class:`SGDText`): a synthetic bag-of-words corpus (200,000 training +
  50,000 test documents of ~40 Zipf-distributed tokens with class-dependent
  frequencies), hashed by ``HashingVectorizer(n_features=2**18, alternate_sign=False,
  norm='l2')`` into scipy CSR.  The same systems but dask-ml's LogisticRegression; the
  cluster systems get a dask array of 50,000-row CSR blocks.

Benchmarks per system:

- ``time_fit``: wall time of one fit.
- ``track_test_accuracy``: accuracy on the held-out rows.  The "time to reach
  scikit-learn's test accuracy" is read from ``time_fit`` of a system whose accuracy is
  at least scikit-learn's minus 0.005.
- ``track_peak_memory``: peak RSS (MiB) of the process tree (this process and the dask
  worker processes) during a fit, the input data held in memory included.
- ``track_time_ratio_vs_sklearn`` (:class:`SGDDenseRatio`, :class:`SGDTextRatio`): the
  system's fit time over scikit-learn's, both measured in the same process, one after
  the other.
"""

import sys

from dmlkit_bench import data, text
from dmlkit_bench.monitor import ResourceMonitor
from dmlkit_bench.runners import sgd
from dmlkit_bench.settings import (
    ACCURACY_TOLERANCE,
    N_ROWS,
    SGD_BLOCK_ROWS,
    SGD_EPOCHS,
    SGD_FEATURES,
    SGD_TEST_ROWS,
    TEXT_BLOCK_ROWS,
    TEXT_DOCS,
    TEXT_TEST_DOCS,
    Benchmark,
)


class _SGDBase(Benchmark):
    """One system's runner per benchmark process, prepared on the subclass's ``_data``."""

    timeout = 1200  # dask-ml's LogisticRegression on 2,000,000 rows is slow

    def _runner(self, system, d):
        runner = sgd.sgd_runner(system, sgd.SGDSettings(SGD_EPOCHS))
        try:
            runner.prepare(d)
        except BaseException:
            runner.close()
            raise
        return runner

    def setup(self, cached, system):
        self.data = self._data(cached)
        self.runner = self._runner(system, self.data)

    def teardown(self, cached, system):
        self.close_all("runner")


class _SGDFit(_SGDBase):
    def time_fit(self, cached, system):
        self.runner.fit()

    def track_test_accuracy(self, cached, system):
        return sgd.test_accuracy(self.runner.fit(), self.data)

    track_test_accuracy.unit = "accuracy"

    def track_peak_memory(self, cached, system):
        with ResourceMonitor() as mon:
            self.runner.fit()
        return mon.peak_mib

    track_peak_memory.unit = "MiB"


class _SGDRatio(_SGDBase):
    """The system and scikit-learn fitted in one process (scikit-learn first); the
    in-memory training data is loaded once for both."""

    def setup(self, cached, system):
        self.data = self._data(cached)
        self.sklearn = self._runner("sklearn", self.data)
        try:
            self.runner = self._runner(system, self.data)
        except BaseException:
            self.close_all("sklearn")
            raise

    def teardown(self, cached, system):
        self.close_all("runner", "sklearn")

    def track_time_ratio_vs_sklearn(self, cached, system):
        t0 = self.timer()
        ref = self.sklearn.fit()
        t1 = self.timer()
        model = self.runner.fit()
        t2 = self.timer()
        acc_ref = sgd.test_accuracy(ref, self.data)
        acc = sgd.test_accuracy(model, self.data)
        reached = "reaches" if acc >= acc_ref - ACCURACY_TOLERANCE else "does NOT reach"
        print(f"{system}: {t2 - t1:.3g}s accuracy {acc:.4f}; sklearn {t1 - t0:.3g}s accuracy "
              f"{acc_ref:.4f}: {reached} sklearn's accuracy - {ACCURACY_TOLERANCE}",
              file=sys.stderr)
        return (t2 - t1) / (t1 - t0)

    track_time_ratio_vs_sklearn.unit = "ratio"


class _Dense:
    params = (list(sgd.SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        return data.make_classification_files(N_ROWS, SGD_FEATURES, SGD_TEST_ROWS)

    def _data(self, cached):
        return data.ClassificationData(cached, SGD_BLOCK_ROWS)


class _Text:
    params = (list(sgd.SPARSE_SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        return text.make_text_file(TEXT_DOCS, TEXT_TEST_DOCS)

    def _data(self, cached):
        return text.TextData(cached, TEXT_BLOCK_ROWS)


class SGDDense(_Dense, _SGDFit):
    """Dense make_classification: fit time, test accuracy, peak memory."""


class SGDDenseRatio(_Dense, _SGDRatio):
    """Dense make_classification: fit time over scikit-learn's, in one process."""

    params = ([s for s in sgd.SYSTEMS if s != "sklearn"],)


class SGDText(_Text, _SGDFit):
    """Hashed text (CSR): fit time, test accuracy, peak memory."""


class SGDTextRatio(_Text, _SGDRatio):
    """Hashed text (CSR): fit time over scikit-learn's, in one process."""

    params = ([s for s in sgd.SPARSE_SYSTEMS if s != "sklearn"],)
