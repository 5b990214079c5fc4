"""ALS block kernels written against the array API (NumPy, CuPy, array_api_strict).

Same public names and signatures as ``_kernels_cpu`` (see its docstring for the
problems solved); results come back as arrays of Y's namespace, on Y's device.  The
CSR arrays may come from another namespace (NumPy, say): they are moved to Y's.

Rows are solved exactly and in batches: the block's rows are sorted by their number of
ratings and cut into chunks whose counts differ at most twofold (so padding stays
small) and whose gathered tensor stays under ``GATHER_ELEMS`` float64 values; for a
chunk, the rows of Y are gathered into a padded (rows, width, k) tensor with a 0/1
mask, A (rows, k, k) is formed by one batched matmul and ``xp.linalg.solve`` solves all
rows at once.  A row with more ratings than one tensor holds is accumulated over
several widths.  The original row order is restored at the end.  ``solver`` and
``cg_steps`` are accepted (and checked) but the solve is always exact: this is what
CG converges to.  ``nonnegative`` runs the same projected coordinate descent and polish
as the numba kernel, vectorised over the chunk's rows (sweeps stop when every row of
the chunk has converged).  Systems must be nonsingular (reg > 0, or enough ratings):
the numba kernel floors tiny pivots, ``linalg.solve`` raises or returns inf/nan.
"""

from __future__ import annotations

import operator

import numpy as np
from array_api_compat import array_namespace, device

from dmlkit._core.dispatch import to_numpy
from dmlkit._core.reduce import dyadic_merge, dyadic_sum

NNLS_SWEEPS = 50
GRAM_ROWS = 4096  # rows per leaf of YᵀY's fixed tree (as the numba kernels)
GATHER_ELEMS = 1 << 22  # float64 values in one gathered (rows, width, k) tensor


def check_params(reg, alpha, solver, cg_steps, implicit):
    """Validate the scalar arguments; return the resolved solver name."""
    if not reg >= 0:
        raise ValueError(f"reg must be >= 0, got {reg!r}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}")
    if int(cg_steps) != cg_steps or cg_steps < 0:
        raise ValueError(f"cg_steps must be a non-negative integer, got {cg_steps!r}")
    if solver == "auto":
        return "cg" if implicit else "cholesky"
    if solver not in ("cg", "cholesky"):
        raise ValueError(f"solver must be 'auto', 'cg' or 'cholesky', got {solver!r}")
    return solver


def _move(xp, a, dev, dtype=None):
    # an array of any namespace as an array of xp on dev
    try:
        array_namespace(a)
        same = array_namespace(a) is xp
    except TypeError:
        same = False
    if not same:
        a = to_numpy(a)
    return xp.asarray(a, dtype=dtype, device=dev)


def _plan(nnz_sorted, k, budget):
    # (start, stop) chunks of the nnz-sorted rows: counts within a factor two (plus 8),
    # at most budget / (width * k) rows and budget / k^2 rows each.
    n = nnz_sorted.shape[0]
    cap_rows = max(1, budget // (k * k))
    s = int(np.searchsorted(nnz_sorted, 1))  # rows without ratings are left out
    chunks = []
    while s < n:
        lo = int(nnz_sorted[s])
        e = int(np.searchsorted(nnz_sorted, max(2 * lo, lo + 8), side="right"))
        hi = int(nnz_sorted[e - 1])
        e = min(e, s + cap_rows, s + max(1, budget // (k * hi)))
        chunks.append((s, e))
        s = e
    return chunks


def gram_leaves(Y, n_threads=1):
    """The Gram matrices of every chunk of GRAM_ROWS rows of Y, float64 (n_chunks, k, k)
    in Y's namespace: the leaves of :func:`gram`'s tree."""
    xp = array_namespace(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-d factor matrix (n_other, k), got ndim={Y.ndim}")
    n, k = Y.shape
    parts = []
    for start in range(0, n, GRAM_ROWS):
        Yc = xp.astype(Y[start:min(n, start + GRAM_ROWS), :], xp.float64)
        parts.append(xp.matrix_transpose(Yc) @ Yc)
    return xp.stack(parts) if parts else xp.zeros((0, k, k), dtype=xp.float64,
                                                  device=device(Y))


def gram_root(nodes, n_leaves):
    """Y^T Y from the nodes of the fixed tree over Y's chunks (as the numba kernels')."""
    (out,) = dyadic_merge(nodes, n_leaves, operator.add).values()
    return out


def gram(Y, n_threads=1):
    """Y^T Y as a (k, k) float64 array of Y's namespace: the chunks' Gram matrices summed
    in the fixed tree over their global positions (see the numba kernels' ``gram``)."""
    xp = array_namespace(Y)
    leaves = gram_leaves(Y)
    if leaves.shape[0] == 0:
        return xp.zeros((Y.shape[1], Y.shape[1]), dtype=xp.float64, device=device(Y))
    return gram_root(dyadic_sum([leaves[i, ...] for i in range(leaves.shape[0])],
                                operator.add), leaves.shape[0])


def _nnls(xp, A, b, x, sweeps):
    # batched projected coordinate descent + polish (see _kernels_cpu._nnls)
    rows, k = b.shape
    g = (A @ x[..., None])[..., 0] - b
    cols = [x[:, j] for j in range(k)]
    diag = [A[:, j, j] for j in range(k)]
    safe = [xp.where(d > 0, d, xp.ones_like(d)) for d in diag]
    zero = xp.zeros((rows,), dtype=b.dtype, device=device(b))
    for _ in range(sweeps):
        dmax = zero
        for j in range(k):
            nx = cols[j] - g[:, j] / safe[j]
            nx = xp.where((diag[j] > 0) & (nx > 0), nx, zero)
            d = nx - cols[j]
            cols[j] = nx
            g = g + d[:, None] * A[:, j, :]
            dmax = xp.maximum(dmax, xp.abs(d))
        xmax = xp.max(xp.stack(cols, axis=1), axis=1)
        if bool(xp.all(dmax <= 1e-13 * xmax)):
            break
    x = xp.stack(cols, axis=1)
    free = xp.astype(x > 0, b.dtype)
    eye = xp.eye(k, dtype=b.dtype, device=device(b))
    M = A * (free[:, :, None] * free[:, None, :]) + eye[None, :, :] * (1 - free)[:, :, None]
    xs = xp.linalg.solve(M, (b * free)[..., None])[..., 0] * free
    ok = xp.all((xs >= 0) | (free == 0), axis=1)
    return xp.where(ok[:, None], xs, x)


def als_solve_rows_block(indptr, indices, data, Y, *, reg, implicit=False, alpha=1.0,
                         YtY=None, cg_steps=3, X0=None, nonnegative=False, solver="auto",
                         n_threads=1):
    """Solve every row of one CSR ratings block against the other side's factors Y.

    Returns X (n_rows, k) in Y's dtype (float32 or float64; other dtypes give float64)
    and namespace, accumulated in float64.  The solve is exact whatever ``solver``.
    """
    xp = array_namespace(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-d factor matrix (n_other, k), got ndim={Y.ndim}")
    check_params(reg, alpha, solver, cg_steps, implicit)
    dev = device(Y)
    if Y.dtype not in (xp.float32, xp.float64):
        Y = xp.astype(Y, xp.float64)
    n_other, k = Y.shape
    f64 = xp.float64
    indptr_h = np.asarray(to_numpy(indptr), dtype=np.int64)
    if indptr_h.ndim != 1 or indptr_h.shape[0] < 1:
        raise ValueError("indptr must be a 1-d array of n_rows + 1 offsets")
    n = indptr_h.shape[0] - 1
    nnz = np.diff(indptr_h)
    indices = _move(xp, indices, dev, xp.int64)
    data = _move(xp, data, dev, f64)
    if indices.ndim != 1 or indices.shape != data.shape:
        raise ValueError(f"indices and data must be 1-d of the same length, got "
                         f"{indices.shape} and {data.shape}")
    if indptr_h[0] < 0 or indptr_h[-1] > indices.shape[0] or np.any(nnz < 0):
        raise ValueError("indptr must be non-decreasing offsets into indices/data")
    if indices.shape[0]:
        lo, hi = int(xp.min(indices)), int(xp.max(indices))
        if lo < 0 or hi >= n_other:
            raise ValueError(f"indices must be row ids of Y in [0, {n_other}), got "
                             f"values in [{lo}, {hi}]")
    if X0 is not None:
        X0 = _move(xp, X0, dev, f64)
        if tuple(X0.shape) != (n, k):
            raise ValueError(f"X0 must have shape {(n, k)}, got {tuple(X0.shape)}")
    if implicit:
        YtY = gram(Y) if YtY is None else _move(xp, YtY, dev, f64)
        if tuple(YtY.shape) != (k, k):
            raise ValueError(f"YtY must have shape {(k, k)}, got {tuple(YtY.shape)}")
    eye = xp.eye(k, dtype=f64, device=dev)

    order = np.argsort(nnz, kind="stable")
    nnz_sorted = nnz[order]
    starts_sorted = indptr_h[:-1][order]
    parts = []
    n_empty = int(np.searchsorted(nnz_sorted, 1))
    if n_empty:
        parts.append(xp.zeros((n_empty, k), dtype=f64, device=dev))
    for s, e in _plan(nnz_sorted, k, GATHER_ELEMS):
        rows = e - s
        width_max = int(nnz_sorted[e - 1])
        count = xp.asarray(nnz_sorted[s:e], device=dev)
        start = xp.asarray(starts_sorted[s:e], device=dev)
        A = xp.zeros((rows, k, k), dtype=f64, device=dev)
        b = xp.zeros((rows, k), dtype=f64, device=dev)
        step = max(1, GATHER_ELEMS // (rows * k))
        for t0 in range(0, width_max, step):
            width = min(step, width_max - t0)
            off = xp.arange(t0, t0 + width, dtype=xp.int64, device=dev)
            mask = off[None, :] < count[:, None]
            pos = xp.where(mask, start[:, None] + off[None, :], xp.zeros_like(count)[:, None])
            pos = xp.reshape(pos, (-1,))
            vals = xp.where(mask, xp.reshape(xp.take(data, pos), (rows, width)),
                            xp.zeros((rows, width), dtype=f64, device=dev))
            G = xp.astype(xp.take(Y, xp.take(indices, pos), axis=0), f64)
            G = xp.reshape(G, (rows, width, k))
            if implicit:
                w = alpha * vals
                beta = xp.where(mask, 1 + w, vals)  # vals is 0 where masked
            else:
                w = xp.astype(mask, f64)
                beta = vals
            A = A + xp.matrix_transpose(G) @ (G * w[:, :, None])
            b = b + (xp.matrix_transpose(G) @ beta[:, :, None])[..., 0]
        lam = reg * xp.ones((rows,), dtype=f64, device=dev) if implicit else \
            reg * xp.astype(count, f64)
        A = A + lam[:, None, None] * eye[None, :, :]
        if implicit:
            A = A + YtY[None, :, :]
        if nonnegative:
            if X0 is None:
                x = xp.zeros((rows, k), dtype=f64, device=dev)
            else:
                x = xp.take(X0, xp.asarray(order[s:e], device=dev), axis=0)
                x = xp.where(x > 0, x, xp.zeros_like(x))
            parts.append(_nnls(xp, A, b, x, NNLS_SWEEPS))
        else:
            parts.append(xp.linalg.solve(A, b[:, :, None])[:, :, 0])
    if not parts:
        return xp.zeros((n, k), dtype=Y.dtype, device=dev)
    X = xp.concat(parts, axis=0) if len(parts) > 1 else parts[0]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    X = xp.take(X, xp.asarray(inverse, device=dev), axis=0)
    return xp.astype(X, Y.dtype)


def als_loss_block(indptr, indices, data, X, Y, *, implicit=False, alpha=1.0, n_threads=1):
    """The stored entries' part of the ALS objective (see ``_kernels_cpu``), a float."""
    xp = array_namespace(Y)
    dev = device(Y)
    f64 = xp.float64
    indptr_h = np.asarray(to_numpy(indptr), dtype=np.int64)
    n, k = indptr_h.shape[0] - 1, Y.shape[1]
    if tuple(X.shape) != (n, k):
        raise ValueError(f"X must have shape {(n, k)}, got {tuple(X.shape)}")
    rows_h = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr_h))
    indices = _move(xp, indices, dev, xp.int64)
    data = _move(xp, data, dev, f64)
    X = _move(xp, X, dev, f64)
    total = 0.0
    step = max(1, GATHER_ELEMS // max(1, k))
    for s in range(0, rows_h.shape[0], step):
        e = min(rows_h.shape[0], s + step)
        xr = xp.take(X, xp.asarray(rows_h[s:e], device=dev), axis=0)
        yr = xp.astype(xp.take(Y, indices[s:e], axis=0), f64)
        pred = xp.sum(xr * yr, axis=1)
        if implicit:
            err = (1 + alpha * data[s:e]) * (1 - pred) ** 2 - pred ** 2
        else:
            err = (data[s:e] - pred) ** 2
        total += float(xp.sum(err))
    return total
