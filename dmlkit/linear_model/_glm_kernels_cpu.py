"""Full-batch linear-model block kernels in numba (NumPy and scipy.sparse blocks).

Same public names and signatures as ``_glm_kernels_xp``.

``loss_grad_block`` reads its block once: for every row it forms the raw predictions
``x.W_k + b_k`` of the K models, the row's loss and its derivative in each raw
prediction, and adds ``s * dloss/draw_k * x`` to the gradient.  The losses are
scikit-learn's (``sklearn._loss``): half squared error, binomial (log loss) on y in
{0, 1}, half Poisson deviance with a log link (``exp(raw) - y raw``, its constant
dropped) and multinomial (softmax) on class codes.  Sums run in float64 over a fixed
number of row chunks (a function of the block's shape) combined in chunk order, so the
same block gives the same bits on any thread count.

``gram_block`` gives the sufficient statistics of weighted least squares in one pass:
``X'SX``, ``X'SY``, ``S'X``, ``S'Y``, ``sum(s)`` and ``sum(s y^2)``, from BLAS calls on
tiles of rows (one BLAS thread: the chunks give the parallelism).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from dmlkit._core.blocks import csr_arrays
from dmlkit._core.numba_utils import FAST_FLAGS, block_kernel, n_chunks_for, one_blas_thread

SQUARED, BINOMIAL, POISSON, MULTINOMIAL = 0, 1, 2, 3
LOSS_IDS = {"squared_error": SQUARED, "binomial": BINOMIAL, "poisson": POISSON,
            "multinomial": MULTINOMIAL}
GRAM_TILE = 2048  # rows per BLAS call of gram_block
LOSS_TILE = 1024  # rows per BLAS call of _loss_grad_tiles (400 KiB of 50 float64 features)


@numba.njit(nogil=True, cache=True)
def _pointwise1(loss_id, z, y):
    # one model's (loss, dloss/dz) at raw prediction z (squared, binomial, poisson)
    if loss_id == SQUARED:
        r = z - y
        return 0.5 * r * r, r
    if loss_id == BINOMIAL:
        # log(1 + exp(z)) - y z and its derivative expit(z) - y, from one exp
        e = math.exp(-abs(z))
        return max(z, 0.0) + math.log1p(e) - y * z, (1.0 if z >= 0.0 else e) / (1.0 + e) - y
    mu = math.exp(z)  # poisson
    return mu - y * z, mu - y


@numba.njit(nogil=True, cache=True)
def _pointwise(loss_id, raw, Y, i, g):
    # IN  raw (K,) raw predictions of row i; Y (n, T) targets (class codes: multinomial)
    # OUT g (K,) dloss/draw; returns the row's loss
    K = raw.shape[0]
    if loss_id == SQUARED:
        loss = 0.0
        for k in range(K):
            r = raw[k] - Y[i, k]
            g[k] = r
            loss += 0.5 * r * r
        return loss
    if loss_id == BINOMIAL or loss_id == POISSON:
        loss, g[0] = _pointwise1(loss_id, raw[0], Y[i, 0])
        return loss
    # multinomial: logsumexp(raw) - raw[y]
    m = raw[0]
    for k in range(1, K):
        m = max(m, raw[k])
    total = 0.0
    for k in range(K):
        total += math.exp(raw[k] - m)
    lse = m + math.log(total)
    code = int(Y[i, 0])
    for k in range(K):
        g[k] = math.exp(raw[k] - lse)
    g[code] -= 1.0
    return lse - raw[code]


@numba.njit(nogil=True, cache=True)
def _chunk_sums(L, G, Gb):
    # the chunks' partial sums added in chunk order
    loss, out, out_b = 0.0, np.zeros(G.shape[1:]), np.zeros(Gb.shape[1])
    for c in range(L.shape[0]):
        loss += L[c]
        out += G[c]
        out_b += Gb[c]
    return loss, out, out_b


@block_kernel(fastmath=FAST_FLAGS)
def _loss_grad(X, Y, sw, W, b, loss_id, n_chunks):
    # IN  X (n, d) C-contiguous; Y (n, T) float64; sw (n,) float64; W (K, d), b (K,)
    # OUT loss = sum s * loss, grad W (K, d), grad b (K,), all float64
    # Each row is read once: its K dot products, its loss and derivatives, then its
    # share of the gradient (rows of W and of the gradient as 1-d views: the loops
    # over features vectorise).
    n, d = X.shape
    K = W.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    G = np.zeros((n_chunks, K, d))
    Gb = np.zeros((n_chunks, K))
    L = np.zeros(n_chunks)
    if K == 1 and loss_id != MULTINOMIAL:  # one model: scalars, nothing else per row
        w, b0 = W[0], b[0]
        for c in prange(n_chunks):
            gr = G[c, 0]
            lc, gbc = 0.0, 0.0
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                x = X[i]
                z = 0.0
                for f in range(d):
                    z += w[f] * x[f]
                loss, gz = _pointwise1(loss_id, z + b0, Y[i, 0])
                s = sw[i]
                lc += s * loss
                gk = s * gz
                gbc += gk
                for f in range(d):
                    gr[f] += gk * x[f]
            L[c] = lc
            Gb[c, 0] = gbc
        return _chunk_sums(L, G, Gb)
    for c in prange(n_chunks):
        raw = np.empty(K)
        g = np.empty(K)
        Gc = G[c]
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            x = X[i]
            for k in range(K):
                w = W[k]
                s = 0.0
                for f in range(d):
                    s += w[f] * x[f]
                raw[k] = s + b[k]
            L[c] += sw[i] * _pointwise(loss_id, raw, Y, i, g)
            for k in range(K):
                gk = sw[i] * g[k]
                Gb[c, k] += gk
                gr = Gc[k]
                for f in range(d):
                    gr[f] += gk * x[f]
    return _chunk_sums(L, G, Gb)


@block_kernel(fastmath=FAST_FLAGS)
def _loss_grad_tiles(X, Y, sw, w, b0, loss_id, n_chunks, tile):
    # One model on float64 rows, by tiles of rows: the tile's raw predictions from one
    # BLAS call, the losses and derivatives, then the tile's gradient from a second
    # BLAS call while the tile is still in cache (~25% faster than a row at a time).
    # IN  X (n, d) float64 C-contiguous; Y (n, T); sw (n,); w (d,) float64; b0 float
    # OUT loss, grad w (1, d), grad b (1,), float64
    n, d = X.shape
    chunk = (n + n_chunks - 1) // n_chunks
    G = np.zeros((n_chunks, 1, d))
    Gb = np.zeros((n_chunks, 1))
    L = np.zeros(n_chunks)
    for c in prange(n_chunks):
        z = np.empty(tile)
        r = np.empty(tile)
        part = np.empty(d)
        lc, gbc = 0.0, 0.0
        for t0 in range(c * chunk, min(n, (c + 1) * chunk), tile):
            t1 = min(min(n, (c + 1) * chunk), t0 + tile)
            m = t1 - t0
            xt = X[t0:t1]
            np.dot(xt, w, z[:m])
            for j in range(m):
                loss, gz = _pointwise1(loss_id, z[j] + b0, Y[t0 + j, 0])
                s = sw[t0 + j]
                lc += s * loss
                r[j] = s * gz
                gbc += r[j]
            np.dot(r[:m], xt, part)
            G[c, 0] += part
        L[c] = lc
        Gb[c, 0] = gbc
    return _chunk_sums(L, G, Gb)


@block_kernel(fastmath=FAST_FLAGS)
def _loss_grad_csr(data, indices, indptr, Y, sw, WT, b, loss_id, n_chunks):
    # IN  a CSR block; WT (d, K) the coefficients transposed (a feature's K values are
    #     contiguous); OUT loss, grad WT (d, K), grad b (K,)
    n = indptr.shape[0] - 1
    d, K = WT.shape
    chunk = (n + n_chunks - 1) // n_chunks
    G = np.zeros((n_chunks, d, K))
    Gb = np.zeros((n_chunks, K))
    L = np.zeros(n_chunks)
    if K == 1 and loss_id != MULTINOMIAL:  # one model: scalars, nothing else per value
        w, b0 = WT[:, 0], b[0]
        for c in prange(n_chunks):
            gr = G[c, :, 0]
            lc, gbc = 0.0, 0.0
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                lo, hi = indptr[i], indptr[i + 1]
                z = 0.0
                for p in range(lo, hi):
                    z += np.float64(data[p]) * w[indices[p]]
                loss, gz = _pointwise1(loss_id, z + b0, Y[i, 0])
                s = sw[i]
                lc += s * loss
                gk = s * gz
                gbc += gk
                for p in range(lo, hi):
                    gr[indices[p]] += gk * np.float64(data[p])
            L[c] = lc
            Gb[c, 0] = gbc
        return _chunk_sums(L, G, Gb)
    for c in prange(n_chunks):
        raw = np.empty(K)
        g = np.empty(K)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            lo, hi = indptr[i], indptr[i + 1]
            for k in range(K):
                raw[k] = 0.0
            for p in range(lo, hi):
                v = np.float64(data[p])
                j = indices[p]
                for k in range(K):
                    raw[k] += v * WT[j, k]
            for k in range(K):
                raw[k] += b[k]
            L[c] += sw[i] * _pointwise(loss_id, raw, Y, i, g)
            for k in range(K):
                g[k] *= sw[i]
                Gb[c, k] += g[k]
            for p in range(lo, hi):
                v = np.float64(data[p])
                j = indices[p]
                for k in range(K):
                    G[c, j, k] += g[k] * v
    return _chunk_sums(L, G, Gb)


def loss_grad_block(X, Y, sw, W, b, loss_id, n_threads=1):
    """One block's ``(sum s*loss, gradient of it in W (K, d), in b (K,))``, float64.

    ``Y`` (n, T) float64 targets (the class code for the multinomial loss), ``sw`` (n,)
    float64 row weights (class weights folded in), ``W`` (K, d) and ``b`` (K,) float64.
    """
    W = np.ascontiguousarray(W, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    K, d = W.shape
    if sp.issparse(X):
        data, indices, indptr = csr_arrays(X)
        # every chunk zeroes and adds a gradient of d x K: for many features, fewer
        # chunks (a gradient's bytes per eighth of the block's stored values, 2 at least)
        state = 8 * K * (d + 1)
        nc = n_chunks_for(X.shape[0], state,
                          budget=max(2 * state, (data.nbytes + indices.nbytes) // 8))
        loss, gt, gb = _loss_grad_csr(data, indices, indptr, Y, sw,
                                      np.ascontiguousarray(W.T), b, loss_id, nc,
                                      n_threads=_threads(n_threads, nc))
        return loss, np.ascontiguousarray(gt.T), gb
    X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    nc = n_chunks_for(X.shape[0], 8 * K * (d + 1))
    if K == 1 and loss_id != MULTINOMIAL and X.dtype == np.float64:
        with one_blas_thread():
            return _loss_grad_tiles(X, Y, sw, np.ascontiguousarray(W[0]), float(b[0]), loss_id,
                                    nc, LOSS_TILE, n_threads=_threads(n_threads, nc))
    return _loss_grad(X, Y, sw, W, b, loss_id, nc, n_threads=_threads(n_threads, nc))


@block_kernel
def _gram(X, Y, sw, n_chunks, tile):
    # IN  X (n, d); Y (n, T) float64; sw (n,) float64
    # OUT X'SX (d, d), X'SY (d, T), S'X (d,), S'Y (T,), sum s, S'Y^2 (T,), float64
    n, d = X.shape
    T = Y.shape[1]
    chunk = (n + n_chunks - 1) // n_chunks
    G = np.zeros((n_chunks, d, d))
    B = np.zeros((n_chunks, d, T))
    sx = np.zeros((n_chunks, d))
    sy = np.zeros((n_chunks, T))
    syy = np.zeros((n_chunks, T))
    ss = np.zeros(n_chunks)
    for c in prange(n_chunks):
        xs = np.empty((tile, d))  # s * x, float64
        xf = np.empty((tile, d))  # x, float64
        start, stop = c * chunk, min(n, (c + 1) * chunk)
        for t0 in range(start, stop, tile):
            t1 = min(stop, t0 + tile)
            m = t1 - t0
            for r in range(m):
                s = sw[t0 + r]
                ss[c] += s
                for f in range(d):
                    v = np.float64(X[t0 + r, f])
                    xf[r, f] = v
                    xs[r, f] = s * v
                    sx[c, f] += s * v
                for t in range(T):
                    y = Y[t0 + r, t]
                    sy[c, t] += s * y
                    syy[c, t] += s * y * y
            G[c] += np.dot(xs[:m].T, xf[:m])
            B[c] += np.dot(xs[:m].T, Y[t0:t1])
    oG, oB = np.zeros((d, d)), np.zeros((d, T))
    osx, osy, osyy, oss = np.zeros(d), np.zeros(T), np.zeros(T), 0.0
    for c in range(n_chunks):
        oG += G[c]
        oB += B[c]
        osx += sx[c]
        osy += sy[c]
        osyy += syy[c]
        oss += ss[c]
    return oG, oB, osx, osy, oss, osyy


def gram_block(X, Y, sw, n_threads=1):
    """One block's ``(X'SX, X'SY, S'X, S'Y, sum s, S'Y^2)`` (float64)."""
    if sp.issparse(X):
        Xs = X.multiply(sw[:, None]).tocsr()
        G = np.asarray((Xs.T @ X).toarray(), dtype=np.float64)
        B = np.asarray(Xs.T @ Y, dtype=np.float64)
        sx = np.asarray(Xs.sum(axis=0), dtype=np.float64).ravel()
        return G, B, sx, sw @ Y, float(sw.sum()), sw @ (Y * Y)
    X = X if X.flags.c_contiguous else np.ascontiguousarray(X)
    nc = n_chunks_for(X.shape[0], 8 * X.shape[1] * (X.shape[1] + Y.shape[1] + 1))
    with one_blas_thread():
        return _gram(X, np.ascontiguousarray(Y), sw, nc, GRAM_TILE,
                     n_threads=_threads(n_threads, nc))


def _threads(n_threads, n_chunks):
    return max(1, min(int(n_threads), n_chunks))
