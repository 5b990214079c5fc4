"""Full-batch linear models: the optimum of scikit-learn's objective, the kernels, the
fit loop (determinism, checkpoints), dask input and bad input."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import linear_model as sk
from sklearn.datasets import make_classification, make_regression
from sklearn.preprocessing import StandardScaler

import dmlkit
from dmlkit._core import checkpoint as ckpt
from dmlkit.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge
from dmlkit.linear_model import _glm_kernels_cpu as cpu
from dmlkit.linear_model import _glm_kernels_xp as xpk

REL = 1e-6  # the bar: objective within 1e-6 relative of scikit-learn's optimum
TIGHT = dict(tol=1e-10, max_iter=2000)


# -- objectives computed here, independently of both implementations ------------------
def _logistic_objective(coef, intercept, X, y, classes, C=1.0, l1_ratio=0.0, sw=None):
    """scikit-learn's ``C sum s loss + (1-r)/2 ||W||^2 + r ||W||_1`` divided by C S."""
    sw = np.ones(X.shape[0]) if sw is None else sw
    Z = np.asarray(X @ np.atleast_2d(coef).T) + intercept
    if len(classes) == 2:
        z, t = Z[:, 0], (y == classes[1]).astype(float)
        loss = np.logaddexp(0, z) - t * z
    else:
        codes = np.searchsorted(classes, y)
        m = Z.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(Z - m).sum(axis=1, keepdims=True)))[:, 0]
        loss = lse - Z[np.arange(len(y)), codes]
    S = sw.sum()
    pen = 0.0 if C == np.inf else ((1 - l1_ratio) / 2 * np.sum(coef ** 2)
                                   + l1_ratio * np.abs(coef).sum()) / (C * S)
    return (sw @ loss) / S + pen


def _assert_optimum(got, ref, rel=REL):
    assert abs(got - ref) <= rel * abs(ref), (got, ref, (got - ref) / abs(ref))


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(3000, 12, n_informative=6, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def multi():
    X, y = make_classification(3000, 12, n_informative=6, n_classes=4, n_clusters_per_class=1,
                               random_state=1)
    return StandardScaler().fit_transform(X), y


def _sparse(X, density=0.3, seed=0):
    mask = np.random.default_rng(seed).random(X.shape) < density
    return sp.csr_matrix(X * mask)


# -- the optimum ----------------------------------------------------------------------
@pytest.mark.parametrize("data", ["binary", "multi"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_logistic_l2_reaches_sklearns_optimum(request, data, sparse, fit_intercept):
    X, y = request.getfixturevalue(data)
    if sparse:
        X = _sparse(X)
    ours = LogisticRegression(C=0.5, fit_intercept=fit_intercept, **TIGHT).fit(X, y)
    ref = sk.LogisticRegression(C=0.5, fit_intercept=fit_intercept, **TIGHT).fit(X, y)
    classes = ref.classes_
    np.testing.assert_array_equal(ours.classes_, classes)
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    _assert_optimum(_logistic_objective(ours.coef_, ours.intercept_, X, y, classes, C=0.5),
                    _logistic_objective(ref.coef_, ref.intercept_, X, y, classes, C=0.5))
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.converged_ and ours.solver_ == "lbfgs"
    assert ours.n_iter_.shape == (1,) and 0 < ours.n_iter_[0] <= ours.n_passes_


def test_logistic_without_penalty(binary):
    X, y = binary
    ours = LogisticRegression(penalty=None, **TIGHT).fit(X, y)
    inf = LogisticRegression(C=np.inf, **TIGHT).fit(X, y)
    ref = sk.LogisticRegression(C=np.inf, **TIGHT).fit(X, y)
    for est in (ours, inf):
        _assert_optimum(_logistic_objective(est.coef_, est.intercept_, X, y, ref.classes_, np.inf),
                        _logistic_objective(ref.coef_, ref.intercept_, X, y, ref.classes_, np.inf))
    np.testing.assert_array_equal(ours.coef_, inf.coef_)


def _saga(X, y, C, l1_ratio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's ConvergenceWarning at this tolerance
        return sk.LogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-12,
                                     max_iter=20000).fit(X, y)


@pytest.mark.parametrize("penalty, l1_ratio", [("l1", 1.0), ("elasticnet", 0.4)])
@pytest.mark.parametrize("data", ["binary", "multi"])
def test_l1_and_elasticnet_reach_sagas_optimum(request, data, penalty, l1_ratio):
    X, y = request.getfixturevalue(data)
    X, y = X[:1000], y[:1000]
    C = 0.05
    kw = dict(l1_ratio=l1_ratio) if penalty == "elasticnet" else {}
    ours = LogisticRegression(penalty=penalty, C=C, **kw, **TIGHT).fit(X, y)
    ref = _saga(X, y, C, l1_ratio)
    classes = ref.classes_
    _assert_optimum(_logistic_objective(ours.coef_, ours.intercept_, X, y, classes, C, l1_ratio),
                    _logistic_objective(ref.coef_, ref.intercept_, X, y, classes, C, l1_ratio))
    assert ours.solver_ == "owlqn"
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    zeros = ours.coef_ == 0
    assert zeros.any()  # L1 makes exact zeros
    if data == "binary":
        # (a multinomial model's L1 optimum is not unique in its coefficients: adding c
        # to a feature's coefficient in every class leaves the probabilities alone and,
        # with an even number of classes, the L1 norm too over a whole interval of c)
        np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
        np.testing.assert_array_equal(zeros, np.abs(ref.coef_) < 1e-8)


@pytest.mark.parametrize("data", ["binary", "multi"])
def test_sample_and_class_weights(request, data):
    X, y = request.getfixturevalue(data)
    rng = np.random.default_rng(3)
    sw = rng.uniform(0.1, 3.0, len(y))
    classes = np.unique(y)
    cw = {int(c): float(1 + i) for i, c in enumerate(classes)}
    ours = LogisticRegression(class_weight=cw, **TIGHT).fit(X, y, sample_weight=sw)
    ref = sk.LogisticRegression(class_weight=cw, **TIGHT).fit(X, y, sample_weight=sw)
    full = sw * np.array([cw[int(c)] for c in y])
    _assert_optimum(_logistic_objective(ours.coef_, ours.intercept_, X, y, classes, sw=full),
                    _logistic_objective(ref.coef_, ref.intercept_, X, y, classes, sw=full))
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5)
    bal = LogisticRegression(class_weight="balanced", **TIGHT).fit(X[:2000], y[:2000])
    bref = sk.LogisticRegression(class_weight="balanced", **TIGHT).fit(X[:2000], y[:2000])
    np.testing.assert_allclose(bal.coef_, bref.coef_, atol=1e-5)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("solver", ["auto", "lbfgs"])
def test_ridge_and_least_squares(sparse, solver):
    X, y = make_regression(3000, 15, noise=5.0, random_state=0)
    X = X + 3.0  # off-centre: the intercept matters
    sw = np.random.default_rng(0).uniform(0.5, 2, len(y))
    if sparse:
        X = _sparse(X)
    for ours, ref in [(Ridge(alpha=10.0, solver=solver, tol=1e-10), sk.Ridge(alpha=10.0)),
                      (LinearRegression(solver=solver, tol=1e-10), sk.LinearRegression())]:
        ours.fit(X, y, sample_weight=sw)
        # (on dense X scikit-learn solves exactly; on sparse X it iterates to its tol)
        ref.fit(X.toarray() if sparse else X, y, sample_weight=sw)
        alpha = getattr(ours, "alpha", 0.0)

        def objective(est, alpha=alpha):
            r = y - np.asarray(X @ est.coef_) - est.intercept_
            return sw @ (r * r) + alpha * est.coef_ @ est.coef_

        _assert_optimum(objective(ours), objective(ref), rel=1e-9)
        # exact: to rounding; L-BFGS: it stops at a relative decrease of 64 eps, on an
        # objective whose intercept direction is badly conditioned (X is off-centre)
        scale = np.abs(ref.coef_).max() * (1e-10 if ours.solver_ == "cholesky" else 1e-6)
        np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=scale)
        np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-6, atol=scale)
        assert ours.coef_.shape == ref.coef_.shape and np.ndim(ours.intercept_) == 0
        np.testing.assert_allclose(ours.score(X, y), ref.score(X, y), rtol=1e-7)
        expected = "cholesky" if solver == "auto" else "lbfgs"
        assert ours.solver_ == expected
        if expected == "cholesky":
            assert ours.n_passes_ == 1


def test_least_squares_minimum_norm_on_collinear_features():
    X, y = make_regression(500, 6, random_state=0)
    X = np.hstack([X, X[:, :2]])  # rank-deficient: scikit-learn's lstsq min-norm answer
    ours = LinearRegression().fit(X, y)
    ref = sk.LinearRegression().fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-8)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_poisson_reaches_sklearns_optimum(binary, sparse):
    X, _ = binary
    rng = np.random.default_rng(0)
    y = rng.poisson(np.exp(X[:, :4] @ np.array([0.3, -0.2, 0.1, 0.25]) + 0.3))
    sw = rng.uniform(0.5, 2, len(y))
    Xf = _sparse(X) if sparse else X
    ours = PoissonRegressor(alpha=0.05, **TIGHT).fit(Xf, y, sample_weight=sw)
    ref = sk.PoissonRegressor(alpha=0.05, **TIGHT).fit(Xf, y, sample_weight=sw)

    def objective(coef, b):
        z = np.asarray(Xf @ coef) + b
        return sw @ (np.exp(z) - y * z) / sw.sum() + 0.05 / 2 * coef @ coef

    _assert_optimum(objective(ours.coef_, ours.intercept_), objective(ref.coef_, ref.intercept_))
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(ours.predict(Xf), ref.predict(Xf), rtol=1e-6)
    np.testing.assert_allclose(ours.score(Xf, y), ref.score(Xf, y), rtol=1e-8)


# -- the kernels ----------------------------------------------------------------------
def _kernel_case(loss, K, rng, n=700, d=9):
    X = rng.standard_normal((n, d))
    W, b = rng.standard_normal((K, d)) * 0.3, rng.standard_normal(K) * 0.1
    if loss == "multinomial":
        Y = rng.integers(0, K, n).astype(float)[:, None]
    elif loss == "binomial":
        Y = rng.integers(0, 2, n).astype(float)[:, None]
    elif loss == "poisson":
        Y = rng.poisson(1.5, n).astype(float)[:, None]
    else:
        Y = rng.standard_normal((n, 1))
    return X, Y, rng.uniform(0.5, 2, n), W, b


CASES = [("squared_error", 1), ("binomial", 1), ("poisson", 1), ("multinomial", 4)]


@pytest.mark.parametrize("loss, K", CASES)
def test_kernels_agree_numba_xp_csr_and_finite_differences(loss, K):
    rng = np.random.default_rng(5)
    X, Y, sw, W, b = _kernel_case(loss, K, rng)
    lid = cpu.LOSS_IDS[loss]
    ref = cpu.loss_grad_block(X, Y, sw, W, b, lid)
    X32 = X.astype(np.float32)
    ref32 = cpu.loss_grad_block(X32.astype(np.float64), Y, sw, W, b, lid)
    for got, want in ((xpk.loss_grad_block(X, Y, sw, W, b, lid), ref),
                      (cpu.loss_grad_block(sp.csr_matrix(X), Y, sw, W, b, lid), ref),
                      (cpu.loss_grad_block(X32, Y, sw, W, b, lid), ref32)):
        for a, r in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(a), r, rtol=1e-10, atol=1e-10)
    # the gradient is the loss's derivative (central differences)
    eps = 1e-6
    for k, f in [(0, 0), (K - 1, 3)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[k, f] += eps
        Wm[k, f] -= eps
        num = (cpu.loss_grad_block(X, Y, sw, Wp, b, lid)[0]
               - cpu.loss_grad_block(X, Y, sw, Wm, b, lid)[0]) / (2 * eps)
        np.testing.assert_allclose(num, ref[1][k, f], rtol=1e-5)


def test_kernels_run_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    for loss, K in CASES:
        X, Y, sw, W, b = _kernel_case(loss, K, rng)
        ref = cpu.loss_grad_block(X, Y, sw, W, b, cpu.LOSS_IDS[loss])
        got = xpk.loss_grad_block(xps.asarray(X), Y, sw, W, b, cpu.LOSS_IDS[loss])
        for a, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(np.asarray(a), r, rtol=1e-10, atol=1e-10)
    X, Y, sw, _, _ = _kernel_case("squared_error", 1, rng)
    for a, r in zip(xpk.gram_block(xps.asarray(X), Y, sw), cpu.gram_block(X, Y, sw),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), r, rtol=1e-10, atol=1e-9)
    for a, r in zip(cpu.gram_block(sp.csr_matrix(X), Y, sw), cpu.gram_block(X, Y, sw),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), r, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("loss, K", [("multinomial", 3), ("binomial", 1)])
@pytest.mark.parametrize("form", ["float64", "float32", "csr"])
def test_kernel_bits_do_not_depend_on_threads(loss, K, form):
    rng = np.random.default_rng(4)
    X, Y, sw, W, b = _kernel_case(loss, K, rng, n=40_000)
    X = {"float64": X, "float32": X.astype(np.float32), "csr": sp.csr_matrix(X)}[form]
    one = cpu.loss_grad_block(X, Y, sw, W, b, cpu.LOSS_IDS[loss], n_threads=1)
    two = cpu.loss_grad_block(X, Y, sw, W, b, cpu.LOSS_IDS[loss], n_threads=2)
    for a, c in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, c)


def test_xp_backend_fit_matches_numba(binary):
    X, y = binary
    ref = LogisticRegression(**TIGHT).fit(X, y)
    with dmlkit.config_context(backend="xp"):
        got = LogisticRegression(**TIGHT).fit(X, y)
    np.testing.assert_allclose(got.coef_, ref.coef_, atol=1e-7)


# -- dask input, determinism, checkpoints ---------------------------------------------
def test_dask_input_blocks_and_output(multi):
    X, y = multi
    Xd, yd = da.from_array(X, chunks=700), da.from_array(y, chunks=700)
    est = LogisticRegression(**TIGHT).fit(Xd, yd)
    ref = LogisticRegression(**TIGHT).fit(X, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)
    pred = est.predict(Xd)
    assert isinstance(pred, da.Array) and isinstance(est.predict_proba(Xd), da.Array)
    np.testing.assert_array_equal(pred.compute(), est.predict(X))
    np.testing.assert_allclose(est.predict_proba(Xd).compute(), est.predict_proba(X))
    assert est.score(X, y) > 0.8
    again = LogisticRegression(**TIGHT).fit(Xd, yd)  # same data, same blocks: same bits
    np.testing.assert_array_equal(again.coef_, est.coef_)
    assert again.n_passes_ == est.n_passes_


def test_dask_dataframe_columns(binary):
    dd = pytest.importorskip("dask.dataframe")
    import pandas as pd

    X, y = binary
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])]).assign(label=y)
    ddf = dd.from_pandas(df, npartitions=3)
    cols = [f"f{i}" for i in range(6)]
    est = LogisticRegression(**TIGHT).fit(ddf[cols], ddf["label"])
    ref = LogisticRegression(**TIGHT).fit(df[cols], df["label"])
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)
    assert list(est.feature_names_in_) == cols


@pytest.mark.filterwarnings("ignore::dmlkit.exceptions.ConvergenceWarning")  # tol=0
@pytest.mark.parametrize("make", [
    lambda d: LogisticRegression(C=0.1, tol=0, max_iter=25, checkpoint=d),
    lambda d: LogisticRegression(penalty="l1", C=0.1, tol=0, max_iter=25, checkpoint=d),
    lambda d: PoissonRegressor(alpha=0.1, tol=0, max_iter=25, checkpoint=d),
], ids=["lbfgs", "owlqn", "poisson"])
def test_checkpoint_resume_is_bit_identical(tmp_path, monkeypatch, binary, make):
    X, y = binary
    if isinstance(make(None), PoissonRegressor):
        y = np.random.default_rng(0).poisson(np.exp(X[:, 0] * 0.3))
    Xd, yd = da.from_array(X, chunks=1000), da.from_array(y, chunks=1000)
    ref = make(None).fit(Xd, yd)
    assert ref.n_iter_ == 25 or np.all(ref.n_iter_ == 25) or ref.converged_
    orig, saves = ckpt.CheckpointStore.save, []

    def save(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.CheckpointStore, "save", save)
    with pytest.raises(KeyboardInterrupt):
        make(str(tmp_path)).fit(Xd, yd)
    monkeypatch.undo()
    est = make(str(tmp_path)).fit(Xd, yd)
    assert est.resumed_from_iter_ == 6
    np.testing.assert_array_equal(est.coef_, ref.coef_)
    np.testing.assert_array_equal(est.intercept_, ref.intercept_)
    assert est.n_passes_ == ref.n_passes_ and np.all(est.n_iter_ == ref.n_iter_)
    with pytest.raises(ValueError, match="parameter C: checkpoint has"):
        LogisticRegression(C=0.2, tol=0, max_iter=25, checkpoint=str(tmp_path)).fit(Xd, yd)


@pytest.mark.filterwarnings("ignore::dmlkit.exceptions.ConvergenceWarning")  # tol=0
def test_exact_solve_checkpoint_and_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    X, y = make_regression(4000, 8, random_state=0)
    Xd, yd = da.from_array(X, chunks=1000), da.from_array(y, chunks=1000)
    ref = Ridge(alpha=2.0).fit(Xd, yd)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, client.as_current():
        on_cluster = Ridge(alpha=2.0, checkpoint=str(tmp_path)).fit(Xd, yd)
        logreg = LogisticRegression(tol=0, max_iter=8).fit(Xd, (yd > 0).astype(int))
    np.testing.assert_array_equal(on_cluster.coef_, ref.coef_)
    again = Ridge(alpha=2.0, checkpoint=str(tmp_path)).fit(Xd, yd)  # finished: no pass
    assert again.resumed_from_iter_ == 1
    np.testing.assert_array_equal(again.coef_, ref.coef_)
    local = LogisticRegression(tol=0, max_iter=8).fit(Xd, (yd > 0).astype(int))
    np.testing.assert_array_equal(logreg.coef_, local.coef_)


def test_warm_start_continues(binary):
    X, y = binary
    cold = LogisticRegression(**TIGHT).fit(X, y)
    est = LogisticRegression(warm_start=True, **TIGHT)
    est.fit(X, y)
    est.fit(X, y)
    assert est.n_iter_[0] <= 2
    np.testing.assert_allclose(est.coef_, cold.coef_, atol=1e-7)


def test_max_iter_warns():
    X, y = make_classification(500, 5, random_state=0)
    with pytest.warns(dmlkit.exceptions.ConvergenceWarning, match="did not converge"):
        est = LogisticRegression(max_iter=2).fit(X, y)
    assert not est.converged_ and est.n_iter_[0] == 2


# -- bad input ------------------------------------------------------------------------
def test_bad_input_is_named(binary):
    X, y = binary
    Xn = X.copy()
    Xn[5, 3] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LogisticRegression().fit(Xn, y)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LogisticRegression().fit(da.from_array(Xn, chunks=500), da.from_array(y, chunks=500))
    yn = y.astype(float)
    yn[3] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        Ridge().fit(X, yn)
    with pytest.raises(ValueError, match="at least 2 classes.*only one class: 1"):
        LogisticRegression().fit(X, np.ones(len(y), dtype=int))
    with pytest.raises(ValueError, match="valid range of the loss 'HalfPoissonLoss'"):
        PoissonRegressor().fit(X, np.where(y > 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="y sums to zero"):
        PoissonRegressor().fit(X, np.zeros(len(y)))
    est = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but LogisticRegression is "
                                         "expecting 12 features"):
        est.predict(X[:, :4])
    with pytest.raises(ValueError, match="l1_ratio=0.5 is only used with penalty='elasticnet'"):
        LogisticRegression(l1_ratio=0.5).fit(X, y)
    with pytest.raises(ValueError, match="l1_ratio must be specified when penalty is "
                                         "elasticnet"):
        LogisticRegression(penalty="elasticnet").fit(X, y)
    with pytest.raises(ValueError, match="solver='lbfgs' needs a smooth penalty"):
        LogisticRegression(penalty="l1", solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="The 'C' parameter of LogisticRegression must be"):
        LogisticRegression(C=0).fit(X, y)
    with pytest.raises(ValueError, match="The classes, \\[7\\], are not in class"):
        LogisticRegression(class_weight={7: 2.0}).fit(X, y)
    # a failed fit leaves a fitted estimator as it was
    before = est.coef_.copy()
    with pytest.raises(ValueError):
        est.fit(Xn, y)
    np.testing.assert_array_equal(est.coef_, before)


# -- the solver -----------------------------------------------------------------------
def _softmax_problem():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)  # unscaled: an ill-conditioned problem
    Y, n = np.eye(3)[y], len(y)

    def fg(t):
        W, b = t[:12].reshape(3, 4), t[12:]
        Z = X @ W.T + b
        m = Z.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(Z - m).sum(1))
        P = np.exp(Z - lse[:, None]) - Y
        f = np.mean(lse - (Z * Y).sum(1)) + 0.5 / n * (W ** 2).sum()
        return f, np.concatenate([(P.T @ X / n + W / n).ravel(), P.sum(0) / n])

    return fg


def test_lbfgs_keeps_m_pairs_and_needs_no_more_passes_than_scipy():
    from scipy.optimize import minimize

    from dmlkit.linear_model._qn import FTOL, QuasiNewton

    fg = _softmax_problem()
    ref = minimize(fg, np.zeros(15), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=1000, gtol=1e-6, ftol=FTOL, maxls=50))
    qn, passes = QuasiNewton(None, m=10, tol=1e-6), [0]

    def ev(t):
        passes[0] += 1
        return fg(t)

    state, sizes = qn.start(np.zeros(15), *fg(np.zeros(15))), []
    for _ in range(1000):
        state, status = qn.step(state, ev)
        sizes.append(len(state["s"]))
        if status:
            break
    assert status in ("gradient", "objective")
    assert max(sizes) == 10  # the memory fills to m and stays there
    assert state["f"] <= ref.fun + 1e-10 * abs(ref.fun)
    assert passes[0] <= ref.nfev, (passes[0], ref.nfev)
