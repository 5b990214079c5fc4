"""The full-batch linear models' array-API kernels and fits on CuPy blocks (skipped
without CuPy and a CUDA device)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


@pytest.mark.parametrize("loss, K", [("squared_error", 1), ("binomial", 1), ("poisson", 1),
                                     ("multinomial", 4)])
def test_cupy_kernels_match_numba(cp, loss, K):
    from dmlkit._core.dispatch import to_numpy
    from dmlkit.linear_model import _glm_kernels_cpu as cpu
    from dmlkit.linear_model import _glm_kernels_xp as xpk

    rng = np.random.default_rng(0)
    n, d = 5000, 7
    X = rng.standard_normal((n, d))
    Y = {"multinomial": rng.integers(0, K, (n, 1)).astype(float),
         "binomial": rng.integers(0, 2, (n, 1)).astype(float),
         "poisson": rng.poisson(1.0, (n, 1)).astype(float),
         "squared_error": rng.standard_normal((n, 1))}[loss]
    sw, W, b = rng.uniform(0.5, 2, n), rng.standard_normal((K, d)) * 0.3, np.zeros(K)
    lid = cpu.LOSS_IDS[loss]
    ref = cpu.loss_grad_block(X, Y, sw, W, b, lid)
    got = xpk.loss_grad_block(cp.asarray(X), Y, sw, W, b, lid)
    for a, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(to_numpy(a), r, rtol=1e-10, atol=1e-10)
    for a, r in zip(xpk.gram_block(cp.asarray(X), Y, sw), cpu.gram_block(X, Y, sw), strict=True):
        np.testing.assert_allclose(to_numpy(a), r, rtol=1e-10, atol=1e-9)


def test_logistic_regression_on_cupy_blocks(cp):
    import dask.array as da
    from sklearn.datasets import make_classification

    from dmlkit import LogisticRegression, Ridge

    X, y = make_classification(20_000, 10, n_informative=5, n_classes=3, random_state=0)
    Xd = da.from_array(X, chunks=5000)
    Xg = Xd.map_blocks(cp.asarray)
    yd = da.from_array(y, chunks=5000)
    ref = LogisticRegression(tol=1e-10, max_iter=500).fit(Xd, yd)
    got = LogisticRegression(tol=1e-10, max_iter=500).fit(Xg, yd)
    np.testing.assert_allclose(got.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_array_equal(got.predict(Xg).compute(), ref.predict(X))
    r = Ridge(alpha=1.0).fit(Xg, yd.astype(float))
    np.testing.assert_allclose(r.coef_, Ridge(alpha=1.0).fit(X, y.astype(float)).coef_,
                               rtol=1e-8)
