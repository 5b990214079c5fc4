"""Evaluation metrics for recommenders, computed where the data lives.

:func:`rmse` scores rating predictions; :func:`precision_at_k`, :func:`recall_at_k`,
:func:`map_at_k` and :func:`ndcg_at_k` score top-k recommendation lists against held-out
interactions.  Every function accepts in-memory input (NumPy / pandas) and dask
collections.  With dask input the work runs as dask reductions, merges and per-user
groupbys under the current scheduler, and only the final scalars come back to the client;
the result is always a Python float.

Ranking metrics use binary relevance and are averaged over users, as in Spark MLlib's
``RankingMetrics``.  For a user ``u`` with held-out items ``rel_u`` and ``hits`` the
recommended items of rank ``<= k`` that are in ``rel_u``:

* ``precision@k = |hits| / k``
* ``recall@k = |hits| / |rel_u|``
* ``MAP@k = 1 / min(k, |rel_u|) * sum over hits h of (number of hits of rank <= rank(h)) / rank(h)``
* ``NDCG@k = DCG / IDCG`` with ``DCG = sum over hits h of 1 / log2(rank(h) + 1)`` and
  ``IDCG = sum_{i=1..min(k, |rel_u|)} 1 / log2(i + 1)``
"""

from __future__ import annotations

import math
import numbers

import dask
import dask.array as da
import numpy as np
import pandas as pd

from dmlkit._core.blocks import _dask_from_dataframe, known_row_chunks
from dmlkit._core.client import compute

__all__ = ["map_at_k", "ndcg_at_k", "precision_at_k", "recall_at_k", "rmse"]

_RANK = "rank"
_SCORE = "score"


# --------------------------------------------------------------------------------------
# rmse
# --------------------------------------------------------------------------------------

def _as_vector(v, what):
    """A 1-d float64 vector: a dask array (known chunks) for dask input, else NumPy."""
    if dask.is_dask_collection(v):
        if hasattr(v, "to_dask_array"):  # dask Series / DataFrame
            v, _ = _dask_from_dataframe(v, numeric=False)
        if not isinstance(v, da.Array):
            raise TypeError(f"{what} must be an array-like or a dask array/Series, "
                            f"got {type(v).__name__}.")
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.ndim != 1:
            raise ValueError(f"{what} must be 1-dimensional, got shape {v.shape}.")
        if v.dtype.kind not in "biuf":
            raise TypeError(f"{what} has dtype {v.dtype}; rmse needs numeric values.")
        (v,) = known_row_chunks(v)
        return v.astype(np.float64) if v.dtype != np.float64 else v
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must contain numeric values: {exc}") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-dimensional, got shape {arr.shape}.")
    return arr


def _nan_prediction_error(n_nan):
    return ValueError(
        f"Input y_pred contains NaN ({n_nan} value(s)). A recommender predicts NaN for users "
        "or items it did not see during fit; drop those rows (e.g. keep = ~np.isnan(y_pred)) "
        "before computing the RMSE.")


def rmse(y_true, y_pred, *, sample_weight=None):
    """Root mean squared error, ``sqrt(sum(w * (y_true - y_pred) ** 2) / sum(w))``.

    Equal to ``sklearn.metrics.mean_squared_error(y_true, y_pred,
    sample_weight=sample_weight) ** 0.5``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        NumPy arrays, pandas Series, dask arrays or dask Series, in any mix.  Values are
        paired by position (pandas / dask indexes are ignored), so the inputs must have
        the same length.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights, same formats as ``y_true``.

    Returns
    -------
    float
        With any dask input the sums are dask reductions under the current scheduler;
        only three scalars come back to the client.

    Raises
    ------
    ValueError
        If the lengths differ, if the input is empty, if ``y_pred`` contains NaN (drop the
        rows a recommender could not score first) or if any input is not finite.
    """
    t = _as_vector(y_true, "y_true")
    p = _as_vector(y_pred, "y_pred")
    vectors = [t, p]
    if sample_weight is not None:
        w = sample_weight
        if np.ndim(w) == 0 and not dask.is_dask_collection(w):
            w = np.full(t.shape[0], w, dtype=np.float64)
        vectors.append(_as_vector(w, "sample_weight"))
    lengths = [int(v.shape[0]) for v in vectors]
    if len(set(lengths)) > 1:
        raise ValueError("Found input variables with inconsistent numbers of samples: "
                         f"{lengths}")
    if lengths[0] == 0:
        raise ValueError("Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 is "
                         "required.")

    lazy = next((v for v in vectors if isinstance(v, da.Array)), None)
    xp = np if lazy is None else da
    if lazy is not None:  # align everything with the first dask vector's row chunks
        chunks = lazy.chunks[0]
        vectors = [da.from_array(v, chunks=(chunks,), name=False) if isinstance(v, np.ndarray)
                   else (v if v.chunks[0] == chunks else v.rechunk({0: chunks}))
                   for v in vectors]
    t, p = vectors[0], vectors[1]
    w = vectors[2] if len(vectors) == 3 else None

    sq = (t - p) ** 2
    parts = {
        "sse": (sq if w is None else w * sq).sum(),
        "nan_pred": xp.isnan(p).sum(),
        "bad_pred": (~xp.isfinite(p)).sum(),
        "bad_true": (~xp.isfinite(t)).sum(),
    }
    if w is not None:
        parts.update(sum_w=w.sum(), bad_w=(~xp.isfinite(w)).sum(), neg_w=(w < 0).sum(),
                     pos_w=(w > 0).sum())
    if lazy is not None:
        parts = dict(zip(parts, compute(*parts.values()), strict=True))

    if parts["nan_pred"]:
        raise _nan_prediction_error(int(parts["nan_pred"]))
    if parts["bad_pred"]:
        raise ValueError("Input y_pred contains infinity.")
    if parts["bad_true"]:
        raise ValueError("Input y_true contains NaN or infinity.")
    if w is None:
        return math.sqrt(float(parts["sse"]) / lengths[0])
    if parts["bad_w"]:
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if parts["neg_w"]:
        raise ValueError("Negative values in sample_weight are not allowed.")
    if not parts["pos_w"]:
        raise ValueError("sample_weight must contain at least one non-zero weight.")
    return math.sqrt(float(parts["sse"]) / float(parts["sum_w"]))


# --------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------

_RANKING_PARAMS = """
    Parameters
    ----------
    recommendations : pandas or dask DataFrame
        Long format, one row per recommended (user, item), with columns ``user_col``,
        ``item_col`` and ``rank`` (integer position in the user's list, 1 = best).  Rows
        with ``rank > k`` are ignored.  Ranks within a user should be distinct; an item
        listed twice for a user counts once, at its best rank.  Without a ``rank`` column
        but with a ``score`` column, items are ranked within each user by descending
        score, ties broken by ascending item id (NaN scores rank last).
    relevant : pandas or dask DataFrame
        The held-out interactions, with columns ``user_col`` and ``item_col`` (other
        columns are ignored; duplicate pairs count once).  The evaluated users are the
        distinct users of ``relevant``: a user without recommendations scores 0 and users
        only present in ``recommendations`` are ignored.
    k : int, default=10
        Length of the recommendation lists scored.
    user_col, item_col : str, default="user_id", "item_id"
        Names of the user and item columns, the same in both frames.

    Returns
    -------
    float
        The mean over evaluated users.  With dask input, the frames are merged on
        (user, item) and reduced per user with dask; only the final sum and user count
        come back to the client.

    Raises
    ------
    ValueError
        If a column is missing, ``k < 1``, ``relevant`` is empty or a rank is not a
        positive integer.
"""


def _check_k(k):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}.")
    return int(k)


def _check_frame(df, name, required):
    if not isinstance(df, pd.DataFrame) and not (
            dask.is_dask_collection(df) and hasattr(df, "columns") and hasattr(df, "merge")):
        raise TypeError(f"{name} must be a pandas or dask DataFrame, got {type(df).__name__}.")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has columns "
                         f"{[str(c) for c in df.columns]}.")


def _top_k_by_rank(df, k):
    """Rows with ``rank <= k`` (per partition); ranks must be positive integers."""
    r = df[_RANK]
    top = df[r <= k]
    bad = top[_RANK]
    if len(bad) and ((bad < 1).any() or (bad != np.floor(bad)).any()):
        raise ValueError("recommendations has ranks that are not positive integers "
                         f"(e.g. {bad[(bad < 1) | (bad != np.floor(bad))].iloc[0]!r}); rank 1 "
                         "is the best item of a user.")
    return top.astype({_RANK: np.float64})


def _top_k_by_score(df, k, user_col, item_col):
    """Rank each user's items by descending score, ties by ascending item (per partition:
    all rows of a user must be in one partition)."""
    df = df.sort_values([user_col, _SCORE, item_col], ascending=[True, False, True],
                        na_position="last", kind="mergesort")
    rank = df.groupby(user_col, sort=False).cumcount().to_numpy() + 1
    out = pd.DataFrame({user_col: df[user_col].to_numpy(), item_col: df[item_col].to_numpy(),
                        _RANK: rank.astype(np.float64)})
    return out[out[_RANK] <= k]


def _user_stats(df, user_col, item_col):
    """Per-user statistics from relevant pairs joined with their rank (NaN: not in the top
    k).  All rows of a user must be in this frame.  Returns one row per user with
    ``n_relevant``, ``n_hits``, ``ap`` (sum of precision at each hit) and ``dcg``."""
    # duplicate relevant pairs, or items recommended twice, count once at the best rank
    df = df.sort_values(_RANK, na_position="last", kind="mergesort")
    df = df.drop_duplicates([user_col, item_col], keep="first")
    n_relevant = df.groupby(user_col, sort=False).size()
    hits = df[df[_RANK].notna()].sort_values([user_col, _RANK], kind="mergesort")
    rank = hits[_RANK].to_numpy(dtype=np.float64)
    order = hits.groupby(user_col, sort=False).cumcount().to_numpy() + 1.0  # hits so far
    per_hit = pd.DataFrame({"n_hits": np.ones_like(rank), "ap": order / rank,
                            "dcg": 1.0 / np.log2(rank + 1.0)}, index=hits[user_col].to_numpy())
    per_user = per_hit.groupby(level=0, sort=False).sum()
    out = pd.DataFrame({"n_relevant": n_relevant.astype(np.float64)})
    out = out.join(per_user, how="left").fillna(0.0)
    out.index.name = user_col
    return out[["n_relevant", "n_hits", "ap", "dcg"]]


def _ranking_stats(recommendations, relevant, k, user_col, item_col):
    """Shared by the ranking metrics: validate, keep each user's top k, merge with the
    relevant pairs on (user, item) and reduce per user.

    Returns ``(stats, k)`` where ``stats`` (pandas, or dask for any dask input) has one row
    per distinct user of ``relevant`` and the columns of :func:`_user_stats`.
    """
    k = _check_k(k)
    _check_frame(relevant, "relevant", [user_col, item_col])
    _check_frame(recommendations, "recommendations", [user_col, item_col])
    by_score = _RANK not in recommendations.columns
    if by_score and _SCORE not in recommendations.columns:
        raise ValueError(f"recommendations is missing column(s) ['{_RANK}'] (or a "
                         f"'{_SCORE}' column to rank by); it has columns "
                         f"{[str(c) for c in recommendations.columns]}.")
    order_col = _SCORE if by_score else _RANK
    kind = recommendations[order_col].dtype.kind
    if kind not in "biuf":
        raise ValueError(f"recommendations column '{order_col}' must be numeric, got dtype "
                         f"{recommendations[order_col].dtype}.")

    recs = recommendations[[user_col, item_col, order_col]]
    rel = relevant[[user_col, item_col]]
    for col in (user_col, item_col):  # same key dtypes on both sides (hash partitioning)
        a, b = recs[col].dtype, rel[col].dtype
        if a != b and a.kind in "iuf" and b.kind in "iuf":
            common = np.result_type(a, b)
            recs, rel = recs.astype({col: common}), rel.astype({col: common})

    lazy = dask.is_dask_collection(recs) or dask.is_dask_collection(relevant)
    if not lazy:
        if len(rel) == 0:
            raise ValueError("relevant is empty: there are no users to evaluate.")
        top = (_top_k_by_score(recs, k, user_col, item_col) if by_score
               else _top_k_by_rank(recs, k))
        joined = rel.merge(top, on=[user_col, item_col], how="left")
        return _user_stats(joined, user_col, item_col), k

    import dask.dataframe as dd

    recs, rel = (x if dask.is_dask_collection(x) else dd.from_pandas(x, npartitions=1)
                 for x in (recs, rel))
    if by_score:
        top = recs.shuffle(on=user_col).map_partitions(
            _top_k_by_score, k, user_col, item_col,
            meta=_top_k_by_score(recs._meta, k, user_col, item_col))
    else:
        top = recs.map_partitions(_top_k_by_rank, k, meta=_top_k_by_rank(recs._meta, k))
    joined = rel.merge(top, on=[user_col, item_col], how="left")
    stats = joined.shuffle(on=user_col).map_partitions(
        _user_stats, user_col, item_col, meta=_user_stats(joined._meta, user_col, item_col))
    return stats, k


def _mean_over_users(recommendations, relevant, k, user_col, item_col, score):
    """Mean of ``score(stats, k)`` (a per-user pandas Series) over the evaluated users."""
    stats, k = _ranking_stats(recommendations, relevant, k, user_col, item_col)
    if dask.is_dask_collection(stats):
        per_user = stats.map_partitions(score, k, meta=pd.Series([], dtype=np.float64))
        total, n_users = compute(per_user.sum(), per_user.count())
    else:
        per_user = score(stats, k)
        total, n_users = per_user.sum(), len(per_user)
    if n_users == 0:
        raise ValueError("relevant is empty: there are no users to evaluate.")
    return float(total) / int(n_users)


def _precision(stats, k):
    return stats["n_hits"] / k


def _recall(stats, k):
    return stats["n_hits"] / stats["n_relevant"]


def _average_precision(stats, k):
    return stats["ap"] / stats["n_relevant"].clip(upper=k)


def _ndcg(stats, k):
    # ideal_dcg[m] = sum_{i=1..m} 1 / log2(i + 1)
    ideal_dcg = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2.0, k + 2.0)))])
    m = stats["n_relevant"].clip(upper=k).to_numpy(dtype=np.int64)
    return pd.Series(stats["dcg"].to_numpy() / ideal_dcg[m], index=stats.index)


def precision_at_k(recommendations, relevant, k=10, *, user_col="user_id", item_col="item_id"):
    """Precision at k: the fraction of a user's top-k recommendations that are relevant,
    ``|hits| / k`` (the divisor is k even when fewer than k items are recommended),
    averaged over the users of ``relevant``.
    """
    return _mean_over_users(recommendations, relevant, k, user_col, item_col, _precision)


def recall_at_k(recommendations, relevant, k=10, *, user_col="user_id", item_col="item_id"):
    """Recall at k: the fraction of a user's relevant items found in the top-k
    recommendations, ``|hits| / |rel_u|``, averaged over the users of ``relevant``.
    """
    return _mean_over_users(recommendations, relevant, k, user_col, item_col, _recall)


def map_at_k(recommendations, relevant, k=10, *, user_col="user_id", item_col="item_id"):
    """Mean average precision at k: for each user, the sum of the precision at the rank of
    every hit in the top k, divided by ``min(k, |rel_u|)``; averaged over the users of
    ``relevant``.
    """
    return _mean_over_users(recommendations, relevant, k, user_col, item_col,
                            _average_precision)


def ndcg_at_k(recommendations, relevant, k=10, *, user_col="user_id", item_col="item_id"):
    """Normalised discounted cumulative gain at k (binary relevance): for each user,
    ``sum over hits of 1 / log2(rank + 1)`` divided by its ideal value
    ``sum_{i=1..min(k, |rel_u|)} 1 / log2(i + 1)``; averaged over the users of
    ``relevant``.
    """
    return _mean_over_users(recommendations, relevant, k, user_col, item_col, _ndcg)


for _f in (precision_at_k, recall_at_k, map_at_k, ndcg_at_k):
    _f.__doc__ += _RANKING_PARAMS
del _f
