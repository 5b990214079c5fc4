"""The array-API kernels and KMeans on CuPy blocks (skipped without CuPy and a GPU)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_kernel_matches_numba(cp, dtype):
    from dmlkit._core.dispatch import to_numpy
    from dmlkit.cluster import _kernels_cpu as cpu
    from dmlkit.cluster import _kernels_xp as xpk

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 8)).astype(dtype)
    C = rng.standard_normal((6, 8)).astype(dtype)
    ref = cpu.assign_partial_sums_block(X, None, C)
    got = [to_numpy(o) for o in xpk.assign_partial_sums_block(cp.asarray(X), None, C)]
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got[1], ref[1], rtol=rtol)
    np.testing.assert_allclose(got[0], ref[0], rtol=rtol, atol=rtol * 100)
    np.testing.assert_allclose(float(got[2]), ref[2], rtol=rtol)


def test_kmeans_on_cupy_blocks(cp):
    import dask.array as da

    from dmlkit import KMeans
    from dmlkit.datasets import make_blobs

    X, true = make_blobs(50_000, 4, 5, cluster_std=0.3, chunks=10_000)
    Xg = X.map_blocks(cp.asarray)
    km = KMeans(5, random_state=0).fit(Xg)
    d = np.sqrt(((true[:, None] - km.cluster_centers_[None]) ** 2).sum(-1))
    assert d.min(1).max() < 0.05
    cpu = KMeans(5, random_state=0).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, cpu.cluster_centers_, rtol=1e-6)
    labels = km.predict(Xg)
    assert isinstance(labels, da.Array)
