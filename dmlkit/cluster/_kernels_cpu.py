"""k-means block kernels in numba (NumPy blocks).

Same public names and signatures as ``_kernels_xp``.  Every kernel reads its block once.
Distances to centres use ||c||^2 - 2 x.c (the row's ||x||^2 does not change the argmin),
computed with the inner loop across centres so it vectorises without reassociating
any sum (no fastmath): the bits do not depend on the SIMD width.  The winning centre's
squared distance is then computed exactly, in float64, for the inertia.  Ties go to the
lowest centre index.  Per-block sums are accumulated in a fixed number of row chunks
(a function of the block's shape) and combined in chunk order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from dmlkit._core.numba_utils import block_kernel, n_chunks_for

TILE = 32  # rows whose centre scores are computed together (centres stay in cache)


@numba.njit(nogil=True, cache=True)
def _scores_tile(X, t0, m, CT, c_norm, acc):
    # IN  X (n, d), rows t0..t0+m; CT (d, k) centres transposed; c_norm (k,)
    # OUT acc[:m, :k] = ||c||^2 - 2 x.c
    d = X.shape[1]
    k = CT.shape[1]
    for r in range(m):
        for j in range(k):
            acc[r, j] = 0
    for f in range(d):
        for r in range(m):
            xf = X[t0 + r, f]
            for j in range(k):
                acc[r, j] += xf * CT[f, j]
    for r in range(m):
        for j in range(k):
            acc[r, j] = c_norm[j] - 2 * acc[r, j]


@numba.njit(nogil=True, cache=True)
def _argmin_row(acc, r, k):
    best = 0
    best_v = acc[r, 0]
    for j in range(1, k):
        v = acc[r, j]
        if v < best_v:
            best_v = v
            best = j
    return best


@numba.njit(nogil=True, cache=True)
def _prep_centers(centers):
    k, d = centers.shape
    CT = np.empty((d, k), dtype=centers.dtype)
    c_norm = np.zeros(k, dtype=centers.dtype)
    for j in range(k):
        for f in range(d):
            c = centers[j, f]
            CT[f, j] = c
            c_norm[j] += c * c
    return CT, c_norm


@numba.njit(nogil=True, cache=True)
def _sqdist(X, i, centers, j):
    s = 0.0
    for f in range(X.shape[1]):
        diff = np.float64(X[i, f]) - np.float64(centers[j, f])
        s += diff * diff
    return s


@block_kernel
def _assign_partial_sums(X, w, centers, n_chunks):
    # IN  X (n, d) C-contiguous; w (n,) weights or (0,) for unit weights; centers (k, d)
    # OUT sums (k, d) float64 weighted sums of each cluster's rows; counts (k,) float64
    #     weight in each cluster; inertia float64 = sum w * ||x - c_label||^2
    n, d = X.shape
    k = centers.shape[0]
    has_w = w.shape[0] > 0
    CT, c_norm = _prep_centers(centers)
    chunk = (n + n_chunks - 1) // n_chunks
    sums = np.zeros((n_chunks, k, d))
    counts = np.zeros((n_chunks, k))
    inertia = np.zeros(n_chunks)
    for c in prange(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        acc = np.empty((TILE, k), dtype=X.dtype)
        for t0 in range(start, stop, TILE):
            m = min(TILE, stop - t0)
            _scores_tile(X, t0, m, CT, c_norm, acc)
            for r in range(m):
                i = t0 + r
                best = _argmin_row(acc, r, k)
                wi = np.float64(w[i]) if has_w else 1.0
                s = 0.0
                for f in range(d):
                    xf = np.float64(X[i, f])
                    diff = xf - np.float64(centers[best, f])
                    s += diff * diff
                    sums[c, best, f] += wi * xf
                counts[c, best] += wi
                inertia[c] += wi * s
    out_sums = np.zeros((k, d))
    out_counts = np.zeros(k)
    out_inertia = 0.0
    for c in range(n_chunks):
        out_sums += sums[c]
        out_counts += counts[c]
        out_inertia += inertia[c]
    return out_sums, out_counts, out_inertia


@block_kernel
def _labels_sqdist(X, centers, n_chunks):
    # IN  X (n, d); centers (k, d)
    # OUT labels (n,) int32 nearest centre; sqdist (n,) float64 squared distance to it
    n = X.shape[0]
    k = centers.shape[0]
    CT, c_norm = _prep_centers(centers)
    labels = np.empty(n, dtype=np.int32)
    sqdist = np.empty(n, dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        acc = np.empty((TILE, k), dtype=X.dtype)
        for t0 in range(start, stop, TILE):
            m = min(TILE, stop - t0)
            _scores_tile(X, t0, m, CT, c_norm, acc)
            for r in range(m):
                best = _argmin_row(acc, r, k)
                labels[t0 + r] = best
                sqdist[t0 + r] = _sqdist(X, t0 + r, centers, best)
    return labels, sqdist


@block_kernel
def _sqdist_all(X, centers, n_chunks):
    # IN  X (n, d); centers (k, d)   OUT (n, k) float64 exact squared distances
    n = X.shape[0]
    k = centers.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            for j in range(k):
                out[i, j] = _sqdist(X, i, centers, j)
    return out


def _contig(X):
    return X if X.flags.c_contiguous else np.ascontiguousarray(X)


def _threads(n_threads, n_chunks):
    return max(1, min(int(n_threads), n_chunks))


def assign_partial_sums_block(X, w, centers, n_threads=1):
    """Fused assign + accumulate over one block.

    Returns (sums (k, d) float64, counts (k,) float64, inertia float).
    """
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    w = np.empty(0, dtype=X.dtype) if w is None else np.ascontiguousarray(w)
    k, d = centers.shape
    nc = n_chunks_for(X.shape[0], 8 * k * (d + 1))
    return _assign_partial_sums(X, w, centers, nc, n_threads=_threads(n_threads, nc))


def labels_sqdist_block(X, centers, n_threads=1):
    """Nearest centre (int32) and its exact squared distance (float64) for every row."""
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    nc = n_chunks_for(X.shape[0], 0)
    return _labels_sqdist(X, centers, nc, n_threads=_threads(n_threads, nc))


def sqdist_block(X, centers, n_threads=1):
    """Squared Euclidean distances (n, k) float64 from every row to every centre."""
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    nc = n_chunks_for(X.shape[0], 0)
    return _sqdist_all(X, centers, nc, n_threads=_threads(n_threads, nc))
