"""KMeans's scikit-learn API: algorithm, copy_x, callable init, n_init='auto', verbose
messages, warnings, the progress bar, set_output with dask input."""

import re
import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.datasets import make_blobs

from dmlkit import KMeans
from dmlkit.exceptions import ConvergenceWarning


@pytest.fixture
def X():
    return make_blobs(3000, n_features=4, centers=5, cluster_std=1.5, random_state=0)[0]


def test_elkan_gives_lloyds_result(X):
    a = KMeans(5, algorithm="lloyd", random_state=0).fit(X)
    b = KMeans(5, algorithm="elkan", random_state=0).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_
    assert b._algorithm == "elkan"
    with pytest.warns(RuntimeWarning, match="algorithm='elkan' doesn't make sense for a "
                                            "single cluster"):
        one = KMeans(1, algorithm="elkan").fit(X)
    assert one._algorithm == "lloyd"


@pytest.mark.parametrize("copy_x", [True, False])
def test_copy_x_accepted_and_x_untouched(X, copy_x):
    before = X.copy()
    KMeans(5, copy_x=copy_x, random_state=0).fit(X)
    np.testing.assert_array_equal(X, before)


def test_callable_init_in_memory_called_as_sklearn(X):
    calls = []

    def init(data, k, random_state):
        calls.append((type(data), k, type(random_state)))
        return data[random_state.choice(len(data), k, replace=False)]

    km = KMeans(5, init=init, random_state=0).fit(X)
    assert km._n_init == 10  # n_init='auto': 10 for a callable, as scikit-learn
    assert calls == [(np.ndarray, 5, np.random.RandomState)] * 10
    best = min(KMeans(5, init=init, n_init=1, random_state=s).fit(X).inertia_
               for s in range(3))
    assert km.inertia_ <= best * 1.001
    # same seed, same calls, same model
    again = KMeans(5, init=init, random_state=0).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, again.cluster_centers_)


def test_callable_init_gets_the_dask_array_for_dask_input(X):
    seen = []

    def init(data, k, random_state):
        seen.append(data)
        return data[:k] * 1.0  # lazy: dmlkit computes it

    Xd = da.from_array(X, chunks=700)
    km = KMeans(5, init=init, n_init=1).fit(Xd)
    assert len(seen) == 1 and isinstance(seen[0], da.Array)
    ref = KMeans(5, init=X[:5], n_init=1).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12)


@pytest.mark.parametrize("init, expected", [("k-means++", 1), ("k-means||", 1), ("random", 10),
                                            ("callable", 10), ("array", 1)])
def test_n_init_auto_as_sklearn(X, init, expected):
    init = {"callable": lambda d, k, random_state: d[:k], "array": X[:5]}.get(init, init)
    assert KMeans(5, init=init, n_init="auto", max_iter=3, random_state=0).fit(X)._n_init \
        == expected


def test_explicit_centres_warning_wording(X):
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed: "
                                            "performing only one init in KMeans instead of "
                                            "n_init=10."):
        km = KMeans(5, init=X[:5], n_init=10).fit(X)
    assert km._n_init == 1


@pytest.mark.parametrize("tol, last", [(0, r"Converged at iteration \d+: strict convergence\."),
                                       (1e-2, r"Converged at iteration \d+: center shift "
                                              r"\S+ within tolerance \S+\.")])
def test_verbose_prints_sklearn_messages(X, capsys, tol, last):
    km = KMeans(5, init="random", n_init=1, tol=tol, random_state=0, verbose=1).fit(X)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Initialization complete"
    iters = [line for line in out if re.fullmatch(r"Iteration \d+, inertia \S+\.", line)]
    assert len(iters) == km.n_iter_
    assert re.fullmatch(last, out[-1])


def test_relocation_skipped_when_all_rows_sit_on_centres():
    # more clusters than distinct rows: nothing to relocate (as scikit-learn), one pass
    X = np.array([[0, 0], [1, 1], [1, 1], [1, 0], [0, 1]], dtype=float)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(4\) found "
                                                r"smaller than n_clusters \(5\)"):
        km = KMeans(5, init=X).fit(X)
    assert km.n_iter_ == 1


def test_progress_bar_ends_complete_when_converged(X, capsys):
    km = KMeans(5, random_state=0, verbose=1, max_iter=300).fit(X)
    assert km.n_iter_ < 300
    final = capsys.readouterr().err.rstrip().split("\r")[-1]
    assert "100%" in final and f"{km.n_iter_}/{km.n_iter_}" in final, final
    # a run stopped by max_iter ends at max_iter/max_iter as before
    KMeans(5, init="random", n_init=1, random_state=0, verbose=1, tol=0, max_iter=1).fit(X)
    final = capsys.readouterr().err.rstrip().split("\r")[-1]
    assert "1/1" in final and "100%" in final, final


def _pandas_output(km):
    return km.set_output(transform="pandas")


def test_set_output_pandas_with_dask_input_stays_lazy(X):
    Xd = da.from_array(X, chunks=1000)
    km = _pandas_output(KMeans(5, random_state=0)).fit(Xd)
    names = list(km.get_feature_names_out())
    for out in (km.transform(Xd), _pandas_output(KMeans(5, random_state=0)).fit_transform(Xd)):
        assert isinstance(out, dd.DataFrame), type(out)
        assert list(out.columns) == names == [f"kmeans{i}" for i in range(5)]
        np.testing.assert_allclose(out.compute().to_numpy(), km.transform(X).to_numpy())
    # a dask dataframe keeps its index
    df = dd.from_pandas(pd.DataFrame(X, columns=list("abcd"), index=np.arange(3000) * 2),
                        npartitions=3)
    kdf = _pandas_output(KMeans(5, random_state=0)).fit(df)
    out = kdf.transform(df)
    assert isinstance(out, dd.DataFrame)
    np.testing.assert_array_equal(out.compute().index.to_numpy(), np.arange(3000) * 2)
    # global config too
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(KMeans(5, random_state=0).fit(Xd).transform(Xd), dd.DataFrame)
    # in-memory input keeps scikit-learn's containers
    km = _pandas_output(KMeans(5, random_state=0)).fit(X)
    out = km.transform(X)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(km.get_feature_names_out())
    df = pd.DataFrame(X, columns=list("abcd"), index=np.arange(3000) + 7)
    out = km.fit_transform(df)
    assert isinstance(out, pd.DataFrame) and out.index[0] == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = KMeans(5, random_state=0).fit(X).transform(X)
    assert isinstance(plain, np.ndarray)
    # default output with dask input: a dask array, as before
    Xd = da.from_array(X, chunks=1000)
    assert isinstance(KMeans(5, random_state=0).fit(Xd).transform(Xd), da.Array)


def test_set_output_polars_with_dask_input_refused_before_any_work(X):
    Xd = da.from_array(X, chunks=1000)
    km = KMeans(5, random_state=0).set_output(transform="polars")
    with pytest.raises(ValueError, match="cannot wrap KMeans's output for dask input"):
        km.fit_transform(Xd)
    assert not hasattr(km, "cluster_centers_")
    km.set_output(transform="default").fit(Xd)
    km.set_output(transform="polars")
    with pytest.raises(ValueError, match="polars"):
        km.transform(Xd)
