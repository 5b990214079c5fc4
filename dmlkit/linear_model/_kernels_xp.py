"""SGD block kernel written against the array API (NumPy, CuPy, array_api_strict).

Array-API twin of ``_kernels_cpu.sgd_epoch_block``: one local epoch over a block, with
the same update rule (scikit-learn's ``_plain_sgd``: schedule at step t, clipped loss
gradient, L2 shrink, cumulative truncated-gradient L1, intercept) for all M one-vs-rest
models at once, but on mini-batches: the rows are visited in ``order`` in consecutive
batches of ``batch_size`` and each batch makes one step with the mean gradient of its
rows.  With ``batch_size=1`` this is the per-sample update of the numba kernel (equal
to rounding: the numba kernel keeps L2 as a lazy weight scale, this one multiplies).

Everything runs in float64 on the block's namespace and device; results come back as
arrays of that namespace (the caller moves them to the host).
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device

MAX_DLOSS = 1e12
_EXP_CAP = 18.0  # log_loss switches to its asymptotic forms beyond |z| > 18


def _l1_ratio(params):
    penalty_id = params["penalty"]
    if penalty_id == 1:
        return 0.0
    if penalty_id == 2:
        return 1.0
    return float(params["l1_ratio"])


def _learning_rate(params, eta, t):
    """The step at step t: a float ('optimal') or one per model (``eta``, (M,))."""
    lr_id = params["learning_rate"]
    if lr_id == 1:  # optimal
        return 1.0 / (params["alpha"] * (params["optimal_init"] + t - 1.0))
    if lr_id == 2:  # invscaling
        return eta / (t ** params["power_t"])
    return eta  # constant / adaptive (the caller divides eta on plateaus)


def loss_values(xp, loss_id, P, Y, eps):
    """Elementwise loss(p, y), as ``_kernels_cpu.loss_value`` (vectorised)."""
    zero = xp.zeros((), dtype=P.dtype, device=device(P))
    if loss_id == 0 or loss_id == 4:  # hinge / perceptron
        thr = 1.0 if loss_id == 0 else 0.0
        z = P * Y
        return xp.where(z <= thr, thr - z, zero)
    if loss_id == 1:  # log_loss
        z = P * Y
        # clamp inside exp so the branches not taken cannot overflow
        mid = xp.log1p(xp.exp(-xp.clip(z, -_EXP_CAP, _EXP_CAP)))
        big = xp.exp(-xp.maximum(z, xp.asarray(_EXP_CAP, dtype=P.dtype, device=device(P))))
        return xp.where(z > _EXP_CAP, big, xp.where(z < -_EXP_CAP, -z, mid))
    if loss_id == 2:  # modified_huber
        z = P * Y
        return xp.where(z >= 1.0, zero, xp.where(z >= -1.0, (1.0 - z) * (1.0 - z), -4.0 * z))
    if loss_id == 3:  # squared_hinge
        z = 1.0 - P * Y
        return xp.where(z > 0.0, z * z, zero)
    if loss_id == 5:  # squared_error
        r = P - Y
        return 0.5 * r * r
    if loss_id == 6:  # huber
        r = P - Y
        a = xp.abs(r)
        return xp.where(a <= eps, 0.5 * r * r, eps * a - 0.5 * eps * eps)
    if loss_id == 7:  # epsilon_insensitive
        return xp.maximum(xp.abs(Y - P) - eps, zero)
    z = xp.abs(Y - P) - eps  # squared_epsilon_insensitive
    return xp.where(z > 0.0, z * z, zero)


def loss_gradients(xp, loss_id, P, Y, eps):
    """Elementwise d loss / d p, as ``_kernels_cpu.loss_gradient`` (vectorised)."""
    dev = device(P)
    zero = xp.zeros((), dtype=P.dtype, device=dev)
    if loss_id == 0 or loss_id == 4:
        thr = 1.0 if loss_id == 0 else 0.0
        return xp.where(P * Y <= thr, -Y, zero)
    if loss_id == 1:
        z = P * Y
        mid = -Y / (xp.exp(xp.clip(z, -_EXP_CAP, _EXP_CAP)) + 1.0)
        big = -Y * xp.exp(-xp.maximum(z, xp.asarray(_EXP_CAP, dtype=P.dtype, device=dev)))
        return xp.where(z > _EXP_CAP, big, xp.where(z < -_EXP_CAP, -Y, mid))
    if loss_id == 2:
        z = P * Y
        return xp.where(z >= 1.0, zero,
                        xp.where(z >= -1.0, -2.0 * (1.0 - z) * Y, -4.0 * Y))
    if loss_id == 3:
        z = 1.0 - P * Y
        return xp.where(z > 0.0, -2.0 * Y * z, zero)
    if loss_id == 5:
        return P - Y
    if loss_id == 6:
        r = P - Y
        e = xp.full((), eps, dtype=P.dtype, device=dev)
        return xp.where(xp.abs(r) <= eps, r, xp.where(r > 0.0, e, -e))
    if loss_id == 7:
        one = xp.ones((), dtype=P.dtype, device=dev)
        return xp.where(Y - P > eps, -one, xp.where(P - Y > eps, one, zero))
    z = Y - P
    return xp.where(z > eps, -2.0 * (z - eps), xp.where(z < -eps, 2.0 * (-z - eps), zero))


def loss_gradient(loss_id, p, y, eps):
    """d loss / d p of one (p, y) on the host, as ``_kernels_cpu.loss_gradient`` (the
    estimator's schedule start, ``optimal_init``, reads it from either module)."""
    xp = array_namespace(np.empty(0))  # NumPy, through array_api_compat
    P, Y = (xp.asarray(float(v), dtype=xp.float64) for v in (p, y))
    return float(loss_gradients(xp, int(loss_id), P, Y, float(eps)))


def sgd_epoch_block(X, Y, sw, order, coef, intercept, u, q, pos_w, neg_w, params,
                    n_threads=1, want_loss=True, avg_coef=None, avg_intercept=None,
                    batch_size=1):
    """One local mini-batch SGD epoch over a dense block.

    Returns (coef (M, d), intercept (M,), u (M,), q (M, d), sumloss (M,), avg_coef,
    avg_intercept), float64 arrays of X's namespace (the averages are None unless
    ``params["average"] > 0``).  ``order`` lists the rows to visit (it may leave rows out,
    e.g. validation rows).  ``params["t"]`` is the step of the first batch; it grows by
    one per batch.  ``params["intercept_decay"]`` (default 1) scales the intercept
    steps.  Averaged SGD (``params["average"] = a > 0``, in steps) keeps the running
    mean of the models after every step t >= a, continuing ``avg_coef``/``avg_intercept``.
    ``params["eta"]`` is one step for all models or one per model.
    ``sumloss`` sums each row's loss with the weights before its batch's update (0
    unless ``want_loss``); it is NaN whenever a decision value was not finite (NaN/inf
    in X), with or without ``want_loss``.  ``n_threads`` is accepted for signature
    parity and ignored.
    """
    xp = array_namespace(X)
    dev = device(X)
    f64 = xp.float64
    batch_size = max(1, int(batch_size))

    def put(a):
        return xp.asarray(a, dtype=f64, device=dev)

    average = float(params.get("average", 0))
    AW = AB = None
    if average > 0:
        AW, AB = put(avg_coef), put(avg_intercept)
    W = put(coef)
    b = put(intercept)
    U = put(u)
    Q = put(q)
    Yx = put(Y)
    swx = put(sw)
    pw = put(pos_w)[None, :]
    nw = put(neg_w)[None, :]
    idx_all = xp.asarray(order, dtype=xp.int64, device=dev)
    n_visit = idx_all.shape[0]
    M = W.shape[0]
    sumloss = xp.zeros((M,), dtype=f64, device=dev)
    nan = xp.full((), float("nan"), dtype=f64, device=dev)
    zero = xp.zeros((), dtype=f64, device=dev)

    loss_id = int(params["loss"])
    penalty_id = int(params["penalty"])
    alpha = float(params["alpha"])
    eps = float(params["epsilon"])
    fit_intercept = bool(params["fit_intercept"])
    decay = float(params.get("intercept_decay", 1.0))
    l1r = _l1_ratio(params)
    t = float(params["t"])
    eta = xp.asarray([float(v) for v in np.broadcast_to(params["eta"], (M,))], dtype=f64,
                     device=dev)

    for start in range(0, n_visit, batch_size):
        stop = min(n_visit, start + batch_size)
        nb = stop - start
        idx = idx_all[start:stop]
        Xb = xp.astype(xp.take(X, idx, axis=0), f64)  # (B, d)
        Yb = xp.take(Yx, idx, axis=0)  # (B, M)
        swb = xp.take(swx, idx, axis=0)  # (B,)
        P = Xb @ xp.matrix_transpose(W) + b[None, :]  # (B, M)
        # NaN/inf in x (0 * inf is NaN too): poison the loss so the fit reports it
        sumloss = sumloss + xp.sum(xp.where(xp.isfinite(P), zero, nan), axis=0)
        e = _learning_rate(params, eta, t)  # a float or (M,)
        ec = e[:, None] if not isinstance(e, float) else e
        if want_loss:
            sumloss = sumloss + xp.sum(loss_values(xp, loss_id, P, Yb, eps), axis=0)
        g = xp.clip(loss_gradients(xp, loss_id, P, Yb, eps), -MAX_DLOSS, MAX_DLOSS)
        g = g * xp.where(Yb > 0.0, pw, nw) * swb[:, None]  # (B, M)
        if penalty_id == 1 or penalty_id == 3:
            shrink = 1.0 - (1.0 - l1r) * ec * alpha
            W = W * (max(0.0, shrink) if isinstance(shrink, float) else xp.maximum(shrink, zero))
        W = W - (ec / nb) * (xp.matrix_transpose(g) @ Xb)
        if fit_intercept:
            b = b - (e * decay / nb) * xp.sum(g, axis=0)
        if penalty_id >= 2:
            U = U + l1r * e * alpha
            z = W
            Uc = U[:, None]
            W = xp.where(z > 0.0, xp.maximum(zero, z - (Uc + Q)),
                         xp.where(z < 0.0, xp.minimum(zero, z + (Uc - Q)), z))
            Q = Q + (W - z)
        if average > 0 and average <= t:
            num = t - average + 1.0
            AW = AW + (W - AW) / num
            AB = AB + (b - AB) / num
        t += 1.0
    return W, b, U, Q, sumloss, AW, AB
