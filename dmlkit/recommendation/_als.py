"""ALS matrix factorisation on the shared driver: explicit (ALS-WR) and implicit (HKV).

How a fit runs
--------------
1. One pass over the ratings counts every user id and item id and checks the values
   (missing ids, non-finite ratings, negative ratings for implicit feedback).  The ids
   are sorted and kept as ``user_ids_`` / ``item_ids_``; position in them is the code
   used everywhere inside.
2. One shuffle (:mod:`dmlkit._core.shuffle`) lays the encoded ratings out twice: as
   user blocks (CSR, a contiguous range of user codes each, columns = item codes) and
   as item blocks (the transpose).  The ranges hold about equal numbers of ratings.
   With ``cache`` the blocks are persisted (with lineage back to the source, so a lost
   worker's blocks are rebuilt, sorted, to the same bytes); without it every
   half-iteration rebuilds them from the source: bounded memory, more reading.
3. Each iteration solves every row of one side against the other side's factors, then
   every row of the other side (which side first: ``solve_order``, by default from the
   data's shape and the feedback type, see :meth:`ALS._first_side`).  The other side's
   factors enter each half-iteration's graph as one key (shipped once per worker); the
   solved blocks come back to the client,
   which holds the factors between half-iterations.  No iteration's graph contains an
   earlier one's, so a worker lost at iteration 14 costs iteration 14's tasks.
   The iterations run through the core's :class:`~dmlkit._core.loop.FitLoop`: with
   ``checkpoint`` the factors are saved one file per block, and a fit resumes from them.
4. Factors larger than ``dmlkit.driver-state-bytes`` stay on the cluster instead: the
   state holds futures of the blocks, the solved blocks stay where they were solved, a
   worker concatenates the side the next half needs, and the loss is computed there.
   The ids stay there too: the scan's counts are kept as futures, the encoding tasks
   read the id index from the cluster, and the client gets only lengths and cuts.
   Starting factors come from per-chunk random streams (:func:`_init_rows`), so each
   block is made on its worker with the bits the client path makes.  Serving then runs
   as tasks where the blocks are.

Every row's solve depends only on its own ratings and the other side's factors, and
the kernels' arithmetic does not depend on chunking or threads: the factors are the
same bits whatever the number of blocks, workers or threads, and after a lost worker.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import operator
import time
import uuid
import warnings
from numbers import Integral, Real

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.sparse as sp
from dask.base import tokenize
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from dmlkit._config import get_config
from dmlkit._core.checkpoint import BlockList, is_future
from dmlkit._core.client import (
    compute,
    get_client_or_none,
    placed,
    scheduler_loss,
    solve_here,
    wait_for,
)
from dmlkit._core.dispatch import backend_of, get_kernels, to_device, to_numpy
from dmlkit._core.loop import CHECKPOINT_CONSTRAINTS, FitLoop, Step, fit_fingerprint
from dmlkit._core.numba_utils import one_blas_thread
from dmlkit._core.params import Interval, StrOptions, validate_params
from dmlkit._core.reduce import dyadic_sum
from dmlkit._core.shuffle import DUPLICATES, balanced_cuts, shuffle_to_blocks
from dmlkit._core.shuffle import build_block as _build_block
from dmlkit.base import keep_state_on_error
from dmlkit.exceptions import DmlkitWarning
from dmlkit.recommendation._kernels_cpu import top_n_rows

logger = logging.getLogger("dmlkit")

COLD_START = ("nan", "drop")
SIDES = ("user", "item")
SOLVE_ORDERS = ("auto", "users", "items")
BYTES_PER_RATING = 12  # int32 index + float64 value, per layout
SCORE_CHUNK = 1 << 22  # scores computed at once when ranking (rows x items)
INIT_ROWS = 1 << 16  # rows per random stream of the starting factors
# a block's peak while it is built (the shuffle's pieces concatenated, sorted, laid out as
# CSR) over its BYTES_PER_RATING size, with room for what a worker holds besides: blocks
# of 1/32 of a worker's memory per thread kept 1 GiB workers alive (8M ratings: peak
# process 705 MiB, 268 MiB spilled), where one block of 96 MB ran them out of memory
BLOCK_BUILD_FACTOR = 32
# on the cluster path, a side's factors up to this size go whole to every worker solving
# the other side (one transfer per worker); a larger side is routed: each block gets
# only the rows it rates (Spark MLlib's in/out blocks)
WHOLE_SIDE_BYTES = 256 << 20
# a routed block gets a block of the other side whole when it rates at least this
# share of its rows (no copy of the rows per block; one transfer per worker)
WHOLE_BLOCK_SHARE = 0.5


# ----------------------------------------------------------------------------------
# tasks (module level: they pickle to workers by reference)
# ----------------------------------------------------------------------------------
def _values(series):
    """Ratings as float64, missing values (NaN, None, pd.NA) as NaN."""
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _n_not_finite(series):
    return int((~np.isfinite(_values(series))).sum())


def _encode_task(df, user_index, item_index, user_col, item_col, rating_col):
    # int32 codes where the ids allow (a third less to shuffle; the blocks are the same)
    u, i = (index.get_indexer(df[col]).astype(
        np.int32 if len(index) <= np.iinfo(np.int32).max else np.int64)
        for index, col in ((user_index, user_col), (item_index, item_col)))
    r = np.ones(len(df), dtype=np.float64) if rating_col is None else _values(df[rating_col])
    return u, i, r


def _solve_task(block, other, start, YtY, params, backend, with_loss, with_seen, n_threads=1):
    indptr, indices, data = block
    K = get_kernels("recommendation", backend)
    Y = to_device(other, backend)
    X = to_numpy(K.als_solve_rows_block(indptr, indices, data, Y, YtY=YtY, X0=start,
                                        n_threads=n_threads, **params))
    loss = None
    if with_loss:
        # this side's regularisation (ALS-WR: weighted by count), and with "all" the
        # stored entries' error before it; einsum, not BLAS: the same bits on any thread
        loss = 0.0
        if with_loss == "all":
            loss = K.als_loss_block(indptr, indices, data, X, Y, implicit=params["implicit"],
                                    alpha=params["alpha"], n_threads=n_threads)
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        weight = np.ones_like(sq) if params["implicit"] else np.diff(indptr).astype(float)
        loss += params["reg"] * float(np.einsum("i,i->", weight, sq))
    return X, loss, _seen_task(block) if with_seen else None


def _solve_routed(block, needs, offsets, pieces, k, start, YtY, params, backend, with_loss,
                  with_seen, n_threads=1):
    """:func:`_solve_task` against only the rows of the other side this block rates
    (``pieces``: the rows ``needs[o]`` of the other side's block o, which starts at row
    ``offsets[o]``).  The block's indices are renumbered to positions in those rows, in
    the same order, so every row's solve adds the same terms in the same order: the
    bits of a solve against the whole other side.  A piece may be a whole block of the
    other side (its need None): one that this block rates most rows of."""
    indptr, indices, data = block
    # a need of None: the whole block o came (most of its rows are rated here)
    codes = (np.concatenate([(np.arange(p.shape[0], dtype=np.int64) if n is None else n) + off
                             for n, off, p in zip(needs, offsets, pieces, strict=True)])
             if needs else np.zeros(0, np.int64))
    Y = np.concatenate(pieces) if pieces else np.zeros((0, k), np.float32)
    local = np.searchsorted(codes, indices).astype(indices.dtype, copy=False)
    X, loss, _ = _solve_task((indptr, local, data), Y, start, YtY, params, backend,
                             with_loss, False, n_threads=n_threads)
    return X, loss, _seen_task(block) if with_seen else None


def _need_task(block, cuts):
    """The rows of each other-side block ``o`` (by ``cuts``) this block rates, as
    positions in block ``o``: a list of sorted int64 arrays (Spark's out-block)."""
    codes = np.unique(block[1])
    where = np.searchsorted(codes, cuts)
    return [codes[where[o]:where[o + 1]].astype(np.int64) - int(cuts[o])
            for o in range(len(cuts) - 1)]


def _sizes(parts):
    return [int(p.shape[0]) for p in parts]


def _route(F, rows):
    """The rows ``rows`` of a factor block, for a block of the other side that rates them."""
    return np.ascontiguousarray(F[rows])


def _gram_piece(Y, start, n_total, backend):
    """One factor block's share of its side's YᵀY (the kernels' fixed tree over chunks
    of GRAM_ROWS rows at global positions): the tree's nodes over the chunks it holds
    whole, and ``{chunk: rows}`` of the chunks it shares with a neighbouring block."""
    K = get_kernels("recommendation", backend)
    G = K.GRAM_ROWS
    n_leaves = -(-n_total // G)
    stop = start + Y.shape[0]
    whole, pieces = [], {}
    for c in range(start // G, -(-stop // G)):
        lo, hi = max(c * G, start), min((c + 1) * G, stop)
        if lo == c * G and hi == min((c + 1) * G, n_total):
            whole.append(c)
        else:
            pieces[c] = Y[lo - start:hi - start]
    nodes = {}
    if whole:
        a, b = whole[0], whole[-1] + 1
        leaves = K.gram_leaves(Y[a * G - start:min(b * G, n_total) - start])
        nodes = dyadic_sum([leaves[i, ...] for i in range(leaves.shape[0])], operator.add,
                           first=a, n_leaves=n_leaves)
    return nodes, pieces


def _gram_tree(blocks, cuts, backend, key):
    """A task giving a side's YᵀY from its row blocks (futures or Delayed, starting at
    ``cuts``): each block's :func:`_gram_piece` where it is, then :func:`_gram_combine`."""
    piece = dask.delayed(_gram_piece, pure=False)
    n_total = int(cuts[-1])
    parts = [piece(F, int(s), n_total, backend, dask_key_name=f"{key}-{i}")
             for i, (F, s) in enumerate(zip(blocks, cuts[:-1], strict=True))]
    return dask.delayed(_gram_combine, pure=False)(n_total, backend, *parts,
                                                  dask_key_name=f"{key}-combine")


def _gram_combine(n_total, backend, *results):
    """YᵀY of a whole side from its blocks' :func:`_gram_piece` (in block order): the
    bits of the kernels' ``gram`` of the whole matrix, whatever the blocks."""
    K = get_kernels("recommendation", backend)
    nodes, shared = {}, {}
    for block_nodes, pieces in results:
        nodes.update(block_nodes)
        for c, rows in pieces.items():
            shared.setdefault(c, []).append(rows)
    for c, parts in shared.items():
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        nodes[(0, c)] = K.gram_leaves(rows)[0, ...]
    return K.gram_root(nodes, -(-n_total // K.GRAM_ROWS))


def _factor_block(result, dtype):
    """A solve task's factors as the state keeps them (a task, on the cluster path)."""
    return np.ascontiguousarray(result[0], dtype=dtype)


def _pick(result, i):
    return result[i]


def _concat_blocks(*blocks):
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _init_rows(seed, side, start, stop, k, dtype, implicit, nonnegative):
    """Rows ``start:stop`` of one side's starting factors.

    The rows come in chunks of INIT_ROWS, each drawn from its own stream keyed by
    (seed, side, chunk): any block of rows is made alone (on the worker that keeps it,
    when the factors stay on the cluster) with the same bits as the whole matrix, and
    the items' start does not depend on the number of users.
    """
    out = []
    for c in range(start // INIT_ROWS, -(-stop // INIT_ROWS)):
        lo = c * INIT_ROWS
        rng = np.random.default_rng([seed, side, c])
        rows = min(stop, lo + INIT_ROWS) - lo  # a row's draws do not depend on later rows
        if implicit:  # small positive values, as the implicit library
            F = rng.random((rows, k)) * 0.01
        else:  # unit-norm Gaussian rows, as Spark MLlib (absolute for nonnegative)
            F = rng.standard_normal((rows, k))
            F /= np.linalg.norm(F, axis=1, keepdims=True)
        out.append(F[max(0, start - lo):])
    F = np.concatenate(out) if out else np.zeros((0, k))
    if nonnegative:
        F = np.abs(F)
    return F.astype(dtype)


def _objective(second, first_reg, XtX, YtY, n_pairs):
    """The training loss (``loss_curve_``): the second half's part (its stored entries'
    error and its regularisation), the first half's regularisation (each summed over
    the blocks in block order), and for implicit feedback sum(XᵀX * YᵀY) (the error of
    every cell not stored), per (user, item) pair."""
    total = second + first_reg
    if XtX is not None:
        total += float(np.sum(XtX * YtY))
    return float(total / max(1, n_pairs))


def _block_sum(values):
    """The blocks' losses summed in block order: the same bits every time."""
    total = 0.0
    for v in values:
        total += v
    return total


def _n_stored(part):
    return int(part[1].shape[0])


def _seen_task(block):
    # a user block's part of the seen CSR: (items per user, their item codes)
    indptr, indices, _ = block
    return np.diff(indptr), indices.astype(np.int32, copy=False)


def _seen_nnz(part):
    return int(part[1].shape[0])


def _seen_indptr_block(part, offset, first):
    """A user block's rows of the seen CSR's indptr (the first block with the leading 0),
    the same int64 values as :func:`_join_seen`'s."""
    ptr = np.cumsum(part[0], dtype=np.int64) + np.int64(offset)
    return np.r_[np.int64(0), ptr] if first else ptr


def _saved_seen_part(indptr, indices, b, start, stop):
    """User block ``b``'s seen part (:func:`_seen_task`) from a saved model's CSR: its
    item codes are saved block ``b`` of ``indices`` (a ``SavedArray``), checked."""
    part = indices.block(b)
    if part.shape[0] != indptr[stop] - indptr[start]:
        raise ValueError(f"{indices.path!r}: block {b} of the seen items does not match "
                         "the saved indptr.")
    return np.diff(indptr[start:stop + 1]), part


def _join_seen(parts):
    """The user -> items CSR (indptr, indices) of the user blocks' seen parts."""
    counts = np.concatenate([p[0] for p in parts])
    indptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate([p[1] for p in parts])


def _concat_rows(*results):
    return np.concatenate([r[0] for r in results]) if len(results) > 1 else results[0][0]


def _gram_task(Y, backend, n_threads=1):
    return get_kernels("recommendation", backend).gram(Y, n_threads=n_threads)


def twin_rows(F):
    """(rows, first): the rows of ``F`` with the same bits as an earlier row, and that
    earlier row.  Identical factors (items with identical ratings) must score the same,
    and BLAS may round a product differently by where a row sits in the matrix."""
    if F.shape[0] < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.ascontiguousarray(F).view(np.dtype((np.void, F.dtype.itemsize * F.shape[1])))
    _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    first = first[inverse.ravel()]
    twins = np.flatnonzero(first != np.arange(F.shape[0]))
    return twins, first[twins]


def _top_n(V, Y, n, seen_indptr=None, seen_indices=None, exclude=None, twins=None,
           banned=None):
    """Best ``n`` columns of ``V @ Y.T`` per row, ties to the lower column.

    ``seen_*`` (CSR over V's rows), ``exclude`` (one column per row) and ``banned``
    (columns left out of every row) are left out.
    ``twins`` (:func:`twin_rows` of Y) get exactly their first twin's score.
    Returns flat (row, col, score, rank) arrays, rows in order, ranks from 1.
    """
    m, n_cols = V.shape[0], Y.shape[0]
    step = max(1, SCORE_CHUNK // max(1, n_cols))
    out_r, out_c, out_s = [], [], []
    for s in range(0, m, step):
        e = min(m, s + step)
        with one_blas_thread():  # scores with the same bits here as on a worker
            S = V[s:e] @ Y.T
        if twins is not None and len(twins[0]):
            S[:, twins[0]] = S[:, twins[1]]
        if seen_indptr is not None:
            lo, hi = seen_indptr[s], seen_indptr[e]
            rows = np.repeat(np.arange(e - s), np.diff(seen_indptr[s:e + 1]))
            S[rows, seen_indices[lo:hi]] = -np.inf
        if exclude is not None:  # -1: nothing left out of that row
            ok = exclude[s:e] >= 0
            S[np.arange(e - s)[ok], exclude[s:e][ok]] = -np.inf
        if banned is not None:
            S[:, banned] = -np.inf
        cols, sc, counts = top_n_rows(S, n)
        keep = np.arange(sc.shape[1])[None, :] < counts[:, None]
        out_r.append(np.broadcast_to(np.arange(s, e)[:, None], sc.shape)[keep])
        out_c.append(cols[keep].astype(np.int64))
        out_s.append(sc[keep])
    if not out_r:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, Y.dtype),
                np.zeros(0, np.int64))
    rows, cols, scores = np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_s)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    rank = np.arange(rows.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, rows.shape[0]]))
    return rows, cols, scores, rank + 1


def _rank_block(V, seen, exclude, Y, lo, n, cand, banned):
    """The best ``n`` of one block of ``Y`` (global rows ``lo``...) for each row of ``V``,
    as :func:`_top_n` ranks the whole matrix: ``seen`` (indptr, indices) and ``exclude``
    (one code a row, -1: none) in global codes, ``cand`` (sorted global codes: only
    those ranked) and ``banned`` (global codes left out) or None.  Returns flat (rows,
    global codes, scores) for :func:`_merge_ranked`."""
    hi = lo + Y.shape[0]
    cols = np.arange(lo, hi) if cand is None else cand[(cand >= lo) & (cand < hi)]
    Yb = Y if cand is None else Y[cols - lo]
    if Yb.shape[0] == 0:  # no candidate here
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, Y.dtype)
    ptr = idx = None
    if seen is not None:  # this block's columns of the seen pairs, as positions in Yb
        ptr, idx = _csr_columns(*seen, cols)
    if exclude is not None:
        pos = np.searchsorted(cols, exclude)
        hit = (exclude >= 0) & (pos < cols.shape[0])
        hit[hit] = cols[pos[hit]] == exclude[hit]
        exclude = np.where(hit, pos, -1)
    if banned is not None:
        banned = np.searchsorted(cols, banned[np.isin(banned, cols)])
    rows, c, scores, _ = _top_n(V, Yb, n, ptr, idx, exclude, twin_rows(Yb), banned)
    return rows, cols[c], scores


def _merge_ranked(n, *ranked):
    """Each row's best ``n`` of the blocks' :func:`_rank_block` lists, ties to the lower
    code (as :func:`_top_n` on the whole matrix): flat (row, code, score, rank)."""
    rows, codes, scores = (np.concatenate([r[j] for r in ranked]) for j in range(3))
    order = np.lexsort((codes, -scores, rows))
    rows, codes, scores = rows[order], codes[order], scores[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if rows.size else rows
    rank = np.arange(rows.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, rows.shape[0]]))
    keep = rank < n
    return rows[keep], codes[keep], scores[keep], rank[keep] + 1


def _recommend_frame(ids, item_ids, user_col, item_col, rows, cols, scores, rank):
    return pd.DataFrame({user_col: ids[rows], item_col: item_ids[cols], "score": scores,
                         "rank": rank})


def _similar_result(codes, ids, col, rows, cols, scores, rank):
    return pd.DataFrame({col: ids[codes][rows], f"similar_{col}": ids[cols],
                         "score": scores, "rank": rank})


def _ranked_frame(ids, item_ids, n, user_col, item_col, *ranked):
    """``recommend``'s frame from the blocks' ranked lists (``ids``: the rows' ids)."""
    return _recommend_frame(ids, item_ids, user_col, item_col, *_merge_ranked(n, *ranked))


def _similar_ranked(codes, ids, n, col, *ranked):
    return _similar_result(codes, ids, col, *_merge_ranked(n, *ranked))


def _partition_rows(X, part, rows, filter_seen):
    """(factors, seen (indptr, indices) or None) of the rows ``rows`` (None: all) of one
    user block and its seen part."""
    seen = (_indptr(part[0]), part[1]) if filter_seen else None
    if rows is None:
        return X, seen
    return X[rows], (_csr_take(*seen, rows) if filter_seen else None)


def _similar_frame(V, G, n, codes, twins, ids, col):
    return _similar_result(codes, ids, col, *_top_n(V, G, n, exclude=codes, twins=twins))


def _recommend_partition(V, Y, ids, item_ids, seen_indptr, seen_indices, n, user_col,
                         item_col, twins=None, banned=None):
    return _recommend_frame(ids, item_ids, user_col, item_col,
                            *_top_n(V, Y, n, seen_indptr, seen_indices, twins=twins,
                                    banned=banned))


def _recommend_rows(X, part, rows, ids, Y, item_ids, n, user_col, item_col, twins, banned,
                    cand, filter_seen):
    """``recommend_all``'s partition on the cluster path: the rows ``rows`` (all when
    None) of one user block ``X`` with its seen part, ranked against the item factors."""
    ptr = idx = None
    if filter_seen:
        ptr, idx = _indptr(part[0]), part[1]
    if rows is not None:
        X = X[rows]
        if filter_seen:
            ptr, idx = _csr_take(ptr, idx, rows)
    if filter_seen and cand is not None:
        ptr, idx = _csr_columns(ptr, idx, cand)
    return _recommend_partition(X, Y, ids, item_ids, ptr, idx, n, user_col, item_col, twins,
                                banned)


def _rows_and_seen(X, part, rows):
    """Rows ``rows`` of a user block and their seen items: (factors, indptr, indices)."""
    return (X[rows], *_csr_take(_indptr(part[0]), part[1], rows))


def _replace_rows(F, rows, values):
    """A factor block with its rows ``rows`` replaced by ``values`` (a new array)."""
    F = F.copy()
    F[rows] = values
    return F


def _seen_part_replace(part, drop_rows, drop_cols, rows, cols):
    """A user block's seen part (items per user, item codes) with the pairs of rows
    ``drop_rows`` or columns ``drop_cols`` left out and the (``rows``, ``cols``) pairs
    added (rows local to the block, as :func:`_csr_replace`)."""
    counts, indices = part
    ptr, indices = _csr_replace(_indptr(counts), indices, counts.shape[0],
                                np.asarray(drop_rows, np.int64),
                                np.asarray(drop_cols, np.int64), rows, cols)
    return np.diff(ptr), indices


def _take_rows(F, rows):
    return F[rows]


def _with_twins(F):
    """Factors (the candidates' rows, taken from their blocks) and their twins
    (:func:`twin_rows`)."""
    return F, twin_rows(F)


def _unit(F):
    """``F``'s rows scaled to unit norm (zero rows kept)."""
    norms = np.linalg.norm(F.astype(np.float64), axis=1)
    norms[norms == 0] = 1.0
    return (F / norms[:, None]).astype(F.dtype)


def _pair_codes(df, user_index, item_index, user_col, item_col):
    """Codes of the (user, item) pairs of ``df``; -1 for ids unseen in fit."""
    return user_index.get_indexer(df[user_col]), item_index.get_indexer(df[item_col])


def _predict_partition(df, X, Y, user_index, item_index, user_col, item_col, drop):
    u, i = _pair_codes(df, user_index, item_index, user_col, item_col)
    return _predict_rows(X[u], Y[i], u, i, drop)


def _predict_pairs(df, Xu, Yi, u, i, drop):
    return _predict_rows(Xu, Yi, u, i, drop)


def _predict_rows(Xu, Yi, u, i, drop):
    """Predictions of pairs of codes ``u``, ``i`` from their factor rows ``Xu``, ``Yi``
    (rows of unknown codes are ignored): NaN, or left out with ``drop``."""
    known = (u >= 0) & (i >= 0)
    pred = np.full(u.shape[0], np.nan, dtype=Xu.dtype)
    pred[known] = np.einsum("ij,ij->i", Xu[known], Yi[known])
    return pred[known] if drop else pred


def _squared_error_partition(df, X, Y, user_index, item_index, user_col, item_col,
                             rating_col):
    u, i = _pair_codes(df, user_index, item_index, user_col, item_col)
    return _squared_error_rows(df, X[u], Y[i], u, i, rating_col)


def _squared_error_rows(df, Xu, Yi, u, i, rating_col):
    # (sum of squared errors, pairs scored, non-finite ratings) over the pairs whose ids
    # were both seen in fit, as a one-row frame (so dask sums the partitions' rows)
    known = (u >= 0) & (i >= 0)
    r = _values(df[rating_col])[known]
    ok = np.isfinite(r)
    e = r[ok] - np.einsum("ij,ij->i", Xu[known][ok], Yi[known][ok]).astype(np.float64)
    with one_blas_thread():  # the same bits in this process as on a worker
        sse = float(e @ e)
    return pd.DataFrame({"sse": [sse], "n": [int(ok.sum())],
                         "n_bad": [int((~ok).sum())]})


def _sum_frames(*frames):
    return pd.concat(frames).sum()


def _by_block(codes, cuts):
    """The codes ``codes`` (-1: none) grouped by the block of ``cuts`` holding them:
    (order of the known codes by block, where each block's run starts in it)."""
    codes = np.asarray(codes, dtype=np.int64)
    blk = np.searchsorted(cuts, codes, side="right") - 1
    blk[codes < 0] = -1
    order = np.argsort(blk, kind="stable")
    order = order[blk[order] >= 0]
    return order, np.searchsorted(blk[order], np.arange(len(cuts)))


def _block_rows(codes, cuts):
    """For each block of ``cuts``: the rows (local to the block) that ``codes`` asks."""
    codes = np.asarray(codes, dtype=np.int64)
    order, bounds = _by_block(codes, cuts)
    return tuple(codes[order[a:b]] - cuts[k]
                 for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)))


def _placed_rows(codes, cuts, *taken):
    """The rows of ``codes`` in their order, from what each block gave for
    :func:`_block_rows` (rows of unknown codes are zeros)."""
    order, _ = _by_block(codes, cuts)
    first = taken[0]
    out = np.zeros((len(codes), first.shape[1]), dtype=first.dtype)
    out[order] = np.concatenate(taken)
    return out


def _indptr(counts):
    """The CSR row pointers of rows with ``counts`` stored entries each."""
    ptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr


def _csr_take(indptr, indices, rows):
    """Rows ``rows`` of a CSR pattern, in that order: (indptr, indices)."""
    rows = np.asarray(rows, dtype=np.int64)
    counts = indptr[rows + 1] - indptr[rows]
    ptr = _indptr(counts)
    src = np.repeat(indptr[rows] - ptr[:-1], counts) + np.arange(ptr[-1])
    return ptr, indices[src]


def _csr_columns(indptr, indices, keep):
    """A CSR pattern restricted to the columns ``keep`` (sorted codes), renumbered to
    positions in ``keep``: (indptr, indices), each row's indices still sorted."""
    if indices.shape[0] == 0 or keep.shape[0] == 0:
        return _indptr(np.zeros(indptr.shape[0] - 1, np.int64)), indices[:0]
    new = np.searchsorted(keep, indices)
    ok = keep[np.minimum(new, keep.shape[0] - 1)] == indices
    rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    ptr = np.zeros(indptr.shape[0], dtype=np.int64)
    np.cumsum(np.bincount(rows[ok], minlength=indptr.shape[0] - 1), out=ptr[1:])
    return ptr, new[ok].astype(indices.dtype)


def _csr_replace(indptr, indices, n_rows, drop_rows, drop_cols, rows, cols):
    """A CSR pattern with the entries in rows ``drop_rows`` or columns ``drop_cols`` left
    out and the (``rows``, ``cols``) entries added, ``n_rows`` rows, indices sorted."""
    old_rows = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    keep = ~(np.isin(old_rows, drop_rows) | np.isin(indices, drop_cols))
    r = np.concatenate([old_rows[keep], np.asarray(rows, dtype=np.int64)])
    c = np.concatenate([indices[keep].astype(np.int64), np.asarray(cols, dtype=np.int64)])
    order = np.lexsort((c, r))
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=ptr[1:])
    return ptr, c[order].astype(np.int32)


def _as_ids(ids) -> pd.Index:
    """Distinct ids in the order given (a scalar is one id); their type as pandas infers
    it from a list (so ``[5000]`` is int64, as fit's integer ids)."""
    if isinstance(ids, (str, bytes)) or np.ndim(ids) == 0:
        ids = [ids]
    if not isinstance(ids, (np.ndarray, pd.Series, pd.Index)):
        ids = list(ids)
    return pd.Index(ids).unique()


def _append_ids(old, new):
    """``old`` ids followed by ``new`` ones, in ``old``'s dtype when that holds them."""
    out = pd.Index(old).append(pd.Index(new)).to_numpy()
    try:
        cast = out.astype(old.dtype)
        if bool(np.all(cast == out)):
            return cast
    except (TypeError, ValueError, OverflowError):
        pass
    return out


def _few(values, k=5):
    """Up to ``k`` values as a list of plain Python objects, for a message."""
    return [v.item() if isinstance(v, np.generic) else v for v in list(values)[:k]]


def _sorted_ids(counts: pd.Series) -> pd.Series:
    if counts.index.is_monotonic_increasing and counts.index.is_unique:
        return counts  # sorted already (on the cluster): no copy
    try:
        return counts.sort_index()
    except TypeError:  # ids of mixed types: a fixed order all the same
        key = counts.index.map(lambda v: (type(v).__name__, repr(v)))
        return counts.iloc[np.argsort(np.asarray(key, dtype=object), kind="stable")]


def _ids_and_counts(counts: pd.Series):
    """(sorted ids, their numbers of ratings) of a scan's value counts."""
    counts = _sorted_ids(counts)
    return counts.index.to_numpy(), counts.to_numpy(dtype=np.int64)


def _ids_token(counts_u, counts_i):
    """What the fingerprint holds of the ids and their counts: the same token whether
    computed here or on a worker."""
    return tokenize(*_ids_and_counts(counts_u), *_ids_and_counts(counts_i))


def _id_values(counts: pd.Series):
    return _ids_and_counts(counts)[0]


def _count_cuts(counts, n_blocks):
    return balanced_cuts(_ids_and_counts(counts)[1], n_blocks)


class _Scan:
    """What the scan found: ids and counts as arrays here, or as futures of the value
    counts on the cluster (``futures``), with the numbers that decide the fit's layout."""

    def __init__(self, user_ids, item_ids, counts_u, counts_i, total, n_users, n_items,
                 n_ratings, futures=None, client=None):
        self.user_ids, self.item_ids = user_ids, item_ids
        self.counts_u, self.counts_i = counts_u, counts_i
        self.total, self.n_users, self.n_items = total, n_users, n_items
        self.n_ratings, self.futures, self.client = n_ratings, futures, client

    def here(self):
        """Bring ids and counts kept on the cluster here (a model held in this process)."""
        if self.futures is not None:
            with scheduler_loss(self.client):
                vc_u, vc_i = self.client.gather(self.futures)
            self.user_ids, self.counts_u = _ids_and_counts(vc_u)
            self.item_ids, self.counts_i = _ids_and_counts(vc_i)
            self.futures = None
        return self


def _ratings_meta(src, col):
    """An empty array of the type ``src[col]`` holds (NumPy for pandas): it picks the
    kernels, as the blocks' meta does for the other families."""
    series = (src._meta if isinstance(src, dd.DataFrame) else src)[col].iloc[:0]
    return series.to_numpy() if isinstance(series, pd.Series) else series.values


def _split_rows(F, cuts):
    """The rows of ``F`` by the block ranges ``cuts`` (views)."""
    return BlockList(np.split(F, cuts[1:-1]))


def _cuts(F):
    """The first row of every row block of the dask array ``F``, and its length."""
    return np.r_[0, np.cumsum(F.chunks[0])]


def _rows_array(futures, cuts, k, dtype):
    """A dask array over row blocks held on the cluster (futures), not gathered."""
    name = f"dmlkit-als-factors-{tokenize(*[f.key for f in futures])}"
    dsk = {(name, b, 0): f for b, f in enumerate(futures)}
    return da.Array(dsk, name, (tuple(int(n) for n in np.diff(cuts)), (int(k),)),
                    dtype=dtype)


def _get_indexer(index, ids):
    return index.get_indexer(ids)


def _lookup(index, ids):
    """(codes of ``ids``, -1 for unknown ones; fit's ids of the known ones)."""
    codes = index.get_indexer(ids)
    return codes, index[codes[codes >= 0]].to_numpy()


def _append_index(values, new):
    values = _append_ids(values, new)
    return values, pd.Index(values), values.dtype


def _ids_array(values, cuts, dtype):
    """A dask array of the ids held on the cluster (a future), cut as the factors."""
    n = int(cuts[-1])
    ids = da.from_delayed(dask.delayed(values), shape=(n,), dtype=dtype)
    return ids.rechunk((tuple(int(c) for c in np.diff(cuts)),))


# ----------------------------------------------------------------------------------
class ALS(BaseEstimator):
    """Matrix factorisation by alternating least squares, on row blocks of ratings.

    Parameters
    ----------
    factors : int, default=64
        Rank of the factorisation (Spark's ``rank``).
    regularization : float, default=0.05
        L2 penalty.  Explicit feedback scales it by each user's / item's number of
        ratings (ALS-WR, as Spark MLlib); implicit feedback uses it as is (as implicit).
    alpha : float, default=1.0
        Implicit feedback: confidence ``1 + alpha * r``.
    iterations : int, default=15
        Full iterations (one side, then the other: see ``solve_order``).
    implicit : bool, default=False
        Hu-Koren-Volinsky implicit feedback: preference 1 for every stored (user, item),
        confidence from the rating; solved with conjugate gradient and YᵀY.
    cg_steps : int, default=3
        Conjugate-gradient steps per row and half-iteration (implicit only; warm-started
        from the previous factors, as the implicit library).
    nonnegative : bool, default=False
        Constrain factors to be >= 0 (projected coordinate descent per row).
    cold_start : {'nan', 'drop'}, default='nan'
        What ``predict`` does for a pair with an id unseen in ``fit``: predict NaN, or
        leave the pair out (Spark's ``coldStartStrategy``).
    user_col, item_col, rating_col : str
        Column names of the ratings frames.  With ``implicit=True`` the rating column
        may be absent: every row then counts as one interaction.
    duplicates : {'auto', 'sum', 'mean', 'error'}, default='auto'
        Several ratings of one (user, item) pair are merged into one: ``'auto'`` takes
        the mean for explicit feedback (one opinion per pair) and the sum for implicit
        feedback (interactions add up, like a COO->CSR conversion in implicit).
        ``'error'`` raises a ValueError that names a duplicated pair.
    solve_order : {'auto', 'users', 'items'}, default='auto'
        The side every iteration solves first.  ``'auto'``: for explicit feedback the
        side with fewer rows (more ratings per row; users on a tie), for implicit
        feedback the items (the users, whom ``recommend`` serves, are solved last).  Both
        gave the better held-out error on MovieLens and on its transpose (see
        ``docs/user_guide/als.md``).  ``'items'`` is Spark MLlib's order; ``'users'``
        is the implicit library's and dmlkit's earlier one.  The order taken is
        ``solve_order_``.
    calculate_training_loss : bool, default=False
        Record the objective after every iteration in ``loss_curve_`` (computed inside
        the second half-iteration's tasks: no extra pass).  It is the squared error (implicit:
        confidence-weighted, over all cells) plus the penalty, divided by the number of
        distinct (user, item) pairs.
    cache : 'auto', True or False, default='auto'
        Persist the shuffled user and item blocks on the cluster (``'auto'``: when they
        take less than ``dmlkit.cache-fraction`` of its memory), or rebuild them from the
        source every half-iteration (out-of-core: the ratings may be larger than memory).
    random_state : int, RandomState or None
        Seeds the initial factors.  Same ratings (same partitions) and seed give the
        same factors, bit for bit.
    dtype : {'float32', 'float64'}, default='float32'
        Factor dtype (the solves accumulate in float64).
    verbose : int, default=0
        Show a progress bar (tqdm) over iterations.
    checkpoint : str, path or None, default=None
        A folder (local path or fsspec URL: ``s3://``, ``gs://``, ``memory://``...)
        where the fit saves its factors (one ``.npy`` file per user or item block) and
        loss curve every ``checkpoint_interval`` iterations.  A fit whose checkpoint is
        there resumes from it, bit-identical to an uninterrupted fit; a checkpoint of
        another fit there (other parameters, other ratings or block layout) is a
        ValueError naming what differs.  The ratings are identified by what the first
        pass counts (their number and sum, the ids and each id's number of ratings),
        so resuming costs no extra pass.
    checkpoint_interval : int, default=1
        Iterations between checkpoint saves (a save writes both factor matrices).

    Attributes
    ----------
    user_factors_ : ndarray (n_users, factors)
    item_factors_ : ndarray (n_items, factors)
        Factors larger than the ``dmlkit.driver-state-bytes`` setting, fitted on a
        cluster, stay there: these are then dask arrays over the row blocks the workers
        hold (the same bits), and the methods below run where they are, with that
        cluster's client active.
    user_ids_, item_ids_ : ndarray
        The distinct ids seen in fit, sorted; row ``j`` of the factors belongs to id
        ``j``.  For a scipy.sparse matrix they are ``arange(n_rows)`` / ``arange(n_cols)``.
        With the factors on the cluster these stay there too: dask arrays cut as the
        factors (the scan counted and sorted them there, and ids are looked up there).
    n_iter_ : int
    loss_curve_ : list of float (with ``calculate_training_loss``)
    solve_order_ : {'users', 'items'}
        The side every iteration solved first (``solve_order``, or what ``'auto'`` chose).
    resumed_from_iter_ : int
        Iterations the fit resumed from a checkpoint; 0 for a fresh start.

    Notes
    -----
    Backend: the ratings column's array type picks the kernels, as the blocks' type
    does for the other families: NumPy (pandas ratings) runs numba.  The
    ``dmlkit.backend`` setting ``'xp'`` runs the array-API kernels instead, on the
    worker's GPU through CuPy when one is present.
    """

    _parameter_constraints: dict = {
        "factors": [Interval(Integral, 1, None, closed="left")],
        "regularization": [Interval(Real, 0, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "iterations": [Interval(Integral, 1, None, closed="left")],
        "implicit": ["boolean"],
        "cg_steps": [Interval(Integral, 1, None, closed="left")],
        "nonnegative": ["boolean"],
        "cold_start": [StrOptions(COLD_START)],
        "duplicates": [StrOptions(("auto",) + DUPLICATES)],
        "solve_order": [StrOptions(SOLVE_ORDERS)],
        "calculate_training_loss": ["boolean"],
        "cache": [StrOptions(("auto",)), "boolean"],
        "random_state": ["random_state"],
        "dtype": ["float-dtype"],
        "verbose": ["verbose"],
        **CHECKPOINT_CONSTRAINTS,
    }

    def __init__(self, factors=64, *, regularization=0.05, alpha=1.0, iterations=15,
                 implicit=False, cg_steps=3, nonnegative=False, cold_start="nan",
                 user_col="user_id", item_col="item_id", rating_col="rating",
                 duplicates="auto", solve_order="auto", calculate_training_loss=False,
                 cache="auto", random_state=None, dtype="float32", verbose=0,
                 checkpoint=None, checkpoint_interval=1):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.implicit = implicit
        self.cg_steps = cg_steps
        self.nonnegative = nonnegative
        self.cold_start = cold_start
        self.user_col = user_col
        self.item_col = item_col
        self.rating_col = rating_col
        self.duplicates = duplicates
        self.solve_order = solve_order
        self.calculate_training_loss = calculate_training_loss
        self.cache = cache
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        validate_params(self._parameter_constraints, self.get_params(deep=False),
                        type(self).__name__)

    def _duplicates_policy(self):
        if self.duplicates == "auto":
            return "sum" if self.implicit else "mean"
        return self.duplicates

    # ------------------------------------------------------------------ input
    def _as_frame(self, ratings, *, need_rating, what="ratings"):
        """(pandas or dask DataFrame, rating column or None, id universe or None)."""
        universe = None
        if sp.issparse(ratings):
            coo = sp.coo_matrix(ratings)
            universe = (np.arange(coo.shape[0]), np.arange(coo.shape[1]))
            ratings = pd.DataFrame({self.user_col: coo.row.astype(np.int64),
                                    self.item_col: coo.col.astype(np.int64),
                                    self.rating_col: coo.data})
        if not isinstance(ratings, (pd.DataFrame, dd.DataFrame)):
            raise TypeError(f"{what} must be a pandas or dask DataFrame of ({self.user_col}, "
                            f"{self.item_col}, {self.rating_col}) rows, or a scipy.sparse "
                            f"user x item matrix; got {type(ratings).__name__}")
        cols = [str(c) for c in ratings.columns]
        missing = [c for c in (self.user_col, self.item_col) if c not in ratings.columns]
        rating_col = self.rating_col
        if rating_col not in ratings.columns:
            if need_rating:
                missing.append(rating_col)
            rating_col = None
        if missing:
            raise ValueError(f"{what} is missing column(s) {missing}; it has columns {cols}. "
                             f"Set user_col / item_col / rating_col to the names used.")
        if rating_col is not None:
            dt = ratings[rating_col].dtype
            if not (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)):
                raise TypeError(f"{what}[{rating_col!r}] must be numeric, got dtype {dt}")
        return ratings, rating_col, universe

    def _scan(self, src, rating_col, universe):
        """One pass: id counts (sorted ids) and value checks (in pandas when in memory).

        Returns a :class:`_Scan`: the user and item ids with their numbers of ratings
        and the ratings' sum (what identifies the ratings in a checkpoint's fingerprint;
        None without a rating column).  The sum is rounded to 12 significant digits, so
        that another partitioning of the same ratings (another order of the additions)
        gives the same fingerprint, as it gives the same factors.  With a dask frame on a
        cluster the ids and counts stay there (futures, see :meth:`_Scan.here`): only
        their lengths come back, which decide where the factors live.
        """
        local = isinstance(src, pd.DataFrame)
        u, i = src[self.user_col], src[self.item_col]
        # split_out=1: a tree reduction to one partition (not a p2p shuffle), sorted where
        # it is reduced (not here: a sort of a frame of all ids is a copy of it)
        counts = [u.value_counts(), i.value_counts()] if local else [
            c.value_counts(split_out=1).map_partitions(_sorted_ids) for c in (u, i)]
        todo = [u.isna().sum(), i.isna().sum(), src.shape[0]]
        if rating_col is not None:
            r = src[rating_col]
            bad = _n_not_finite(r) if local else r.map_partitions(
                lambda s: pd.Series([_n_not_finite(s)]), meta=(rating_col, "int64")).sum()
            todo += [bad, r.min(), r.sum()]
        client = None if local or universe is not None else get_client_or_none()
        futures = None
        if local:
            out = [*counts, *todo]
        elif client is None:
            out = compute(*counts, *todo)
        else:  # one graph (the source read once); the counts are kept on the cluster
            with scheduler_loss(client):
                futures = client.compute([*counts, *todo])
                lengths = [client.submit(len, f, pure=False) for f in futures[:2]]
                out = [None, None, *client.gather(futures[2:] + lengths)]
            futures = futures[:2]
        vc_u, vc_i, null_u, null_i, n = out[:5]
        if n == 0:
            raise ValueError("ratings is empty: ALS needs at least one rating")
        for col, nulls in ((self.user_col, null_u), (self.item_col, null_i)):
            if nulls:
                raise ValueError(f"ratings[{col!r}] has {int(nulls)} missing value(s); every "
                                 f"rating needs a user and an item id")
        total = None
        if rating_col is not None:
            bad, low, total = out[5], out[6], float(f"{float(out[7]):.12g}")
            if bad:
                raise ValueError(f"ratings[{rating_col!r}] has {int(bad)} NaN or infinite "
                                 f"value(s)")
            if self.implicit and low < 0:
                raise ValueError(f"implicit feedback needs ratings >= 0 (they are confidences "
                                 f"1 + alpha * r); ratings[{rating_col!r}] has minimum {low}")
        if futures is not None:
            return _Scan(None, None, None, None, total, int(out[-2]), int(out[-1]), int(n),
                         futures, client)
        if universe is None:
            arrays = _ids_and_counts(vc_u) + _ids_and_counts(vc_i)
            return _Scan(*arrays[::2], *arrays[1::2], total, len(arrays[0]), len(arrays[2]),
                         int(n))
        counts = []
        for ids, vc in zip(universe, (vc_u, vc_i), strict=True):
            c = np.zeros(len(ids), dtype=np.int64)
            c[pd.Index(ids).get_indexer(vc.index)] = vc.to_numpy()
            counts.append(c)
        return _Scan(universe[0], universe[1], counts[0], counts[1], total, len(universe[0]),
                     len(universe[1]), int(n))

    # ------------------------------------------------------------------ fit
    @placed
    def fit(self, ratings, y=None):
        """Factorise ``ratings`` (dask or pandas DataFrame, or scipy.sparse user x item)."""
        with keep_state_on_error(self):
            return self._fit(ratings)

    def _fit(self, ratings):
        self._check_params()
        t0 = time.perf_counter()
        src, rating_col, universe = self._as_frame(ratings, need_rating=not self.implicit)
        backend = backend_of(_ratings_meta(src, rating_col or self.user_col))
        # the checkpoint location is checked before the first pass; the driver waits
        # for the scan, which decides where the fit runs
        loop = FitLoop(self, "als", driver=False)
        scanned = self._scan(src, rating_col, universe)
        n_ratings = scanned.n_ratings
        local = solve_here(BYTES_PER_RATING * 2 * n_ratings)
        if local:
            scanned.here()
            # small: fetched once and solved here (see the local-fit-bytes setting)
            logger.info("dmlkit-als: %d ratings, solved in this process (local-fit-bytes)",
                        n_ratings)
            if not isinstance(src, pd.DataFrame):
                (src,) = compute(src[[c for c in (self.user_col, self.item_col, rating_col)
                                      if c]])
        loop.start_driver(cache=self.cache, local=local)
        return self._fit_scanned(loop, src, rating_col, scanned, backend, t0)

    def _fit_scanned(self, loop, src, rating_col, scanned, backend, t0):
        in_memory = isinstance(src, pd.DataFrame)
        n_users, n_items, k = scanned.n_users, scanned.n_items, int(self.factors)
        n_ratings, total = scanned.n_ratings, scanned.total
        dtype = np.dtype(self.dtype)
        duplicates = self._duplicates_policy()

        driver = loop.driver
        # block ranges: about equal ratings per block, at least one block per thread
        # (smaller on workers with little memory per thread: see BLOCK_BUILD_FACTOR)
        n_blocks = max(driver.total_threads(),
                       math.ceil(BYTES_PER_RATING * n_ratings
                                 / driver.block_bytes(BLOCK_BUILD_FACTOR)))
        first = (self._first_side(n_users, n_items, self.implicit)
                 if self.solve_order == "auto" else self.solve_order[:-1])
        # where the factors live between half-iterations: here, or (too big for this
        # process, see the driver-state-bytes setting) as row blocks on the workers, with
        # the ids and their counts (kept there by the scan)
        factor_bytes = (n_users + n_items) * k * dtype.itemsize
        remote = driver.client is not None and factor_bytes > dask.utils.parse_bytes(
            get_config("driver-state-bytes"))
        if remote:
            logger.info("dmlkit-als: factors of %.1f MiB stay on the cluster as row blocks "
                        "(driver-state-bytes)", factor_bytes / 2**20)
        id_values = None  # with the factors on the cluster: futures of the sorted ids
        if remote and scanned.futures is not None:
            vc_u, vc_i = scanned.futures
            with driver._guard():
                client = driver.client
                id_values = [client.submit(_id_values, f, pure=False) for f in (vc_u, vc_i)]
                ucuts, icuts, ids_token = client.gather([
                    client.submit(_count_cuts, vc_u, n_blocks, pure=False),
                    client.submit(_count_cuts, vc_i, n_blocks, pure=False),
                    client.submit(_ids_token, vc_u, vc_i, pure=False)])
        else:
            scanned.here()
            ucuts = balanced_cuts(scanned.counts_u, n_blocks)
            icuts = balanced_cuts(scanned.counts_i, n_blocks)
            ids_token = tokenize(scanned.user_ids, scanned.item_ids, scanned.counts_u,
                                 scanned.counts_i)
            if remote:  # ids found here (in-memory ratings) join the factors there, once
                id_values = driver.submit(*(dask.delayed(np.asarray, pure=False)(ids)
                                            for ids in (scanned.user_ids, scanned.item_ids)))
        if id_values is not None:
            index = dask.delayed(pd.Index, pure=False)
            user_index, item_index = driver.submit(index(id_values[0]), index(id_values[1]))
            id_dtypes = driver.gather(driver.submit(
                *(dask.delayed(operator.attrgetter("dtype"), pure=False)(v)
                  for v in id_values)))
            uidx, iidx = user_index, item_index
        else:
            user_index, item_index = pd.Index(scanned.user_ids), pd.Index(scanned.item_ids)
            uidx = driver.shared(user_index, "user-ids")
            iidx = driver.shared(item_index, "item-ids")
        if in_memory:  # encoded here (the ids are here); the pieces enter the graph as data
            here = ((user_index, item_index) if id_values is None else
                    (pd.Index(scanned.user_ids), pd.Index(scanned.item_ids)))
            codes = _encode_task(src, *here, self.user_col, self.item_col, rating_col)
            cuts = np.linspace(0, len(src), max(1, min(32, len(src) // 250_000)) + 1)
            cuts = cuts.astype(np.int64)
            parts = [driver.shared(tuple(c[a:b] for c in codes), "ratings")
                     for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        else:  # encoded where the partitions are, with the ids where they are
            encode = dask.delayed(_encode_task, pure=True)
            parts = [encode(p, uidx, iidx, self.user_col, self.item_col, rating_col)
                     for p in src.to_delayed()]
        # the scan's counts name the ratings (no other pass); the side solved first is in
        # the fingerprint too: a checkpoint of a fit that alternated the other way round
        # (or of a dmlkit that did not record it) is refused, not resumed in another order
        loop.bind(fit_fingerprint(self, None, **{
            "ratings": n_ratings, "ratings sum": total,
            "ids and their rating counts": ids_token,
            "side solved first": first}), read_blocks=not remote)
        # the state of the fit: the factors as blocks of the cuts (a checkpoint writes
        # them block by block), the cuts, and the loss curve so far.  A resumed fit keeps
        # the saved cuts: the blocks follow the threads of the cluster that started the
        # fit, the factors' last bits follow the blocks, and the new cluster may differ.
        state, it, done = loop.restore() or (None, 0, False)
        if state is not None:
            ucuts, icuts = np.asarray(state["user_cuts"]), np.asarray(state["item_cuts"])
            if remote:  # the saved blocks are read by the workers, not here
                state = dict(state, **{f"{side}_factors": loop.on_cluster(
                    state[f"{side}_factors"], f"{side}-factors") for side in SIDES})
        user_blocks, item_blocks = shuffle_to_blocks(parts, ucuts, icuts,
                                                     duplicates=duplicates,
                                                     name=driver.key("shuffle"))
        cache = self.cache
        if cache == "auto":
            cache = in_memory or driver.fits_in_memory(2 * BYTES_PER_RATING * n_ratings)
        if cache:
            kept = driver.persist(user_blocks + item_blocks)
            user_blocks, item_blocks = kept[:len(ucuts) - 1], kept[len(ucuts) - 1:]
            # the encoded ratings are in the blocks now: not kept here besides (on a
            # cluster the graph keeps what lineage needs)
            parts = codes = None  # noqa: F841
        logger.info("dmlkit-als: %d ratings, %d users x %d items in %d + %d blocks (%s)",
                    n_ratings, n_users, n_items, len(ucuts) - 1, len(icuts) - 1,
                    "persisted" if cache else "rebuilt from the source every pass")

        params = dict(reg=float(self.regularization), implicit=bool(self.implicit),
                      alpha=float(self.alpha), cg_steps=int(self.cg_steps),
                      nonnegative=bool(self.nonnegative))
        if state is None:
            init = functools.partial(self._init_blocks, driver, self._seed(), k=k,
                                     dtype=dtype, remote=remote)
            state = {"user_factors": init(0, ucuts), "item_factors": init(1, icuts),
                     "losses": [], "user_cuts": ucuts, "item_cuts": icuts}
        seen = {}
        step = functools.partial(self._iteration, driver,
                                 {"user": user_blocks, "item": item_blocks},
                                 params, backend, seen, first)
        state, _, _ = loop.iterate(step, state, max_iter=self.iterations, start=it,
                                   done=done, desc="ALS")
        if not seen:  # a finished fit's checkpoint: no iteration ran
            seen.update(self._seen_pass(driver, user_blocks, remote))
        loop.finish(state)

        self.__dict__.pop("_serving", None)
        if remote:
            # dask arrays over the blocks the workers hold: nothing is gathered here
            driver.wait([*state["user_factors"], *state["item_factors"], *seen["parts"]])
            self._hold_on_cluster({side: state[f"{side}_factors"] for side in SIDES},
                                  (ucuts, icuts), k, dtype, seen["parts"], id_values,
                                  id_dtypes, (user_index, item_index))
        else:
            self.user_factors_ = np.concatenate(state["user_factors"])
            self.item_factors_ = np.concatenate(state["item_factors"])
            self._seen_indptr, self._seen_indices = seen["csr"]
            self.__dict__.pop("_seen_parts", None)
            self.__dict__.pop("_factor_blocks", None)
            self.__dict__.pop("_id_values", None)
            self.user_ids_, self.item_ids_ = scanned.user_ids, scanned.item_ids
        if not remote:
            self._user_index, self._item_index = user_index, item_index
        self.n_iter_ = int(self.iterations)
        self.solve_order_ = first + "s"
        if self.calculate_training_loss:
            self.loss_curve_ = list(state["losses"])
        self._fit_seconds = time.perf_counter() - t0
        logger.info("dmlkit-als: %d iterations in %.2fs", self.n_iter_, self._fit_seconds)
        return self

    def _iteration(self, driver, blocks, params, backend, seen, first, state, it):
        """One iteration (the loop's step): every row of the ``first`` side (``'user'`` or
        ``'item'``) against the other side's factors, then every row of the other side
        against the first side's new factors.

        The user -> items CSR ``recommend`` filters with comes from the users' blocks,
        so the first iteration of a run puts it in ``seen`` (a dict) in passing; it is
        not in the state, which a checkpoint keeps small.  Its parts stay on the cluster
        with the factors when they do (``seen["parts"]``), else they are joined here
        (``seen["csr"]``).
        """
        a, b = (first, SIDES[1 - SIDES.index(first)])
        A, B = state[f"{a}_factors"], state[f"{b}_factors"]
        cuts = {"user": state["user_cuts"], "item": state["item_cuts"]}
        remote = is_future(A[0])
        with_seen = not seen
        loss_kw = ("reg", "all") if self.calculate_training_loss else (False, False)
        dtype = np.dtype(self.dtype)
        if remote:  # the factors stay on the cluster: each half reads the other's blocks
            half_a = self._half_remote(driver, blocks[a], A, B, cuts[b], seen, params,
                                       backend, with_loss=loss_kw[0],
                                       with_seen=with_seen and a == "user", step=a + "s")
            A, loss_a, got_a = self._collect_half(driver, half_a, dtype, with_loss=loss_kw[0],
                                                  with_seen=with_seen and a == "user",
                                                  remote=True)
            half_b = self._half_remote(driver, blocks[b], B, A, cuts[a], seen, params,
                                       backend, with_loss=loss_kw[1],
                                       with_seen=with_seen and b == "user", step=b + "s")
        else:
            half_a = self._submit_half(driver, blocks[a], np.concatenate(B), A, params,
                                       backend, with_loss=loss_kw[0],
                                       with_seen=with_seen and a == "user", step=a + "s")
            # the second half reads the first half's new factors where they were solved
            # (one key built from this half's results, lineage of one half-iteration)
            # while they also come back to the driver, for the next iteration
            A_new = self._rows_of(driver, half_a, a + "s")
            half_b = self._submit_half(driver, blocks[b], A_new, B, params, backend,
                                       with_loss=loss_kw[1],
                                       with_seen=with_seen and b == "user", step=b + "s")
            A, loss_a, got_a = self._collect_half(driver, half_a, dtype, with_loss=loss_kw[0],
                                                  with_seen=with_seen and a == "user",
                                                  remote=False)
            del A_new
        B, loss_b, got_b = self._collect_half(driver, half_b, dtype, with_loss=loss_kw[1],
                                              with_seen=with_seen and b == "user",
                                              remote=remote)
        if with_seen:
            seen.update(got_a if a == "user" else got_b)
        if remote:  # the iteration ends when its blocks exist (its errors raise here)
            driver.wait(list(A) + list(B))
        del half_a, half_b
        new = {f"{a}_factors": A, f"{b}_factors": B}
        losses, metrics = state["losses"], {}
        if self.calculate_training_loss:
            if remote:
                loss_a, loss_b = (_block_sum(v) for v in driver.gather([loss_a, loss_b]))
            XtX = YtY = None
            if self.implicit:
                XtX, YtY = (self._gram_of(driver, new[f"{side}_factors"], cuts[side], backend,
                                          side + "-gram") for side in SIDES)
                if remote:
                    XtX, YtY = driver.compute(XtX, YtY)
            loss = _objective(loss_b, loss_a, XtX, YtY, self._n_pairs(driver, seen))
            losses, metrics = losses + [loss], {"loss": loss}
        return dict(state, **new, losses=losses), Step(metrics=metrics)

    @staticmethod
    def _n_pairs(driver, seen):
        """(user, item) pairs after merging duplicates: what the loss is divided by."""
        if "csr" in seen:
            return int(seen["csr"][0][-1])
        if "n_pairs" not in seen:
            seen["n_pairs"] = sum(driver.compute(*[dask.delayed(_n_stored, pure=False)(p)
                                                   for p in seen["parts"]]))
        return seen["n_pairs"]

    @staticmethod
    def _gram_of(driver, blocks, cuts, backend, step):
        """YᵀY of a side: here from the whole matrix, or (factors on the cluster) a task
        combining the blocks' shares -- the same bits (:func:`_gram_combine`)."""
        if not is_future(blocks[0]):
            return to_numpy(get_kernels("recommendation", backend).gram(
                to_device(np.concatenate(blocks), backend), n_threads=driver.total_threads()))
        return _gram_tree(blocks, cuts, backend, driver.key(step))

    def _half_remote(self, driver, blocks, own, other, ocuts, plans, params, backend, *,
                     with_loss, with_seen, step):
        """Start solving every block of one side against the other side's blocks, held
        on the cluster: the whole other side goes to every worker when it is small
        (WHOLE_SIDE_BYTES), else each block gets only the rows it rates, routed from the
        blocks that hold them.  YᵀY is combined from the blocks' shares."""
        warm = params["implicit"] or params["nonnegative"]
        k = int(self.factors)
        YtY = (self._gram_of(driver, other, ocuts, backend, step + "-gram")
               if params["implicit"] else None)
        routed = int(ocuts[-1]) * k * np.dtype(self.dtype).itemsize > WHOLE_SIDE_BYTES
        key = driver.key(step)
        tasks = []
        if not routed:
            whole = dask.delayed(_concat_blocks, pure=False)(*other,
                                                             dask_key_name=key + "-other")
            solve = dask.delayed(_solve_task, pure=False)
            for b, block in enumerate(blocks):
                tasks.append(solve(block, whole, own[b] if warm else None, YtY, params,
                                   backend, with_loss, with_seen,
                                   n_threads=driver.threads_per_task,
                                   dask_key_name=f"{key}-{b}"))
            return driver.submit(*tasks)
        plan = self._plan(driver, blocks, ocuts, plans, step)
        route = dask.delayed(_route, pure=False)
        solve = dask.delayed(_solve_routed, pure=False)
        for b, block in enumerate(blocks):
            # a block of the other side this block rates most rows of comes whole: no
            # copy of it per block that rates it, and one transfer per worker
            whole = [count >= WHOLE_BLOCK_SHARE * int(ocuts[o + 1] - ocuts[o])
                     for o, _, count in plan[b]]
            pieces = [other[o] if w else route(other[o], need,
                                               dask_key_name=f"{key}-route-{o}-{b}")
                      for (o, need, _), w in zip(plan[b], whole, strict=True)]
            tasks.append(solve(block, [None if w else need for (_, need, _), w in
                                       zip(plan[b], whole, strict=True)],
                               [int(ocuts[o]) for o, _, _ in plan[b]], pieces, k,
                               own[b] if warm else None, YtY, params, backend, with_loss,
                               with_seen, n_threads=driver.threads_per_task,
                               dask_key_name=f"{key}-{b}"))
        return driver.submit(*tasks)

    @staticmethod
    def _plan(driver, blocks, ocuts, plans, step):
        """For every block of a side, ``[(o, rows of other-side block o it rates, their
        number)]`` (the rows as futures; non-empty only), computed once per fit from the
        rating blocks and kept on the cluster (Spark's out-blocks)."""
        if step in plans:
            return plans[step]
        need = dask.delayed(_need_task, pure=False)
        key = driver.key(step + "-need")
        needs = driver.submit(*[need(block, ocuts, dask_key_name=f"{key}-{b}")
                                for b, block in enumerate(blocks)])
        sizes = driver.compute(*[dask.delayed(_sizes, pure=False)(n) for n in needs])
        pick = dask.delayed(_pick, pure=False)
        plan = []
        for b, (n, counts) in enumerate(zip(needs, sizes, strict=True)):
            used = [o for o, c in enumerate(counts) if c]
            parts = driver.submit(*[pick(n, o, dask_key_name=f"{key}-{b}-{o}") for o in used])
            plan.append([(o, part, counts[o]) for o, part in zip(used, parts, strict=True)])
        plans[step] = plan
        return plan

    @staticmethod
    def _first_side(n_users, n_items, implicit):
        """The side every iteration solves first, from the data's shape and the feedback
        type only (so a resumed fit takes the same order; the fingerprint records it).

        Explicit feedback: the side with fewer rows (users on a tie).  Both sides hold
        the same ratings, so its rows have more ratings each.  The first half-iteration
        solves against the other side's *random* starting factors: a row's solve is then
        a regularised projection of its ratings on random directions, which keeps more
        of what the ratings say the more ratings the row has.  Solving the well-rated
        side first gives the sparsely rated side (the rows with few ratings, where the
        error of an unconverged fit sits) informative factors to be solved from in the
        very first iteration, and then last in every iteration, exactly against the
        other side's latest factors.  On MovieLens 100k split by time, after 10
        iterations, this order's held-out RMSE is 0.015 lower than the other's, and
        0.018 lower on the transposed ratings (the same side, now the items, goes
        first); on random splits the two orders are within noise (0.0003).
        ``docs/user_guide/als.md`` has the measurements.

        Implicit feedback: items first, so that every iteration ends with the users'
        factors solved against the final item factors -- the pair ``recommend`` scores
        with.  Precision@10 on MovieLens 100k: 0.002-0.003 higher than users first,
        and 0.001 higher on the transposed ratings (there the users are the movies).
        """
        if implicit:
            return "item"
        return "item" if n_items < n_users else "user"

    def _seed(self):
        return check_random_state(self.random_state).randint(np.iinfo(np.int32).max)

    def _init_factors(self, n_users, n_items, k, dtype):
        """The starting factors (X, Y) whole: what the blocks of a fit start from."""
        seed = self._seed()
        args = (k, dtype, bool(self.implicit), bool(self.nonnegative))
        return _init_rows(seed, 0, 0, n_users, *args), _init_rows(seed, 1, 0, n_items, *args)

    def _init_blocks(self, driver, seed, side, cuts, *, k, dtype, remote):
        """One side's starting factors by block (:func:`_init_rows`): made here, or
        each block on the worker that keeps it."""
        args = (k, dtype, bool(self.implicit), bool(self.nonnegative))
        if not remote:
            return _split_rows(_init_rows(seed, side, 0, int(cuts[-1]), *args), cuts)
        make = dask.delayed(_init_rows, pure=False)
        key = driver.key(SIDES[side] + "-init")
        return BlockList(driver.submit(*[
            make(seed, side, int(s), int(e), *args, dask_key_name=f"{key}-{b}")
            for b, (s, e) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))]))

    def _submit_half(self, driver, blocks, other, own, params, backend, *, with_loss,
                     with_seen, step):
        """Start solving every row of one side against ``other`` (the driver's array, or
        a key on the cluster), ``own`` (this side's factors by block) the warm start;
        returns the handles of the block results."""
        warm = params["implicit"] or params["nonnegative"]
        if isinstance(other, np.ndarray):
            YtY = None
            if params["implicit"]:
                YtY = get_kernels("recommendation", backend).gram(
                    other, n_threads=driver.total_threads())
            other_key = driver.shared(other, step + "-other")
        else:  # same kernel where the factors are: the same bits
            other_key = other
            YtY = dask.delayed(_gram_task, pure=False)(
                other, backend, dask_key_name=driver.key(step + "-gram")
            ) if params["implicit"] else None
        solve = dask.delayed(_solve_task, pure=False)
        key = driver.key(step)
        tasks = []
        for b, block in enumerate(blocks):
            start = driver.shared(own[b], f"{step}-start") if warm else None
            tasks.append(solve(block, other_key, start, YtY, params, backend, with_loss,
                               with_seen, n_threads=driver.threads_per_task,
                               dask_key_name=f"{key}-{b}"))
        return driver.submit(*tasks)

    @staticmethod
    def _rows_of(driver, handles, step):
        """The factors of a submitted half as one key where they were solved (or, without
        a cluster, as the concatenated array)."""
        if driver.client is None:
            return _concat_rows(*handles)
        return dask.delayed(_concat_rows, pure=False)(
            *handles, dask_key_name=driver.key(step + "-rows"))

    @staticmethod
    def _collect_half(driver, handles, dtype, *, with_loss, with_seen, remote):
        """(factors by block, loss, seen) of a submitted half.  The factors (and the
        seen parts) come to the driver, or stay on the cluster as futures of the blocks
        (``remote``); only the blocks' losses travel then."""
        if remote:
            picks = dask.delayed(_factor_block, pure=False)
            pick = dask.delayed(_pick, pure=False)
            key = driver.key("collect")
            X = BlockList(driver.submit(*[picks(h, dtype, dask_key_name=f"{key}-{b}")
                                          for b, h in enumerate(handles)]))
            loss = None
            if with_loss:  # the blocks' losses, gathered with the other half's
                loss = driver.submit(*[pick(h, 1) for h in handles])
            seen = None
            if with_seen:
                key = driver.key("seen")
                seen = {"parts": driver.submit(*[pick(h, 2, dask_key_name=f"{key}-{b}")
                                                 for b, h in enumerate(handles)])}
            return X, loss, seen
        results = driver.gather(handles)
        X = BlockList(np.ascontiguousarray(r[0], dtype=dtype) for r in results)
        loss = _block_sum([r[1] for r in results]) if with_loss else None
        return X, loss, {"csr": _join_seen([r[2] for r in results])} if with_seen else None

    @staticmethod
    def _seen_pass(driver, user_blocks, remote):
        """The user -> items CSR alone, from the user blocks (one light pass): joined
        here, or its parts kept on the cluster (``remote``)."""
        task = dask.delayed(_seen_task, pure=False)
        key = driver.key("seen")
        tasks = [task(block, dask_key_name=f"{key}-{b}") for b, block in enumerate(user_blocks)]
        if remote:
            return {"parts": driver.submit(*tasks)}
        return {"csr": _join_seen(driver.gather(driver.submit(*tasks)))}

    # ------------------------------------------------------------------ predict
    @placed
    def predict(self, pairs):
        """Predicted ratings (x_u . y_i) of the (user, item) rows of ``pairs``.

        ``pairs`` is a pandas or dask DataFrame with ``user_col`` and ``item_col`` (other
        columns are ignored).  Returns a NumPy array (pandas input) or a dask array (dask
        input, chunks of unknown size).  Pairs with an id unseen in ``fit`` give NaN with
        ``cold_start='nan'``; with ``'drop'`` they are left out, so the result is shorter.
        """
        check_is_fitted(self, "user_factors_")
        drop = self.cold_start == "drop"
        if not isinstance(pairs, (pd.DataFrame, dd.DataFrame)):
            raise TypeError(f"pairs must be a pandas or dask DataFrame with columns "
                            f"{[self.user_col, self.item_col]}, got {type(pairs).__name__}")
        self._check_pair_columns(pairs)
        dt = self.user_factors_.dtype
        if self._on_cluster():  # codes and rows fetched where they are, per partition
            cols = [self.user_col, self.item_col]
            if isinstance(pairs, pd.DataFrame):
                return compute(self._pairs_on_cluster(_predict_pairs, pairs[cols], drop))[0]
            return da.concatenate([
                da.from_delayed(self._pairs_on_cluster(_predict_pairs, p, drop),
                                shape=(np.nan,), dtype=dt)
                for p in pairs[cols].to_delayed()])
        args = (self.user_factors_, self.item_factors_, self._user_index, self._item_index,
                self.user_col, self.item_col, drop)
        if isinstance(pairs, dd.DataFrame):
            keys = [dask.delayed(v, pure=True) for v in args[:4]]
            out = pairs.map_partitions(lambda df, *a: pd.Series(_predict_partition(df, *a)),
                                       *keys, *args[4:], meta=pd.Series([], dtype=dt))
            return out.to_dask_array()
        return _predict_partition(pairs, *args)

    def _check_pair_columns(self, df, what="pairs", need=None):
        need = need or [self.user_col, self.item_col]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"{what} is missing column(s) {missing}; it has columns "
                             f"{[str(c) for c in df.columns]}")

    @placed
    def score(self, ratings, y=None):
        """Higher is better, as scikit-learn's model selection expects.

        Explicit feedback: the negated RMSE of ``predict`` against the ratings
        (``-dmlkit.metrics.rmse``); pairs with unseen ids are left out whatever
        ``cold_start``.  Implicit feedback: precision@10 of ``recommend`` for the users of
        ``ratings`` (seen training items filtered) against their interactions in it.
        """
        from dmlkit.metrics import precision_at_k

        check_is_fitted(self, "user_factors_")
        if not isinstance(ratings, (pd.DataFrame, dd.DataFrame)):
            raise TypeError(f"ratings must be a pandas or dask DataFrame, got "
                            f"{type(ratings).__name__}")
        if self.implicit:
            self._check_pair_columns(ratings, "ratings")
            users = ratings[self.user_col].unique()
            if isinstance(users, dd.Series):
                (users,) = compute(users)
            users = np.asarray(users)
            # users unseen in fit get no recommendations (and count as misses)
            users = users[self._codes("user", users) >= 0]
            recs = self.recommend(users, n=10)
            return precision_at_k(recs, ratings, k=10, user_col=self.user_col,
                                  item_col=self.item_col)
        self._check_pair_columns(ratings, "ratings",
                                 [self.user_col, self.item_col, self.rating_col])
        cols = [self.user_col, self.item_col, self.rating_col]
        args = [self.user_factors_, self.item_factors_, self._user_index, self._item_index]
        on_cluster = self._on_cluster()
        if isinstance(ratings, pd.DataFrame) and not on_cluster:  # here, as the model
            sums = _sum_frames(_squared_error_partition(ratings[cols], *args, *cols))
        else:  # one pass where the partitions are: three numbers per partition return
            frames = ([ratings[cols]] if isinstance(ratings, pd.DataFrame)
                      else ratings[cols].to_delayed())
            if on_cluster:  # codes and rows fetched where they are
                parts = [self._pairs_on_cluster(_squared_error_rows, f, self.rating_col)
                         for f in frames]
            else:  # the factors enter the graph once
                args = [dask.delayed(a, pure=True) for a in args]
                parts = [dask.delayed(_squared_error_partition, pure=True)(f, *args, *cols)
                         for f in frames]
            (sums,) = compute(dask.delayed(_sum_frames, pure=True)(*parts))
        if sums["n_bad"] > 0:
            raise ValueError(f"ratings contain {int(sums['n_bad'])} NaN or infinite "
                             f"rating(s) among the pairs to score")
        if sums["n"] == 0:
            raise ValueError("no pair of ratings has both ids seen in fit; nothing to score")
        return -float(np.sqrt(sums["sse"] / sums["n"]))

    # ------------------------------------------------------------------ recommend
    def _fold_in(self, ratings, users):
        """Factors of the users in ``users`` found in ``ratings``, each solved once against
        the item factors (exact least squares); returns (ids, factors, seen CSR)."""
        src, rating_col, _ = self._as_frame(ratings, need_rating=not self.implicit,
                                            what="ratings")
        cols = [self.user_col, self.item_col] + ([rating_col] if rating_col else [])
        df = src[cols]
        df = df[df[self.user_col].isin(list(users))]
        if isinstance(df, dd.DataFrame):  # only the rows of these users come here
            (df,) = compute(df)
        i = self._codes("item", df[self.item_col])
        df, i = df[i >= 0], i[i >= 0]  # items unseen in fit have no factors: left out
        r = _values(df[rating_col]) if rating_col else np.ones(len(df))
        if not np.isfinite(r).all():
            raise ValueError("ratings given for fold-in contain NaN or infinite values")
        if self.implicit and r.size and r.min() < 0:
            raise ValueError(f"implicit feedback needs ratings >= 0 (they are confidences "
                             f"1 + alpha * r); the fold-in ratings have minimum {r.min()}")
        ids = pd.unique(df[self.user_col])
        row = pd.Index(ids).get_indexer(df[self.user_col]).astype(np.int64)
        # the same merge of duplicates as fit's shuffle
        block = _build_block(0, len(ids), False, self._duplicates_policy(),
                             (row, i.astype(np.int64), r))
        # the rows are in this process, in NumPy: the dispatch rule picks the kernel
        backend = backend_of(_ratings_meta(df, rating_col or self.user_col))
        params = dict(reg=float(self.regularization), implicit=bool(self.implicit),
                      alpha=float(self.alpha), cg_steps=int(self.cg_steps),
                      nonnegative=bool(self.nonnegative), solver="cholesky")
        V = self._solve_against("item", block, None, params, backend)
        return np.asarray(ids), V, (block[0], block[1].astype(np.int32))

    def _solve_against(self, other, block, start, params, backend):
        """Factors of the rows of ``block`` (columns: codes of ``other``), ``other``'s
        factors fixed: solved here, against the factors here or (on the cluster path)
        against only the rows rated, fetched from their blocks, with YᵀY from the
        blocks' shares."""
        F = getattr(self, f"{other}_factors_")
        if not self._on_cluster():
            return _solve_task(block, F, start, None, params, backend, False, False)[0]
        rated = np.unique(block[1])
        Y, YtY = compute(F[rated], self._key(f"{other}-gram") if self.implicit else None)
        local = (block[0], np.searchsorted(rated, block[1]).astype(block[1].dtype), block[2])
        return _solve_task(local, Y, start, YtY, params, backend, False, False)[0]

    # ------------------------------------------------------------------ partial fit
    @placed
    def partial_fit_users(self, user_ids, ratings):
        """Solve the factors of ``user_ids`` again from their ``ratings``, the item
        factors fixed (the implicit library's ``partial_fit_users``; no full refit).

        ``ratings`` is a pandas or dask DataFrame of (``user_col``, ``item_col``,
        ``rating_col``) rows as ``fit`` takes (a scipy.sparse matrix: rows are user ids);
        only the rows of ``user_ids`` are read, and they are all of those users' ratings:
        each user's factors are solved from them alone, and they become the user's seen
        items for ``recommend``'s ``filter_seen``.  The solve is fit's user half-iteration
        for those rows -- the same task, regularisation (ALS-WR for explicit feedback),
        merge of duplicate pairs and value checks -- so for explicit feedback it gives the
        bits fit's last user half-iteration would; implicit feedback solves each row
        exactly (Cholesky, as the implicit library and the fold-in of ``recommend``) where
        fit takes ``cg_steps`` of conjugate gradient.

        A user unseen in fit is added: its id is appended to ``user_ids_`` (which is
        then sorted only up to fit's ids) and its factors to ``user_factors_``.  Ratings
        of items unseen in fit have no factors to solve against: they are left out, with
        a ``DmlkitWarning`` unless ``cold_start='drop'`` (add the items with
        :meth:`partial_fit_items`).  A user of ``user_ids`` without a rating of an item
        seen in fit is a ValueError.  Returns ``self``.
        """
        return self._partial_fit("user", user_ids, ratings)

    @placed
    def partial_fit_items(self, item_ids, ratings):
        """Solve the factors of ``item_ids`` again from their ``ratings``, the user
        factors fixed: :meth:`partial_fit_users` with the roles swapped (new items are
        appended to ``item_ids_`` / ``item_factors_``; the given (user, item) pairs
        replace those items' pairs among the users' seen items)."""
        return self._partial_fit("item", item_ids, ratings)

    def _partial_fit(self, side, ids, ratings):
        check_is_fitted(self, "user_factors_")
        other = "item" if side == "user" else "user"
        col = {"user": self.user_col, "item": self.item_col}
        ids = _as_ids(ids)
        src, rating_col, _ = self._as_frame(ratings, need_rating=not self.implicit)
        if len(ids) == 0:
            return self
        df = src[[col["user"], col["item"]] + ([rating_col] if rating_col else [])]
        df = df[df[col[side]].isin(list(ids))]
        if isinstance(df, dd.DataFrame):  # only the rows of these ids come here
            (df,) = compute(df)
        j = self._codes(other, df[col[other]])
        if (j < 0).any() and self.cold_start != "drop":
            bad = pd.unique(df[col[other]][j < 0])
            warnings.warn(f"{int((j < 0).sum())} rating(s) are of {len(bad)} {other}(s) unseen "
                          f"in fit (e.g. {_few(bad)}), which have no factors: they are left "
                          f"out. Add those {other}s with partial_fit_{other}s, or set "
                          "cold_start='drop' to leave them out silently.", DmlkitWarning,
                          stacklevel=3)
        df, j = df[j >= 0], j[j >= 0]
        r = _values(df[rating_col]) if rating_col else np.ones(len(df))
        if not np.isfinite(r).all():
            raise ValueError(f"ratings[{rating_col!r}] has {int((~np.isfinite(r)).sum())} NaN "
                             f"or infinite value(s)")
        if self.implicit and r.size and r.min() < 0:
            raise ValueError(f"implicit feedback needs ratings >= 0 (they are confidences "
                             f"1 + alpha * r); ratings[{rating_col!r}] has minimum {r.min()}")
        row = ids.get_indexer(df[col[side]]).astype(np.int64)
        empty = ids[np.bincount(row, minlength=len(ids)) == 0]
        if len(empty):
            raise ValueError(f"{len(empty)} of the {side}_ids have no rating of an {other} "
                             f"seen in fit in `ratings` (e.g. {_few(empty)}): there is "
                             f"nothing to solve their factors from")
        # the same merge of duplicates and the same row layout (sorted CSR) as fit's blocks
        block = _build_block(0, len(ids), False, self._duplicates_policy(),
                             (row, j.astype(np.int64), r))
        own = getattr(self, f"{side}_factors_")
        codes = self._codes(side, ids)
        new = codes < 0
        params = dict(reg=float(self.regularization), implicit=bool(self.implicit),
                      alpha=float(self.alpha), cg_steps=int(self.cg_steps),
                      nonnegative=bool(self.nonnegative))
        start = None
        remote = self._on_cluster()
        if self.implicit:
            params["solver"] = "cholesky"
        if self.nonnegative:  # fit's warm start: the row's factors (new rows: zeros)
            start = np.zeros((len(ids), own.shape[1]), dtype=own.dtype)
            start[~new] = compute(own[codes[~new]])[0] if remote else own[codes[~new]]
        backend = backend_of(_ratings_meta(df, rating_col or col[side]))
        V = self._solve_against(other, block, start, params, backend)
        V = V.astype(own.dtype, copy=False)
        if remote:  # rows replaced in the blocks that hold them
            self._replace_rows_on_cluster(side, ids, codes, V, block)
            return self
        F = np.concatenate([own, V[new]])
        F[codes[~new]] = V[~new]
        pos = codes.copy()
        pos[new] = own.shape[0] + np.arange(int(new.sum()))
        all_ids = _append_ids(getattr(self, f"{side}_ids_"), ids[new])
        # the seen pairs: these rows' (user side) or columns' (item side) pairs replaced
        pairs = (np.repeat(pos, np.diff(block[0])), block[1].astype(np.int64))
        if side == "user":
            seen = _csr_replace(self._seen_indptr, self._seen_indices, F.shape[0], pos,
                                [], *pairs)
        else:
            seen = _csr_replace(self._seen_indptr, self._seen_indices,
                                self.user_factors_.shape[0], [], pos, pairs[1], pairs[0])
        setattr(self, f"{side}_factors_", F)
        setattr(self, f"{side}_ids_", all_ids)
        setattr(self, f"_{side}_index", pd.Index(all_ids))
        self._seen_indptr, self._seen_indices = seen
        return self

    def _replace_rows_on_cluster(self, side, ids, codes, V, block):
        """``_partial_fit`` on the cluster path: the solved rows ``V`` (of ``ids``, fit
        codes ``codes``, -1 for new ids) replace their rows in the blocks that hold them
        (new ids: one block appended), and their seen pairs replace the old ones in the
        user blocks' seen parts -- the client path's updates, block by block."""
        client = self._client()
        own = getattr(self, f"{side}_factors_")
        cuts = _cuts(own)
        new = codes < 0
        pos = codes.copy()
        pos[new] = own.shape[0] + np.arange(int(new.sum()))
        blk = np.searchsorted(cuts, codes, side="right") - 1
        replace = dask.delayed(_replace_rows, pure=False)
        blocks = list(self._factor_blocks[side])
        for b in np.unique(blk[~new]):
            m = ~new & (blk == b)
            blocks[b] = client.compute(replace(blocks[b], codes[m] - cuts[b], V[m]))
        if new.any():
            blocks.append(client.compute(dask.delayed(np.ascontiguousarray, pure=False)(
                V[new])))
            cuts = np.r_[cuts, cuts[-1] + int(new.sum())]
        # the seen pairs of these rows (user side) or columns (item side), by user block
        rows = np.repeat(pos, np.diff(block[0]))
        cols = block[1].astype(np.int64)
        if side == "item":
            rows, cols = cols, rows
        ucuts = _cuts(self.user_factors_)
        parts = list(self._seen_parts)
        fix = dask.delayed(_seen_part_replace, pure=False)
        for b in range(len(parts)):
            lo, hi = ucuts[b], ucuts[b + 1]
            mine = (rows >= lo) & (rows < hi)
            drop_rows = pos[(pos >= lo) & (pos < hi)] - lo if side == "user" else []
            if side == "user" and not len(drop_rows):
                continue
            parts[b] = client.compute(fix(parts[b], drop_rows,
                                          pos if side == "item" else [],
                                          rows[mine] - lo, cols[mine]))
        if side == "user" and new.any():
            newbie = rows >= ucuts[-1]
            parts.append(client.compute(dask.delayed(_seen_part_replace, pure=False)(
                (np.zeros(int(new.sum()), np.int64), np.zeros(0, np.int32)), [], [],
                rows[newbie] - ucuts[-1], cols[newbie])))
        self._factor_blocks = dict(self._factor_blocks, **{side: blocks})
        setattr(self, f"{side}_factors_", _rows_array(blocks, cuts, own.shape[1], own.dtype))
        if new.any():  # the new ids appended where the ids are
            both = client.submit(_append_index, self._id_values[side], ids[new].to_numpy(),
                                 pure=False)
            values, index, dtype = (client.submit(operator.itemgetter(j), both, pure=False)
                                    for j in range(3))
            setattr(self, f"_{side}_index", index)
            setattr(self, f"{side}_ids_", _ids_array(values, cuts, dtype.result()))
            self._id_values = dict(self._id_values, **{side: values})
        self._seen_parts = parts
        self.__dict__.pop("_serving", None)  # derived from the old factors

    def _item_codes(self, ids, what):
        """Codes of the item ids ``ids`` (distinct, sorted); an id unseen in fit is a
        ValueError naming a few."""
        ids = _as_ids(ids)
        codes = self._codes("item", ids)
        if (codes < 0).any():
            bad = ids[codes < 0]
            raise ValueError(f"{what} has {len(bad)} item id(s) not seen in fit (e.g. "
                             f"{_few(bad)}): only items with factors can be ranked")
        return np.unique(codes)

    def _candidates(self, items, filter_items):
        """What recommendations rank: (item factors, their ids, their twins, codes of the
        candidates or None for all items, codes of columns left out or None)."""
        Y = self.item_factors_
        cand = banned = None
        if items is not None:
            cand = self._item_codes(items, "items")
            if cand.shape[0] == 0:
                raise ValueError("items is empty: give at least one candidate item id, or "
                                 "items=None to rank every item")
        if filter_items is not None:
            banned = self._item_codes(filter_items, "filter_items")
            if cand is not None:
                cand = np.setdiff1d(cand, banned)  # sorted: ties still go to the lower code
                banned = None
                if cand.shape[0] == 0:
                    raise ValueError("every item of items is in filter_items: no candidate "
                                     "item is left to recommend")
            elif banned.shape[0] == 0:
                banned = None
        if self._blockwise("item"):  # ranked block by block (_rank_tasks)
            return None, self._id_values["item"], None, cand, banned
        if self._on_cluster():  # tasks on the whole item factors, where they are
            if cand is None:
                return (self._key("item"), self._id_values["item"], self._key("item-twins"),
                        None, banned)
            # only the candidates' rows, from the blocks that hold them
            both = dask.delayed(_with_twins, pure=False, nout=2)(self.item_factors_[cand])
            ids = dask.delayed(operator.getitem, pure=False)(self._id_values["item"], cand)
            return both[0], ids, both[1], cand, None
        if cand is None:
            return Y, self.item_ids_, self._twins("item", Y), None, banned
        Yc = Y[cand]
        return Yc, self.item_ids_[cand], twin_rows(Yc), cand, None

    def _warn_unknown_users(self, unknown, n_asked, fold_in=True):
        if len(unknown) and self.cold_start != "drop":
            where = ("they are not in fit's ratings, nor with items seen in fit in `ratings`"
                     if fold_in else "they are not in fit's ratings")
            advice = ("Pass their ratings as `ratings=` to fold them in, or set "
                      if fold_in else "Add them with partial_fit_users, or set ")
            warnings.warn(
                f"{len(unknown)} of the {n_asked} users have no factors: {where} (e.g. "
                f"{_few(unknown)}): they get no recommendations. {advice}"
                "cold_start='drop' to leave them out silently.", DmlkitWarning, stacklevel=3)

    @placed
    def recommend(self, users, n=10, *, items=None, filter_seen=True, filter_items=None,
                  ratings=None):
        """Top-``n`` items for each of ``users`` (ids as in fit).

        Returns a pandas DataFrame with columns ``user_col``, ``item_col``, ``score`` and
        ``rank`` (1 = best; ties go to the item seen first in ``item_ids_``), users in the
        order given -- the layout :mod:`dmlkit.metrics` reads.  ``items`` (item ids)
        restricts the recommendations to those candidates; ``filter_items`` (item ids)
        are never recommended; ``filter_seen`` leaves out the items a user rated in fit.
        A user gets ``n`` rows or, when fewer candidates are left, one row per candidate
        (``n`` is capped, as the implicit library does).  An item id of ``items`` or
        ``filter_items`` unseen in fit, or an empty ``items``, is a ValueError.
        ``ratings`` (same columns as fit's) folds in the users found there: their factors
        are solved from those ratings against the item factors (one least-squares solve),
        whether or not they were in fit, and their given items are the seen ones.  Users
        neither in fit nor in ``ratings`` get no rows (as Spark's
        ``recommendForUserSubset``), with a ``DmlkitWarning`` naming them unless
        ``cold_start='drop'``.
        """
        check_is_fitted(self, "user_factors_")
        n = self._check_n(n)
        Y, item_ids, twins, cand, banned = self._candidates(items, filter_items)
        users = pd.unique(np.atleast_1d(np.asarray(users, dtype=object)
                                        if not isinstance(users, (np.ndarray, pd.Series,
                                                                  pd.Index)) else users))
        parts = []  # (ids, factors, seen CSR) of folded-in users, then of fit's users
        rest = users
        if ratings is not None:
            ids_f, V_f, (ptr_f, idx_f) = self._fold_in(ratings, users)
            parts.append((ids_f, V_f.astype(self.user_factors_.dtype), ptr_f, idx_f))
            rest = users[~pd.Index(users).isin(ids_f)]
        codes, known = self._lookup("user", rest)
        self._warn_unknown_users(rest[codes < 0], len(users))
        codes = codes[codes >= 0]
        parts.append((known, *self._user_rows(codes)))
        # pandas keeps the ids' dtype (int64 stays int64; mixed types become object)
        ids = pd.concat([pd.Series(p[0]) for p in parts], ignore_index=True).to_numpy()
        V = np.concatenate([p[1] for p in parts])
        ptr = indices = None
        if filter_seen:
            offsets = np.cumsum([0] + [p[3].shape[0] for p in parts[:-1]])
            ptr = np.concatenate([[0]] + [p[2][1:] + o
                                          for p, o in zip(parts, offsets, strict=True)])
            indices = np.concatenate([p[3] for p in parts])
        # users in the order asked for
        order = np.argsort(pd.Index(users).get_indexer(ids), kind="stable")
        V, ids = V[order], ids[order]
        if filter_seen:
            ptr, indices = _csr_take(ptr, indices, order)
        if Y is None:  # the item blocks ranked where they are, the lists merged
            tasks = self._rank_tasks("item", dask.delayed(V, pure=True),
                                     (ptr, indices) if filter_seen else None, None, n,
                                     cand, banned)
            return self._run(_ranked_frame, ids, item_ids, n, self.user_col, self.item_col,
                             *tasks)
        if filter_seen and cand is not None:
            ptr, indices = _csr_columns(ptr, indices, cand)
        return self._run(_recommend_partition, V, Y, ids, item_ids, ptr, indices, n,
                         self.user_col, self.item_col, twins, banned)

    @placed
    def recommend_all(self, n=10, *, users=None, filter_seen=True, items=None,
                      filter_items=None):
        """Top-``n`` items of every user as a dask DataFrame (columns as ``recommend``),
        one partition per range of users, computed where it is used.

        ``users`` (ids as in fit) asks for those users only, in the order given (Spark's
        ``recommendForUserSubset``); users unseen in fit get no rows, with a
        ``DmlkitWarning`` unless ``cold_start='drop'``.  ``items``, ``filter_items`` and
        ``filter_seen`` are as in :meth:`recommend`."""
        check_is_fitted(self, "user_factors_")
        n = self._check_n(n)
        Y, item_ids, twins, cand, banned = self._candidates(items, filter_items)
        if self._on_cluster():
            return self._recommend_all_blocks(n, users, filter_seen, Y, item_ids, twins,
                                              cand, banned)
        X, user_ids = self.user_factors_, self.user_ids_
        seen_ptr, seen_idx = self._seen_indptr, self._seen_indices
        if users is not None:
            asked = _as_ids(users)
            codes = self._codes("user", asked)
            self._warn_unknown_users(asked[codes < 0].to_numpy(), len(asked), fold_in=False)
            codes = codes[codes >= 0]
            X, user_ids = X[codes], user_ids[codes]
            seen_ptr, seen_idx = _csr_take(seen_ptr, seen_idx, codes)
        if filter_seen and cand is not None:
            seen_ptr, seen_idx = _csr_columns(seen_ptr, seen_idx, cand)
        n_users = X.shape[0]
        from dmlkit._core.client import total_threads

        meta = _recommend_partition(X[:0], Y, user_ids[:0], item_ids, None, None, n,
                                    self.user_col, self.item_col)
        if n_users == 0:
            return dd.from_pandas(meta, npartitions=1)
        per_part = max(256, SCORE_CHUNK // max(1, Y.shape[0]) * 4)
        per_part = min(per_part, max(256, -(-n_users // total_threads(get_client_or_none()))))
        y_key = dask.delayed(Y, pure=True)
        item_key = dask.delayed(item_ids, pure=True)
        twins = dask.delayed(twins, pure=True)
        fn = dask.delayed(_recommend_partition, pure=True)
        parts = []
        for s in range(0, n_users, per_part):
            e = min(n_users, s + per_part)
            ptr = idx = None
            if filter_seen:
                lo, hi = seen_ptr[s], seen_ptr[e]
                ptr = seen_ptr[s:e + 1] - lo
                idx = seen_idx[lo:hi]
            parts.append(fn(X[s:e], y_key, user_ids[s:e], item_key, ptr, idx, n,
                            self.user_col, self.item_col, twins, banned))
        return dd.from_delayed(parts, meta=meta, verify_meta=False)

    # ------------------------------------------------------------------ on the cluster
    def _hold_on_cluster(self, factor_blocks, cuts, k, dtype, seen_parts, id_values,
                         id_dtypes, indexes):
        """Make this a model held on the cluster (fit's cluster path, or a model loaded
        there): futures of each side's factor blocks (``factor_blocks[side]``, cut at
        ``cuts``), of the user blocks' seen parts (:func:`_seen_task`), of each side's
        sorted ids and of their ``pandas.Index``."""
        self.user_factors_ = _rows_array(factor_blocks["user"], cuts[0], k, dtype)
        self.item_factors_ = _rows_array(factor_blocks["item"], cuts[1], k, dtype)
        self._seen_parts = list(seen_parts)
        self._factor_blocks = {side: list(factor_blocks[side]) for side in SIDES}
        self._seen_indptr = self._seen_indices = None
        # the ids too: dask arrays cut as the factors, their index a future
        self._id_values = dict(zip(SIDES, id_values, strict=True))
        self.user_ids_ = _ids_array(id_values[0], cuts[0], id_dtypes[0])
        self.item_ids_ = _ids_array(id_values[1], cuts[1], id_dtypes[1])
        self._user_index, self._item_index = indexes

    def _saved_state(self):
        """What :func:`dmlkit.save` writes in place of this model's own attributes: for
        a model held on the cluster, the seen CSR its in-process form keeps
        (``_seen_indptr``, ``_seen_indices``), as dask arrays over the user blocks'
        seen parts, so it is written a block at a time and never whole here.  The files
        are the same bytes either way."""
        if not isinstance(vars(self).get("user_factors_"), da.Array):
            return {}
        client = self._client()
        parts = self._seen_parts
        with scheduler_loss(client):
            nnz = client.gather([client.submit(_seen_nnz, p, pure=False) for p in parts])
        cuts = _cuts(self.user_factors_)
        offsets = np.r_[0, np.cumsum(nnz, dtype=np.int64)]
        ptr = dask.delayed(_seen_indptr_block, pure=True)
        idx = dask.delayed(operator.itemgetter(1), pure=True)
        indptr = da.concatenate([
            da.from_delayed(ptr(p, int(offsets[b]), b == 0),
                            shape=(int(cuts[b + 1] - cuts[b]) + (b == 0),), dtype=np.int64)
            for b, p in enumerate(parts)])
        indices = da.concatenate([
            da.from_delayed(idx(p), shape=(int(nnz[b]),), dtype=np.int32)
            for b, p in enumerate(parts)])
        return {"_seen_indptr": indptr, "_seen_indices": indices}

    def _adopt_saved(self, stored):
        """A loaded model larger than ``dmlkit.driver-state-bytes`` (``dmlkit.load`` with
        a client active): the workers read its blocks, and it is held on the cluster as
        after a fit there."""
        client = self._client()
        U, V = stored["user_factors_"], stored["item_factors_"]
        ids = stored["user_ids_"], stored["item_ids_"]
        indptr, indices = stored["_seen_indptr"], stored["_seen_indices"]
        if ids[0].rows != U.rows or ids[1].rows != V.rows \
                or len(indices.rows) != len(U.rows) or U.shape[1:] != V.shape[1:]:
            raise ValueError(f"{U.path!r}: the saved factors, ids and seen items are not "
                             "cut in the same row blocks.")
        with scheduler_loss(client):
            blocks = {side: [client.submit(F.block, b, pure=False) for b in range(len(F.rows))]
                      for side, F in zip(SIDES, (U, V), strict=True)}
            id_values = [client.submit(s.whole, pure=False) for s in ids]
            ptr = client.submit(indptr.whole, pure=False)
            seen = [client.submit(_saved_seen_part, ptr, indices, b, int(U.cuts[b]),
                                  int(U.cuts[b + 1]), pure=False)
                    for b in range(len(U.rows))]
            indexes = [client.submit(pd.Index, v, pure=False) for v in id_values]
            # read now: a missing or corrupt file is load's error, not a later call's
            wait_for(client, [*blocks["user"], *blocks["item"], *seen, *indexes])
        self._hold_on_cluster(blocks, (U.cuts, V.cuts), U.shape[1], U.dtype, seen, id_values,
                              [np.dtype(object) if s.as_object else s.dtype for s in ids],
                              indexes)

    def _on_cluster(self):
        """Whether the factors stay on the cluster that fitted them (dask arrays over
        the blocks its workers hold; see the driver-state-bytes setting).  Such a model
        is served by that cluster: without its client active, a RuntimeError says so."""
        remote = isinstance(getattr(self, "user_factors_", None), da.Array)
        if remote:
            self._client()
        return remote

    def _held_on_cluster(self):
        """What this model keeps on the cluster (:func:`~dmlkit._core.client.placed`: a
        method called inside a task then runs on that cluster, as with dask input)."""
        F = vars(self).get("user_factors_")
        return (F,) if isinstance(F, da.Array) else ()

    def _key(self, what):
        """A future of what serving needs whole, made once per model where the factors
        are: ``'user'`` / ``'item'`` (a side's factors, concatenated by a worker),
        ``'<side>-twins'`` (:func:`twin_rows`), ``'<side>-unit'`` (unit rows)."""
        cache = self.__dict__.setdefault("_serving", {})
        if what not in cache:
            side, _, derived = what.partition("-")
            if derived == "gram":  # YᵀY from the blocks' shares (never whole on a worker)
                F = getattr(self, f"{side}_factors_")
                task = _gram_tree(F.to_delayed().ravel(), _cuts(F), "numba",
                                  f"dmlkit-als-{side}-gram-{uuid.uuid4().hex[:8]}")
            elif derived:
                fn = twin_rows if derived == "twins" else _unit
                task = dask.delayed(fn, pure=False)(self._key(side))
            else:
                F = getattr(self, f"{side}_factors_")
                task = dask.delayed(_concat_blocks, pure=False)(*F.to_delayed().ravel())
            cache[what] = self._client().compute(task)
        return cache[what]

    def _client(self):
        client = get_client_or_none()
        if client is None:
            raise RuntimeError(
                "this ALS model's factors are held by the workers of the cluster that "
                "fitted it (they were larger than the dmlkit.driver-state-bytes setting): "
                "use it with that cluster's Client active")
        return client

    def _blockwise(self, side):
        """Whether rankings against this side go block by block (:func:`_rank_block`):
        on the cluster path, for a side too large to be sent whole to a worker (as the
        fit routes it: WHOLE_SIDE_BYTES)."""
        F = getattr(self, f"{side}_factors_")
        return self._on_cluster() and F.shape[0] * F.shape[1] * F.dtype.itemsize \
            > WHOLE_SIDE_BYTES

    def _rank_tasks(self, side, V, seen, exclude, n, cand, banned, unit=False):
        """One :func:`_rank_block` task per block of ``side``'s factors (their unit rows
        with ``unit``), where the block is."""
        F = getattr(self, f"{side}_factors_")
        blocks, cuts = F.to_delayed().ravel(), _cuts(F)
        rank = dask.delayed(_rank_block, pure=True)
        unit_rows = dask.delayed(_unit, pure=True)
        return [rank(V, seen, exclude, unit_rows(blocks[c]) if unit else blocks[c],
                     int(cuts[c]), n, cand, banned) for c in range(len(blocks))]

    def _codes(self, side, ids):
        """Codes of ``ids`` (-1 for ids unseen in fit), from the index here or on the
        cluster (only the asked ids travel)."""
        index = getattr(self, f"_{side}_index")
        if isinstance(index, pd.Index):
            return index.get_indexer(ids)
        return self._run(_get_indexer, index, ids)

    def _lookup(self, side, ids):
        """(codes of ``ids``, -1 for unseen ones; fit's ids of the seen ones, in order)."""
        index = getattr(self, f"_{side}_index")
        if isinstance(index, pd.Index):
            return _lookup(index, ids)
        return self._run(_lookup, index, ids)

    def _rows_at(self, side, codes):
        """A Delayed of the factor rows of ``codes`` (a Delayed: codes computed on the
        cluster), each taken from the block that holds it: only those rows travel."""
        F = getattr(self, f"{side}_factors_")
        blocks, cuts = F.to_delayed().ravel(), _cuts(F)
        wanted = dask.delayed(_block_rows, nout=len(blocks), pure=True)(codes, cuts)
        taken = [dask.delayed(_take_rows, pure=True)(blocks[b], wanted[b])
                 for b in range(len(blocks))]
        return dask.delayed(_placed_rows, pure=True)(codes, cuts, *taken)

    def _pairs_on_cluster(self, fn, df, *args):
        """Delayed ``fn(df, X[u], Y[i], u, i, *args)`` for one frame of pairs: codes looked
        up where the ids are, and only the factor rows the pairs name fetched."""
        u, i = dask.delayed(_pair_codes, nout=2, pure=True)(
            df, self._user_index, self._item_index, self.user_col, self.item_col)
        return dask.delayed(fn, pure=True)(df, self._rows_at("user", u),
                                           self._rows_at("item", i), u, i, *args)

    def _run(self, fn, *args, **kwargs):
        """``fn(*args)`` here, or as a task on the cluster where the factors are (any
        argument may be a future or Delayed there); only the result comes back."""
        if not self._on_cluster():
            return fn(*args, **kwargs)
        (out,) = compute(dask.delayed(fn, pure=False)(*args, **kwargs))
        return out

    def _user_rows(self, codes):
        """(factors, seen indptr, seen indices) of the users ``codes``, in that order: from
        the arrays here, or only those rows fetched from the user blocks."""
        if not self._on_cluster():
            return (self.user_factors_[codes],
                    *_csr_take(self._seen_indptr, self._seen_indices, codes))
        k = self.user_factors_.shape[1]
        if len(codes) == 0:
            return (np.zeros((0, k), self.user_factors_.dtype), np.zeros(1, np.int64),
                    np.zeros(0, np.int32))
        cuts = _cuts(self.user_factors_)
        blk = np.searchsorted(cuts, codes, side="right") - 1
        order = np.argsort(blk, kind="stable")
        blocks = self.user_factors_.to_delayed().ravel()
        task = dask.delayed(_rows_and_seen, pure=False)
        tasks = [task(blocks[b], self._seen_parts[b], codes[order][blk[order] == b] - cuts[b])
                 for b in np.unique(blk)]
        got = compute(*tasks)
        V = np.concatenate([g[0] for g in got])
        ptr = np.concatenate([[0]] + [g[1][1:] + o for g, o in zip(
            got, np.cumsum([0] + [g[2].shape[0] for g in got[:-1]]), strict=True)])
        indices = np.concatenate([g[2] for g in got])
        back = np.empty_like(order)
        back[order] = np.arange(order.shape[0])
        return (V[back], *_csr_take(ptr, indices, back))

    def _recommend_all_blocks(self, n, users, filter_seen, Y, item_ids, twins, cand, banned):
        """``recommend_all`` on the cluster path: one partition per user block (or per run
        of the asked users within one block), each ranked where its block is."""
        cuts = _cuts(self.user_factors_)
        blocks = self.user_factors_.to_delayed().ravel()
        fn = dask.delayed(_recommend_rows, pure=False)
        ids_k = dask.delayed(item_ids, pure=True)
        meta = _recommend_partition(np.zeros((0, 1), self.user_factors_.dtype),
                                    np.zeros((0, 1), self.user_factors_.dtype),
                                    np.zeros(0, self.user_ids_.dtype),
                                    np.zeros(0, self.item_ids_.dtype), None, None, n,
                                    self.user_col, self.item_col)
        args = (Y, ids_k, n, self.user_col, self.item_col, twins, banned, cand, filter_seen)
        id_blocks = self.user_ids_.to_delayed().ravel()  # cut as the factors
        if Y is None:  # each user block against each item block, the lists merged
            def fn(X, part, rows, ids, *_):
                V, seen = dask.delayed(_partition_rows, nout=2, pure=True)(
                    X, part, rows, filter_seen)
                return dask.delayed(_ranked_frame, pure=True)(
                    ids, ids_k, n, self.user_col, self.item_col,
                    *self._rank_tasks("item", V, seen, None, n, cand, banned))
        parts = []
        if users is None:
            for b in range(len(blocks)):
                parts.append(fn(blocks[b], self._seen_parts[b], None, id_blocks[b], *args))
        else:
            asked = _as_ids(users)
            codes = self._codes("user", asked)
            self._warn_unknown_users(asked[codes < 0].to_numpy(), len(asked), fold_in=False)
            codes = codes[codes >= 0]
            blk = np.searchsorted(cuts, codes, side="right") - 1
            starts = np.flatnonzero(np.r_[True, blk[1:] != blk[:-1]]) if len(codes) else []
            for s, e in zip(starts, list(starts[1:]) + [len(codes)], strict=True):
                b = blk[s]
                rows = codes[s:e] - cuts[b]
                parts.append(fn(blocks[b], self._seen_parts[b], rows,
                                dask.delayed(operator.getitem)(id_blocks[b], rows), *args))
        if not parts:
            return dd.from_pandas(meta, npartitions=1)
        return dd.from_delayed(parts, meta=meta, verify_meta=False)

    def _unit_rows(self, side, F):
        # F's rows scaled to unit norm (zero rows kept), computed once per factor matrix:
        # the cache holds the matrix it was made from, so a refit or new factors renew it
        cache = self.__dict__.setdefault("_unit_cache", {})
        hit = cache.get(side)
        if hit is None or hit[0] is not F:
            hit = cache[side] = (F, _unit(F))
        return hit[1]

    def _twins(self, side, F):
        # twin_rows(F), computed once per factor matrix (cached as _unit_rows)
        cache = self.__dict__.setdefault("_twin_cache", {})
        hit = cache.get(side)
        if hit is None or hit[0] is not F:
            hit = cache[side] = (F, twin_rows(F))
        return hit[1]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_unit_cache", None)  # derived from the factors: not pickled
        state.pop("_twin_cache", None)
        state.pop("_serving", None)
        return state

    def _similar(self, side, query, n):
        col = self.user_col if side == "user" else self.item_col
        codes = self._codes(side, pd.Index(np.atleast_1d(np.asarray(query))))
        codes = codes[codes >= 0]
        if self._blockwise(side):  # the query's rows against each block, where it is
            V = dask.delayed(_unit, pure=True)(self._rows_at(side, codes))
            tasks = self._rank_tasks(side, V, None, codes, n, None, None, unit=True)
            return self._run(_similar_ranked, codes, self._id_values[side], n, col, *tasks)
        if self._on_cluster():
            G, twins = self._key(side + "-unit"), self._key(side + "-twins")
            V, ids = dask.delayed(_take_rows, pure=False)(G, codes), self._id_values[side]
        else:
            F = getattr(self, f"{side}_factors_")
            G, twins = self._unit_rows(side, F), self._twins(side, F)
            V, ids = G[codes], getattr(self, f"{side}_ids_")
        return self._run(_similar_frame, V, G, n, codes, twins, ids, col)

    @placed
    def similar_items(self, items, n=10):
        """The ``n`` items nearest each of ``items`` by cosine of their factors (the item
        itself left out).  Columns ``item_col``, ``similar_<item_col>``, ``score``,
        ``rank``; unknown items get no rows."""
        check_is_fitted(self, "item_factors_")
        return self._similar("item", items, self._check_n(n))

    @placed
    def similar_users(self, users, n=10):
        """The ``n`` users nearest each of ``users`` by cosine of their factors."""
        check_is_fitted(self, "user_factors_")
        return self._similar("user", users, self._check_n(n))

    @staticmethod
    def _check_n(n):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        return int(n)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.input_tags.two_d_array = False
        return tags
