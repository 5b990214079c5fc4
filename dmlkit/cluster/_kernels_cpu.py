"""k-means block kernels in numba (NumPy blocks).

Same public names and signatures as ``_kernels_xp``.  Every kernel reads its block once.
Distances to centres use ||c||^2 - 2 x.c (the row's ||x||^2 does not change the argmin),
with x.c for a tile of rows from one BLAS gemm call (as scikit-learn's Lloyd); BLAS runs
single-threaded inside the kernel, parallelism comes from the fixed row chunks.  The
winning centre's squared distance is then computed exactly, in float64, for the
inertia.  Ties go to the lowest centre index.  Per-block sums are accumulated in a fixed
number of row chunks (a function of the block's shape) and combined in chunk order.

CSR blocks (scipy.sparse) run kernels whose cost is proportional to the non-zeros: the
scores x.c of a row come from its non-zeros against the centres stored transposed (one
contiguous row of k values per feature), accumulated in float64, and its squared distance
is ||x||^2 - 2 x.c + ||c||^2 (row norm from the same non-zeros, centre norms computed once
per call, clamped at 0), as scikit-learn's sparse Lloyd.  Centres stay dense.

Determinism: the same block gives the same bits on any thread count.  Across machines
with different BLAS kernels (say AVX2 against AVX-512 builds), scores can differ in the
last bit, which can move a row whose two nearest centres tie to within rounding; a
cluster of identical workers recomputes lost blocks bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from dmlkit._core.blocks import csr_arrays
from dmlkit._core.numba_utils import block_kernel, n_chunks_for, one_blas_thread, prefetch


def tile_rows(k, itemsize):
    """Rows whose scores come from one gemm call.

    Larger tiles amortise BLAS's per-call cost (4096 rows: 18% faster than 256 at
    k=16).  The score buffer is allocated once per chunk and reused by every tile (a
    buffer allocated per tile above glibc's 128 KiB mmap threshold cost an mmap,
    munmap and page faults per tile in fresh worker processes), and kept under 1 MiB.
    A function of k and the dtype only, so the bits never change.
    """
    return int(min(4096, max(64, (1 << 20) // max(1, k * itemsize))))


@numba.njit(nogil=True, cache=True)
def _argmin_row(dots, r, c_norm):
    # dots = x.(-2 c) (the -2 is folded into the centres: exact, a power of two)
    # argmin_j ||c_j||^2 - 2 x_r.c_j, first index on ties
    k = c_norm.shape[0]
    best = 0
    best_v = c_norm[0] + dots[r, 0]
    for j in range(1, k):
        v = c_norm[j] + dots[r, j]
        if v < best_v:
            best_v = v
            best = j
    return best


@numba.njit(nogil=True, cache=True)
def _prep_centers(centers):
    # OUT CT (d, k) = -2 * centers.T (for the gemm), c_norm (k,) = ||c||^2
    k, d = centers.shape
    CT = np.empty((d, k), dtype=centers.dtype)
    c_norm = np.zeros(k, dtype=centers.dtype)
    for j in range(k):
        for f in range(d):
            c = centers[j, f]
            CT[f, j] = -2 * c
            c_norm[j] += c * c
    return CT, c_norm


@numba.njit(nogil=True, cache=True)
def _sqdist(X, i, centers, j):
    # exact ||x_i - c_j||^2 in float64; four partial sums in a fixed order
    d = X.shape[1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    f = 0
    while f + 4 <= d:
        a = np.float64(X[i, f]) - np.float64(centers[j, f])
        b = np.float64(X[i, f + 1]) - np.float64(centers[j, f + 1])
        c = np.float64(X[i, f + 2]) - np.float64(centers[j, f + 2])
        e = np.float64(X[i, f + 3]) - np.float64(centers[j, f + 3])
        s0 += a * a
        s1 += b * b
        s2 += c * c
        s3 += e * e
        f += 4
    while f < d:
        a = np.float64(X[i, f]) - np.float64(centers[j, f])
        s0 += a * a
        f += 1
    return (s0 + s1) + (s2 + s3)


@block_kernel
def _assign_partial_sums(X, w, centers, n_chunks, exact, tile):
    # IN  X (n, d) C-contiguous; w (n,) weights or (0,) for unit weights; centers (k, d)
    #     exact: also compute the inertia (an extra float64 pass over each row)
    # OUT sums (k, d) float64 weighted sums of each cluster's rows; counts (k,) float64
    #     weight in each cluster; inertia float64 = sum w * ||x - c_label||^2 (NaN if
    #     not exact)
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
        buf = np.empty((tile, k), dtype=X.dtype)
        for t0 in range(start, stop, tile):
            t1 = min(stop, t0 + tile)
            dots = buf[:t1 - t0]
            np.dot(X[t0:t1], CT, dots)
            for r in range(t1 - t0):
                i = t0 + r
                best = _argmin_row(dots, r, c_norm)
                wi = np.float64(w[i]) if has_w else 1.0
                for f in range(d):
                    sums[c, best, f] += wi * np.float64(X[i, f])
                counts[c, best] += wi
                if exact:
                    inertia[c] += wi * _sqdist(X, i, centers, best)
    out_sums = np.zeros((k, d))
    out_counts = np.zeros(k)
    out_inertia = 0.0
    for c in range(n_chunks):
        out_sums += sums[c]
        out_counts += counts[c]
        out_inertia += inertia[c]
    if not exact:
        out_inertia = np.nan
    return out_sums, out_counts, out_inertia


@block_kernel
def _labels_sqdist(X, centers, n_chunks, tile):
    # IN  X (n, d); centers (k, d)
    # OUT labels (n,) int32 nearest centre; sqdist (n,) float64 squared distance to it
    n = X.shape[0]
    CT, c_norm = _prep_centers(centers)
    labels = np.empty(n, dtype=np.int32)
    sqdist = np.empty(n, dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        start = c * chunk
        stop = min(n, start + chunk)
        buf = np.empty((tile, c_norm.shape[0]), dtype=X.dtype)
        for t0 in range(start, stop, tile):
            t1 = min(stop, t0 + tile)
            dots = buf[:t1 - t0]
            np.dot(X[t0:t1], CT, dots)
            for r in range(t1 - t0):
                best = _argmin_row(dots, r, c_norm)
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


def assign_partial_sums_block(X, w, centers, n_threads=1, exact_inertia=True):
    """Fused assign + accumulate over one block.

    Returns (sums (k, d) float64, counts (k,) float64, inertia float).  The inertia
    costs as much as the assignment; with ``exact_inertia=False`` it is skipped (NaN).
    """
    if sp.issparse(X):
        return _assign_csr_block(X, w, centers, n_threads, exact_inertia)
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    w = np.empty(0, dtype=X.dtype) if w is None else np.ascontiguousarray(w)
    k, d = centers.shape
    nc = n_chunks_for(X.shape[0], 8 * k * (d + 1))
    with one_blas_thread():
        return _assign_partial_sums(X, w, centers, nc, bool(exact_inertia),
                                    tile_rows(k, X.dtype.itemsize),
                                    n_threads=_threads(n_threads, nc))


def labels_sqdist_block(X, centers, n_threads=1):
    """Nearest centre (int32) and its exact squared distance (float64) for every row.

    For CSR blocks the squared distance is ||x||^2 - 2 x.c + ||c||^2 in float64 (>= 0).
    """
    if sp.issparse(X):
        data, indices, indptr = csr_arrays(X)
        centers = np.ascontiguousarray(centers, dtype=X.dtype)
        nc = n_chunks_for(X.shape[0], 0)
        return _labels_sqdist_csr(data, indices, indptr, *_prep_centers_t(centers), nc,
                                  n_threads=_threads(n_threads, nc))
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    nc = n_chunks_for(X.shape[0], 0)
    with one_blas_thread():
        return _labels_sqdist(X, centers, nc, tile_rows(centers.shape[0], X.dtype.itemsize),
                              n_threads=_threads(n_threads, nc))


def sqdist_block(X, centers, n_threads=1):
    """Squared Euclidean distances (n, k) float64 from every row to every centre."""
    if sp.issparse(X):
        data, indices, indptr = csr_arrays(X)
        centers = np.ascontiguousarray(centers, dtype=X.dtype)
        nc = n_chunks_for(X.shape[0], 0)
        return _sqdist_all_csr(data, indices, indptr, *_prep_centers_t(centers), nc,
                               n_threads=_threads(n_threads, nc))
    X = _contig(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    nc = n_chunks_for(X.shape[0], 0)
    return _sqdist_all(X, centers, nc, n_threads=_threads(n_threads, nc))


# ----------------------------------------------------------------------------------
# CSR blocks: cost proportional to the non-zeros
# ----------------------------------------------------------------------------------
PREFETCH_NNZ = 16  # how many non-zeros ahead a row's centre columns are prefetched


@numba.njit(nogil=True, cache=True)
def _center_sq_norms(centers):
    # OUT (k,) float64 ||c_j||^2, summed in feature order
    k, d = centers.shape
    out = np.zeros(k)
    for j in range(k):
        s = 0.0
        for f in range(d):
            c = np.float64(centers[j, f])
            s += c * c
        out[j] = s
    return out


def _prep_centers_t(centers):
    """CT (d, k) = centers.T, C-contiguous (the k values of one feature are adjacent:
    one or two cache lines per non-zero), and c_norm (k,) float64 = ||c||^2."""
    return np.ascontiguousarray(centers.T), _center_sq_norms(centers)


@numba.njit(nogil=True, cache=True)
def _csr_row_dots(data, indices, lo, hi, CT, dots):
    # OUT dots (k,) float64 = x.c_j for the row whose non-zeros are data/indices[lo:hi];
    # returns ||x||^2 (float64) from the same non-zeros
    k = CT.shape[1]
    for j in range(k):
        dots[j] = 0.0
    xn = 0.0
    for p in range(lo, hi):
        if p + PREFETCH_NNZ < hi:
            prefetch(CT, indices[p + PREFETCH_NNZ] * k)
        v = np.float64(data[p])
        f = indices[p]
        xn += v * v
        for j in range(k):
            dots[j] += v * CT[f, j]
    return xn


@numba.njit(nogil=True, cache=True)
def _argmin_dots(dots, c_norm):
    # argmin_j ||c_j||^2 - 2 x.c_j, first index on ties
    k = c_norm.shape[0]
    best = 0
    best_v = c_norm[0] - 2.0 * dots[0]
    for j in range(1, k):
        v = c_norm[j] - 2.0 * dots[j]
        if v < best_v:
            best_v = v
            best = j
    return best


@numba.njit(nogil=True, cache=True)
def _sqdist_expanded(xn, dot, cn):
    d2 = xn - 2.0 * dot + cn
    return d2 if d2 > 0.0 else 0.0


@block_kernel
def _assign_partial_sums_csr(data, indices, indptr, w, CT, c_norm, n_chunks, exact):
    # IN  CSR block (data, indices, indptr) without duplicate entries; w (n,) weights or
    #     (0,) for unit weights; CT (d, k) the centres transposed, c_norm (k,) float64
    #     their squared norms (_prep_centers_t)
    # OUT as _assign_partial_sums: sums (k, d) float64, counts (k,) float64, inertia
    #     (float64; NaN if not exact)
    n = indptr.shape[0] - 1
    d, k = CT.shape
    has_w = w.shape[0] > 0
    chunk = (n + n_chunks - 1) // n_chunks
    sums = np.zeros((n_chunks, k, d))
    counts = np.zeros((n_chunks, k))
    inertia = np.zeros(n_chunks)
    for c in prange(n_chunks):
        dots = np.empty(k)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            lo = indptr[i]
            hi = indptr[i + 1]
            xn = _csr_row_dots(data, indices, lo, hi, CT, dots)
            best = _argmin_dots(dots, c_norm)
            wi = np.float64(w[i]) if has_w else 1.0
            for p in range(lo, hi):
                sums[c, best, indices[p]] += wi * np.float64(data[p])
            counts[c, best] += wi
            if exact:
                inertia[c] += wi * _sqdist_expanded(xn, dots[best], c_norm[best])
    out_sums = sums[0]
    out_counts = counts[0]
    out_inertia = inertia[0]
    if n_chunks > 1:
        out_sums = out_sums.copy()
        out_counts = out_counts.copy()
        for c in range(1, n_chunks):
            out_sums += sums[c]
            out_counts += counts[c]
            out_inertia += inertia[c]
    if not exact:
        out_inertia = np.nan
    return out_sums, out_counts, out_inertia


@block_kernel
def _labels_sqdist_csr(data, indices, indptr, CT, c_norm, n_chunks):
    # IN  CSR block; CT, c_norm (_prep_centers_t)
    # OUT labels (n,) int32; sqdist (n,) float64 = ||x||^2 - 2 x.c + ||c||^2 (>= 0)
    n = indptr.shape[0] - 1
    k = CT.shape[1]
    labels = np.empty(n, dtype=np.int32)
    sqdist = np.empty(n, dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        dots = np.empty(k)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            xn = _csr_row_dots(data, indices, indptr[i], indptr[i + 1], CT, dots)
            best = _argmin_dots(dots, c_norm)
            labels[i] = best
            sqdist[i] = _sqdist_expanded(xn, dots[best], c_norm[best])
    return labels, sqdist


@block_kernel
def _sqdist_all_csr(data, indices, indptr, CT, c_norm, n_chunks):
    # IN  CSR block; CT, c_norm (_prep_centers_t)   OUT (n, k) float64 squared distances (>= 0)
    n = indptr.shape[0] - 1
    k = CT.shape[1]
    out = np.empty((n, k), dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        dots = np.empty(k)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            xn = _csr_row_dots(data, indices, indptr[i], indptr[i + 1], CT, dots)
            for j in range(k):
                out[i, j] = _sqdist_expanded(xn, dots[j], c_norm[j])
    return out


CSR_NNZ_PER_FEATURE = 64


def csr_assign_chunks(n_rows, nnz, k, d):
    """Row chunks of the CSR assign kernel.  Each chunk zeroes, fills and merges its own
    dense (k, d) sums: about as much work as ``k * d * CSR_NNZ_PER_FEATURE / 10``
    non-zeros, so a chunk is only worth it for ``CSR_NNZ_PER_FEATURE * d`` non-zeros
    (hashed text, 2^16 features: ~100k rows).  A function of the block (its shape and
    non-zero count) only, never of the thread count."""
    by_nnz = max(1, int(nnz) // (CSR_NNZ_PER_FEATURE * max(1, d)))
    return int(min(n_chunks_for(n_rows, 8 * k * (d + 1)), by_nnz))


def _assign_csr_block(X, w, centers, n_threads, exact_inertia):
    data, indices, indptr = csr_arrays(X)
    centers = np.ascontiguousarray(centers, dtype=X.dtype)
    w = np.empty(0, dtype=X.dtype) if w is None else np.ascontiguousarray(w)
    k, d = centers.shape
    nc = csr_assign_chunks(X.shape[0], len(data), k, d)
    return _assign_partial_sums_csr(data, indices, indptr, w, *_prep_centers_t(centers), nc,
                                    bool(exact_inertia), n_threads=_threads(n_threads, nc))
