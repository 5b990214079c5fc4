"""SGD block kernels in numba: one local epoch over a block (iterative parameter mixing).

Follows scikit-learn's ``_plain_sgd`` update for each sample: the learning rate of the
schedule at step t, the loss gradient (clipped), L2 as a lazy weight scale, L1 as the
cumulative truncated gradient (Tsuruoka et al.), the intercept, then t += 1.  Several
models (one-vs-rest classes) are trained in the same pass over the block, each with
its own weight scale; models are independent, so ``prange`` over them changes no bits.
Averaged SGD (``average``) keeps scikit-learn's lazy running mean ``(aw + a v) / b``.

Two kernels share every per-sample rule: ``_sgd_epoch`` for dense blocks and
``_sgd_epoch_csr`` for CSR blocks, whose dot, update, average and L1 steps touch only
the row's non-zeros (scikit-learn's sparse SGD: the cost is the non-zeros, not the
dimension).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from dmlkit._core.numba_utils import block_kernel, prefetch

MAX_DLOSS = 1e12
GATHER = 512  # rows copied in visiting order before they are used (see _sgd_epoch)
PREFETCH_ROWS = 8  # how far ahead shuffled CSR rows are prefetched (_prefetch_csr_rows)


@numba.njit(nogil=True, cache=True)
def loss_value(loss_id, p, y, eps):
    if loss_id == 0 or loss_id == 4:  # hinge (threshold 1) / perceptron (threshold 0)
        thr = 1.0 if loss_id == 0 else 0.0
        z = p * y
        return thr - z if z <= thr else 0.0
    if loss_id == 1:  # log_loss
        z = p * y
        if z > 18.0:
            return math.exp(-z)
        if z < -18.0:
            return -z
        return math.log1p(math.exp(-z))
    if loss_id == 2:  # modified_huber
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return (1.0 - z) * (1.0 - z)
        return -4.0 * z
    if loss_id == 3:  # squared_hinge
        z = 1.0 - p * y
        return z * z if z > 0 else 0.0
    if loss_id == 5:  # squared_error
        r = p - y
        return 0.5 * r * r
    if loss_id == 6:  # huber
        r = p - y
        a = abs(r)
        return 0.5 * r * r if a <= eps else eps * a - 0.5 * eps * eps
    if loss_id == 7:  # epsilon_insensitive
        return max(0.0, abs(y - p) - eps)
    z = abs(y - p) - eps  # squared_epsilon_insensitive
    return z * z if z > 0 else 0.0


@numba.njit(nogil=True, cache=True)
def loss_gradient(loss_id, p, y, eps):
    """d loss / d p, as scikit-learn's ``cy_gradient(y, p)``."""
    if loss_id == 0 or loss_id == 4:
        thr = 1.0 if loss_id == 0 else 0.0
        return -y if p * y <= thr else 0.0
    if loss_id == 1:
        z = p * y
        if z > 18.0:
            return -y * math.exp(-z)
        if z < -18.0:
            return -y
        return -y / (math.exp(z) + 1.0)
    if loss_id == 2:
        z = p * y
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return -2.0 * (1.0 - z) * y
        return -4.0 * y
    if loss_id == 3:
        z = 1.0 - p * y
        return -2.0 * y * z if z > 0 else 0.0
    if loss_id == 5:
        return p - y
    if loss_id == 6:
        r = p - y
        if abs(r) <= eps:
            return r
        return eps if r > 0 else -eps
    if loss_id == 7:
        if y - p > eps:
            return -1.0
        if p - y > eps:
            return 1.0
        return 0.0
    z = y - p
    if z > eps:
        return -2.0 * (z - eps)
    if z < -eps:
        return 2.0 * (-z - eps)
    return 0.0


@numba.njit(nogil=True, cache=True)
def _dot_row(W, m, X, i):
    # w_m . x_i with four partial sums in a fixed order: breaks the add latency chain
    # (a 50-feature row: 4x fewer dependent adds) and stays the same bits everywhere.
    d = X.shape[1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    f = 0
    while f + 4 <= d:
        s0 += W[m, f] * X[i, f]
        s1 += W[m, f + 1] * X[i, f + 1]
        s2 += W[m, f + 2] * X[i, f + 2]
        s3 += W[m, f + 3] * X[i, f + 3]
        f += 4
    while f < d:
        s0 += W[m, f] * X[i, f]
        f += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def _dot_sparse_row(w, data, indices, lo, hi):
    # w_m . x over the row's stored entries lo:hi, four partial sums as _dot_row
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    k = lo
    while k + 4 <= hi:
        s0 += w[indices[k]] * data[k]
        s1 += w[indices[k + 1]] * data[k + 1]
        s2 += w[indices[k + 2]] * data[k + 2]
        s3 += w[indices[k + 3]] * data[k + 3]
        k += 4
    while k < hi:
        s0 += w[indices[k]] * data[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


@numba.njit(nogil=True, cache=True)
def _sample_update(loss_id, p, y, eps, lr_id, eta, alpha, optimal_init, t, power_t, pos_w,
                   neg_w, sw):
    """(learning rate, update) of one sample: scikit-learn's ``-eta * dloss * cw * sw``."""
    if lr_id == 1:
        e = 1.0 / (alpha * (optimal_init + t - 1.0))
    elif lr_id == 2:
        e = eta / (t ** power_t)
    else:
        e = eta
    g = loss_gradient(loss_id, p, y, eps)
    if g < -MAX_DLOSS:
        g = -MAX_DLOSS
    elif g > MAX_DLOSS:
        g = MAX_DLOSS
    cw = pos_w if y > 0.0 else neg_w
    return e, -e * g * cw * sw


@numba.njit(nogil=True, cache=True)
def _fold_scale(W, AW, m, wscale, avg_a, avg_b, averaging):
    # w = wscale * v (and the average (aw + a v) / b) folded into the arrays, scale reset
    # to 1: scikit-learn's ``reset_wscale``.
    d = W.shape[1]
    if averaging:
        inv_b = 1.0 / avg_b
        for f in range(d):
            AW[m, f] = (AW[m, f] + avg_a * W[m, f]) * inv_b
    for f in range(d):
        W[m, f] *= wscale


@numba.njit(nogil=True, cache=True)
def _l1_truncate(W, Q, m, f, u, wscale):
    # The cumulative truncated-gradient L1 step on feature f (Tsuruoka et al. 2009).
    z = W[m, f]
    if wscale * z > 0.0:
        W[m, f] = max(0.0, z - (u + Q[m, f]) / wscale)
    elif wscale * z < 0.0:
        W[m, f] = min(0.0, z + (u - Q[m, f]) / wscale)
    Q[m, f] += wscale * (W[m, f] - z)


@block_kernel
def _sgd_epoch(X, Y, sw, order, coef, intercept, u0, q0, avg_coef, avg_intercept, pos_w,
               neg_w, loss_id, penalty_id, alpha, l1_ratio, eps, lr_id, eta, power_t,
               optimal_init, t_start, fit_intercept, intercept_decay, average, want_loss):
    # IN  X (n, d); Y (n, M) targets (+-1 for classifiers); sw (n,) sample weights;
    #     order (k,) rows to visit, in order (k <= n: validation rows are left out);
    #     coef (M, d), intercept (M,) starting models; u0 (M,), q0 (M, d) L1 state
    #     (cumulative penalty, penalty applied per feature) carried across epochs as
    #     scikit-learn does within one fit; avg_coef (M, d) / avg_intercept (M,) the
    #     running averages when average > 0 (averaging from step t = average on; (M, 0)
    #     otherwise); pos_w/neg_w (M,) class weights for y > 0 / y <= 0; eta (M,) the
    #     step of each model (learning_rate='adaptive' lowers each one on its own
    #     plateaus, as scikit-learn's one-vs-rest fits do); want_loss: sum
    #     the losses (only the tol rule and verbose read them: log_loss pays exp + log1p)
    # OUT coef, intercept, u, q, avg_coef, avg_intercept after one pass; sumloss (M,) loss
    #     of each sample before its update (0 unless want_loss; NaN if x had NaN/inf)
    n_visit = order.shape[0]
    d = X.shape[1]
    M = coef.shape[0]
    W = coef.astype(np.float64)
    b = intercept.astype(np.float64)
    U = u0.astype(np.float64)
    Q = q0.astype(np.float64)
    AW = avg_coef.astype(np.float64)
    AB = avg_intercept.astype(np.float64)
    averaging = average > 0
    sumloss = np.zeros(M)
    l1r = 0.0 if penalty_id == 1 else (1.0 if penalty_id == 2 else l1_ratio)
    for m in prange(M):
        wscale = 1.0
        avg_a = 0.0
        avg_b = 1.0
        u = U[m]
        t = t_start
        bm = b[m]
        abm = AB[m]
        # Shuffled rows are random reads that stall the dependent SGD updates (5x slower
        # than storage order on 50 features).  A plain copy loop has no dependencies, so
        # gathering the next GATHER rows in visiting order first overlaps their misses;
        # the updates then read the buffer in order.  Same values, same bits.
        buf = np.empty((GATHER, d), dtype=X.dtype)
        for ii in range(n_visit):
            r = ii % GATHER
            if r == 0:
                for rr in range(min(GATHER, n_visit - ii)):
                    j = order[ii + rr]
                    for f in range(d):
                        buf[rr, f] = X[j, f]
            i = order[ii]
            y = Y[i, m]
            p = _dot_row(W, m, buf, r) * wscale + bm
            if not math.isfinite(p):
                # NaN/inf in x (0 * inf is NaN too): poison the loss so the fit reports it
                sumloss[m] += np.nan
            if want_loss:
                sumloss[m] += loss_value(loss_id, p, y, eps)
            e, update = _sample_update(loss_id, p, y, eps, lr_id, eta[m], alpha, optimal_init,
                                       t, power_t, pos_w[m], neg_w[m], sw[i])
            if penalty_id == 1 or penalty_id == 3:
                wscale *= max(0.0, 1.0 - (1.0 - l1r) * e * alpha)
                if wscale < 1e-9:  # fold the scale into the weights (as scikit-learn)
                    _fold_scale(W, AW, m, wscale, avg_a, avg_b, averaging)
                    wscale = 1.0
                    avg_a = 0.0
                    avg_b = 1.0
            if update != 0.0:
                s = update / wscale
                for f in range(d):
                    W[m, f] += s * buf[r, f]
            if fit_intercept:
                bm += update * intercept_decay
            if averaging and average <= t:
                num = t - average + 1.0
                mu = 1.0 / num
                if update != 0.0:  # adds exact zeros otherwise
                    c = -update / wscale
                    for f in range(d):
                        AW[m, f] += avg_a * buf[r, f] * c
                if num > 1.0:
                    avg_b /= 1.0 - mu
                avg_a += mu * avg_b * wscale
                abm += (bm - abm) / num
            if penalty_id >= 2:
                u += l1r * e * alpha
                for f in range(d):  # dense rows: every feature, as scikit-learn
                    _l1_truncate(W, Q, m, f, u, wscale)
            t += 1.0
        _fold_scale(W, AW, m, wscale, avg_a, avg_b, averaging)
        b[m] = bm
        U[m] = u
        AB[m] = abm
    return W, b, U, Q, AW, AB, sumloss


@block_kernel
def _sgd_epoch_csr(data, indices, indptr, Y, sw, order, coef, intercept, u0, q0, avg_coef,
                   avg_intercept, pos_w, neg_w, loss_id, penalty_id, alpha, l1_ratio, eps,
                   lr_id, eta, power_t, optimal_init, t_start, fit_intercept, intercept_decay,
                   average, want_loss):
    # As _sgd_epoch, for a CSR block (data, indices, indptr): every per-row loop runs over
    # the row's stored entries only.
    n_visit = order.shape[0]
    M = coef.shape[0]
    W = coef.astype(np.float64)
    b = intercept.astype(np.float64)
    U = u0.astype(np.float64)
    Q = q0.astype(np.float64)
    AW = avg_coef.astype(np.float64)
    AB = avg_intercept.astype(np.float64)
    averaging = average > 0
    sumloss = np.zeros(M)
    l1r = 0.0 if penalty_id == 1 else (1.0 if penalty_id == 2 else l1_ratio)
    for m in prange(M):
        wscale = 1.0
        avg_a = 0.0
        avg_b = 1.0
        u = U[m]
        t = t_start
        bm = b[m]
        abm = AB[m]
        Wm = W[m]
        for ii in range(n_visit):
            # Shuffled CSR rows are chains of dependent cache misses (order -> indptr ->
            # the row's entries), which cost twice the updates themselves at 38
            # non-zeros per row.  Ask for them ahead: the row pointers, target and
            # weight PREFETCH_ROWS rows ahead, and the entries of the row half as far
            # ahead (its pointers have arrived by then).  Prefetches change no value.
            # (Written here, not in a helper: the inlined helper ran 30% slower.)
            if ii + 2 * PREFETCH_ROWS < n_visit:
                j = order[ii + 2 * PREFETCH_ROWS]
                prefetch(indptr, j)
                prefetch(Y, j * M + m)
                prefetch(sw, j)
            if ii + PREFETCH_ROWS < n_visit:
                j = order[ii + PREFETCH_ROWS]
                for k in range(indptr[j], indptr[j + 1], 8):  # 64-byte lines of float64
                    prefetch(data, k)
                for k in range(indptr[j], indptr[j + 1], 16):  # (of int32; int64 ids:
                    prefetch(indices, k)                       # every other line)
            i = order[ii]
            lo = indptr[i]
            hi = indptr[i + 1]
            y = Y[i, m]
            p = _dot_sparse_row(Wm, data, indices, lo, hi) * wscale + bm
            if not math.isfinite(p):
                sumloss[m] += np.nan
            if want_loss:
                sumloss[m] += loss_value(loss_id, p, y, eps)
            e, update = _sample_update(loss_id, p, y, eps, lr_id, eta[m], alpha, optimal_init,
                                       t, power_t, pos_w[m], neg_w[m], sw[i])
            if penalty_id == 1 or penalty_id == 3:
                wscale *= max(0.0, 1.0 - (1.0 - l1r) * e * alpha)
                if wscale < 1e-9:
                    _fold_scale(W, AW, m, wscale, avg_a, avg_b, averaging)
                    wscale = 1.0
                    avg_a = 0.0
                    avg_b = 1.0
            if update != 0.0:
                s = update / wscale
                for k in range(lo, hi):
                    Wm[indices[k]] += s * data[k]
            if fit_intercept:
                bm += update * intercept_decay
            if averaging and average <= t:
                num = t - average + 1.0
                mu = 1.0 / num
                if update != 0.0:  # adds exact zeros otherwise
                    c = -update / wscale
                    for k in range(lo, hi):
                        AW[m, indices[k]] += avg_a * data[k] * c
                if num > 1.0:
                    avg_b /= 1.0 - mu
                avg_a += mu * avg_b * wscale
                abm += (bm - abm) / num
            if penalty_id >= 2:
                u += l1r * e * alpha
                for k in range(lo, hi):
                    _l1_truncate(W, Q, m, indices[k], u, wscale)
            t += 1.0
        _fold_scale(W, AW, m, wscale, avg_a, avg_b, averaging)
        b[m] = bm
        U[m] = u
        AB[m] = abm
    return W, b, U, Q, AW, AB, sumloss


def _per_model(value, M):
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=np.float64), (M,)))


def sgd_epoch_block(X, Y, sw, order, coef, intercept, u, q, pos_w, neg_w, params,
                    n_threads=1, want_loss=True, avg_coef=None, avg_intercept=None,
                    batch_size=1):
    """One local SGD epoch over a dense or CSR block.

    Returns ``(coef, intercept, u, q, sumloss, avg_coef, avg_intercept)``; the averages
    are None unless ``params["average"] > 0`` (then ``avg_coef``/``avg_intercept`` are
    the running averages to continue).  ``params["intercept_decay"]`` scales intercept
    updates (scikit-learn uses 0.01 for sparse data).  ``params["eta"]`` is one step for
    all models or one per model.  The signature is the array-API kernel's
    (``_kernels_xp.sgd_epoch_block``), so the estimator calls either the same way; this
    one steps on every row, as scikit-learn, so ``batch_size`` can only be 1.
    """
    if batch_size != 1:
        raise ValueError(f"the numba SGD kernel steps on every row: batch_size={batch_size!r} "
                         "needs the array-API kernel")
    p = params
    M, d = coef.shape
    average = int(p.get("average", 0))
    if average > 0:
        aw = np.ascontiguousarray(avg_coef, dtype=np.float64)
        ab = np.ascontiguousarray(avg_intercept, dtype=np.float64)
    else:
        aw, ab = np.zeros((M, 0)), np.zeros(M)
    common = (np.ascontiguousarray(Y, dtype=np.float64),
              np.ascontiguousarray(sw, dtype=np.float64),
              np.ascontiguousarray(order, dtype=np.int64),
              np.ascontiguousarray(coef, dtype=np.float64),
              np.ascontiguousarray(intercept, dtype=np.float64),
              np.ascontiguousarray(u, dtype=np.float64), np.ascontiguousarray(q, dtype=np.float64),
              aw, ab, np.asarray(pos_w, dtype=np.float64), np.asarray(neg_w, dtype=np.float64),
              p["loss"], p["penalty"], p["alpha"], p["l1_ratio"], p["epsilon"],
              p["learning_rate"], _per_model(p["eta"], M), p["power_t"], p["optimal_init"],
              p["t"], p["fit_intercept"], float(p.get("intercept_decay", 1.0)), average,
              bool(want_loss))
    n_threads = min(int(n_threads), M)
    if sp.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
        out = _sgd_epoch_csr(X.data, X.indices, X.indptr, *common, n_threads=n_threads)
    else:
        X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
        out = _sgd_epoch(X, *common, n_threads=n_threads)
    W, b, U, Q, AW, AB, sumloss = out
    if average > 0:
        return W, b, U, Q, sumloss, AW, AB
    return W, b, U, Q, sumloss, None, None
