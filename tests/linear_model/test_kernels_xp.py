"""Array-API SGD kernel: per-sample parity with the numba kernel (every loss, penalty and
schedule), NumPy vs array_api_strict, mini-batch semantics against a plain reference,
learning with batches, NaN reporting and the namespace of the results."""

import array_api_strict as xps
import numpy as np
import pytest

from dmlkit._core.dispatch import to_numpy
from dmlkit.linear_model import _kernels_cpu as cpu
from dmlkit.linear_model import _kernels_xp as xpk
from dmlkit.linear_model._loss import (
    CLASSIFICATION_LOSSES,
    LEARNING_RATES,
    PENALTIES,
    REGRESSION_LOSSES,
)

LOSSES = {**CLASSIFICATION_LOSSES, **REGRESSION_LOSSES}
STRICT_ARRAY = type(xps.asarray(0.0))
N, D = 120, 6


def make_params(loss, penalty, lr, alpha=0.01, t=1.0, fit_intercept=True):
    loss_id = LOSSES[loss]
    # The form of SGD._kernel_params' optimal_init, 1 / (eta0 * alpha), with a tame eta0:
    # its eta0 (about 3 at alpha=0.01) makes the squared losses diverge on 120 rows.
    optimal_init = 1.0 / (0.2 * alpha) if lr == "optimal" else 0.0
    return {"loss": loss_id, "penalty": PENALTIES[penalty], "alpha": alpha,
            "l1_ratio": 0.3, "epsilon": 0.1, "learning_rate": LEARNING_RATES[lr],
            "eta": 0.5 if lr == "invscaling" else 0.1, "power_t": 0.25,
            "optimal_init": float(optimal_init), "t": float(t),
            "fit_intercept": bool(fit_intercept)}


def make_problem(loss, M, dtype, seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * 0.1).astype(dtype)
    Wt = rng.standard_normal((max(M, 2), d)) * 3.0
    if loss in CLASSIFICATION_LOSSES:
        scores = X.astype(np.float64) @ Wt.T + 0.3 * rng.standard_normal((n, max(M, 2)))
        if M == 1:
            Y = np.where(scores[:, :1] > scores[:, 1:2], 1.0, -1.0)
        else:
            lab = scores.argmax(1)
            Y = np.where(lab[:, None] == np.arange(M)[None, :], 1.0, -1.0)
    else:
        Y = X.astype(np.float64) @ Wt[:M].T + 0.1 * rng.standard_normal((n, M))
    sw = rng.uniform(0.5, 2.0, n)
    order = rng.permutation(n).astype(np.int64)
    pos_w = rng.uniform(0.5, 2.0, M)
    neg_w = rng.uniform(0.5, 2.0, M)
    state = (0.1 * rng.standard_normal((M, d)), 0.1 * rng.standard_normal(M),
             np.zeros(M), np.zeros((M, d)))
    return X, Y, sw, order, state, pos_w, neg_w


def run_epochs(fn, X, Y, sw, order, state, pos_w, neg_w, params, n_epochs=2, **kw):
    """Chain epochs (the L1 state and t carried over), as the estimator does."""
    params = dict(params)
    steps = -(-len(order) // kw.get("batch_size", 1))
    losses = []
    for _ in range(n_epochs):
        # the numba kernel returns the averages too: the first five are the same
        W, b, u, q, sl = fn(X, Y, sw, order, *state, pos_w, neg_w, params, **kw)[:5]
        state = tuple(np.asarray(to_numpy(a), dtype=np.float64) for a in (W, b, u, q))
        losses.append(np.asarray(to_numpy(sl)))
        params["t"] += steps
    return state, losses


def assert_state_close(a, b, rtol=1e-9, atol=1e-10):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# -- batch_size=1: the numba kernel, to rounding ---------------------------------------
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("lr", list(LEARNING_RATES))
@pytest.mark.parametrize("M,dtype", [(3, np.float64), (1, np.float32)])
def test_batch1_matches_numba(loss, penalty, lr, M, dtype):
    X, Y, sw, order, state, pos_w, neg_w = make_problem(loss, M, dtype)
    params = make_params(loss, penalty, lr)
    ref, ref_loss = run_epochs(cpu.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params)
    got, got_loss = run_epochs(xpk.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params, batch_size=1)
    assert max(np.abs(a).max() for a in ref) < 100  # a sane (non-diverging) run
    assert_state_close(got, ref)
    for g, r in zip(got_loss, ref_loss, strict=True):
        assert np.all(r > 0)
        np.testing.assert_allclose(g, r, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("loss", ["log_loss", "modified_huber", "huber"])
def test_batch1_matches_numba_dtypes_models(loss, M, dtype):
    # the remaining M x dtype corners on a few losses, elasticnet + optimal, no intercept
    X, Y, sw, order, state, pos_w, neg_w = make_problem(loss, M, dtype, seed=3)
    params = make_params(loss, "elasticnet", "optimal", fit_intercept=False, t=17.0)
    ref, ref_loss = run_epochs(cpu.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params)
    got, got_loss = run_epochs(xpk.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params, batch_size=1)
    assert_state_close(got, ref)
    np.testing.assert_array_equal(got[1], state[1])  # intercept untouched
    np.testing.assert_allclose(np.concatenate(got_loss), np.concatenate(ref_loss), rtol=1e-9)


@pytest.mark.parametrize("loss", ["hinge", "squared_error"])
def test_batch1_partial_order_and_intercept_decay_match_numba(loss):
    # order may leave rows out (validation rows); intercept_decay scales intercept steps
    X, Y, sw, order, state, pos_w, neg_w = make_problem(loss, 3, np.float64, seed=4)
    order = order[:85]
    params = {**make_params(loss, "elasticnet", "invscaling"), "intercept_decay": 0.01}
    ref, ref_loss = run_epochs(cpu.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params)
    got, got_loss = run_epochs(xpk.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params, batch_size=1)
    assert_state_close(got, ref)
    np.testing.assert_allclose(np.concatenate(got_loss), np.concatenate(ref_loss), rtol=1e-9)


@pytest.mark.parametrize("penalty", [None, "l2"])
@pytest.mark.parametrize("start", [1, 40])
def test_batch1_average_matches_numba(penalty, start):
    # averaged SGD: the running mean of the iterates from step `start` on (numba keeps
    # scikit-learn's lazy form of it, the array-API kernel the plain running mean)
    X, Y, sw, order, state, pos_w, neg_w = make_problem("log_loss", 3, np.float64, seed=5)
    params = {**make_params("log_loss", penalty, "invscaling"), "average": start}
    avg = (np.zeros_like(state[0]), np.zeros_like(state[1]))
    ref = cpu.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params,
                              avg_coef=avg[0], avg_intercept=avg[1])
    got = xpk.sgd_epoch_block(xps.asarray(X), Y, sw, order, *state, pos_w, neg_w, params,
                              avg_coef=avg[0], avg_intercept=avg[1], batch_size=1)
    for g, r in zip(got[:4] + got[5:], ref[:4] + ref[5:], strict=True):
        np.testing.assert_allclose(to_numpy(g), r, rtol=1e-9, atol=1e-12)
    assert not np.allclose(ref[5], ref[0])  # the average is not the last iterate


def test_log_loss_far_branches_match_numba():
    # |p| > 18: the asymptotic log_loss branches (and no overflow warnings from the
    # branches not taken)
    X, Y, sw, order, _, pos_w, neg_w = make_problem("log_loss", 3, np.float64, seed=5)
    state = (np.full((3, D), 40.0), np.zeros(3), np.zeros(3), np.zeros((3, D)))
    X = X * 5.0
    params = make_params("log_loss", "l2", "constant")
    with np.errstate(all="raise"):
        got, got_loss = run_epochs(xpk.sgd_epoch_block, X, Y, sw, order, state, pos_w,
                                   neg_w, params, n_epochs=1, batch_size=1)
    ref, ref_loss = run_epochs(cpu.sgd_epoch_block, X, Y, sw, order, state, pos_w, neg_w,
                               params, n_epochs=1)
    assert_state_close(got, ref)
    np.testing.assert_allclose(got_loss[0], ref_loss[0], rtol=1e-9)


def test_want_loss_false_gives_zero_loss_same_model():
    X, Y, sw, order, state, pos_w, neg_w = make_problem("hinge", 3, np.float64)
    params = make_params("hinge", "elasticnet", "invscaling")
    a = xpk.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params, want_loss=False,
                            batch_size=4)
    b = xpk.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params, batch_size=4)
    np.testing.assert_array_equal(a[4], np.zeros(3))
    assert np.all(b[4] > 0)
    assert_state_close(a[:4], b[:4], rtol=0, atol=0)


# -- array_api_strict gives the NumPy results ------------------------------------------
def strict_args(X, Y, sw, order):
    return xps.asarray(X), xps.asarray(Y), xps.asarray(sw), xps.asarray(order)


@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("loss,penalty,lr", [
    ("hinge", "l2", "optimal"),
    ("log_loss", "elasticnet", "invscaling"),
    ("modified_huber", "l1", "constant"),
    ("squared_hinge", None, "adaptive"),
    ("perceptron", "elasticnet", "optimal"),
    ("squared_error", "l2", "invscaling"),
    ("huber", "elasticnet", "constant"),
    ("epsilon_insensitive", "l1", "optimal"),
    ("squared_epsilon_insensitive", "elasticnet", "adaptive"),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_api_strict_matches_numpy(loss, penalty, lr, batch_size, dtype):
    X, Y, sw, order, state, pos_w, neg_w = make_problem(loss, 3, dtype, seed=1)
    params = make_params(loss, penalty, lr)
    ref = xpk.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params,
                              batch_size=batch_size)
    for args in (strict_args(X, Y, sw, order), (xps.asarray(X), Y, sw, order)):
        got = xpk.sgd_epoch_block(*args, *state, pos_w, neg_w, params,
                                  batch_size=batch_size)
        for g, r in zip(got[:5], ref[:5], strict=True):
            assert isinstance(g, STRICT_ARRAY)
            assert g.dtype == xps.float64
            np.testing.assert_allclose(to_numpy(g), r, rtol=1e-12, atol=1e-14)


def test_results_in_namespace_of_X():
    X, Y, sw, order, state, pos_w, neg_w = make_problem("hinge", 3, np.float32)
    params = make_params("hinge", "elasticnet", "optimal")
    out = xpk.sgd_epoch_block(xps.asarray(X), Y, sw, order, *state, pos_w, neg_w, params,
                              batch_size=8)
    assert out[5:] == (None, None)  # no averages without average > 0
    out = out[:5]
    assert all(isinstance(a, STRICT_ARRAY) and a.dtype == xps.float64 for a in out)
    assert [tuple(a.shape) for a in out] == [(3, D), (3,), (3,), (3, D), (3,)]
    assert all(a.device == xps.asarray(X).device for a in out)
    out_np = xpk.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params,
                                 batch_size=8)
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in out_np[:5])
    # inputs are not modified
    assert state[0].shape == (3, D) and np.all(state[2] == 0) and np.all(state[3] == 0)


# -- mini-batches ----------------------------------------------------------------------
def reference_minibatch(X, Y, sw, order, coef, intercept, u, q, pos_w, neg_w, p, bs):
    """Plain NumPy mini-batch SGD with the numba kernel's scalar loss functions."""
    W, b, U, Q = (np.array(a, dtype=np.float64) for a in (coef, intercept, u, q))
    X = X.astype(np.float64)
    M = W.shape[0]
    l1r = {1: 0.0, 2: 1.0}.get(p["penalty"], p["l1_ratio"])
    t, sumloss = p["t"], np.zeros(M)
    for s in range(0, len(order), bs):
        rows = order[s:s + bs]
        lr = p["learning_rate"]
        e = (1.0 / (p["alpha"] * (p["optimal_init"] + t - 1.0)) if lr == 1
             else p["eta"] / t ** p["power_t"] if lr == 2 else p["eta"])
        G = np.zeros((len(rows), M))
        for k, i in enumerate(rows):
            for m in range(M):
                pv = W[m] @ X[i] + b[m]
                sumloss[m] += cpu.loss_value(p["loss"], pv, Y[i, m], p["epsilon"])
                g = min(max(cpu.loss_gradient(p["loss"], pv, Y[i, m], p["epsilon"]), -1e12),
                        1e12)
                G[k, m] = g * (pos_w[m] if Y[i, m] > 0 else neg_w[m]) * sw[i]
        if p["penalty"] in (1, 3):
            W *= max(0.0, 1.0 - (1.0 - l1r) * e * p["alpha"])
        W -= e * G.T @ X[rows] / len(rows)
        if p["fit_intercept"]:
            b -= e * G.mean(0)
        if p["penalty"] >= 2:
            U += l1r * e * p["alpha"]
            for m in range(M):
                for f in range(W.shape[1]):
                    z = W[m, f]
                    if z > 0:
                        W[m, f] = max(0.0, z - (U[m] + Q[m, f]))
                    elif z < 0:
                        W[m, f] = min(0.0, z + (U[m] - Q[m, f]))
                    Q[m, f] += W[m, f] - z
        t += 1.0
    return W, b, U, Q, sumloss


@pytest.mark.parametrize("batch_size", [7, 32, 500])
@pytest.mark.parametrize("loss,penalty,lr", [
    ("log_loss", "elasticnet", "invscaling"),
    ("hinge", "l1", "optimal"),
    ("huber", "l2", "constant"),
    ("squared_epsilon_insensitive", "elasticnet", "optimal"),
])
def test_minibatch_matches_reference(loss, penalty, lr, batch_size):
    # batches of 7 leave a short last batch (120 = 17 * 7 + 1); 500 > n is one batch
    X, Y, sw, order, state, pos_w, neg_w = make_problem(loss, 3, np.float32, seed=2)
    state = (state[0], state[1], np.full(3, 0.01), 0.001 * np.ones((3, D)))
    params = make_params(loss, penalty, lr, t=5.0)
    got = xpk.sgd_epoch_block(xps.asarray(X), Y, sw, order, *state, pos_w, neg_w, params,
                              batch_size=batch_size)
    ref = reference_minibatch(X, Y, sw, order, *state, pos_w, neg_w, params, batch_size)
    for g, r in zip(got[:5], ref[:5], strict=True):
        np.testing.assert_allclose(to_numpy(g), r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "modified_huber"])
def test_minibatches_learn_separable(loss):
    rng = np.random.default_rng(7)
    n, d = 400, 5
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    keep = np.abs(X @ w) > 0.3  # a margin: separable
    X = X[keep]
    n = X.shape[0]
    Y = np.where(X @ w > 0, 1.0, -1.0)[:, None]
    params = make_params(loss, "l2", "constant", alpha=1e-4)
    params["eta"] = 0.5
    state = (np.zeros((1, d)), np.zeros(1), np.zeros(1), np.zeros((1, d)))
    Xs = xps.asarray(X)
    losses = []
    for _ in range(6):
        order = rng.permutation(n).astype(np.int64)
        out = xpk.sgd_epoch_block(Xs, Y, np.ones(n), order, *state, np.ones(1), np.ones(1),
                                  params, batch_size=32)
        state = tuple(to_numpy(a) for a in out[:4])
        losses.append(float(to_numpy(out[4])[0]) / n)
        params["t"] += -(-n // 32)
    err = np.mean(np.sign(X @ state[0][0] + state[1][0]) != Y[:, 0])
    assert err < 0.03
    assert losses[-1] < 0.5 * losses[0]


def test_minibatches_learn_regression():
    rng = np.random.default_rng(8)
    n, d = 300, 4
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    Y = (X @ w + 1.5 + 0.01 * rng.standard_normal(n))[:, None]
    params = make_params("squared_error", None, "constant")
    params["eta"] = 0.2
    state = (np.zeros((1, d)), np.zeros(1), np.zeros(1), np.zeros((1, d)))
    for _ in range(30):
        out = xpk.sgd_epoch_block(X, Y, np.ones(n), rng.permutation(n), *state, np.ones(1),
                                  np.ones(1), params, batch_size=16)
        state = out[:4]
    np.testing.assert_allclose(state[0][0], w, atol=0.02)
    np.testing.assert_allclose(state[1][0], 1.5, atol=0.02)


# -- NaN / inf in X --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("want_loss", [True, False])
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("strict", [False, True])
def test_non_finite_x_poisons_loss(bad, want_loss, batch_size, strict):
    X, Y, sw, order, state, pos_w, neg_w = make_problem("hinge", 3, np.float64)
    X[17, 2] = bad
    params = make_params("hinge", "l2", "constant")
    Xin = xps.asarray(X) if strict else X
    with np.errstate(invalid="ignore"):  # 0 * inf in the gradient step
        out = xpk.sgd_epoch_block(Xin, Y, sw, order, *state, pos_w, neg_w, params,
                                  want_loss=want_loss, batch_size=batch_size)
    sumloss = to_numpy(out[4])
    assert not np.any(np.isfinite(sumloss))
    ref = cpu.sgd_epoch_block(X, Y, sw, order, *state, pos_w, neg_w, params,
                              want_loss=want_loss)[4]
    assert not np.any(np.isfinite(ref))


def test_empty_block():
    X = np.zeros((0, D), dtype=np.float32)
    state = (np.ones((2, D)), np.ones(2), np.zeros(2), np.zeros((2, D)))
    out = xpk.sgd_epoch_block(xps.asarray(X), np.zeros((0, 2)), np.zeros(0),
                              np.zeros(0, dtype=np.int64), *state, np.ones(2), np.ones(2),
                              make_params("hinge", "l2", "constant"), batch_size=8)
    for g, r in zip(out[:5], (*state, np.zeros(2)), strict=True):
        np.testing.assert_array_equal(to_numpy(g), r)
