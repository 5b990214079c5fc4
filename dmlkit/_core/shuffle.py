"""One shuffle of coordinate triples into two blocked CSR layouts (rows and columns).

ALS needs its ratings twice: grouped by user (to solve users) and grouped by item (to
solve items).  Both layouts come from one pass over the source partitions: each
partition's (row, col, value) triples are cut by contiguous row ranges and by
contiguous column ranges, and each output block gathers its pieces from every
partition, in partition order, and sorts them by (row, col) -- or (col, row) for the
column layout.  A block rebuilt after a lost worker is therefore the same bytes
whatever order its pieces arrived in, and both layouts hold the same merged values.

A block is a tuple ``(indptr, indices, data)``: int64 offsets over the block's rows
(local row ``r`` is global row ``start + r``), global ids of the other side (int32 when
every id of the block fits, else int64: 12 bytes per entry instead of 16), float64
values.  These are the arrays the ALS kernels read without a copy.

Duplicate (row, col) pairs are merged inside the block build, in that same fixed
order: ``"sum"``, ``"mean"``, or ``"error"`` (a ValueError naming a duplicated pair).
"""

from __future__ import annotations

import dask
import numpy as np

DUPLICATES = ("sum", "mean", "error")
INT32_MAX = np.iinfo(np.int32).max


def balanced_cuts(counts, n_blocks):
    """Boundaries ``[0, ..., n]`` of contiguous ranges of ``counts``'s positions holding
    about equal sums (each range non-empty; fewer ranges when there are fewer positions).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.shape[0]
    n_blocks = int(max(1, min(n_blocks, n)))
    if n_blocks == 1:
        return np.array([0, n], dtype=np.int64)
    # a small per-position cost keeps ranges of empty positions from growing without end
    cost = np.cumsum(counts + 1.0)
    cuts = np.searchsorted(cost, cost[-1] * np.arange(1, n_blocks) / n_blocks, side="left")
    cuts = np.unique(np.clip(cuts + 1, 1, n - 1))
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


def _split(triples, cuts, side):
    # One source partition's triples cut by the row ranges (side 0) or the column ranges
    # (side 1): one task per layout, so each layout's pieces are freed once its blocks
    # are built, not when both layouts' are
    rows, cols, vals = triples
    which = np.searchsorted(cuts, rows if side == 0 else cols, side="right") - 1
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(cuts)))
    pieces = []
    for b in range(len(cuts) - 1):
        sel = order[bounds[b]:bounds[b + 1]]
        pieces.append((rows[sel], cols[sel], vals[sel]))
    return tuple(pieces)


def _merge_duplicates(major, minor, vals, duplicates, names):
    # (major, minor) sorted; equal neighbours are duplicates, kept in arrival order
    if major.shape[0] < 2:
        return major, minor, vals
    dup = (major[1:] == major[:-1]) & (minor[1:] == minor[:-1])
    if not dup.any():
        return major, minor, vals
    if duplicates == "error":
        j = int(np.flatnonzero(dup)[0])
        pair = {names[0]: int(major[j]), names[1]: int(minor[j])}
        raise ValueError(f"duplicate ratings for the pair (encoded) {pair}: "
                         f"{int(dup.sum())} duplicated pairs in all; pass "
                         f"duplicates='sum' or 'mean' to merge them")
    first = np.concatenate([[True], ~dup])
    group = np.cumsum(first) - 1
    sums = np.zeros(int(group[-1]) + 1, dtype=np.float64)
    np.add.at(sums, group, vals)  # unbuffered, in index order: same bits every time
    if duplicates == "mean":
        sums /= np.bincount(group)
    return major[first], minor[first], sums


def build_block(start, stop, transpose, duplicates, *pieces):
    """One block of the row layout (or, transposed, of the column layout) from its
    (rows, cols, vals) pieces, in the order given."""
    rows = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, np.int64)
    cols = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, np.int64)
    vals = np.concatenate([p[2] for p in pieces]) if pieces else np.zeros(0)
    major, minor = (cols, rows) if transpose else (rows, cols)
    order = np.lexsort((minor, major))  # stable: duplicates keep partition order
    major = np.asarray(major[order], dtype=np.int64)
    minor = np.asarray(minor[order], dtype=np.int64)
    vals = np.asarray(vals[order], dtype=np.float64)
    names = ("col", "row") if transpose else ("row", "col")
    major, minor, vals = _merge_duplicates(major, minor, vals, duplicates, names)
    counts = np.bincount(major - start, minlength=stop - start)
    indptr = np.zeros(stop - start + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if minor.shape[0] == 0 or minor.max() <= INT32_MAX:  # a function of the block alone
        minor = minor.astype(np.int32)
    return indptr, np.ascontiguousarray(minor), np.ascontiguousarray(vals)


def shuffle_to_blocks(parts, row_cuts, col_cuts, *, duplicates="sum", name="dmlkit-shuffle"):
    """Lazy row-layout and column-layout CSR blocks of the triples in ``parts``.

    ``parts`` are Delayed objects each giving ``(rows, cols, vals)`` (integers, int32 or
    int64, and float64) of one source partition; ``row_cuts`` / ``col_cuts`` the boundaries of the
    blocks' id ranges.  Returns two lists of Delayed ``(indptr, indices, data)`` blocks.
    """
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    row_cuts = np.asarray(row_cuts, dtype=np.int64)
    col_cuts = np.asarray(col_cuts, dtype=np.int64)
    build = dask.delayed(build_block, pure=True)
    layouts = []
    for side, cuts in ((0, row_cuts), (1, col_cuts)):
        split = dask.delayed(_split, nout=len(cuts) - 1, pure=True)
        split_parts = [split(p, cuts, side, dask_key_name=f"{name}-split-{'rc'[side]}-{j}")
                       for j, p in enumerate(parts)]
        blocks = []
        for b in range(len(cuts) - 1):
            pieces = [s[b] for s in split_parts]
            blocks.append(build(int(cuts[b]), int(cuts[b + 1]), bool(side), duplicates,
                                *pieces, dask_key_name=f"{name}-{'rc'[side]}-{b}"))
        layouts.append(blocks)
    return layouts[0], layouts[1]
