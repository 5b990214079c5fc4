"""k-means block kernels written against the array API (NumPy, CuPy, array_api_strict).

Same public names, signatures and return values as ``_kernels_cpu``; results come back
as arrays of the block's namespace (the caller moves the small ones to the host).
Rows are processed in chunks so the (rows x k) score matrix stays bounded.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

CHUNK_ROWS = 1 << 16


def _chunks(n):
    for start in range(0, n, CHUNK_ROWS):
        yield start, min(n, start + CHUNK_ROWS)


def _scores(xp, Xc, centers, c_norm):
    # ||c||^2 - 2 x.c : the argmin over centres of the squared distance
    return c_norm[None, :] - 2 * (Xc @ xp.matrix_transpose(centers))


def _as_centers(xp, X, centers):
    return xp.asarray(centers, dtype=X.dtype, device=device(X))


def _exact_sqdist(xp, Xc, centers, labels):
    diff = xp.astype(Xc, xp.float64) - xp.astype(xp.take(centers, labels, axis=0), xp.float64)
    return xp.sum(diff * diff, axis=1)


def assign_partial_sums_block(X, w, centers, n_threads=1, exact_inertia=True):
    """Fused assign + accumulate: (sums (k, d) float64, counts (k,) float64, inertia).

    With ``exact_inertia=False`` the inertia is skipped (NaN).
    """
    xp = array_namespace(X)
    centers = _as_centers(xp, X, centers)
    n, d = X.shape
    k = centers.shape[0]
    dev = device(X)
    c_norm = xp.sum(centers * centers, axis=1)
    ids = xp.arange(k, device=dev)
    sums = xp.zeros((k, d), dtype=xp.float64, device=dev)
    counts = xp.zeros((k,), dtype=xp.float64, device=dev)
    inertia = xp.zeros((), dtype=xp.float64, device=dev)
    for start, stop in _chunks(n):
        Xc = X[start:stop, :]
        labels = xp.argmin(_scores(xp, Xc, centers, c_norm), axis=1)
        onehot = xp.astype(labels[:, None] == ids[None, :], xp.float64)
        wc = None
        if w is not None:
            wc = xp.astype(xp.asarray(w[start:stop], device=dev), xp.float64)
            onehot = onehot * wc[:, None]
        if exact_inertia:
            dist = _exact_sqdist(xp, Xc, centers, labels)
            inertia = inertia + xp.sum(dist if wc is None else wc * dist)
        sums = sums + xp.matrix_transpose(onehot) @ xp.astype(Xc, xp.float64)
        counts = counts + xp.sum(onehot, axis=0)
    if not exact_inertia:
        inertia = xp.full((), float("nan"), dtype=xp.float64, device=dev)
    return sums, counts, inertia


def labels_sqdist_block(X, centers, n_threads=1):
    """Nearest centre (int32) and its exact squared distance (float64) for every row."""
    xp = array_namespace(X)
    centers = _as_centers(xp, X, centers)
    c_norm = xp.sum(centers * centers, axis=1)
    labels, dists = [], []
    for start, stop in _chunks(X.shape[0]):
        Xc = X[start:stop, :]
        lab = xp.argmin(_scores(xp, Xc, centers, c_norm), axis=1)
        labels.append(xp.astype(lab, xp.int32))
        dists.append(_exact_sqdist(xp, Xc, centers, lab))
    if not labels:
        return (xp.zeros((0,), dtype=xp.int32, device=device(X)),
                xp.zeros((0,), dtype=xp.float64, device=device(X)))
    return xp.concat(labels), xp.concat(dists)


def sqdist_block(X, centers, n_threads=1):
    """Squared Euclidean distances (n, k) float64 from every row to every centre."""
    xp = array_namespace(X)
    centers = xp.astype(_as_centers(xp, X, centers), xp.float64)
    out = []
    for start, stop in _chunks(X.shape[0]):
        Xc = xp.astype(X[start:stop, :], xp.float64)
        diff = Xc[:, None, :] - centers[None, :, :]
        out.append(xp.sum(diff * diff, axis=2))
    if not out:
        return xp.zeros((0, centers.shape[0]), dtype=xp.float64, device=device(X))
    return xp.concat(out)
