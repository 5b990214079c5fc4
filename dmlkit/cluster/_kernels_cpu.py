"""k-means block kernels in numba (NumPy blocks).

Same public names and signatures as ``_kernels_xp``.  Every kernel reads its block once.

Dense blocks: the nearest centre minimises the score ||c||^2 - 2 x.c (the row's ||x||^2
does not change the argmin), computed by an intrinsic in explicit 64-byte vectors (one
AVX-512 register; LLVM splits it on narrower hardware), without BLAS: the centres sit
in panels of one vector of centres (``-2 c`` for each feature, the lanes over centres),
and for 8 rows at a time every panel's scores accumulate in registers, one vector FMA
per row and feature, ``acc = ||c||^2`` then ``acc = fma(x[f], -2 c[f], acc)`` for f in
order.  The argmin of each vector (first lane of the minimum) then updates the row's
best.  So a block is streamed once, the scores never leave the registers, and the
assignment feeds the accumulation of the row, still in cache.  scikit-learn's Lloyd (and
this module before) gets x.c from a BLAS gemm per tile of rows and scans the stored
tile; at k=16, d=32 the gemm alone took longer than this whole kernel.  The winning
centre's squared distance is then computed exactly, in float64, for the inertia.  Ties
go to the lowest centre index.  Per-block sums are accumulated in float64 in a fixed
number of row chunks (a function of the block's shape) and combined in chunk order.

CSR blocks (scipy.sparse) run kernels whose cost is proportional to the non-zeros: the
scores x.c of a row come from its non-zeros against the centres stored transposed (one
contiguous row of k values per feature), accumulated in float64, and its squared distance
is ||x||^2 - 2 x.c + ||c||^2 (row norm from the same non-zeros, centre norms computed once
per call, clamped at 0), as scikit-learn's sparse Lloyd.  Centres stay dense.

Determinism: the same block gives the same bits on any thread count.  A dense row's
label depends on that row and the centres alone (not on its place in a block, a chunk or
a vector): every score is the same sequence of exactly rounded FMAs (llvm.fma, no
fast-math flags, no BLAS kernel picked per CPU), so it does not depend on the
instruction set either: builds for AVX-512, AVX2 and plain SSE2 (no FMA unit: llvm.fma
becomes a call to fma) gave the same bits (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES), and a
worker recomputing a lost block gives the same bits.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic

from dmlkit._core.blocks import csr_arrays
from dmlkit._core.numba_utils import (
    VECTOR_BYTES,
    add_row_f64,
    block_kernel,
    n_chunks_for,
    prefetch,
    vector_first_argmin,
    vector_fma,
    vector_load,
    vector_splat,
    vector_type,
)


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


# ----------------------------------------------------------------------------------
# Dense blocks, explicit SIMD: the nearest centre of 8 rows at a time, no BLAS
# ----------------------------------------------------------------------------------
NEAREST_ROWS = 8  # rows one call scores together: 8 independent chains of vector FMAs


def _nearest_codegen(n_rows, n_panels):
    """The IR of ``nearest(X, i, CP, c_norm, k, jb, best_v, best_j)`` for ``n_rows`` rows
    and ``n_panels`` panels of centres.

    For each row i+r (r < n_rows) of X and each panel p (one vector of centres,
    jb + p * lanes on): ``acc = c_norm[centres]``, then ``acc = fma(x[f], CP[panel, f],
    acc)`` for f = 0..d-1 (one register per row and panel, the centres in the lanes), then
    the first lane of the smallest score.  In panel order, it replaces the row's best
    (``best_v[r], best_j[r]``, not read when ``jb == 0``) when strictly smaller, so ties
    go to the lowest centre index as a scan would.  A lane past the k centres (padding)
    is never taken.  A row's scores are the same bits whatever n_rows and n_panels: the
    same FMAs in the same order."""

    def codegen(context, builder, signature, args):
        X_t, i_t, CP_t, cn_t, k_t, jb_t, bv_t, bj_t = signature.args
        intp_t = nbtypes.intp
        intp = context.get_value_type(intp_t)
        xa = context.make_array(X_t)(context, builder, args[0])
        cpa = context.make_array(CP_t)(context, builder, args[2])
        cna = context.make_array(cn_t)(context, builder, args[3])
        bva = context.make_array(bv_t)(context, builder, args[6])
        bja = context.make_array(bj_t)(context, builder, args[7])
        i = context.cast(builder, args[1], i_t, intp_t)
        k = context.cast(builder, args[4], k_t, intp_t)
        jb = context.cast(builder, args[5], jb_t, intp_t)
        vty = vector_type(context, X_t.dtype)
        d = builder.extract_value(xa.shape, 1)
        lanes = intp(vty.count)
        js = [builder.add(jb, intp(p * vty.count)) for p in range(n_panels)]
        # panel j // lanes starts at element j * d of CP
        panels = [builder.mul(j, d) for j in js]
        starts = [vector_load(builder, cna.data, j, vty) for j in js]
        # allocas of vectors: LLVM keeps them in registers (mem2reg)
        accs = [[cgutils.alloca_once_value(builder, starts[p]) for p in range(n_panels)]
                for _ in range(n_rows)]
        rows = [builder.mul(builder.add(i, intp(r)), d) for r in range(n_rows)]
        with cgutils.for_range(builder, d) as loop:
            f = loop.index
            fl = builder.mul(f, lanes)
            cps = [vector_load(builder, cpa.data, builder.add(p0, fl), vty) for p0 in panels]
            for r in range(n_rows):
                x = builder.load(builder.gep(xa.data, [builder.add(rows[r], f)]))
                xs = vector_splat(builder, x, vty)
                for p in range(n_panels):
                    acc = vector_fma(builder, xs, cps[p], builder.load(accs[r][p]))
                    builder.store(acc, accs[r][p])
        first = builder.icmp_signed("==", jb, intp(0))
        for r in range(n_rows):
            pv = builder.gep(bva.data, [intp(r)])
            pj = builder.gep(bja.data, [intp(r)])
            best_v = builder.load(pv)
            best_j = context.cast(builder, builder.load(pj), bj_t.dtype, intp_t)
            for p in range(n_panels):
                value, lane = vector_first_argmin(builder, builder.load(accs[r][p]))
                j = builder.add(js[p], lane)
                valid = builder.icmp_signed("<", j, k)
                take = builder.and_(valid, builder.fcmp_ordered("<", value, best_v))
                if p == 0:  # a row's first centres: lane 0 if no valid lane wins
                    j = builder.select(valid, j, js[p])
                    take = builder.or_(first, take)
                best_v = builder.select(take, value, best_v)
                best_j = builder.select(take, j, best_j)
            builder.store(best_v, pv)
            builder.store(context.cast(builder, best_j, intp_t, bj_t.dtype), pj)
        return context.get_dummy_value()

    return codegen


def _make_nearest(n_rows, n_panels):
    @intrinsic
    def nearest(typingctx, X, i, CP, c_norm, k, jb, best_v, best_j):
        arrays = (X, CP, c_norm, best_v, best_j)
        if not (all(isinstance(a, nbtypes.Array) and a.layout == "C" for a in arrays)
                and X.ndim == 2 and CP.ndim == 3 and c_norm.ndim == 1
                and isinstance(X.dtype, nbtypes.Float)
                and CP.dtype == c_norm.dtype == best_v.dtype == X.dtype
                and isinstance(best_j.dtype, nbtypes.Integer)
                and all(isinstance(a, nbtypes.Integer) for a in (i, k, jb))):
            return None
        sig = nbtypes.void(X, i, CP, c_norm, k, jb, best_v, best_j)
        return sig, _nearest_codegen(n_rows, n_panels)

    return nearest


# 8 rows x 2 panels: 16 accumulators, and each x loaded once for two vectors of centres
_nearest_8x2 = _make_nearest(NEAREST_ROWS, 2)
_nearest_8x1 = _make_nearest(NEAREST_ROWS, 1)
_nearest_1x1 = _make_nearest(1, 1)


@numba.njit(nogil=True, cache=True)
def _prep_centers(centers):
    # OUT CP (nb, d, lanes): -2 * the centres in panels of one vector of centres,
    #     CP[b, f, l] = -2 * centers[b * lanes + l, f] (zero past the k centres), each
    #     panel read front to back; c_norm (nb * lanes,) = ||c||^2 in the centres' dtype,
    #     +inf in the padding
    k, d = centers.shape
    lanes = VECTOR_BYTES // centers.itemsize
    nb = (k + lanes - 1) // lanes
    CP = np.zeros((nb, d, lanes), dtype=centers.dtype)
    c_norm = np.full(nb * lanes, np.inf, dtype=centers.dtype)
    for j in range(k):
        c_norm[j] = 0
        for f in range(d):
            c = centers[j, f]
            CP[j // lanes, f, j % lanes] = -2 * c
            c_norm[j] += c * c
    return CP, c_norm


# Rows are scored 8 at a time, 8 rows of d features apart: with d = 128 (float32) every
# group starts a new 4 KiB page, where the hardware prefetcher stops, and the loads then
# wait on memory instead of overlapping the arithmetic (200k x 128, k=16: 16 ms against
# 9 ms with this prefetch, 7 ms with the rows already in cache).
PREFETCH_BYTES = 8192  # how far ahead of the rows being scored the next ones are fetched


@numba.njit(nogil=True, cache=True)
def _prefetch_ahead(Xf, i, m, d):
    # hint the cache lines of rows i+ahead..i+ahead+m-1 of the flat C-contiguous X
    ahead = max(NEAREST_ROWS, PREFETCH_BYTES // (d * Xf.itemsize))
    lo = (i + ahead) * d
    for p in range(lo, lo + m * d, 64 // Xf.itemsize):
        prefetch(Xf, p)


@numba.njit(nogil=True, cache=True)
def _nearest(X, i, m, CP, c_norm, k, best_v, best_j):
    # OUT best_j[:m] the nearest centre of rows i..i+m-1 (m: NEAREST_ROWS or 1), best_v[:m]
    #     its score ||c||^2 - 2 x.c; every row's score is the same whatever m
    # Small enough for LLVM to inline into the kernels: with three more intrinsic
    # variants it did not, and a call per 8 rows made the k=16 kernel 30% slower.
    lanes = VECTOR_BYTES // X.itemsize
    kp = CP.shape[0] * lanes
    if m == NEAREST_ROWS:
        jb = 0
        while jb + 2 * lanes <= kp:
            _nearest_8x2(X, i, CP, c_norm, k, jb, best_v, best_j)
            jb += 2 * lanes
        if jb < kp:
            _nearest_8x1(X, i, CP, c_norm, k, jb, best_v, best_j)
    else:
        for jb in range(0, kp, lanes):
            _nearest_1x1(X, i, CP, c_norm, k, jb, best_v, best_j)


@block_kernel
def _assign_partial_sums(X, w, centers, CP, c_norm, n_chunks, exact):
    # IN  X (n, d) C-contiguous; w (n,) weights or (0,) for unit weights; centers (k, d);
    #     CP, c_norm their panels (_prep_centers); exact: also compute the inertia (an
    #     extra float64 pass over each row)
    # OUT sums (k, d) float64 weighted sums of each cluster's rows; counts (k,) float64
    #     weight in each cluster; inertia float64 = sum w * ||x - c_label||^2 (NaN if
    #     not exact)
    n, d = X.shape
    k = centers.shape[0]
    Xf = X.reshape(-1)
    has_w = w.shape[0] > 0
    chunk = (n + n_chunks - 1) // n_chunks
    sums = np.zeros((n_chunks, k, d))
    counts = np.zeros((n_chunks, k))
    inertia = np.zeros(n_chunks)
    for c in prange(n_chunks):
        stop = min(n, (c + 1) * chunk)
        best_v = np.empty(NEAREST_ROWS, dtype=X.dtype)
        best_j = np.empty(NEAREST_ROWS, dtype=np.intp)
        s = sums[c]
        i = c * chunk
        while i < stop:
            m = NEAREST_ROWS if i + NEAREST_ROWS <= stop else 1
            _prefetch_ahead(Xf, i, m, d)
            _nearest(X, i, m, CP, c_norm, k, best_v, best_j)
            for r in range(m):
                row = i + r
                b = best_j[r]
                wi = np.float64(w[row]) if has_w else 1.0
                for f in range(add_row_f64(s, b, X, row, wi, has_w), d):
                    s[b, f] += wi * np.float64(X[row, f])
                counts[c, b] += wi
                if exact:
                    inertia[c] += wi * _sqdist(X, row, centers, b)
            i += m
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
def _labels_sqdist(X, centers, CP, c_norm, n_chunks):
    # IN  X (n, d) C-contiguous; centers (k, d); CP, c_norm (_prep_centers)
    # OUT labels (n,) int32 nearest centre; sqdist (n,) float64 squared distance to it
    n, d = X.shape
    k = centers.shape[0]
    Xf = X.reshape(-1)
    labels = np.empty(n, dtype=np.int32)
    sqdist = np.empty(n, dtype=np.float64)
    chunk = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        stop = min(n, (c + 1) * chunk)
        best_v = np.empty(NEAREST_ROWS, dtype=X.dtype)
        best_j = np.empty(NEAREST_ROWS, dtype=np.intp)
        i = c * chunk
        while i < stop:
            m = NEAREST_ROWS if i + NEAREST_ROWS <= stop else 1
            _prefetch_ahead(Xf, i, m, d)
            _nearest(X, i, m, CP, c_norm, k, best_v, best_j)
            for r in range(m):
                labels[i + r] = best_j[r]
                sqdist[i + r] = _sqdist(X, i + r, centers, best_j[r])
            i += m
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
    return _assign_partial_sums(X, w, centers, *_prep_centers(centers), nc,
                                bool(exact_inertia), n_threads=_threads(n_threads, nc))


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
    return _labels_sqdist(X, centers, *_prep_centers(centers), nc,
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
