"""ALS block kernels in numba (NumPy blocks): solve the rows of one ratings block.

Same public names and signatures as ``_kernels_xp``.  A block is a CSR matrix
(``indptr``, ``indices``, ``data``) whose rows are the block's users (local row index)
and whose column indices are global row ids of the other side's factor matrix ``Y``
(n_other, k).  Every row u with ratings r_I on the items I is an independent k x k
least-squares problem ``A x = b`` written with per-rating weights w_i (on the Gram
term) and beta_i (on the right-hand side)::

    A = base + sum_i w_i y_i y_i^T + lam I,     b = sum_i beta_i y_i

* explicit (ALS-WR, Spark MLlib): base = 0, w = 1, beta = r, lam = reg * n_u;
* implicit (Hu, Koren and Volinsky; the ``implicit`` library): base = Y^T Y,
  confidence c = 1 + alpha * r, w = c - 1, beta = c (preference 1 on stored entries,
  which should be positive), lam = reg.

Solvers, per row, all accumulating in float64 (Y read in its own dtype):

* ``"cholesky"``: A is formed (the rated rows of Y gathered 128 at a time, their Gram
  added by 4 x 4 register tiles) and factorised A = L L^T by hand (four rows at a
  time); a pivot below 1e-13 * max(diag A) is raised to that floor, so a singular
  system gives a finite answer rather than an error.
  Explicit rows with fewer ratings n than factors k solve the n x n system
  (Y_u Y_u^T + lam I) z = r instead and return x = Y_u^T z: the same solution for
  lam > 0 at a fraction of the cost (n^2 k / 2 + n^3 / 3 against n k^2 + k^3 / 3), and
  the minimum-norm fit of the ratings for lam = 0.
* ``"cg"``: ``cg_steps`` conjugate-gradient steps warm-started from ``X0[u]`` (zeros
  without X0), as ``implicit``'s ``least_squares_cg``: A is never formed, A v = base v
  + sum_i w_i (y_i . v) y_i + lam v, four ratings per pass over v; the first residual
  b - A x takes one pass over the ratings like a product.  It stops early once the
  squared residual norm is below 1e-20.
* ``nonnegative=True`` (any solver): min 1/2 x^T A x - b^T x subject to x >= 0 on the
  same (A, b), by projected coordinate descent (at most ``NNLS_SWEEPS`` cyclic sweeps
  over the k coordinates, starting from max(X0[u], 0) or 0, stopping once a sweep moves
  no coordinate by more than 1e-13 * max|x|), then a polish: the system restricted to
  the coordinates left positive is solved exactly and kept when it is feasible (it
  then is at least as good, being the minimiser over that face).  Spark MLlib uses an
  NNLS solver on the same normal equations.

Rows without ratings get x = 0 (the solution of (base + lam I) x = 0) whatever the
solver.  Rows are solved in a fixed number of chunks of about equal work (a function
of the block only) with work buffers allocated once per chunk; each row's arithmetic
never depends on the chunking or on the thread count, so the serial and the parallel
build give the same bits.  The kernels are compiled with ``FAST_FLAGS`` (LLVM may
reassociate sums so dot products vectorise, and fuse multiply-adds; see
``dmlkit._core.numba_utils``): 2-3x faster CG, bit-identical on one CPU type.
"""

from __future__ import annotations

import math
import operator

import numba
import numpy as np
from numba import prange

from dmlkit._core.numba_utils import FAST_FLAGS, block_kernel, n_chunks_for, prefetch
from dmlkit._core.reduce import dyadic_merge, dyadic_sum
from dmlkit.recommendation._kernels_xp import check_params

NNLS_SWEEPS = 50
GRAM_ROWS = 4096  # rows per leaf of YᵀY's fixed tree (a multiple of 4: the unrolled loop)
CG_EPS = 1e-20  # squared residual norm that ends CG early (as ``implicit``)
PIVOT_FLOOR = 1e-13
AHEAD = 8  # ratings ahead whose rows of Y are prefetched
PANEL = 128  # ratings gathered per tiled Gram update (_form_system)
MIN_CHUNK_ROWS = 256  # each row is a k x k solve: far heavier than a k-means row

_SOLVERS = {"cholesky": 0, "cg": 1}

# Helpers are compiled with the kernels' floating-point flags (numba applies a
# function's own flags to its code, also when LLVM inlines it into the kernel).
_jit = numba.njit(nogil=True, cache=True, fastmath=set(FAST_FLAGS))


@_jit
def _dot_n(u, v, n):
    # u[:n] . v[:n]
    s = 0.0
    for f in range(n):
        s += u[f] * v[f]
    return s


@_jit
def _dot(u, v):
    return _dot_n(u, v, u.shape[0])


@_jit
def _weights(r, implicit, alpha):
    # (w, beta) of one rating: A += w y y^T, b += beta y
    if implicit:
        w = alpha * r
        return w, 1.0 + w
    return 1.0, r


@_jit
def _load(Y, i, dst):
    for a in range(dst.shape[0]):
        dst[a] = Y[i, a]


@_jit
def _syrk4(A, U, V, m, L, lower):
    # A[a, b] += sum_{p < L} U[a, p] * V[b, p] for the 4 x 4 tiles on and above the
    # diagonal (a0 <= b0, m a multiple of 4; the diagonal tiles' lower halves are updated
    # too and ignored); with ``lower``, A[b, a] = that sum instead (stored, not added, in
    # the lower triangle: what _chol_solve reads, so A needs no zeroing or mirroring).
    # Sixteen float64 sums stay in registers over the whole of p, each vectorised over
    # p, so a pass reads eight rows and writes the tile once: about 20 GFMA/s on one
    # AVX-512 core, 2.5x the rank-one updates of the full square.
    for a0 in range(0, m, 4):
        u0 = U[a0]
        u1 = U[a0 + 1]
        u2 = U[a0 + 2]
        u3 = U[a0 + 3]
        for b0 in range(a0, m, 4):
            v0 = V[b0]
            v1 = V[b0 + 1]
            v2 = V[b0 + 2]
            v3 = V[b0 + 3]
            s00 = s01 = s02 = s03 = 0.0
            s10 = s11 = s12 = s13 = 0.0
            s20 = s21 = s22 = s23 = 0.0
            s30 = s31 = s32 = s33 = 0.0
            for p in range(L):
                x0 = u0[p]
                x1 = u1[p]
                x2 = u2[p]
                x3 = u3[p]
                z0 = v0[p]
                z1 = v1[p]
                z2 = v2[p]
                z3 = v3[p]
                s00 += x0 * z0
                s01 += x0 * z1
                s02 += x0 * z2
                s03 += x0 * z3
                s10 += x1 * z0
                s11 += x1 * z1
                s12 += x1 * z2
                s13 += x1 * z3
                s20 += x2 * z0
                s21 += x2 * z1
                s22 += x2 * z2
                s23 += x2 * z3
                s30 += x3 * z0
                s31 += x3 * z1
                s32 += x3 * z2
                s33 += x3 * z3
            if lower:
                _put4(A[b0], a0, s00, s10, s20, s30)
                _put4(A[b0 + 1], a0, s01, s11, s21, s31)
                _put4(A[b0 + 2], a0, s02, s12, s22, s32)
                _put4(A[b0 + 3], a0, s03, s13, s23, s33)
            else:
                _add4(A[a0], b0, s00, s01, s02, s03)
                _add4(A[a0 + 1], b0, s10, s11, s12, s13)
                _add4(A[a0 + 2], b0, s20, s21, s22, s23)
                _add4(A[a0 + 3], b0, s30, s31, s32, s33)


@_jit
def _add4(row, b0, s0, s1, s2, s3):
    row[b0] += s0
    row[b0 + 1] += s1
    row[b0 + 2] += s2
    row[b0 + 3] += s3


@_jit
def _put4(row, a0, s0, s1, s2, s3):
    row[a0] = s0
    row[a0 + 1] = s1
    row[a0 + 2] = s2
    row[a0 + 3] = s3


@_jit
def _upper_to(A, T, n, lam):
    # A[:n, :n] = the symmetric matrix whose upper triangle is T's, plus lam I
    for a in range(n):
        for b in range(a, n):
            A[a, b] = T[a, b]
            A[b, a] = T[a, b]
        A[a, a] += lam


@_jit
def _prefetch_row(Y, indices, p, p1):
    # hint the cache lines of the row of Y that rating p (if < p1) reads: rows are read
    # in the ratings' order, scattered over a factor matrix larger than the caches
    if p < p1:
        k = Y.shape[1]
        lo = indices[p] * k
        for f in range(lo, lo + k, 64 // Y.itemsize):
            prefetch(Y, f)


@_jit
def _gather8(Ut, Wt, bv, Y, indices, data, p, q, p1, implicit, alpha):
    # columns q..q+7 of Ut (and Wt) = the rows of Y of ratings p..p+7 in float64 (times
    # w); bv += beta y for each.  Eight rows at once make each feature's eight values one
    # contiguous store: a transposed gather 3x faster than one rating at a time.
    for r in range(8):
        _prefetch_row(Y, indices, p + r + 2 * AHEAD, p1)
    y0 = Y[indices[p]]
    y1 = Y[indices[p + 1]]
    y2 = Y[indices[p + 2]]
    y3 = Y[indices[p + 3]]
    y4 = Y[indices[p + 4]]
    y5 = Y[indices[p + 5]]
    y6 = Y[indices[p + 6]]
    y7 = Y[indices[p + 7]]
    w0, c0 = _weights(data[p], implicit, alpha)
    w1, c1 = _weights(data[p + 1], implicit, alpha)
    w2, c2 = _weights(data[p + 2], implicit, alpha)
    w3, c3 = _weights(data[p + 3], implicit, alpha)
    w4, c4 = _weights(data[p + 4], implicit, alpha)
    w5, c5 = _weights(data[p + 5], implicit, alpha)
    w6, c6 = _weights(data[p + 6], implicit, alpha)
    w7, c7 = _weights(data[p + 7], implicit, alpha)
    for a in range(bv.shape[0]):
        z0 = np.float64(y0[a])
        z1 = np.float64(y1[a])
        z2 = np.float64(y2[a])
        z3 = np.float64(y3[a])
        z4 = np.float64(y4[a])
        z5 = np.float64(y5[a])
        z6 = np.float64(y6[a])
        z7 = np.float64(y7[a])
        t = Ut[a]
        t[q] = z0
        t[q + 1] = z1
        t[q + 2] = z2
        t[q + 3] = z3
        t[q + 4] = z4
        t[q + 5] = z5
        t[q + 6] = z6
        t[q + 7] = z7
        bv[a] += (((c0 * z0 + c1 * z1) + (c2 * z2 + c3 * z3))
                  + ((c4 * z4 + c5 * z5) + (c6 * z6 + c7 * z7)))
        if implicit:
            t = Wt[a]
            t[q] = w0 * z0
            t[q + 1] = w1 * z1
            t[q + 2] = w2 * z2
            t[q + 3] = w3 * z3
            t[q + 4] = w4 * z4
            t[q + 5] = w5 * z5
            t[q + 6] = w6 * z6
            t[q + 7] = w7 * z7


@_jit
def _form_system(A, T, Ut, Wt, bv, Y, YtY, indices, data, p0, p1, implicit, alpha, lam):
    # OUT A (k, k) = base + sum w y y^T + lam I (both triangles); bv (k,) = sum beta y.
    # The ratings go PANEL at a time: their rows of Y are gathered transposed into Ut
    # (k4, PANEL) float64, times w into Wt (implicit), and the panel's Gram is added to
    # T's upper triangle by 4 x 4 tiles (_syrk4).  Rows k..k4 of Ut and Wt are zero.
    # At k = 64 this forms A 2-3x faster than rank-one updates of the whole square did.
    k = bv.shape[0]
    k4 = T.shape[0]
    for a in range(k4):
        for b in range(k4):
            T[a, b] = YtY[a, b] if implicit and a < k and b < k else 0.0
    for a in range(k):
        bv[a] = 0.0
    p = p0
    while p < p1:
        L = min(PANEL, p1 - p)
        q = 0
        while q + 8 <= L:
            _gather8(Ut, Wt, bv, Y, indices, data, p + q, q, p1, implicit, alpha)
            q += 8
        while q < L:
            j = indices[p + q]
            w, c = _weights(data[p + q], implicit, alpha)
            for a in range(k):
                y = np.float64(Y[j, a])
                Ut[a, q] = y
                bv[a] += c * y
                if implicit:
                    Wt[a, q] = w * y
            q += 1
        if implicit:
            _syrk4(T, Wt, Ut, k4, L, False)
        else:  # w = 1
            _syrk4(T, Ut, Ut, k4, L, False)
        p += L
    _upper_to(A, T, k, lam)


@_jit
def _chol_solve(A, bv, x):
    # Solve A x = bv, A symmetric (its leading k x k block, k = len(bv); the lower
    # triangle is read and overwritten by L, A = L L^T; bv by the forward solve).
    # Pivots below PIVOT_FLOOR * max(diag) are raised to that floor.  Row by row
    # (L[m, j] = (A[m, j] - L[m, :j] . L[j, :j]) / L[j, j], contiguous dots), four rows
    # at a time: a row's dots depend on each other, four rows' do not, so the four
    # chains overlap and share the loads of L[j] (2x faster than one row at a time or
    # the right-looking update: 10 us at k = 64, 5 us at 45).  x holds 1 / L[j, j]
    # until the back solve overwrites it.
    k = bv.shape[0]
    dmax = 0.0
    for j in range(k):
        if A[j, j] > dmax:
            dmax = A[j, j]
    floor = max(dmax * PIVOT_FLOOR, 1e-300)
    m0 = 0
    while m0 + 4 <= k:
        R0 = A[m0]
        R1 = A[m0 + 1]
        R2 = A[m0 + 2]
        R3 = A[m0 + 3]
        for j in range(m0):
            Lj = A[j]
            s0 = s1 = s2 = s3 = 0.0
            for f in range(j):
                t = Lj[f]
                s0 += R0[f] * t
                s1 += R1[f] * t
                s2 += R2[f] * t
                s3 += R3[f] * t
            d = x[j]
            R0[j] = (R0[j] - s0) * d
            R1[j] = (R1[j] - s1) * d
            R2[j] = (R2[j] - s2) * d
            R3[j] = (R3[j] - s3) * d
        for m in range(m0, m0 + 4):
            _chol_row(A, x, m, m0, floor)
        m0 += 4
    for m in range(m0, k):
        _chol_row(A, x, m, 0, floor)
    for m in range(k):  # L z = b
        bv[m] = (bv[m] - _dot_n(A[m], bv, m)) * x[m]
    for j in range(k - 1, -1, -1):  # L^T x = z
        xj = bv[j] * x[j]
        x[j] = xj
        Lj = A[j]
        for m in range(j):
            bv[m] -= xj * Lj[m]


@_jit
def _chol_row(A, x, m, j0, floor):
    # row m of L from column j0 on (its columns before j0 are done) and its pivot;
    # x[m] = 1 / L[m, m]
    Lm = A[m]
    for j in range(j0, m):
        Lm[j] = (Lm[j] - _dot_n(Lm, A[j], j)) * x[j]
    d = Lm[m] - _dot_n(Lm, Lm, m)
    if not d >= floor:
        d = floor
    d = math.sqrt(d)
    Lm[m] = d
    x[m] = 1.0 / d


@_jit
def _dual_solve(T, Yg, bv, z, x, Y, indices, data, p0, p1, lam):
    # Explicit feedback with n = p1 - p0 < k ratings: (Y_u^T Y_u + lam I) x = Y_u^T r is
    # solved as x = Y_u^T z with (Y_u Y_u^T + lam I) z = r, an n x n system (the same
    # solution: (Y^T Y + lam I) Y^T = Y^T (Y Y^T + lam I)).  It costs n^2 k / 2 + n^3 / 3
    # against n k^2 + k^3 / 3 for the k x k system.  The rated rows are gathered into Yg
    # (k4, k) float64, rows n..n4 zero, and Y_u Y_u^T stored by 4 x 4 tiles into T's
    # lower triangle, where the factorisation reads it in place.
    n = p1 - p0
    n4 = (n + 3) // 4 * 4
    k = x.shape[0]
    for a in range(n4):
        if a < n:
            _prefetch_row(Y, indices, p0 + a + AHEAD, p1)
            j = indices[p0 + a]
            for f in range(k):
                Yg[a, f] = np.float64(Y[j, f])
        else:
            for f in range(k):
                Yg[a, f] = 0.0
    _syrk4(T, Yg, Yg, n4, k, True)
    for a in range(n):
        T[a, a] += lam
        bv[a] = data[p0 + a]
    _chol_solve(T, bv[:n], z[:n])
    for f in range(k):
        x[f] = 0.0
    for a in range(n):
        za = z[a]
        for f in range(k):
            x[f] += za * Yg[a, f]


@_jit
def _dot_y(y, v):
    # y . v with y a row of Y (its own dtype), accumulated in float64
    s = 0.0
    for a in range(v.shape[0]):
        s += np.float64(y[a]) * np.float64(v[a])
    return s


@_jit
def _residual_or_matvec(out, v, YtY, Y, indices, data, p0, p1, implicit, alpha, lam, rhs):
    # out = A v - rhs * b without forming A:
    #   (base + lam I) v + sum_p (w_p (y_p . v) - rhs * beta_p) y_p
    # rhs = 1 gives A x - b (CG's first residual, negated) in the same single pass over
    # the ratings as a product; rhs = 0 gives A v.  Ratings go four at a time: four dot
    # products, then one pass over ``out`` for four rows of Y.
    k = v.shape[0]
    for a in range(k):
        out[a] = lam * v[a]
    if implicit:  # YtY symmetric: row b is column b; four columns per pass over out
        b = 0
        while b + 4 <= k:
            v0 = v[b]
            v1 = v[b + 1]
            v2 = v[b + 2]
            v3 = v[b + 3]
            r0 = YtY[b]
            r1 = YtY[b + 1]
            r2 = YtY[b + 2]
            r3 = YtY[b + 3]
            for a in range(k):
                out[a] += (r0[a] * v0 + r1[a] * v1) + (r2[a] * v2 + r3[a] * v3)
            b += 4
        while b < k:
            vb = v[b]
            row = YtY[b]
            for a in range(k):
                out[a] += row[a] * vb
            b += 1
    p = p0
    while p + 4 <= p1:
        y0 = Y[indices[p]]
        y1 = Y[indices[p + 1]]
        y2 = Y[indices[p + 2]]
        y3 = Y[indices[p + 3]]
        w0, c0 = _weights(data[p], implicit, alpha)
        w1, c1 = _weights(data[p + 1], implicit, alpha)
        w2, c2 = _weights(data[p + 2], implicit, alpha)
        w3, c3 = _weights(data[p + 3], implicit, alpha)
        s0 = w0 * _dot_y(y0, v) - rhs * c0
        s1 = w1 * _dot_y(y1, v) - rhs * c1
        s2 = w2 * _dot_y(y2, v) - rhs * c2
        s3 = w3 * _dot_y(y3, v) - rhs * c3
        for a in range(k):
            out[a] += ((s0 * np.float64(y0[a]) + s1 * np.float64(y1[a]))
                       + (s2 * np.float64(y2[a]) + s3 * np.float64(y3[a])))
        p += 4
    while p < p1:
        y0 = Y[indices[p]]
        w0, c0 = _weights(data[p], implicit, alpha)
        s0 = w0 * _dot_y(y0, v) - rhs * c0
        for a in range(k):
            out[a] += s0 * np.float64(y0[a])
        p += 1


@_jit
def _cg(x, r, pv, Ap, YtY, Y, indices, data, p0, p1, implicit, alpha, lam, steps):
    # ``steps`` CG steps on A x = b from x (in place), as implicit's least_squares_cg
    k = x.shape[0]
    _residual_or_matvec(r, x, YtY, Y, indices, data, p0, p1, implicit, alpha, lam, 1.0)
    for a in range(k):  # r = b - A x
        r[a] = -r[a]
        pv[a] = r[a]
    rsold = _dot(r, r)
    if rsold < CG_EPS:
        return
    for _ in range(steps):
        _residual_or_matvec(Ap, pv, YtY, Y, indices, data, p0, p1, implicit, alpha, lam, 0.0)
        pap = _dot(pv, Ap)
        if not pap > 0.0:
            return
        step = rsold / pap
        for a in range(k):
            x[a] += step * pv[a]
            r[a] -= step * Ap[a]
        rsnew = _dot(r, r)
        if rsnew < CG_EPS:
            return
        ratio = rsnew / rsold
        for a in range(k):
            pv[a] = r[a] + ratio * pv[a]
        rsold = rsnew


@_jit
def _nnls(A, bv, x, g, M, c, xs, sweeps):
    # min 1/2 x^T A x - b^T x, x >= 0: projected coordinate descent from x (in place),
    # then an exact solve on the positive coordinates, kept if feasible.  A (k, k)
    # symmetric, both triangles filled; M (k, k), c, xs (k,) work buffers.
    k = bv.shape[0]
    for a in range(k):  # g = A x - b
        g[a] = _dot(A[a], x) - bv[a]
    for _ in range(sweeps):
        dmax = 0.0
        xmax = 0.0
        for j in range(k):
            ajj = A[j, j]
            nx = 0.0
            if ajj > 0.0:
                nx = x[j] - g[j] / ajj
                if not nx > 0.0:
                    nx = 0.0
            d = nx - x[j]
            if d != 0.0:
                x[j] = nx
                for m in range(k):
                    g[m] += d * A[j, m]
            dmax = max(dmax, abs(d))
            xmax = max(xmax, nx)
        if dmax <= 1e-13 * xmax:
            break
    # polish: A_FF x_F = b_F on F = {x > 0}, identity elsewhere
    for a in range(k):
        fa = x[a] > 0.0
        c[a] = bv[a] if fa else 0.0
        for b in range(k):
            if fa and x[b] > 0.0:
                M[a, b] = A[a, b]
            else:
                M[a, b] = 1.0 if a == b else 0.0
    _chol_solve(M, c, xs)
    for a in range(k):
        if x[a] > 0.0 and not xs[a] >= 0.0:
            return
    for a in range(k):
        x[a] = xs[a] if x[a] > 0.0 else 0.0


@block_kernel(fastmath=FAST_FLAGS, parallel_always=True)
def _als_rows(indptr, indices, data, Y, YtY, X0, bounds, reg, implicit, alpha, solver,
              cg_steps, nonneg, sweeps):
    # IN  indptr (n+1,) int64; indices (nnz,) int32/int64 rows of Y; data (nnz,) float64;
    #     Y (n_other, k) float32/64; YtY (k, k) float64 (read when implicit); X0 (n, k)
    #     float64 start or (0, k); bounds (n_chunks + 1,) chunk row boundaries;
    #     solver 0 = Cholesky, 1 = CG
    # OUT X (n, k) in Y's dtype
    n = indptr.shape[0] - 1
    k = Y.shape[1]
    k4 = (k + 3) // 4 * 4
    n_chunks = bounds.shape[0] - 1
    has_x0 = X0.shape[0] > 0
    X = np.empty((n, k), dtype=Y.dtype)
    for ch in prange(n_chunks):
        A = np.empty((k, k))
        M = np.empty((k, k))
        T = np.empty((k4, k4))
        Ut = np.zeros((k4, PANEL))
        Wt = np.zeros((k4, PANEL))
        Yg = np.empty((k4, k))
        bv = np.empty(k)
        x = np.empty(k)
        r = np.empty(k)
        pv = np.empty(k)
        Ap = np.empty(k)
        xs = np.empty(k)
        for u in range(bounds[ch], bounds[ch + 1]):
            p0 = indptr[u]
            p1 = indptr[u + 1]
            if p1 <= p0:
                for a in range(k):
                    X[u, a] = 0.0
                continue
            lam = reg if implicit else reg * (p1 - p0)
            for a in range(k):
                x[a] = X0[u, a] if has_x0 else 0.0
            if nonneg:
                _form_system(A, T, Ut, Wt, bv, Y, YtY, indices, data, p0, p1, implicit, alpha, lam)
                for a in range(k):
                    if not x[a] > 0.0:
                        x[a] = 0.0
                _nnls(A, bv, x, r, M, pv, xs, sweeps)
            elif solver == 0 and not implicit and p1 - p0 < k:
                _dual_solve(T, Yg, bv, xs, x, Y, indices, data, p0, p1, lam)
            elif solver == 0:
                _form_system(A, T, Ut, Wt, bv, Y, YtY, indices, data, p0, p1, implicit, alpha, lam)
                _chol_solve(A, bv, x)
            else:
                _cg(x, r, pv, Ap, YtY, Y, indices, data, p0, p1, implicit, alpha, lam, cg_steps)
            for a in range(k):
                X[u, a] = x[a]
    return X


@block_kernel(fastmath=FAST_FLAGS)
def _gram_parts(Y, chunk):
    # IN Y (n, k)   OUT the upper triangle of Y_c^T Y_c (n_chunks, k, k) float64 for
    # every chunk c of `chunk` rows (the last may be shorter), one chunk per thread.
    # The chunk's rows go transposed into panels of PANEL rows (features padded to a
    # multiple of 4 with zeros) whose Gram _syrk4 adds by 4 x 4 register tiles: 2-3x the
    # speed of the rank-four updates of the whole triangle this replaced (1M x 64 on
    # one thread: 0.29 against 0.58-0.86 s), and closer to the exact sums.
    n, k = Y.shape
    k4 = (k + 3) // 4 * 4
    n_chunks = (n + chunk - 1) // chunk
    parts = np.zeros((n_chunks, k, k))
    for ch in prange(n_chunks):
        G4 = np.zeros((k4, k4))
        Ut = np.zeros((k4, PANEL))
        i = ch * chunk
        stop = min(n, i + chunk)
        while i < stop:
            L = min(PANEL, stop - i)
            for p in range(L):
                for a in range(k):
                    Ut[a, p] = Y[i + p, a]
            _syrk4(G4, Ut, Ut, k4, L, False)
            i += L
        G = parts[ch]
        for a in range(k):
            for b in range(a, k):
                G[a, b] = G4[a, b]
    return parts


def _threads(n_threads, n_chunks):
    return max(1, min(int(n_threads), n_chunks))


def _as_factors(Y):
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-d factor matrix (n_other, k), got ndim={Y.ndim}")
    if Y.dtype not in (np.float32, np.float64):
        Y = Y.astype(np.float64)
    return Y if Y.flags.c_contiguous else np.ascontiguousarray(Y)


def _as_index(indices):
    # int32 or int64 ids are read as they are (numba compiles both); others become int64
    indices = np.asarray(indices)
    if indices.dtype not in (np.int32, np.int64):
        indices = indices.astype(np.int64)
    return np.ascontiguousarray(indices)


def _cost_bounds(indptr, k, n_chunks):
    # Chunk boundaries with about equal work (ratings plus a per-row solve), a function
    # of the block only.  Results never depend on them: rows are independent.
    n = indptr.shape[0] - 1
    if n_chunks <= 1 or n == 0:
        return np.array([0, n], dtype=np.int64)
    cost = np.cumsum(np.diff(indptr) + max(1, k // 3), dtype=np.float64)
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, n_chunks) / n_chunks, side="left")
    return np.concatenate([[0], cuts + 1, [n]]).clip(0, n).astype(np.int64)


def gram_leaves(Y, n_threads=1):
    """The Gram matrices of every chunk of GRAM_ROWS rows of Y (n_chunks, k, k) float64,
    upper triangles: the leaves of :func:`gram`'s tree (a block of rows starting at a
    multiple of GRAM_ROWS gives the leaves of the whole matrix's chunks it holds)."""
    Y = _as_factors(Y)
    nc = -(-Y.shape[0] // GRAM_ROWS)
    return _gram_parts(Y, GRAM_ROWS, n_threads=_threads(n_threads, max(1, nc)))


def gram_root(nodes, n_leaves):
    """Y^T Y from the nodes of the fixed tree over Y's GRAM_ROWS-row chunks (see
    :func:`dmlkit._core.reduce.dyadic_merge`), mirrored into a full (k, k) matrix."""
    (out,) = dyadic_merge(nodes, n_leaves, operator.add).values()
    return np.triu(out) + np.triu(out, 1).T


def gram(Y, n_threads=1):
    """Y^T Y as a (k, k) float64 array (the implicit-feedback base term): the chunks' Gram
    matrices summed in the fixed tree over the chunks' global positions, so row blocks
    of Y reduced separately give the same bits (:func:`gram_root`)."""
    Y = _as_factors(Y)
    if Y.shape[0] == 0:
        return np.zeros((Y.shape[1], Y.shape[1]))
    leaves = gram_leaves(Y, n_threads=n_threads)
    return gram_root(dyadic_sum(list(leaves), operator.add), len(leaves))


def als_solve_rows_block(indptr, indices, data, Y, *, reg, implicit=False, alpha=1.0,
                         YtY=None, cg_steps=3, X0=None, nonnegative=False, solver="auto",
                         n_threads=1):
    """Solve every row of one CSR ratings block against the other side's factors Y.

    ``indptr`` (n_rows + 1,), ``indices`` (nnz,) global row ids of ``Y`` (n_other, k),
    ``data`` (nnz,) ratings.  Returns X (n_rows, k) in Y's dtype (float32 or float64;
    other dtypes give float64), accumulated in float64.  See the module docstring for
    the problems solved; ``YtY`` (k, k) is Y^T Y for implicit feedback (computed when
    None), ``X0`` (n_rows, k) the warm start of CG and of the nonnegative solver,
    ``solver`` is "auto" (CG for implicit, Cholesky for explicit), "cg" or "cholesky".
    """
    Y = _as_factors(Y)
    k = Y.shape[1]
    solver = check_params(reg, alpha, solver, cg_steps, implicit)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = _as_index(indices)
    data = np.ascontiguousarray(data, dtype=np.float64)
    n = indptr.shape[0] - 1
    _check_csr(indptr, indices, data, Y.shape[0])
    if X0 is None:
        X0 = np.zeros((0, k))
    else:
        X0 = np.ascontiguousarray(X0, dtype=np.float64)
        if X0.shape != (n, k):
            raise ValueError(f"X0 must have shape {(n, k)}, got {X0.shape}")
    if implicit:
        YtY = gram(Y, n_threads=n_threads) if YtY is None else np.ascontiguousarray(
            YtY, dtype=np.float64)
        if YtY.shape != (k, k):
            raise ValueError(f"YtY must have shape {(k, k)}, got {YtY.shape}")
    else:
        YtY = np.zeros((k, k))
    nc = n_chunks_for(n, 8 * k * (2 * k + 10), min_rows=MIN_CHUNK_ROWS)
    bounds = _cost_bounds(indptr, k, nc)
    return _als_rows(indptr, indices, data, Y, YtY, X0, bounds, float(reg), bool(implicit),
                     float(alpha), _SOLVERS[solver], int(cg_steps), bool(nonnegative),
                     NNLS_SWEEPS, n_threads=_threads(n_threads, nc))


def _check_csr(indptr, indices, data, n_other):
    if indptr.ndim != 1 or indptr.shape[0] < 1:
        raise ValueError("indptr must be a 1-d array of n_rows + 1 offsets")
    if indices.shape != data.shape or indices.ndim != 1:
        raise ValueError(f"indices and data must be 1-d of the same length, got "
                         f"{indices.shape} and {data.shape}")
    if indptr[0] < 0 or indptr[-1] > indices.shape[0] or np.any(np.diff(indptr) < 0):
        raise ValueError("indptr must be non-decreasing offsets into indices/data")
    if indices.shape[0]:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= n_other:
            raise ValueError(f"indices must be row ids of Y in [0, {n_other}), got "
                             f"values in [{lo}, {hi}]")


@block_kernel(fastmath=FAST_FLAGS)
def _loss_rows(indptr, indices, data, X, Y, implicit, alpha, bounds):
    # IN  CSR block; X (n, k) the block's rows' factors; Y (n_other, k)
    # OUT sum over stored entries of (r - x.y)^2 (explicit) or c (1 - x.y)^2 - (x.y)^2
    #     (implicit, c = 1 + alpha r); per-chunk float64 sums added in chunk order
    k = Y.shape[1]
    n_chunks = bounds.shape[0] - 1
    parts = np.zeros(n_chunks)
    for ch in prange(n_chunks):
        s = 0.0
        for u in range(bounds[ch], bounds[ch + 1]):
            for p in range(indptr[u], indptr[u + 1]):
                j = indices[p]
                pred = 0.0
                for a in range(k):
                    pred += np.float64(X[u, a]) * np.float64(Y[j, a])
                if implicit:
                    e = 1.0 - pred
                    s += (1.0 + alpha * data[p]) * e * e - pred * pred
                else:
                    e = data[p] - pred
                    s += e * e
        parts[ch] = s
    total = 0.0
    for ch in range(n_chunks):
        total += parts[ch]
    return total


def als_loss_block(indptr, indices, data, X, Y, *, implicit=False, alpha=1.0, n_threads=1):
    """The stored entries' part of the ALS objective for one CSR block (a float).

    Explicit: sum of (r - x_u . y_i)^2.  Implicit: sum of c (1 - p)^2 - p^2 with
    p = x_u . y_i and c = 1 + alpha r; adding sum(X^T X * Y^T Y) over the whole matrices
    gives the confidence-weighted squared error over every (user, item) cell.  The
    regularisation terms are the caller's (they need only the factors).
    """
    Y = _as_factors(Y)
    X = np.ascontiguousarray(X, dtype=Y.dtype)
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    indices = _as_index(indices)
    data = np.ascontiguousarray(data, dtype=np.float64)
    _check_csr(indptr, indices, data, Y.shape[0])
    n, k = indptr.shape[0] - 1, Y.shape[1]
    if X.shape != (n, k):
        raise ValueError(f"X must have shape {(n, k)}, got {X.shape}")
    nc = n_chunks_for(n, 8, min_rows=MIN_CHUNK_ROWS)
    bounds = _cost_bounds(indptr, k, nc)
    return float(_loss_rows(indptr, indices, data, X, Y, bool(implicit), float(alpha), bounds,
                            n_threads=_threads(n_threads, nc)))


@numba.njit(nogil=True, cache=True)
def _top_n_rows(S, n, cols, best, counts):
    m, c = S.shape
    for r in range(m):
        cnt = 0
        for j in range(c):
            v = S[r, j]
            if not v > -np.inf:
                continue  # left out (-inf), or NaN
            if cnt == n and not v > best[r, n - 1]:
                continue  # not better than the n-th: an equal score's lower column stays
            p = cnt if cnt < n else n - 1
            while p > 0 and best[r, p - 1] < v:  # equal scores: the lower column first
                best[r, p] = best[r, p - 1]
                cols[r, p] = cols[r, p - 1]
                p -= 1
            best[r, p] = v
            cols[r, p] = j
            if cnt < n:
                cnt += 1
        counts[r] = cnt


def top_n_rows(S, n):
    """The ``n`` best columns of every row of a score matrix, best first, ties to the
    lower column; columns scored -inf (or NaN) are left out.  Returns (columns (m, n)
    int64, their scores, the number kept per row): one pass over each row, holding only
    its ``n`` best (serial: the callers run it in parallel tasks)."""
    S = np.ascontiguousarray(S)
    m = S.shape[0]
    n = max(1, min(int(n), S.shape[1]))
    cols = np.zeros((m, n), dtype=np.int64)
    best = np.full((m, n), -np.inf, dtype=S.dtype)
    counts = np.zeros(m, dtype=np.int64)
    if S.shape[1]:
        _top_n_rows(S, n, cols, best, counts)
    return cols, best, counts
