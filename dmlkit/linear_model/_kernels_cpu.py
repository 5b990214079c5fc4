"""SGD block kernels in numba: one local epoch over a block (iterative parameter mixing).

Follows scikit-learn's ``_plain_sgd`` update for each sample: the learning rate of the
schedule at step t, the loss gradient (clipped), L2 as a lazy weight scale, L1 as the
cumulative truncated gradient (Tsuruoka et al.), the intercept, then t += 1.  Several
models (one-vs-rest classes) are trained in the same pass over the block, each with
its own weight scale; models are independent, so ``prange`` over them changes no bits.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from dmlkit._core.numba_utils import block_kernel

MAX_DLOSS = 1e12
GATHER = 512  # rows copied in visiting order before they are used (see _sgd_epoch)


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


@block_kernel
def _sgd_epoch(X, Y, sw, order, coef, intercept, u0, q0, pos_w, neg_w, loss_id, penalty_id,
               alpha, l1_ratio, eps, lr_id, eta, power_t, optimal_init, t_start, fit_intercept,
               want_loss):
    # IN  X (n, d); Y (n, M) targets (+-1 for classifiers); sw (n,) sample weights;
    #     order (n,) visiting order; coef (M, d), intercept (M,) starting models;
    #     u0 (M,), q0 (M, d) L1 state (cumulative penalty, penalty applied per feature),
    #     carried across epochs as scikit-learn does within one fit;
    #     pos_w/neg_w (M,) class weights for y > 0 / y <= 0; want_loss: sum the losses
    #     (only the tol stopping rule needs them; log_loss pays an exp and a log1p each)
    # OUT coef (M, d), intercept (M,), u (M,), q (M, d) after one pass; sumloss (M,) loss
    #     of each sample before its update (0 unless want_loss; NaN if x had NaN/inf)
    n, d = X.shape
    M = coef.shape[0]
    W = coef.astype(np.float64)
    b = intercept.astype(np.float64)
    U = u0.astype(np.float64)
    Q = q0.astype(np.float64)
    sumloss = np.zeros(M)
    if penalty_id == 1:
        l1r = 0.0
    elif penalty_id == 2:
        l1r = 1.0
    else:
        l1r = l1_ratio
    for m in prange(M):
        wscale = 1.0
        u = U[m]
        q = Q[m]
        t = t_start
        bm = b[m]
        # Shuffled rows are random reads that stall the dependent SGD updates (5x slower
        # than storage order on 50 features).  A plain copy loop has no dependencies, so
        # gathering the next GATHER rows in visiting order first overlaps their misses;
        # the updates then read the buffer in order.  Same values, same bits.
        buf = np.empty((GATHER, d), dtype=X.dtype)
        for ii in range(n):
            r = ii % GATHER
            if r == 0:
                for rr in range(min(GATHER, n - ii)):
                    j = order[ii + rr]
                    for f in range(d):
                        buf[rr, f] = X[j, f]
            i = order[ii]
            y = Y[i, m]
            p = _dot_row(W, m, buf, r) * wscale + bm
            if not math.isfinite(p):
                # NaN/inf in x (0 * inf is NaN too): poison the loss so the fit reports it
                sumloss[m] += np.nan
            if lr_id == 1:
                e = 1.0 / (alpha * (optimal_init + t - 1.0))
            elif lr_id == 2:
                e = eta / (t ** power_t)
            else:
                e = eta
            if want_loss:
                sumloss[m] += loss_value(loss_id, p, y, eps)
            g = loss_gradient(loss_id, p, y, eps)
            if g < -MAX_DLOSS:
                g = -MAX_DLOSS
            elif g > MAX_DLOSS:
                g = MAX_DLOSS
            cw = pos_w[m] if y > 0.0 else neg_w[m]
            update = -e * g * cw * sw[i]
            if penalty_id == 1 or penalty_id == 3:
                wscale *= max(0.0, 1.0 - (1.0 - l1r) * e * alpha)
                if wscale < 1e-9:  # fold the scale into the weights (as scikit-learn)
                    for f in range(d):
                        W[m, f] *= wscale
                    wscale = 1.0
            if update != 0.0:
                s = update / wscale
                for f in range(d):
                    W[m, f] += s * buf[r, f]
            if fit_intercept:
                bm += update
            if penalty_id >= 2:
                u += l1r * e * alpha
                for f in range(d):  # dense rows: every feature, as scikit-learn
                    z = W[m, f]
                    if wscale * z > 0.0:
                        W[m, f] = max(0.0, z - (u + q[f]) / wscale)
                    elif wscale * z < 0.0:
                        W[m, f] = min(0.0, z + (u - q[f]) / wscale)
                    q[f] += wscale * (W[m, f] - z)
            t += 1.0
        for f in range(d):
            W[m, f] *= wscale
        b[m] = bm
        U[m] = u
    return W, b, U, Q, sumloss


def sgd_epoch_block(X, Y, sw, order, coef, intercept, u, q, pos_w, neg_w, params,
                    n_threads=1, want_loss=True):
    """One local SGD epoch over a dense block; returns (coef, intercept, u, q, sumloss)."""
    X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    p = params
    return _sgd_epoch(X, np.ascontiguousarray(Y, dtype=np.float64),
                      np.ascontiguousarray(sw, dtype=np.float64), order,
                      np.ascontiguousarray(coef), np.ascontiguousarray(intercept),
                      np.ascontiguousarray(u), np.ascontiguousarray(q), pos_w, neg_w,
                      p["loss"], p["penalty"], p["alpha"], p["l1_ratio"],
                      p["epsilon"], p["learning_rate"], p["eta"], p["power_t"],
                      p["optimal_init"], p["t"], p["fit_intercept"], bool(want_loss),
                      n_threads=min(int(n_threads), coef.shape[0]))
