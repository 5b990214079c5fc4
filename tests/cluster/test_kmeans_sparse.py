"""KMeans on sparse input: scipy.sparse matrices and dask arrays of CSR blocks.

The CSR kernels against a dense reference, serial against parallel builds (same bits),
sparse against dense fits (same clustering), all inits, sample_weight, predict /
transform / score, tol from the sparse column variance, determinism, a LocalCluster fit.
"""

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.cluster import KMeans as SkKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.sparsefuncs import mean_variance_axis

from dmlkit import KMeans
from dmlkit._core.blocks import csr_arrays
from dmlkit.cluster import _kernels_cpu as cpu


def sparse_blobs(n=6000, d=30, k=4, seed=0, density=0.3, std=0.3):
    """Non-negative blobs whose centres use disjoint-ish sets of features, thinned to
    sparse rows (every row keeps its cluster's signature features)."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((k, d))
    for j in range(k):
        feats = rng.choice(d, size=max(2, int(d * density)), replace=False)
        centers[j, feats] = rng.uniform(3, 6, len(feats))
    y = rng.integers(k, size=n)
    X = centers[y] + std * rng.standard_normal((n, d))
    X[centers[y] == 0] = 0.0  # sparse: only the cluster's features are non-zero
    return sp.csr_matrix(X), y, centers


def dask_csr(X, rows):
    return da.from_array(sp.csr_matrix(X), chunks=(rows, X.shape[1]), asarray=False,
                         fancy=False)


def labels_of(km):
    lab = km.labels_
    return np.asarray(lab.compute() if hasattr(lab, "compute") else lab)


# --- kernels --------------------------------------------------------------------------
def reference(X, w, C):
    Xd = X.toarray().astype(np.float64)
    C64 = C.astype(np.float64)
    d2 = ((Xd[:, None, :] - C64[None, :, :]) ** 2).sum(-1)
    labels = d2.argmin(1)
    w = np.ones(X.shape[0]) if w is None else w.astype(np.float64)
    sums = np.zeros(C.shape)
    np.add.at(sums, labels, Xd * w[:, None])
    counts = np.bincount(labels, weights=w, minlength=len(C))
    return labels, d2, sums, counts, float((w * d2[np.arange(len(Xd)), labels]).sum())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [1, 53, 9000])
def test_csr_kernels_match_dense_reference(dtype, weighted, n, rng):
    X = sp.random(n, 40, density=0.15, format="csr", dtype=dtype, random_state=1)
    X.data = (X.data * 4 - 2).astype(dtype)
    C = rng.standard_normal((6, 40)).astype(dtype) * 0.5
    w = rng.uniform(0.5, 2, n).astype(dtype) if weighted else None
    rlabels, rd2, rsums, rcounts, rinertia = reference(X, w, C)
    sums, counts, inertia = cpu.assign_partial_sums_block(X, w, C)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(counts, rcounts, rtol=rtol)
    np.testing.assert_allclose(sums, rsums, rtol=rtol, atol=rtol * n)
    np.testing.assert_allclose(inertia, rinertia, rtol=rtol)
    assert sums.dtype == np.float64 and sums.shape == (6, 40)
    labels, d2 = cpu.labels_sqdist_block(X, C)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, rlabels)
    np.testing.assert_allclose(d2, rd2[np.arange(n), rlabels], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(cpu.sqdist_block(X, C), rd2, rtol=rtol, atol=rtol)
    # the CSR kernels' cost is the non-zeros: the same block in CSC or COO gives the same
    for other in (X.tocsc(), X.tocoo()):
        np.testing.assert_array_equal(cpu.labels_sqdist_block(other, C)[0], labels)


def test_csr_kernels_ties_duplicates_and_empty_rows():
    # ties go to the lowest centre index; duplicate stored entries count once summed;
    # an all-zero row goes to the centre of smallest norm
    X = sp.csr_matrix((np.array([1.0, 1.0, 2.0, 0.5, 0.5]), np.array([0, 1, 1, 0, 0]),
                       np.array([0, 1, 3, 5, 5])), shape=(4, 2))
    assert not X.has_canonical_format
    C = np.array([[1.0, 1.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0], [0.1, 0.0]])
    labels, d2 = cpu.labels_sqdist_block(X, C)
    dense = X.toarray()  # rows: [1, 0], [0, 3], [1, 0], [0, 0]
    rlabels, rd2, *_ = reference(sp.csr_matrix(dense), None, C)
    np.testing.assert_array_equal(labels, rlabels)
    np.testing.assert_array_equal(labels, [2, 1, 2, 4])
    np.testing.assert_allclose(d2, rd2[np.arange(4), rlabels], atol=1e-12)
    sums, counts, inertia = cpu.assign_partial_sums_block(X, None, C)
    np.testing.assert_allclose(sums[2], [2.0, 0.0])
    np.testing.assert_array_equal(counts, [0, 1, 2, 0, 1])
    assert not X.has_canonical_format  # the caller's block is not modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_csr_kernels_serial_and_parallel_give_identical_bits(dtype, rng):
    X = sp.random(60_000, 500, density=0.02, format="csr", dtype=dtype, random_state=3)
    C = rng.standard_normal((7, 500)).astype(dtype)
    w = rng.uniform(0.1, 3, X.shape[0]).astype(dtype)
    data, indices, indptr = csr_arrays(X)
    CT, cn = cpu._prep_centers_t(C)
    for nc in (1, 4, 7):
        one = cpu._assign_partial_sums_csr(data, indices, indptr, w, CT, cn, nc, True,
                                           n_threads=1)
        two = cpu._assign_partial_sums_csr(data, indices, indptr, w, CT, cn, nc, True,
                                           n_threads=2)
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])
        assert one[2] == two[2]
        l1 = cpu._labels_sqdist_csr(data, indices, indptr, CT, cn, nc, n_threads=1)
        l2 = cpu._labels_sqdist_csr(data, indices, indptr, CT, cn, nc, n_threads=2)
        np.testing.assert_array_equal(l1[0], l2[0])
        np.testing.assert_array_equal(l1[1], l2[1])
        np.testing.assert_array_equal(
            cpu._sqdist_all_csr(data, indices, indptr, CT, cn, nc, n_threads=1),
            cpu._sqdist_all_csr(data, indices, indptr, CT, cn, nc, n_threads=2))
    # and through the public entry points
    a = cpu.assign_partial_sums_block(X, w, C, n_threads=1)
    b = cpu.assign_partial_sums_block(X, w, C, n_threads=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]


def test_csr_chunks_follow_the_block_only():
    # a chunk (with its own dense k x d sums) only for enough non-zeros per feature
    assert cpu.csr_assign_chunks(100_000, 3_800_000, 16, 2**16) == 1
    assert cpu.csr_assign_chunks(60_000, 600_000, 7, 500) == 14  # by rows (4096 a chunk)
    assert cpu.csr_assign_chunks(1000, 10_000, 4, 10) == 1  # few rows: one chunk


# --- fits -------------------------------------------------------------------------------
CONTAINERS = {
    "csr": sp.csr_matrix,
    "csc": sp.csc_matrix,
    "coo": sp.coo_matrix,
    "csr_array": sp.csr_array,
}


@pytest.mark.parametrize("container", CONTAINERS)
def test_sparse_and_dense_input_give_the_same_clustering(container):
    X, y, _ = sparse_blobs(std=1.5)
    init = X[:4].toarray()
    dense = KMeans(4, init=init, tol=0, max_iter=100).fit(X.toarray())
    km = KMeans(4, init=init, tol=0, max_iter=100).fit(CONTAINERS[container](X))
    np.testing.assert_array_equal(km.labels_, dense.labels_)
    np.testing.assert_allclose(km.cluster_centers_, dense.cluster_centers_, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(km.inertia_, dense.inertia_, rtol=1e-10)
    assert km.n_iter_ == dense.n_iter_
    assert isinstance(km.labels_, np.ndarray) and km.cluster_centers_.dtype == np.float64
    # and scikit-learn's sparse Lloyd from the same centres
    sk = SkKMeans(4, init=init, n_init=1, tol=0, max_iter=100, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-10)


@pytest.mark.parametrize("init", ["k-means||", "k-means++", "random"])
def test_every_init_on_sparse_rows(init):
    X, y, true = sparse_blobs()
    n_init = 3 if init == "random" else 1
    km = KMeans(4, init=init, n_init=n_init, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) == 1.0
    found = km.cluster_centers_
    assert np.sqrt(((true[:, None] - found[None]) ** 2).sum(-1)).min(1).max() < 0.1
    # dask CSR blocks and dense dask blocks of the same rows and seed: the same rows are
    # drawn, so the same clustering
    Xs = dask_csr(X, 1500)
    Xd = da.from_array(X.toarray(), chunks=(1500, X.shape[1]))
    a = KMeans(4, init=init, n_init=n_init, random_state=0).fit(Xs)
    b = KMeans(4, init=init, n_init=n_init, random_state=0).fit(Xd)
    assert isinstance(a.labels_, da.Array)
    np.testing.assert_array_equal(labels_of(a), labels_of(b))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=1e-10)


def test_kmeans_parallel_init_streamed_equals_cached_on_sparse():
    X, _, _ = sparse_blobs(n=4000)
    Xs = dask_csr(X, 1000)
    a = KMeans(4, random_state=3, cache=True).fit(Xs)
    b = KMeans(4, random_state=3, cache=False).fit(Xs)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_sample_weight_on_sparse_input():
    X, _, _ = sparse_blobs(n=3000, std=1.5)
    w = np.random.default_rng(1).integers(1, 4, X.shape[0])
    init = X[:4].toarray()
    a = KMeans(4, init=init, tol=0, max_iter=50).fit(X, sample_weight=w)
    dense = KMeans(4, init=init, tol=0, max_iter=50).fit(X.toarray(), sample_weight=w)
    np.testing.assert_allclose(a.cluster_centers_, dense.cluster_centers_, rtol=1e-12)
    np.testing.assert_allclose(a.inertia_, dense.inertia_, rtol=1e-10)
    rep = sp.csr_matrix(np.repeat(X.toarray(), w, axis=0))
    b = KMeans(4, init=init, tol=0, max_iter=50).fit(rep)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-10)
    np.testing.assert_allclose(a.inertia_, b.inertia_, rtol=1e-10)
    # lazy weights with dask CSR blocks
    c = KMeans(4, init=init, tol=0, max_iter=50).fit(
        dask_csr(X, 700), sample_weight=da.from_array(w.astype(float), chunks=700))
    np.testing.assert_allclose(c.cluster_centers_, a.cluster_centers_, rtol=1e-12)
    sk = SkKMeans(4, init=init, n_init=1, tol=0, max_iter=50).fit(X, sample_weight=w)
    np.testing.assert_allclose(a.inertia_, sk.inertia_, rtol=1e-10)


def test_predict_transform_score_on_sparse_input(rng):
    X, _, _ = sparse_blobs(n=3000)
    km = KMeans(4, random_state=0).fit(X.toarray())
    Xt = sp.random(400, X.shape[1], density=0.3, format="csr", random_state=5) * 6
    dense_t = Xt.toarray()
    np.testing.assert_array_equal(km.predict(Xt), km.predict(dense_t))
    np.testing.assert_allclose(km.transform(Xt), km.transform(dense_t), rtol=1e-10,
                               atol=1e-6)
    np.testing.assert_allclose(km.score(Xt), km.score(dense_t), rtol=1e-10)
    w = rng.uniform(0.5, 2, 400)
    np.testing.assert_allclose(km.score(Xt, sample_weight=w), km.score(dense_t, sample_weight=w),
                               rtol=1e-10)
    # dask CSR blocks in, dask out
    Xs = dask_csr(Xt, 150)
    p, t = km.predict(Xs), km.transform(Xs)
    assert isinstance(p, da.Array) and isinstance(t, da.Array)
    assert isinstance(t._meta, np.ndarray) and t.dtype == np.float64
    np.testing.assert_array_equal(p.compute(), km.predict(dense_t))
    np.testing.assert_allclose(t.compute(), km.transform(dense_t), rtol=1e-10, atol=1e-6)
    np.testing.assert_allclose(km.score(Xs), km.score(dense_t), rtol=1e-10)
    # a model fitted on sparse rows predicts dense rows and the reverse
    ks = KMeans(4, random_state=0).fit(X)
    np.testing.assert_array_equal(ks.predict(X.toarray()), ks.labels_)
    np.testing.assert_array_equal(ks.fit_predict(X), ks.labels_)
    np.testing.assert_allclose(-ks.score(X), ks.inertia_, rtol=1e-10)
    np.testing.assert_allclose(ks.fit_transform(X), ks.transform(X.toarray()), rtol=1e-10,
                               atol=1e-6)


def test_tol_uses_the_sparse_column_variance():
    X, _, _ = sparse_blobs(n=5000)
    km = KMeans(4, random_state=0, tol=1e-3).fit(dask_csr(X, 1200))
    expected = float(np.mean(mean_variance_axis(X, axis=0)[1]) * 1e-3)
    np.testing.assert_allclose(km._tol, expected, rtol=1e-10)
    np.testing.assert_allclose(km._tol, np.var(X.toarray(), axis=0).mean() * 1e-3, rtol=1e-10)


def test_empty_cluster_relocated_on_sparse_like_sklearn():
    X, _, _ = sparse_blobs(n=3000, std=1.0)
    init = np.vstack([X[:3].toarray(), np.full((1, X.shape[1]), 1e3)])
    sk = SkKMeans(4, init=init, n_init=1, max_iter=100, tol=0).fit(X)
    km = KMeans(4, init=init, max_iter=100, tol=0).fit(dask_csr(X, 700))
    assert len(np.unique(km.predict(X))) == 4
    np.testing.assert_allclose(km.inertia_, sk.inertia_, rtol=1e-8)


def test_float32_sparse_stays_float32():
    X, _, _ = sparse_blobs(n=2000)
    X32 = X.astype(np.float32)
    km = KMeans(4, random_state=0).fit(dask_csr(X32, 500))
    assert km.cluster_centers_.dtype == np.float32
    assert km.transform(X32).dtype == np.float32
    k64 = KMeans(4, random_state=0).fit(dask_csr(X, 500))
    np.testing.assert_array_equal(labels_of(km), labels_of(k64))


def test_nan_in_sparse_input_is_found():
    X, _, _ = sparse_blobs(n=2000)
    X = X.copy()
    X.data[17] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KMeans(4, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        KMeans(4, random_state=0).fit(dask_csr(X, 500))


def test_partial_fit_on_sparse_batches():
    X, _, true = sparse_blobs(n=8000)
    km = KMeans(4, random_state=0)
    for s in range(0, 8000, 2000):
        km.partial_fit(X[s:s + 2000])
    assert np.sqrt(((true[:, None] - km.cluster_centers_[None]) ** 2).sum(-1)).min(1).max() < 0.2


# --- determinism ------------------------------------------------------------------------
def test_same_seed_same_bits_on_sparse_across_schedulers(scheduler):
    X, _, _ = sparse_blobs(n=6000, std=2.0)
    ref = KMeans(4, random_state=7, max_iter=20).fit(dask_csr(X, 1500))
    with dask.config.set(scheduler="threads"):
        other = KMeans(4, random_state=7, max_iter=20).fit(dask_csr(X, 1500))
    np.testing.assert_array_equal(ref.cluster_centers_, other.cluster_centers_)
    assert ref.inertia_ == other.inertia_ and ref.n_iter_ == other.n_iter_


def test_sparse_fit_on_local_cluster(client):
    from distributed import get_task_stream

    X, y, _ = sparse_blobs(n=6000, std=2.0)
    Xs = dask_csr(X, 1500)
    local = KMeans(4, random_state=7, max_iter=20).fit(Xs)  # no client: local threads
    with client.as_current(), get_task_stream(client) as ts:
        on_cluster = KMeans(4, random_state=7, max_iter=20).fit(Xs)
        in_memory = KMeans(4, random_state=0, init="k-means++").fit(X)
    assert any("dmlkit-kmeans-lloyd" in str(t["key"]) for t in ts.data)
    np.testing.assert_array_equal(on_cluster.cluster_centers_, local.cluster_centers_)
    assert on_cluster.inertia_ == local.inertia_ and on_cluster.n_iter_ == local.n_iter_
    assert adjusted_rand_score(y, labels_of(on_cluster)) == 1.0
    assert adjusted_rand_score(y, in_memory.labels_) == 1.0
