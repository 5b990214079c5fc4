"""Bad input gets a clear error naming the problem, for in-memory and lazy input alike."""

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
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


@pytest.mark.parametrize("callable_init", [False, True])
def test_wrong_shaped_init(X, callable_init):
    # scikit-learn's messages, for arrays and for what a callable init returns
    def init(c):
        return (lambda X_, k, random_state: c) if callable_init else c

    with pytest.raises(ValueError, match=r"The shape of the initial centers \(2, 3\) does not "
                                         r"match the number of clusters 3\."):
        KMeans(3, init=init(X[:2]), n_init=1).fit(X)
    with pytest.raises(ValueError, match=r"The shape of the initial centers \(3, 2\) does not "
                                         r"match the number of features of the data 3\."):
        KMeans(3, init=init(X[:3, :2]), n_init=1).fit(X)
    bad = X[:3].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="init contains NaN"):
        KMeans(3, init=init(bad), n_init=1).fit(X)


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


@pytest.mark.parametrize("params, message", [
    ({"n_clusters": 0}, "The 'n_clusters' parameter of KMeans must be an int in the range "
                        "[1, inf). Got 0 instead."),
    ({"n_clusters": 2.5}, "The 'n_clusters' parameter of KMeans must be an int in the range "
                          "[1, inf). Got 2.5 instead."),
    ({"init": "kmeans"}, "The 'init' parameter of KMeans must be a str among {'k-means||', "
                         "'k-means++', 'random'}, a callable or an array-like. Got 'kmeans' "
                         "instead."),
    ({"max_iter": 0}, "The 'max_iter' parameter of KMeans must be an int in the range "
                      "[1, inf). Got 0 instead."),
    ({"tol": -1.0}, "The 'tol' parameter of KMeans must be a float in the range [0.0, inf). "
                    "Got -1.0 instead."),
    ({"n_init": 0}, "The 'n_init' parameter of KMeans must be a str among {'auto'} or an int "
                    "in the range [1, inf). Got 0 instead."),
    ({"algorithm": "full"}, "The 'algorithm' parameter of KMeans must be a str among "
                            "{'lloyd', 'elkan'}. Got 'full' instead."),
    ({"copy_x": "yes"}, "The 'copy_x' parameter of KMeans must be an instance of 'bool' or an "
                        "instance of 'numpy.bool'. Got 'yes' instead."),
    ({"verbose": -1}, "The 'verbose' parameter of KMeans must be an int in the range [0, inf), "
                      "an instance of 'bool' or an instance of 'numpy.bool'. Got -1 instead."),
    ({"random_state": "0"}, "The 'random_state' parameter of KMeans must be an int in the "
                            "range [0, 4294967295], an instance of 'numpy.random.mtrand."
                            "RandomState' or None. Got '0' instead."),
    ({"cache": "sometimes"}, "The 'cache' parameter of KMeans must be a str among {'auto'} or "
                             "an instance of 'bool' or an instance of 'numpy.bool'. Got "
                             "'sometimes' instead."),
    ({"oversampling_factor": 0}, "The 'oversampling_factor' parameter of KMeans must be a "
                                 "float in the range (0.0, inf). Got 0 instead."),
    ({"init_max_iter": 0}, "The 'init_max_iter' parameter of KMeans must be an int in the "
                           "range [1, inf) or None. Got 0 instead."),
])
def test_bad_params(X, params, message):
    # scikit-learn's InvalidParameterError wording; a ValueError and a TypeError
    import re

    from dmlkit.exceptions import InvalidParameterError

    for exc in (InvalidParameterError, ValueError, TypeError):
        with pytest.raises(exc, match=re.escape(message)):
            KMeans(**{"n_clusters": 2, **params}).fit(X)
    with pytest.raises(ValueError, match=re.escape(message)):  # checked on the first call
        KMeans(**{"n_clusters": 2, **params}).partial_fit(X)


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
