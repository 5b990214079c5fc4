"""Bad input gets a clear error naming the problem, for in-memory and lazy input alike."""

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from dmlkit import KMeans


@pytest.fixture
def X():
    return np.random.default_rng(0).standard_normal((200, 3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("lazy", [False, True])
def test_nan_inf(X, bad, lazy):
    X = X.copy()
    X[57, 1] = bad
    data = da.from_array(X, chunks=50) if lazy else X
    with pytest.raises(ValueError, match="NaN|infinity"):
        KMeans(3, random_state=0).fit(data)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
@pytest.mark.parametrize("backend", ["numba", "xp"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_found_inside_the_fit_passes(X, init, tol, backend, bad):
    # Lazy X is not checked block by block before a fit: the first pass's reduced sums
    # (poisoned by any non-finite value, even with zero weight) raise the same error.
    import dmlkit

    X = X.copy()
    X[123, 2] = bad
    w = np.ones(len(X))
    w[123] = 0.0
    with dmlkit.config_context(backend=backend):
        with pytest.raises(ValueError, match="NaN|infinity"):
            KMeans(3, init=init, tol=tol, random_state=0).fit(
                da.from_array(X, chunks=50), sample_weight=w)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("shape", [(200,), (10, 5, 4)])
def test_wrong_ndim(shape, lazy):
    X = np.ones(shape)
    data = da.from_array(X) if lazy else X
    with pytest.raises(ValueError, match="2D|dim 3"):
        KMeans(2).fit(data)


def test_strings():
    with pytest.raises(ValueError, match="could not convert|string"):
        KMeans(2).fit(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="dtype|numeric"):
        KMeans(2).fit(da.from_array(np.array([["a", "b"], ["c", "d"]])))
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]})
    with pytest.raises(TypeError, match="name"):
        KMeans(2).fit(dd.from_pandas(df, npartitions=1))


@pytest.mark.parametrize("lazy", [False, True])
def test_empty(lazy):
    X = np.empty((0, 3))
    with pytest.raises(ValueError, match="0 sample"):
        KMeans(2).fit(da.from_array(X) if lazy else X)
    X = np.empty((5, 0))
    with pytest.raises(ValueError, match="0 feature"):
        KMeans(2).fit(da.from_array(X) if lazy else X)


@pytest.mark.parametrize("lazy", [False, True])
def test_more_clusters_than_samples(X, lazy):
    with pytest.raises(ValueError, match="n_samples=200 should be >= n_clusters=201"):
        KMeans(201).fit(da.from_array(X, chunks=64) if lazy else X)


def test_wrong_shaped_init(X):
    with pytest.raises(ValueError, match=r"shape of the initial centers \(2, 3\).*\(3, 3\)"):
        KMeans(3, init=X[:2]).fit(X)
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        KMeans(3, init=X[:3, :2]).fit(X)
    bad = X[:3].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="init contains NaN"):
        KMeans(3, init=bad).fit(X)


def test_misaligned_sample_weight(X):
    with pytest.raises(ValueError, match="sample_weight has 199 rows but X has 200"):
        KMeans(2).fit(X, sample_weight=np.ones(199))
    with pytest.raises(ValueError, match="sample_weight has 150 rows but X has 200"):
        KMeans(2).fit(da.from_array(X, chunks=50), sample_weight=da.ones(150, chunks=50))
    with pytest.raises(ValueError, match="1-dimensional"):
        KMeans(2).fit(X, sample_weight=np.ones((200, 2)))
    with pytest.raises(ValueError, match="Negative"):
        KMeans(2).fit(X, sample_weight=-np.ones(200))
    w = np.ones(200)
    w[3] = np.nan
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        KMeans(2).fit(da.from_array(X, chunks=50), sample_weight=da.from_array(w, chunks=50))


@pytest.mark.parametrize("params, match", [
    ({"n_clusters": 0}, "n_clusters"),
    ({"n_clusters": 2.5}, "n_clusters"),
    ({"init": "kmeans"}, "init must be one of"),
    ({"max_iter": 0}, "max_iter"),
    ({"tol": -1.0}, "tol"),
    ({"n_init": 0}, "n_init"),
    ({"cache": "sometimes"}, "cache"),
    ({"oversampling_factor": 0}, "oversampling_factor"),
    ({"init_max_iter": 0}, "init_max_iter"),
])
def test_bad_params(X, params, match):
    with pytest.raises(ValueError, match=match):
        KMeans(**{"n_clusters": 2, **params}).fit(X)


def test_callable_init_rejected(X):
    with pytest.raises(TypeError, match="callable"):
        KMeans(2, init=lambda X, k, rs: X[:k]).fit(X)


def test_sparse_rejected_clearly(X):
    with pytest.raises(TypeError, match="[Ss]parse"):
        KMeans(2).fit(sp.csr_matrix(X))


def test_predict_before_fit_and_wrong_features(X):
    with pytest.raises(NotFittedError):
        KMeans(2).predict(X)
    km = KMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        km.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
        km.transform(da.from_array(X[:, :2]))


def test_unknown_chunk_sizes_are_computed(X):
    Xd = da.from_array(X, chunks=50)
    Xd = Xd[Xd[:, 0] > -10]  # boolean mask: unknown chunk sizes
    assert np.isnan(Xd.shape[0])
    km = KMeans(3, random_state=0).fit(Xd)
    assert km.labels_.shape == (200,)


def test_failed_fit_leaves_fitted_model_untouched(X):
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    km = KMeans(2, random_state=0).fit(df)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(km).items()}
    bad = np.hstack([X, X[:, :1]])
    bad[150, 0] = np.nan  # found only inside the first pass over the lazy blocks
    for attempt in (lambda: km.fit(da.from_array(bad, chunks=50)),
                    lambda: km.partial_fit(da.from_array(bad[:, :3], chunks=50))):
        with pytest.raises(ValueError, match="NaN"):
            attempt()
        assert set(vars(km)) == set(before)
        for k, v in before.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(vars(km)[k], v)
            else:
                assert vars(km)[k] == v, k
