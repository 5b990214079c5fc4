"""Feature extraction over dask collections: one stateless transformer per partition.

``transform_partitions(ddf["text"], HashingVectorizer(...))`` turns documents held in a
dask dataframe (or bag) into a dask array whose row blocks are the partitions, each a
scipy.sparse CSR matrix from scikit-learn's transformer: what dmlkit's SGD estimators
take as sparse input.  (dask-ml's HashingVectorizer infers its metadata from a sample
that fails on pyarrow-backed string columns of recent dask.)
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from dmlkit._core.client import compute


def _count(items) -> int:
    return sum(1 for _ in items)


def _transform(transformer, part):
    return transformer.transform(part)


def _empty_output(transformer):
    """A (0, n_features) output of the transformer: the blocks' metadata."""
    try:
        out = transformer.transform([])
    except (ValueError, StopIteration, IndexError):  # e.g. HashingVectorizer needs a doc
        out = transformer.transform([""])
    return out[:0]


def transform_partitions(data, transformer, *, dtype=np.float64):
    """``transformer.transform`` on every partition of ``data``, as a row-blocked dask array.

    Parameters
    ----------
    data : dask Series, DataFrame or Bag
        The raw samples (for text vectorisers, one document per row).
    transformer : a fitted or stateless scikit-learn transformer
        E.g. ``HashingVectorizer``; its output for an empty document gives the blocks'
        metadata (type and width).
    dtype : the output's dtype.

    Returns
    -------
    dask.array.Array with one row block per partition and known block sizes (found with
    one cheap pass that counts each partition's rows).
    """
    if not dask.is_dask_collection(data) or not hasattr(data, "to_delayed"):
        raise TypeError(f"data must be a dask Series, DataFrame or Bag, got "
                        f"{type(data).__name__}.")
    if not hasattr(transformer, "transform"):
        raise TypeError(f"transformer must have a transform method, got "
                        f"{type(transformer).__name__}.")
    meta = _empty_output(transformer)
    n_features = int(meta.shape[1])
    parts = data.to_delayed()
    # counted on the parts themselves: a separately optimised row count can see another
    # partitioning (dask fuses parquet row groups differently for fewer columns)
    count = dask.delayed(len if hasattr(data, "map_partitions") else _count, pure=True)
    lengths = compute(*[count(p) for p in parts])
    func = dask.delayed(_transform, pure=True)
    blocks = [da.from_delayed(func(transformer, p), shape=(int(n), n_features), dtype=dtype,
                              meta=meta[:0].astype(dtype))
              for p, n in zip(parts, lengths, strict=True)]
    return da.concatenate(blocks, axis=0)
