"""Column statistics of row blocks in one pass (count, mean, variance), merged in a
fixed tree with Chan et al.'s pairwise update so the bits do not depend on scheduling."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dmlkit._core.blocks import csr_arrays
from dmlkit._core.dispatch import to_numpy


# Non-finite input makes these sums NaN; the caller checks them (check_finite_result),
# so numpy's RuntimeWarnings would only be noise before the real error.
@np.errstate(invalid="ignore", over="ignore")
def _stats_task(x, w, offset, n_threads=1):
    if sp.issparse(x):
        return _sparse_stats(x)
    if isinstance(x, np.ndarray):
        mean = x.mean(axis=0, dtype=np.float64)
        m2 = x.var(axis=0, dtype=np.float64) * x.shape[0]
        return float(x.shape[0]), mean, m2
    from array_api_compat import array_namespace

    xp = array_namespace(x)
    xf = xp.astype(x, xp.float64)
    n = xf.shape[0]
    mean = xp.mean(xf, axis=0)
    m2 = xp.sum((xf - mean) ** 2, axis=0)
    return float(n), to_numpy(mean), to_numpy(m2)


@np.errstate(invalid="ignore", over="ignore")
def _sparse_stats(x):
    """(n, mean, sum of squared deviations) of every column of a CSR block, in O(nnz + d):
    the implicit zeros of column f add ``(n - nnz_f) * mean_f^2``."""
    data, indices, _ = csr_arrays(x)
    n, d = x.shape
    data = data.astype(np.float64)
    mean = np.bincount(indices, weights=data, minlength=d) / n
    nnz = np.bincount(indices, minlength=d)
    dev = data - mean[indices]
    m2 = np.bincount(indices, weights=dev * dev, minlength=d) + (n - nnz) * mean * mean
    return float(n), mean, m2


@np.errstate(invalid="ignore", over="ignore")
def _combine_stats(*parts):
    n, mean, m2 = parts[0][0], parts[0][1].copy(), parts[0][2].copy()
    for nb, mb, m2b in parts[1:]:
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta**2 * (n * nb / tot)
        n = tot
    return n, mean, m2


def column_stats(driver):
    """(n, mean, variance) of every column of the driver's data (unweighted; dense or
    CSR blocks)."""
    n, mean, m2 = driver.map_reduce(_stats_task, _combine_stats, step="stats")
    return n, mean, m2 / n
