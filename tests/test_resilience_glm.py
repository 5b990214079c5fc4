"""Full-batch linear models: a worker SIGKILLed mid-fit does not change the model.

Same harness as ``test_resilience.py``: a real ``dask scheduler`` and three
``dask worker --no-nanny`` processes on 127.0.0.1; the data and labels are generated
inside the graph, so lost blocks come back from lineage as the same bytes, and the
fixed reduction tree gives the same sums whoever computes them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests._cluster_procs import FitThread, labelled_blobs, wait_for_passes
from tests.test_resilience import proc_cluster  # noqa: F401 - the shared fixture

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore::dmlkit.exceptions.ConvergenceWarning")]

PARAMS = dict(C=1e-3, tol=0, max_iter=30)


def _logreg(**kw):
    from dmlkit import LogisticRegression

    return LogisticRegression(**{**PARAMS, **kw})


# streamed: each pass re-reads the blocks, so the kill also loses input blocks in flight
# (the cached case is what the SGD and KMeans tests cover for the same driver)
@pytest.mark.parametrize("cache", [False], ids=["streamed"])
def test_worker_killed_mid_logistic_fit_same_model(proc_cluster, cache):  # noqa: F811
    cluster, client = proc_cluster
    X, y = labelled_blobs()
    with client.as_current(), warnings.catch_warnings():
        ref = _logreg(cache=cache).fit(X, y)
    assert ref.n_iter_[0] >= 8, ref.n_iter_  # long enough for a kill mid-fit

    fit = FitThread(_logreg(cache=cache), X, client, y=y)
    fit.start()
    try:
        snap = wait_for_passes(client, fit, "loss", 4)
        victim = max(snap["held"], key=lambda a: (len(snap["unique"][a]), a))
        proc = cluster.process_of(client, victim)
        assert fit.is_alive(), "the fit ended before the kill"
        cluster.kill_worker(proc)
    finally:
        fit.join(timeout=240)
    fit.finish_after_kill(proc, client, n_left=2)
    est = fit.est
    np.testing.assert_array_equal(est.coef_, ref.coef_)
    np.testing.assert_array_equal(est.intercept_, ref.intercept_)
    assert est.n_passes_ == ref.n_passes_ and est.n_iter_[0] == ref.n_iter_[0]
    Xs, ys = X[:20_000].compute(), y[:20_000].compute()
    assert est.score(Xs, ys) > 0.9
