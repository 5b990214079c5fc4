"""One fit per family for the fault tests (resume, chaos): its data, estimator and model.

The data is generated inside the dask graph from streams keyed by the block index, so
the same data, with the same dask names, comes back in any process (a resumed fit's
fingerprint matches) and a lost block comes back from lineage as the same bytes.  Each
fit runs every iteration (no early convergence), so a fault "mid-fit" is mid-fit.

``python -m tests._families FAMILY ADDRESS CHECKPOINT`` runs the fit in a child process
on the scheduler at ADDRESS (the client-loss test SIGKILLs that process).
"""

from __future__ import annotations

import functools
import json
import sys

import numpy as np

from tests._cluster_procs import blobs, labelled_blobs

FAMILIES = ("kmeans", "sgd", "als")
# ALS with its factors kept on the cluster (dmlkit.driver-state-bytes 0), every side
# routed to the blocks that rate it: the same data, estimator and model as "als"
CLUSTER_STATE = "als-cluster"


def data(family):
    """The fit's arguments (a tuple)."""
    if family == "kmeans":
        return (blobs(n_samples=200_000, n_features=16, n_blocks=8),)
    if family == "sgd":
        return labelled_blobs(n_samples=200_000, n_features=16, n_blocks=8)
    if family in ("als", CLUSTER_STATE):
        from dmlkit.datasets import make_ratings

        return (make_ratings(3000, 400, 120_000, rank=8, noise=0.3, npartitions=6,
                             random_state=7),)
    raise ValueError(family)


def estimator(family, **kw):
    if family == "kmeans":
        from dmlkit import KMeans

        return KMeans(**{**dict(n_clusters=8, random_state=0, max_iter=30, tol=0), **kw})
    if family == "sgd":
        from dmlkit import SGDClassifier

        return SGDClassifier(**{**dict(loss="log_loss", max_iter=30, tol=None,
                                       random_state=0), **kw})
    if family in ("als", CLUSTER_STATE):
        from dmlkit import ALS

        return ALS(**{**dict(factors=8, iterations=20, random_state=0), **kw})
    raise ValueError(family)


def model(est):
    """The fitted model as a dict of arrays and numbers (compared bit for bit)."""
    names = {"KMeans": ("cluster_centers_", "inertia_", "n_iter_"),
             "SGDClassifier": ("coef_", "intercept_", "t_", "n_iter_"),
             "ALS": ("user_factors_", "item_factors_", "user_ids_", "item_ids_", "n_iter_")}
    return {n: _here(getattr(est, n)) for n in names[type(est).__name__]}


def _here(value):
    """A value in this process: factors kept on the cluster are gathered from it."""
    if isinstance(value, np.ndarray) or not hasattr(value, "__dask_graph__"):
        return value
    from distributed import futures_of

    return futures_of(value)[0].client.compute(value).result()


def max_iter(family):
    est = estimator(family)
    return est.iterations if family in ("als", CLUSTER_STATE) else est.max_iter


def assert_same_model(a, b):
    ma, mb = model(a), model(b)
    for name in ma:
        np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)


def fit(family, client=None, **kw):
    """Fit the family's estimator on its data, on ``client`` when given."""
    est = estimator(family, **kw)
    if client is None:
        return est.fit(*data(family))
    with client.as_current(), _cluster_state(family):
        return est.fit(*data(family))


def _cluster_state(family):
    import contextlib

    import dmlkit
    from dmlkit.recommendation import _als

    if family != CLUSTER_STATE:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(dmlkit.config_context(driver_state_bytes=0, local_fit_bytes=0))
    saved = _als.WHOLE_SIDE_BYTES
    _als.WHOLE_SIDE_BYTES = 0
    stack.callback(setattr, _als, "WHOLE_SIDE_BYTES", saved)
    return stack


@functools.cache
def reference(family):
    """The fault-free fit of ``family`` on local threads (no cluster: the same bits as
    on any), fitted once per process and shared by the fault tests (read only)."""
    if family == CLUSTER_STATE:  # the same model as "als" (threads: no cluster)
        return reference("als")
    return fit(family)


def checkpoint_step(path) -> int:
    """The committed step of the checkpoint at ``path`` (0 if none yet)."""
    try:
        with open(f"{path}/manifest.json") as f:
            return int(json.load(f)["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


if __name__ == "__main__":  # the child process of the client-loss test
    import distributed

    family, address, path = sys.argv[1:4]
    with distributed.Client(address, timeout=60) as c:
        fit(family, c, checkpoint=path)
    print("finished")
