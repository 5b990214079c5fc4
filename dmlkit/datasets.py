"""Synthetic data generated block by block, lazily, from a seed and the block index.

Each block's rows come from ``np.random.default_rng([random_state, block_index])``, so
the data set never has to exist in one place, a lost block is regenerated identically,
and the same call always gives the same data whatever the cluster.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import tokenize


def _blobs_block(block_info=None, *, centers, cluster_std, seed, out_dtype):
    info = block_info[None]
    (start, stop), _ = info["array-location"]
    index = info["chunk-location"][0]
    rng = np.random.default_rng([seed, index])
    n = stop - start
    labels = rng.integers(0, centers.shape[0], n)
    X = centers[labels] + rng.standard_normal((n, centers.shape[1])) * cluster_std
    return X.astype(out_dtype, copy=False)


def make_blobs(n_samples=100_000, n_features=2, centers=3, *, cluster_std=1.0,
               center_box=(-10.0, 10.0), chunks=100_000, random_state=0, dtype=np.float64):
    """Isotropic Gaussian blobs as a lazy dask array (like scikit-learn's ``make_blobs``).

    Returns ``(X, centers)``: X of shape (n_samples, n_features) chunked by ``chunks``
    rows, and the true centres as a NumPy array.
    """
    if isinstance(centers, int):
        rng = np.random.default_rng([random_state, 2**31])
        centers = rng.uniform(center_box[0], center_box[1], (centers, n_features))
    centers = np.asarray(centers, dtype=np.float64)
    if centers.ndim != 2 or centers.shape[1] != n_features:
        raise ValueError(f"centers must have shape (n_centers, {n_features}), "
                         f"got {centers.shape}.")
    normalized = da.core.normalize_chunks((chunks, n_features), (n_samples, n_features))
    X = da.map_blocks(
        _blobs_block, chunks=normalized, dtype=dtype, meta=np.empty((0, 0), dtype=dtype),
        name="dmlkit-blobs-" + tokenize(centers, cluster_std, random_state, normalized,
                                        np.dtype(dtype).str),
        centers=centers, cluster_std=cluster_std, seed=random_state, out_dtype=dtype)
    return X, centers
