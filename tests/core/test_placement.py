"""Fits run wherever a dask task can run: inside ``client.submit``, joblib's dask backend,
scikit-learn's and dask-ml's searches, on workers with one and with two threads.

Before the placement rule (dmlkit/_core/client.py), each of these hung: the fit ran in a
worker thread and waited on ``client.gather`` for tasks that needed that thread.  Every
test here has a timeout, so a regression fails instead of hanging the suite.
"""

import dask
import dask.array as da
import dask.dataframe as dd
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV

import dmlkit
from dmlkit.datasets import make_ratings

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def cluster_client(request):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=request.param, processes=True,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        with client.as_current():
            yield client


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 5))
    X[:1500] += 3
    y = (X[:, 0] + 0.3 * rng.standard_normal(3000) > 1.5).astype(np.int64)
    return X, y


def _kmeans():
    return dmlkit.KMeans(3, random_state=0, n_init=1)


def _sgd(**kw):
    return dmlkit.SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0, **kw)


def _fit(est, X, y=None):
    return est.fit(X) if y is None else est.fit(X, y)


def test_fit_inside_client_submit_in_memory_solves_in_the_task(cluster_client, data):
    X, y = data
    here = _kmeans().fit(X)
    km = cluster_client.submit(_fit, _kmeans(), X).result()
    np.testing.assert_array_equal(km.cluster_centers_, here.cluster_centers_)
    sgd = cluster_client.submit(_fit, _sgd(), X, y).result()
    np.testing.assert_array_equal(sgd.coef_, _sgd().fit(X, y).coef_)
    # predict and score inside tasks too
    labels = cluster_client.submit(lambda m, X: m.predict(X), km, X).result()
    np.testing.assert_array_equal(labels, here.labels_)
    assert cluster_client.submit(lambda m, X, y: m.score(X, y), sgd, X, y).result() > 0.8


def _fit_lazy(est, X, y=None):
    # dask collections built inside the task: the fit runs on the cluster from the task
    Xd = da.from_array(X, chunks=(700, -1))
    est = est.fit(Xd) if y is None else est.fit(Xd, da.from_array(y, chunks=700))
    return est, est.predict(Xd[:10]).compute()


def test_fit_on_dask_input_inside_a_task_uses_the_cluster(cluster_client, data):
    X, y = data
    from distributed import get_task_stream

    with get_task_stream(client=cluster_client) as ts:
        km, labels = cluster_client.submit(_fit_lazy, _kmeans(), X).result()
    assert any(str(t["key"]).startswith("dmlkit-kmeans-lloyd") for t in ts.data)
    ref = _kmeans().fit(da.from_array(X, chunks=(700, -1)))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(labels, ref.labels_[:10].compute())
    with get_task_stream(client=cluster_client) as ts:
        sgd, _ = cluster_client.submit(_fit_lazy, _sgd(), X, y).result()
    ref = _sgd().fit(da.from_array(X, chunks=(700, -1)), da.from_array(y, chunks=700))
    np.testing.assert_array_equal(sgd.coef_, ref.coef_)
    # the epochs' block tasks were the cluster's tasks, not a local scheduler's
    epochs = [t for t in ts.data if str(t["key"]).startswith("dmlkit-sgd-epoch")]
    # 5 epochs of 5 blocks: a task per block, or per worker thread over its blocks
    assert len(epochs) >= 5 * 2, len(epochs)


def test_many_concurrent_fits_in_tasks(cluster_client, data):
    # more fits than worker threads: each holds its thread while it solves
    X, y = data
    futs = [cluster_client.submit(_fit, _sgd(alpha=a), X, y, pure=False)
            for a in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)]
    coefs = [f.result().coef_ for f in futs]
    np.testing.assert_array_equal(coefs[1], _sgd(alpha=1e-4).fit(X, y).coef_)


def test_sklearn_grid_search_under_joblib_dask_backend(cluster_client, data):
    X, y = data
    grid = {"alpha": [1e-4, 1e-2]}
    with joblib.parallel_backend("dask"):
        gs = GridSearchCV(_sgd(), grid, cv=3).fit(X, y)
    ref = GridSearchCV(_sgd(), grid, cv=3).fit(X, y)
    assert gs.best_params_ == ref.best_params_
    np.testing.assert_array_equal(gs.cv_results_["mean_test_score"],
                                  ref.cv_results_["mean_test_score"])
    with joblib.parallel_backend("dask"):
        km = GridSearchCV(_kmeans(), {"n_clusters": [2, 3]}, cv=2).fit(X)
    assert km.best_params_ in ({"n_clusters": 2}, {"n_clusters": 3})


def test_dask_ml_grid_search(cluster_client, data):
    dms = pytest.importorskip("dask_ml.model_selection")
    X, y = data
    gs = dms.GridSearchCV(_sgd(), {"alpha": [1e-4, 1e-2]}, cv=3).fit(X, y)
    ref = GridSearchCV(_sgd(), {"alpha": [1e-4, 1e-2]}, cv=3).fit(X, y)
    # the same fold models; dask-ml averages the fold scores in another order
    np.testing.assert_allclose(gs.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], rtol=1e-12)
    km = dms.GridSearchCV(_kmeans(), {"n_clusters": [2, 3, 4]}, cv=2).fit(X)
    assert km.best_estimator_.cluster_centers_.shape[1] == 5


def _fit_als(ratings, lazy):
    als = dmlkit.ALS(factors=4, iterations=3, random_state=0)
    if lazy:
        ratings = dd.from_pandas(ratings, npartitions=3)
    als.fit(ratings)
    return als.user_factors_, als.recommend(als.user_ids_[:2], n=3)


@pytest.mark.parametrize("lazy", [False, True], ids=["pandas", "dask"])
def test_als_inside_a_task(cluster_client, lazy):
    ratings = make_ratings(200, 50, 3000, rank=3, random_state=0, npartitions=1).compute()
    X, recs = cluster_client.submit(_fit_als, ratings, lazy, pure=False).result()
    with dmlkit.config_context(local_fit_bytes=0):
        X_here, recs_here = _fit_als(ratings, lazy)
    np.testing.assert_array_equal(X, X_here)
    pd.testing.assert_frame_equal(recs, recs_here)


def _als_served_in_task(ratings, driver_state_bytes):
    with dmlkit.config_context(driver_state_bytes=driver_state_bytes, local_fit_bytes=0):
        model = dmlkit.ALS(factors=4, iterations=2, random_state=0).fit(ratings)
        return (isinstance(model.user_factors_, da.Array), model.recommend([1, 2, 3], n=3),
                model.predict(ratings.head(50)), model.similar_items([1, 2], n=2))


def test_als_with_factors_on_the_cluster_serves_inside_a_task(cluster_client):
    """A model keeping its factors on the cluster counts as dask input itself: fitted
    and served inside ``client.submit``, its methods run on that cluster (they raised
    "use it with that cluster's Client active" before), with the client path's answers."""
    ratings = make_ratings(500, 100, 5000, npartitions=3, random_state=0)
    here = cluster_client.submit(_als_served_in_task, ratings, "256MiB").result()
    there = cluster_client.submit(_als_served_in_task, ratings, 0).result()
    assert not here[0] and there[0]
    pd.testing.assert_frame_equal(here[1], there[1])
    np.testing.assert_array_equal(here[2], there[2])
    pd.testing.assert_frame_equal(here[3], there[3])


def _block_sums(x, w, offset, y, i, scale, n_threads=1):
    """A block's weighted sums, its index and its first row's global index."""
    return np.array([float((np.asarray(x).sum(axis=1) * np.asarray(w) * np.asarray(y)).sum())
                     * scale, i, offset])


def _concat(*parts):
    return np.concatenate(parts)


def test_blocks_are_colocated_and_a_pass_is_one_task_per_worker_thread(with_client):
    """y and the weights are held where their X block is (no transfer in a pass), and a
    pass over more blocks than threads runs one task per worker thread over the blocks
    there: the same block results, in block order, as one task per block."""
    from distributed import get_task_stream

    from dmlkit._core.blocks import to_row_blocks
    from dmlkit._core.driver import Driver, _block_futures

    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(1200, 3)), rng.normal(size=1200), rng.uniform(size=1200)
    blocks = to_row_blocks(da.from_array(X, chunks=(100, 3)), y=da.from_array(y, chunks=100),
                           sample_weight=da.from_array(w, chunks=100))
    d = Driver("test", blocks, cache=True, local=False)
    where = with_client.who_has([f for a in (d.X, d.y, d.sample_weight)
                                 for f in _block_futures(a)])
    held = [[where[f.key] for f in _block_futures(a)] for a in (d.X, d.y, d.sample_weight)]
    assert held[0] == held[1] == held[2]
    groups = d._groups()
    assert sorted(i for g in groups for i in g) == list(range(12)) and len(groups) == 2
    with get_task_stream(client=with_client) as ts:
        got = d.map_reduce(_block_sums, _concat, 2.0, step="sums", with_y=True,
                           with_index=True)
    assert len([t for t in ts.data if "dmlkit-test-sums" in str(t["key"])]) == 2
    # large state (a Delayed key) goes through a graph of the same groups
    keyed = d.map_reduce(_block_sums, _concat, dask.delayed(2.0), step="sums", with_y=True,
                         with_index=True)
    d._groups = lambda: None  # one task per block
    want = d.map_reduce(_block_sums, _concat, 2.0, step="sums", with_y=True, with_index=True)
    assert got.tobytes() == want.tobytes() == keyed.tobytes()
    assert list(got[1::3]) == list(range(12)) and list(got[2::3]) == list(range(0, 1200, 100))
