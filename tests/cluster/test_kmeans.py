"""KMeans: quality against scikit-learn, input types, determinism, partial_fit, errors."""

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import dmlkit
from dmlkit import KMeans


def blobs(n=20_000, d=4, k=5, seed=0, std=0.5):
    X, y, centers = make_blobs(n, n_features=d, centers=k, cluster_std=std, random_state=seed,
                               return_centers=True, center_box=(-20, 20))
    return X, y, centers


def match_centers(found, true):
    """Max distance from each true centre to its nearest found centre."""
    d = np.sqrt(((true[:, None, :] - found[None, :, :]) ** 2).sum(-1))
    return d.min(1).max()


CONTAINERS = {
    "numpy": lambda X: X,
    "pandas": lambda X: pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]),
    "dask-uneven": lambda X: da.from_array(X, chunks=((3000, 7000, 4000, 6000), X.shape[1])),
    "dask-dataframe": lambda X: dd.from_pandas(
        pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]), npartitions=3),
}


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_finds_true_centres_of_separated_blobs(container, init):
    X, y, true = blobs()
    km = KMeans(5, init=init, random_state=0).fit(CONTAINERS[container](X))
    assert match_centers(km.cluster_centers_, true) < 0.05
    labels = np.asarray(km.labels_.compute() if hasattr(km.labels_, "compute") else km.labels_)
    assert adjusted_rand_score(y, labels) > 0.999
    assert km.cluster_centers_.shape == (5, 4)
    assert km.n_features_in_ == 4
    if container in ("pandas", "dask-dataframe"):
        assert list(km.feature_names_in_) == ["f0", "f1", "f2", "f3"]
    else:
        assert not hasattr(km, "feature_names_in_")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inertia_within_one_percent_of_sklearn_given_same_init(dtype, rng):
    # Overlapping clusters: many Lloyd iterations, several local optima.
    X, _, _ = blobs(n=30_000, d=6, k=12, seed=3, std=4.0)
    X = X.astype(dtype)
    init = X[rng.choice(len(X), 12, replace=False)]
    sk = SkKMeans(12, init=init, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(X)
    km = KMeans(12, init=init, max_iter=300, tol=1e-4).fit(da.from_array(X, chunks=7000))
    assert km.inertia_ <= sk.inertia_ * 1.01
    assert abs(km.inertia_ - sk.inertia_) / sk.inertia_ < 0.01
    assert km.cluster_centers_.dtype == dtype
    # Same init, same algorithm: the same optimum.
    np.testing.assert_allclose(np.sort(km.cluster_centers_, 0), np.sort(sk.cluster_centers_, 0),
                               rtol=1e-3, atol=1e-3)


def test_kmeans_parallel_init_quality_close_to_sklearn(rng):
    X, _, _ = blobs(n=40_000, d=5, k=20, seed=7, std=2.0)
    sk = SkKMeans(20, n_init=3, random_state=0).fit(X)
    km = KMeans(20, random_state=0).fit(X)
    assert km.inertia_ < sk.inertia_ * 1.02


def test_predict_transform_score_agree_with_sklearn(rng):
    X, _, _ = blobs(n=5000, d=3, k=4)
    km = KMeans(4, random_state=0).fit(X)
    sk = SkKMeans(4, init=km.cluster_centers_, n_init=1, max_iter=1).fit(X)
    sk.cluster_centers_ = km.cluster_centers_
    Xt = rng.standard_normal((300, 3)) * 10
    np.testing.assert_array_equal(km.predict(Xt), sk.predict(Xt))
    np.testing.assert_allclose(km.transform(Xt), sk.transform(Xt), rtol=1e-10)
    np.testing.assert_allclose(km.score(Xt), sk.score(Xt), rtol=1e-10)
    np.testing.assert_allclose(-km.score(X), km.inertia_, rtol=1e-10)
    np.testing.assert_array_equal(km.fit_predict(X), km.labels_)


def test_dask_in_dask_out_numpy_in_numpy_out():
    X, _, _ = blobs(n=4000)
    Xd = da.from_array(X, chunks=1000)
    km = KMeans(5, random_state=0).fit(Xd)
    assert isinstance(km.labels_, da.Array)
    assert isinstance(km.predict(Xd), da.Array)
    assert isinstance(km.transform(Xd), da.Array)
    assert km.transform(Xd).shape == (4000, 5)
    np.testing.assert_array_equal(km.predict(Xd).compute(), km.predict(X))
    np.testing.assert_allclose(km.transform(Xd).compute(), km.transform(X))
    assert isinstance(km.predict(X), np.ndarray)
    assert isinstance(km.cluster_centers_, np.ndarray)


def test_float32_stays_float32():
    X = blobs(n=3000)[0].astype(np.float32)
    km = KMeans(5, random_state=0).fit(da.from_array(X, chunks=1000))
    assert km.cluster_centers_.dtype == np.float32
    assert km.transform(X).dtype == np.float32
    assert km.predict(X).dtype == np.int32


def test_integer_weights_equal_repeated_rows():
    X, _, _ = blobs(n=2000, k=3, std=3.0)
    w = np.random.default_rng(1).integers(1, 4, len(X))
    init = X[:3]
    a = KMeans(3, init=init, tol=0, max_iter=50).fit(X, sample_weight=w)
    b = KMeans(3, init=init, tol=0, max_iter=50).fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=1e-10)


def test_dask_sample_weight_matches_numpy_weight():
    X, _, _ = blobs(n=3000)
    w = np.random.default_rng(0).uniform(0.1, 3, len(X))
    a = KMeans(5, random_state=0).fit(X, sample_weight=w)
    Xd = da.from_array(X, chunks=a.cluster_centers_.shape[0] * 0 + 3000)
    b = KMeans(5, random_state=0).fit(Xd, sample_weight=da.from_array(w, chunks=700))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    sk = SkKMeans(5, init=a.cluster_centers_, n_init=1, max_iter=1).fit(X, sample_weight=w)
    assert abs(sk.inertia_ - a.inertia_) / a.inertia_ < 1e-8


def test_empty_cluster_is_relocated_like_sklearn():
    X, _, _ = blobs(n=3000, k=4, std=1.0)
    init = np.vstack([X[:3], [[1e3, 1e3, 1e3, 1e3]]])  # the last centre attracts nothing
    sk = SkKMeans(4, init=init, n_init=1, max_iter=100, tol=0).fit(X)
    km = KMeans(4, init=init, max_iter=100, tol=0).fit(da.from_array(X, chunks=700))
    assert len(np.unique(km.predict(X))) == 4
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-6)


def test_n_init_keeps_best_run():
    X, _, _ = blobs(n=6000, k=8, std=2.5, seed=5)
    runs = [KMeans(8, init="random", n_init=1, random_state=s).fit(X).inertia_ for s in range(3)]
    best = KMeans(8, init="random", n_init=5, random_state=0).fit(X)
    assert best.inertia_ <= min(runs) * 1.001


def test_xp_backend_gives_same_model_as_numba():
    X, _, _ = blobs(n=5000, k=4)
    init = X[:4]
    a = KMeans(4, init=init, tol=0, max_iter=20).fit(X)
    with dmlkit.config_context(backend="xp"):
        b = KMeans(4, init=init, tol=0, max_iter=20).fit(X)
        np.testing.assert_array_equal(b.predict(X), a.predict(X))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    assert a.n_iter_ == b.n_iter_


def test_partial_fit_streams_towards_true_centres():
    X, _, true = blobs(n=40_000, k=5)
    km = KMeans(5, random_state=0)
    for batch in np.array_split(X, 10):
        km.partial_fit(batch)
    assert km.n_steps_ == 10
    assert match_centers(km.cluster_centers_, true) < 0.1
    Xd = da.from_array(X, chunks=5000)
    km2 = KMeans(5, random_state=0)
    for i in range(0, 40_000, 10_000):
        km2.partial_fit(Xd[i:i + 10_000])
    assert match_centers(km2.cluster_centers_, true) < 0.1
    with pytest.raises(ValueError, match="features"):
        km.partial_fit(X[:, :3])


def test_tol_stops_early_and_max_iter_caps():
    X, _, _ = blobs(n=5000, k=5)
    assert KMeans(5, random_state=0, tol=1e-2).fit(X).n_iter_ < 10
    assert KMeans(5, init="random", random_state=0, tol=0, max_iter=2).fit(X).n_iter_ <= 2


def test_verbose_shows_progress(capsys):
    X, _, _ = blobs(n=2000)
    KMeans(5, random_state=0, verbose=1).fit(X)
    assert "KMeans" in capsys.readouterr().err


def test_block_size_setting_controls_blocks():
    X, _, _ = blobs(n=10_000)
    from dmlkit._core.blocks import to_row_blocks

    with dmlkit.config_context(block_size="64KiB"):
        b = to_row_blocks(X)
    assert b.n_blocks == int(np.ceil(X.nbytes / (64 * 1024)))
    assert all(c == X.shape[1] for c in b.X.chunks[1])


# --- determinism ---------------------------------------------------------------------
def _fit_chunked(X, **kw):
    return KMeans(6, random_state=123, max_iter=30, **kw).fit(da.from_array(X, chunks=2500))


def test_same_seed_same_bits_across_local_schedulers(scheduler):
    X, _, _ = blobs(n=12_000, k=6, std=3.0, seed=11)
    ref = _fit_chunked(X)  # active scheduler (sync or threads)
    with dask.config.set(scheduler="threads"):
        other = _fit_chunked(X)
    np.testing.assert_array_equal(ref.cluster_centers_, other.cluster_centers_)
    assert ref.inertia_ == other.inertia_ and ref.n_iter_ == other.n_iter_


def test_same_seed_same_bits_on_local_cluster(client):
    from distributed import get_task_stream

    X, _, _ = blobs(n=12_000, k=6, std=3.0, seed=11)
    local = _fit_chunked(X)  # no client active: dask's threaded scheduler
    with client.as_current(), get_task_stream(client) as ts:
        on_cluster = _fit_chunked(X)
    assert any("dmlkit-kmeans-lloyd" in str(t["key"]) for t in ts.data)
    np.testing.assert_array_equal(on_cluster.cluster_centers_, local.cluster_centers_)
    assert on_cluster.inertia_ == local.inertia_ and on_cluster.n_iter_ == local.n_iter_


def test_fit_on_local_cluster_with_numpy_and_dask_dataframe(with_client):
    X, _, true = blobs(n=8000)
    km = KMeans(5, random_state=0).fit(X)
    assert match_centers(km.cluster_centers_, true) < 0.05
    df = dd.from_pandas(pd.DataFrame(X, columns=list("abcd")), npartitions=4)
    km2 = KMeans(5, random_state=0, init="k-means++").fit(df)
    assert match_centers(km2.cluster_centers_, true) < 0.05
    assert km2.labels_.compute().shape == (8000,)


def test_different_seeds_can_differ():
    X, _, _ = blobs(n=6000, k=8, std=4.0)
    a = KMeans(8, init="random", random_state=0, max_iter=2).fit(X).cluster_centers_
    b = KMeans(8, init="random", random_state=1, max_iter=2).fit(X).cluster_centers_
    assert not np.array_equal(a, b)


def test_pickle_roundtrip():
    import pickle

    X, _, _ = blobs(n=2000)
    km = KMeans(5, random_state=0).fit(X)
    km2 = pickle.loads(pickle.dumps(km))
    np.testing.assert_array_equal(km2.predict(X), km.predict(X))
