"""SGD: a worker SIGKILLed mid-fit does not change the model (real processes).

Same harness as ``test_resilience.py``: a real ``dask scheduler`` and three
``dask worker --no-nanny`` processes on 127.0.0.1 (shared by the module's tests, topped
up to three live workers before each); the data and labels are generated
inside the graph, so lost blocks come back from lineage as the same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests._cluster_procs import FitThread, labelled_blobs, wait_for_passes
from tests.test_resilience import (  # noqa: F401 - the shared fixtures
    _module_proc_cluster,
    shared_proc_cluster,
)

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PARAMS = dict(loss="log_loss", max_iter=12, tol=None, random_state=0)


def _sgd(**kw):
    from dmlkit import SGDClassifier

    return SGDClassifier(**{**PARAMS, **kw})


@pytest.mark.parametrize("cache", ["auto", False], ids=["cached", "streamed"])
def test_worker_killed_mid_sgd_fit_same_model(shared_proc_cluster, cache):  # noqa: F811
    cluster, client = shared_proc_cluster
    X, y = labelled_blobs()
    with client.as_current():
        ref = _sgd(cache=cache).fit(X, y)
    assert ref.n_iter_ == PARAMS["max_iter"]

    fit = FitThread(_sgd(cache=cache), X, client, y=y)
    fit.start()
    try:
        snap = wait_for_passes(client, fit, "epoch", 3)
        victim = max(snap["held"], key=lambda a: (len(snap["unique"][a]), a))
        proc = cluster.process_of(client, victim)
        assert fit.is_alive(), "the fit ended before the kill"
        cluster.kill_worker(proc)
    finally:
        fit.join(timeout=240)
    fit.finish_after_kill(proc, client, n_left=2)
    np.testing.assert_array_equal(fit.est.coef_, ref.coef_)
    np.testing.assert_array_equal(fit.est.intercept_, ref.intercept_)
    assert fit.est.t_ == ref.t_ and fit.est.n_iter_ == ref.n_iter_
    # And it learned something: labels are a linear rule of the features.
    Xs, ys = X[:20_000].compute(), y[:20_000].compute()
    assert fit.est.score(Xs, ys) > 0.9
