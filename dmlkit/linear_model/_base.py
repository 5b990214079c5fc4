"""What the linear-model estimators share: their decision values over row blocks and
the one pass that finds a classifier's labels."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import to_row_blocks
from dmlkit._core.client import compute
from dmlkit._core.dispatch import to_numpy


def decision_values(x, coef, intercept):
    """x @ coef.T + intercept for a dense (NumPy or array-API) or scipy.sparse block."""
    if sp.issparse(x):
        return np.asarray(x @ coef.T) + intercept
    return to_numpy(x) @ coef.T + intercept


def linear_decision(estimator, X, coef, intercept, name):
    """Decision values (n, n_models) of a fitted linear model: a dask array for dask
    input (one task per block), a NumPy array for in-memory input."""
    check_is_fitted(estimator)
    blocks = to_row_blocks(X, estimator=estimator, reset=False, accept_sparse=True)
    coef = np.atleast_2d(coef)
    intercept = np.atleast_1d(intercept)
    dtype = np.result_type(blocks.dtype, coef.dtype)
    out = blocks.X.map_blocks(decision_values, coef, intercept, dtype=dtype,
                              chunks=(blocks.X.chunks[0], (coef.shape[0],)),
                              meta=np.empty((0, 0), dtype=dtype), name=name)
    return out if blocks.lazy else compute(out)[0]


def _block_label_counts(y):
    # hashing (pandas) instead of sorting: ~10x faster than np.unique on a block
    vc = pd.Series(np.asarray(to_numpy(y))).value_counts(sort=False, dropna=False)
    return vc.index.to_numpy(), vc.to_numpy()


def label_counts(blocks):
    """Distinct labels of y (sorted) and their counts, in one pass (dask or in-memory y):
    each block counts its own labels, the client merges the small tables."""
    y = blocks.y
    count = dask.delayed(_block_label_counts, pure=True)
    if not blocks.lazy:  # one table from the whole array (hashing: no sort of y)
        parts = [_block_label_counts(compute(y)[0])]
    else:
        parts = compute(*[count(b) for b in y.to_delayed().ravel()])
    labels, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=np.concatenate([p[1] for p in parts]))
    return labels, counts.astype(np.int64)
