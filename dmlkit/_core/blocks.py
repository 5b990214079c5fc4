"""Input normalisation: anything array-like -> one row-blocked dask array.

Every family goes through :func:`to_row_blocks`.  The result has all columns in one
chunk, known row-chunk sizes, and ``sample_weight`` (and ``y``) chunked like X's rows.
In-memory input is validated with scikit-learn's own checks (so messages match
scikit-learn's); lazy input is checked on its metadata here and for NaN/inf inside the
first pass over each block, never with a separate ``compute()``.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from dask.utils import parse_bytes
from sklearn.utils.validation import validate_data

from dmlkit._config import get_config
from dmlkit._core.client import compute, get_client_or_none, total_threads

FLOAT_DTYPES = (np.float64, np.float32)


@dataclass
class RowBlocks:
    """Row blocks of X (and aligned y / sample_weight) ready for the driver."""

    X: da.Array
    sample_weight: da.Array | None
    y: da.Array | None
    lazy: bool  # the caller gave a dask collection (outputs are then dask too)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_blocks(self) -> int:
        return len(self.X.chunks[0])

    @property
    def row_offsets(self) -> np.ndarray:
        """Global index of each block's first row (length n_blocks + 1)."""
        return np.concatenate([[0], np.cumsum(self.X.chunks[0])]).astype(np.int64)

    @property
    def dtype(self):
        return self.X.dtype

    @property
    def sparse(self) -> bool:
        """Blocks are scipy.sparse CSR matrices."""
        return is_sparse_blocks(self.X)


def from_numpy_views(X: np.ndarray, rows: int) -> da.Array:
    """A dask array whose blocks are views of X's row slices.

    Unlike ``da.from_array`` (which copies its input and hashes it for a name), this
    neither copies nor hashes: fitting on in-memory data adds no second copy of it.
    """
    X = X if X.ndim == 1 or X.flags.c_contiguous else np.ascontiguousarray(X)
    chunks = da.core.normalize_chunks((rows,) + X.shape[1:], X.shape)
    name = f"dmlkit-input-{uuid.uuid4().hex}"
    bounds = np.concatenate([[0], np.cumsum(chunks[0])])
    tail = (0,) * (X.ndim - 1)
    dsk = {(name, i) + tail: X[bounds[i]:bounds[i + 1]] for i in range(len(chunks[0]))}
    return da.Array(dsk, name, chunks, dtype=X.dtype, meta=X[:0])


def from_csr_views(X: sp.csr_matrix, block_size=None) -> da.Array:
    """A dask array whose blocks are CSR row slices of X sharing its data and indices.

    Blocks hold about ``dmlkit.block-size`` bytes of stored entries; only each block's
    ``indptr`` is new (rows + 1 integers).
    """
    n, d = X.shape
    per_row = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / max(1, n)
    rows = rows_per_block(n, per_row, block_size)
    chunks = da.core.normalize_chunks((rows, d), X.shape)
    name = f"dmlkit-input-{uuid.uuid4().hex}"
    bounds = np.concatenate([[0], np.cumsum(chunks[0])])
    dsk = {}
    for i in range(len(chunks[0])):
        a, b = int(bounds[i]), int(bounds[i + 1])
        lo, hi = X.indptr[a], X.indptr[b]
        # scipy's (data, indices, indptr) constructor copies; an empty matrix given the
        # slices as its arrays does not
        block = sp.csr_matrix((b - a, d), dtype=X.dtype)
        block.data, block.indices = X.data[lo:hi], X.indices[lo:hi]
        block.indptr = (X.indptr[a:b + 1] - lo).astype(X.indices.dtype, copy=False)
        dsk[(name, i, 0)] = block
    return da.Array(dsk, name, chunks, dtype=X.dtype, meta=sp.csr_matrix((0, d), dtype=X.dtype))


def is_sparse_blocks(X) -> bool:
    """Whether a dask array's blocks are scipy.sparse matrices."""
    return sp.issparse(getattr(X, "_meta", None))


def csr_arrays(X):
    """(data, indices, indptr) of a scipy.sparse block as CSR without duplicate entries
    (a squared norm would count a duplicated entry's square twice); duplicates are
    summed on a copy, so the caller's block is never modified."""
    X = X.tocsr() if X.format != "csr" else X
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()  # also sorts the indices: a canonical block skips this
    return X.data, X.indices, X.indptr


def estimate_nbytes(X: da.Array) -> float:
    """Bytes the blocks of X take in memory.

    Dense: ``X.nbytes``.  Sparse blocks: the stored bytes of the first block (computed
    once, the only way to know a lazy sparse array's density) scaled to all rows.
    """
    if not is_sparse_blocks(X):
        return float(X.nbytes)
    # only the block's byte count comes back, not the block
    (stored,) = compute(dask.delayed(_stored_bytes)(X.to_delayed().ravel()[0]))
    return stored * X.shape[0] / max(1, X.chunks[0][0])


def _stored_bytes(block) -> int:
    return int(block.data.nbytes + block.indices.nbytes + block.indptr.nbytes)


def is_dask_collection(obj) -> bool:
    return dask.is_dask_collection(obj)


MIN_SPLIT_BYTES = 4 << 20  # in-memory data is split for threads only into blocks this big


def rows_per_block(n_rows: int, row_bytes: float, block_size=None) -> int:
    """Rows per block of in-memory data: blocks of about ``dmlkit.block-size`` bytes, and
    at least one block per thread of the cluster (or process) when the data is big
    enough (``MIN_SPLIT_BYTES`` a block), so that every thread has a block to work on."""
    size = parse_bytes(block_size if block_size is not None else get_config("block-size"))
    total = max(1.0, n_rows * row_bytes)
    n_blocks = max(math.ceil(total / size),
                   min(total_threads(get_client_or_none()), int(total // MIN_SPLIT_BYTES)))
    return max(1, math.ceil(n_rows / max(1, n_blocks)))


def _check_finite_block(block, what="X"):
    # Runs inside the first task that reads the block: the NaN/inf check costs no
    # separate pass.  Message matches scikit-learn's ("Input X contains NaN/infinity").
    if sp.issparse(block):
        if not np.isfinite(block.data).all():
            raise ValueError(f"Input {what} contains NaN or infinity.")
        return block
    xp_block = np.asarray(block) if isinstance(block, np.ndarray) else block
    try:
        finite = bool(np.isfinite(xp_block).all())
    except TypeError:  # array-API arrays without numpy ufunc support
        from array_api_compat import array_namespace

        xp = array_namespace(block)
        finite = bool(xp.all(xp.isfinite(block)))
    if not finite:
        raise ValueError(f"Input {what} contains NaN or infinity.")
    return block


def check_finite_result(*values, what="X"):
    """Raise scikit-learn's error when a pass's reduced result is not finite.

    Kernels accumulate ``w * x`` (or ``x`` into statistics) from every row, so one NaN or
    infinity in the input (even with a zero weight: ``0 * inf`` is NaN) makes the reduced
    result non-finite: checking the small result checks the whole input.
    """
    for v in values:
        if not np.isfinite(np.asarray(v, dtype=np.float64)).all():
            raise ValueError(f"Input {what} contains NaN or infinity.")


def _dask_from_dataframe(X, numeric=True):
    """dask dataframe (or series) -> (dask array, feature names); ``numeric=False`` (a
    target) lets non-numeric columns through.

    The array's row chunks are left unknown here and measured on the array itself
    (:func:`known_row_chunks`).  ``to_dask_array(lengths=True)`` counts rows on a
    separately optimised graph: with parquet and selected columns, dask fuses a
    different number of files or row groups into a partition for the row count than
    for the data, and the counts do not match the blocks.
    """
    import pandas as pd

    frame = X.to_frame() if X.ndim == 1 else X
    names = np.asarray([str(c) for c in frame.columns], dtype=object)
    bad = [str(c) for c, t in frame.dtypes.items()
           if not (pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t))]
    if bad and numeric:
        raise TypeError(f"dask dataframe has non-numeric column(s) {bad}; dmlkit needs numeric "
                        "features (encode categorical or string columns first).")
    if any(not isinstance(c, str) for c in frame.columns):
        names = None  # scikit-learn only records feature names when all are strings
    # nullable extension dtypes (Float64, Int64, boolean) become NumPy floats, <NA> as
    # NaN (then refused as missing values like any NaN), instead of an object array
    ext = {c: _numpy_dtype(t) for c, t in frame.dtypes.items()
           if isinstance(t, pd.api.extensions.ExtensionDtype) and str(c) not in bad}
    if ext:
        X = X.astype(next(iter(ext.values()))) if X.ndim == 1 else X.astype(ext)
    return X.to_dask_array(), names


def _numpy_dtype(t):
    """The NumPy dtype a nullable (extension) numeric column is fitted as."""
    import pandas as pd

    if pd.api.types.is_float_dtype(t) and np.dtype(t.numpy_dtype) == np.float32:
        return np.float32
    return np.float64


def known_row_chunks(*arrays):
    """The arrays with their unknown row-chunk sizes measured, in one computation.

    Each block's row count is measured on the array's own graph, so it matches its
    blocks whatever dask fused into them.
    """
    todo = [i for i, a in enumerate(arrays) if any(math.isnan(c) for c in a.chunks[0])]
    if not todo:
        return arrays
    counts = compute(*[[dask.delayed(_n_rows)(b) for b in arrays[i].to_delayed().ravel()]
                       for i in todo])
    out = list(arrays)
    for i, rows in zip(todo, counts, strict=True):
        a = arrays[i]
        chunks = (tuple(int(r) for r in rows),) + a.chunks[1:]
        out[i] = da.Array(a.dask, a.name, chunks, meta=a._meta)
    return tuple(out)


def _n_rows(block) -> int:
    return int(block.shape[0])


def _validate_dask_array(X, dtype, what="X", check_finite=True):
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array for {what}, got {X.ndim}D dask array instead. "
                         "Reshape your data, e.g. X.reshape(-1, 1) for a single feature.")
    kind = X.dtype.kind
    if kind == "c":
        raise ValueError("Complex data not supported")
    if kind not in "biuf":
        raise TypeError(f"{what} has dtype {X.dtype}; dmlkit needs numeric input "
                        "(encode categorical or string data first).")
    (X,) = known_row_chunks(X)
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
                         "is required.")
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
                         "is required.")
    target = X.dtype if X.dtype in [np.dtype(d) for d in dtype] else np.dtype(dtype[0])
    if X.dtype != target:
        X = X.astype(target)
    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: -1})
    if is_sparse_blocks(X) and X._meta.format != "csr":
        X = X.map_blocks(_to_csr, dtype=X.dtype, meta=sp.csr_matrix((0, X.shape[1]),
                                                                   dtype=X.dtype))
    if not check_finite:
        return X
    return X.map_blocks(_check_finite_block, what=what, dtype=X.dtype, meta=X._meta)


def _to_csr(block):
    return block.tocsr() if sp.issparse(block) else sp.csr_matrix(block)


def _vector_blocks(v, X, what, dtype=None, check_finite=True):
    """A 1-d input (sample_weight, y) as a dask array chunked like X's rows."""
    n = X.shape[0]
    if is_dask_collection(v):
        if hasattr(v, "to_dask_array"):  # dask series / dataframe
            v, _ = _dask_from_dataframe(v, numeric=False)
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.ndim != 1:
            raise ValueError(f"{what} must be 1-dimensional, got shape {v.shape}.")
        (v,) = known_row_chunks(v)
        if v.shape[0] != n:
            raise ValueError(f"{what} has {v.shape[0]} rows but X has {n}; they must be aligned.")
        if v.chunks[0] != X.chunks[0]:
            v = v.rechunk({0: X.chunks[0]})
        if dtype is not None and v.dtype != dtype:
            v = v.astype(dtype)
        if check_finite:
            v = v.map_blocks(_check_finite_block, what=what, dtype=v.dtype, meta=v._meta)
        return v
    arr = np.asarray(v, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-dimensional, got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise ValueError(f"{what} has {arr.shape[0]} rows but X has {n}; they must be aligned.")
    if check_finite and arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise ValueError(f"Input {what} contains NaN or infinity.")
    return from_numpy_views(arr, X.chunks[0][0]).rechunk({0: X.chunks[0]})


def check_sample_weight(sample_weight, X, dtype):
    """``sample_weight`` -> dask array aligned with X's rows; non-negative, not all zero
    (checked for in-memory weights; lazy weights are checked finite in the first pass)."""
    if sample_weight is None:
        return None
    w = _vector_blocks(sample_weight, X, "sample_weight", dtype=dtype)
    if not is_dask_collection(sample_weight):
        arr = np.asarray(sample_weight, dtype=dtype)
        if arr.ndim and (arr < 0).any():
            raise ValueError("Negative values in sample_weight are not allowed.")
        if arr.ndim and not (arr > 0).any():
            raise ValueError("sample_weight must contain at least one non-zero weight.")
    return w


def to_row_blocks(X, *, estimator=None, reset=True, sample_weight=None, y=None,
                  dtype=FLOAT_DTYPES, block_size=None, finite_check="blocks",
                  accept_sparse=False) -> RowBlocks:
    """Normalise X (numpy, pandas, lists, dask array, dask dataframe) into row blocks.

    With ``accept_sparse``, a scipy.sparse matrix (any format: it becomes CSR) and dask
    arrays of scipy.sparse blocks are taken too, and give CSR row blocks; otherwise
    they raise a TypeError naming the estimator.

    ``estimator`` with ``reset=True`` records ``n_features_in_`` / ``feature_names_in_``;
    with ``reset=False`` the input is checked against them.

    ``finite_check`` says where lazy X is checked for NaN/inf: ``"blocks"`` wraps every
    block in a check (for single-pass work: predict, transform, score); ``"caller"``
    leaves it to the caller, whose kernels fold it into their first pass (a fit checks
    its reduced sums with :func:`check_finite_result`, which non-finite input poisons),
    so an iterative fit never pays an extra pass, nor ``isfinite`` on every streamed one.
    """
    who = type(estimator).__name__ if estimator is not None else "this function"
    sparse_in = sp.issparse(X) or (is_dask_collection(X) and is_sparse_blocks(X))
    if sparse_in and not accept_sparse:
        raise TypeError(f"Sparse input is not supported by {who}; pass a dense array "
                        "(e.g. X.toarray(), or X.map_blocks(lambda b: b.toarray()) for dask).")
    if sp.issparse(X):
        Xs = validate_data(estimator, X, reset=reset, dtype=list(dtype),
                           accept_sparse="csr") if estimator is not None else \
            _check_array(X, dtype, accept_sparse="csr")
        X = from_csr_views(Xs, block_size)
        lazy = False
    elif is_dask_collection(X):
        names = None
        if hasattr(X, "to_dask_array"):
            X, names = _dask_from_dataframe(X)
        elif not isinstance(X, da.Array):
            raise TypeError(f"Unsupported dask collection {type(X).__name__}; "
                            "pass a dask array or a dask dataframe.")
        if finite_check not in ("blocks", "caller"):
            raise ValueError(f"finite_check must be 'blocks' or 'caller', got {finite_check!r}")
        X = _validate_dask_array(X, dtype, check_finite=finite_check == "blocks")
        if estimator is not None:
            _record_or_check_features(estimator, X.shape[1], names, reset)
        lazy = True
    else:
        Xn = validate_data(estimator, X, reset=reset, dtype=list(dtype)) \
            if estimator is not None else _check_array(X, dtype)
        rows = rows_per_block(Xn.shape[0], Xn.shape[1] * Xn.dtype.itemsize, block_size)
        X = from_numpy_views(Xn, rows)
        lazy = False
    w = check_sample_weight(sample_weight, X, X.dtype)
    yb = None if y is None else _vector_blocks(y, X, "y", check_finite=False)
    return RowBlocks(X=X, sample_weight=w, y=yb, lazy=lazy)


def _check_array(X, dtype, accept_sparse=False):
    from sklearn.utils import check_array

    return check_array(X, dtype=list(dtype), accept_sparse=accept_sparse)


def _record_or_check_features(estimator, n_features, names, reset):
    if reset:
        estimator.n_features_in_ = int(n_features)
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and n_features != expected:
        raise ValueError(f"X has {n_features} features, but {type(estimator).__name__} "
                         f"is expecting {expected} features as input.")
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if fitted_names is not None and names is not None and not np.array_equal(fitted_names, names):
        raise ValueError("The feature names should match those that were passed during fit.")
