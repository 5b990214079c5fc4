"""dmlkit.metrics: rmse and the ranking metrics, on pandas / NumPy and dask input."""

import math

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error

from dmlkit.metrics import map_at_k, ndcg_at_k, precision_at_k, recall_at_k, rmse

RANKING = {"precision": precision_at_k, "recall": recall_at_k, "map": map_at_k,
           "ndcg": ndcg_at_k}


@pytest.fixture(autouse=True)
def _local_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


# --------------------------------------------------------------------------------------
# pure-Python reference (Spark MLlib RankingMetrics, binary relevance)
# --------------------------------------------------------------------------------------

def reference(lists, relevant, k):
    """``lists``: user -> items best first; ``relevant``: user -> set of items."""
    out = {name: [] for name in RANKING}
    for user, rel in relevant.items():
        top = lists.get(user, [])[:k]
        hits, ap, dcg = 0, 0.0, 0.0
        for pos, item in enumerate(top, start=1):
            if item in rel:
                hits += 1
                ap += hits / pos
                dcg += 1.0 / math.log2(pos + 1)
        idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(rel)) + 1))
        out["precision"].append(hits / k)
        out["recall"].append(hits / len(rel))
        out["map"].append(ap / min(k, len(rel)))
        out["ndcg"].append(dcg / idcg)
    return {name: sum(v) / len(v) for name, v in out.items()}


def random_case(rng, n_users=25, n_items=30, max_list=15):
    """Long-format recommendations (shuffled rows; some users have none, some are not in
    ``relevant``) and relevant pairs with duplicates; plus the same data as Python
    structures for the reference."""
    lists, rows = {}, []
    for user in range(n_users):
        if rng.random() < 0.2:  # no recommendations for this user
            continue
        items = [int(i) for i in rng.permutation(n_items)[:rng.integers(1, max_list + 1)]]
        lists[user] = items
        rows += [(user, item, rank) for rank, item in enumerate(items, start=1)]
    recs = pd.DataFrame(rows, columns=["user_id", "item_id", "rank"])
    recs = recs.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)

    evaluated = rng.choice(n_users + 5, size=n_users - 3, replace=False)  # some not in recs
    pairs = [(int(u), int(i)) for u in evaluated
             for i in rng.choice(n_items, size=rng.integers(1, 12), replace=False)]
    pairs += [pairs[j] for j in rng.integers(len(pairs), size=10)]  # duplicates count once
    rel = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    rel["rating"] = rng.random(len(rel))  # extra columns are ignored
    rel = rel.sample(frac=1.0, random_state=1).reset_index(drop=True)
    rel_sets = {}
    for u, i in pairs:
        rel_sets.setdefault(u, set()).add(i)
    return recs, rel, lists, rel_sets


# --------------------------------------------------------------------------------------
# ranking metrics
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 10, 20])
def test_ranking_metrics_match_reference_pandas_and_dask(rng, k):
    recs, rel, lists, rel_sets = random_case(rng)
    expected = reference(lists, rel_sets, k)
    drecs, drel = dd.from_pandas(recs, npartitions=4), dd.from_pandas(rel, npartitions=3)
    for name, metric in RANKING.items():
        got_pd = metric(recs, rel, k)
        got_dd = metric(drecs, drel, k)
        assert isinstance(got_pd, float) and isinstance(got_dd, float)
        assert got_pd == pytest.approx(expected[name], abs=1e-12, rel=1e-12), name
        assert got_dd == pytest.approx(expected[name], abs=1e-12, rel=1e-12), name


def test_ranking_metrics_dask_threaded_and_mixed_inputs(rng, scheduler):
    recs, rel, lists, rel_sets = random_case(rng)
    expected = reference(lists, rel_sets, 10)
    drecs, drel = dd.from_pandas(recs, npartitions=5), dd.from_pandas(rel, npartitions=2)
    for name, metric in RANKING.items():
        assert metric(drecs, rel) == pytest.approx(expected[name], abs=1e-12), name
        assert metric(recs, drel) == pytest.approx(expected[name], abs=1e-12), name


def counting_scheduler(calls):
    def get(dsk, keys, **kwargs):
        calls.append(keys)
        return dask.get(dsk, keys, **kwargs)

    return get


def test_ranking_metrics_dask_stay_lazy_until_one_compute(rng):
    recs, rel, lists, rel_sets = random_case(rng)
    drecs, drel = dd.from_pandas(recs, npartitions=3), dd.from_pandas(rel, npartitions=2)
    scored = drecs.drop(columns="rank").assign(score=-drecs["rank"])
    calls = []
    with dask.config.set(scheduler=counting_scheduler(calls)):
        assert map_at_k(drecs, drel) == pytest.approx(reference(lists, rel_sets, 10)["map"])
        assert len(calls) == 1  # merge, per-user stats and the mean: a single compute
        ndcg_at_k(scored, drel, k=3)
        assert len(calls) == 2


def test_hand_computed_single_user():
    rel = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"]})
    recs = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "c", "b"], "rank": [1, 2, 3]})
    expected = {"precision": 2 / 3, "recall": 1.0, "map": (1 / 1 + 2 / 3) / 2,
                "ndcg": (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))}
    for data in [(recs, rel), (dd.from_pandas(recs, npartitions=2),
                               dd.from_pandas(rel, npartitions=2))]:
        for name, metric in RANKING.items():
            assert metric(*data, k=3) == pytest.approx(expected[name], abs=1e-15), name
    # k=1: only "a", a hit
    assert precision_at_k(recs, rel, k=1) == 1.0
    assert recall_at_k(recs, rel, k=1) == 0.5
    assert map_at_k(recs, rel, k=1) == 1.0  # divided by min(k, |rel|) = 1
    assert ndcg_at_k(recs, rel, k=1) == 1.0
    # k=2: "a", "c"; precision still divides by k when the list is longer or shorter
    assert precision_at_k(recs, rel, k=2) == 0.5
    assert precision_at_k(recs, rel, k=10) == pytest.approx(2 / 10)
    assert map_at_k(recs, rel, k=2) == pytest.approx(1 / 2)


def test_users_without_recommendations_score_zero_and_extra_users_are_ignored():
    rel = pd.DataFrame({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 12]})
    recs = pd.DataFrame({"user_id": [1, 1, 9, 9], "item_id": [10, 11, 10, 12],
                         "rank": [1, 2, 1, 2]})
    # user 1 is perfect, users 2 and 3 have no recommendations, user 9 is not evaluated
    for data in [(recs, rel), (dd.from_pandas(recs, npartitions=2),
                               dd.from_pandas(rel, npartitions=3))]:
        assert precision_at_k(*data, k=2) == pytest.approx(1 / 3)
        assert recall_at_k(*data, k=2) == pytest.approx(1 / 3)
        assert map_at_k(*data, k=2) == pytest.approx(1 / 3)
        assert ndcg_at_k(*data, k=2) == pytest.approx(1 / 3)


def test_rows_beyond_k_duplicates_and_custom_columns():
    rel = pd.DataFrame({"u": [0, 0, 0, 0], "i": [5, 5, 6, 7]})  # (0, 5) twice: counts once
    recs = pd.DataFrame({"u": [0, 0, 0, 0], "i": [5, 8, 6, 5], "rank": [1, 2, 4, 3]})
    # with k=3, "6" at rank 4 is ignored; "5" listed twice counts once at rank 1
    kw = dict(k=3, user_col="u", item_col="i")
    assert precision_at_k(recs, rel, **kw) == pytest.approx(1 / 3)
    assert recall_at_k(recs, rel, **kw) == pytest.approx(1 / 3)
    assert map_at_k(recs, rel, **kw) == pytest.approx(1 / 3)
    drecs, drel = dd.from_pandas(recs, npartitions=2), dd.from_pandas(rel, npartitions=2)
    assert recall_at_k(drecs, drel, **kw) == pytest.approx(1 / 3)
    assert ndcg_at_k(drecs, drel, **kw) == pytest.approx(ndcg_at_k(recs, rel, **kw))


def test_rank_from_score(rng):
    recs, rel, lists, rel_sets = random_case(rng)
    # scores with ties (ties are broken by ascending item id) and a NaN score (ranks last)
    scored = recs.drop(columns="rank").assign(score=rng.integers(0, 4, len(recs)) / 2.0)
    scored.loc[0, "score"] = np.nan
    by_score = {}
    for user, group in scored.groupby("user_id"):
        group = group.assign(key=group["score"].fillna(-np.inf))
        pairs = zip(group["key"], group["item_id"], strict=True)
        ordered = sorted(pairs, key=lambda t: (-t[0], t[1]))
        by_score[user] = [item for _, item in ordered]
    dscored = dd.from_pandas(scored, npartitions=4)
    for k in (3, 10):
        expected = reference(by_score, rel_sets, k)
        for name, metric in RANKING.items():
            assert metric(scored, rel, k) == pytest.approx(expected[name], abs=1e-12), name
            assert metric(dscored, rel, k) == pytest.approx(expected[name], abs=1e-12), name
    # a rank column wins over a score column
    both = recs.assign(score=-recs["rank"].to_numpy()[::-1])
    assert ndcg_at_k(both, rel) == pytest.approx(reference(lists, rel_sets, 10)["ndcg"])


def test_hand_computed_rank_from_score_ties():
    rel = pd.DataFrame({"user_id": [0], "item_id": [1]})
    recs = pd.DataFrame({"user_id": [0, 0, 0], "item_id": [3, 1, 2],
                         "score": [0.5, 0.5, 0.9]})
    # order: 2 (0.9), then 1 before 3 (tie, ascending item id) -> the hit is at rank 2
    assert ndcg_at_k(recs, rel, k=3) == pytest.approx(1 / math.log2(3))
    assert precision_at_k(recs, rel, k=1) == 0.0
    assert recall_at_k(dd.from_pandas(recs, npartitions=2), rel, k=2) == 1.0


@pytest.mark.parametrize("lazy", [False, True])
def test_ranking_bad_input(lazy):
    rel = pd.DataFrame({"user_id": [0, 1], "item_id": [1, 2]})
    recs = pd.DataFrame({"user_id": [0, 1], "item_id": [1, 3], "rank": [1, 1]})
    wrap = (lambda df: dd.from_pandas(df, npartitions=2)) if lazy else (lambda df: df)
    for metric in RANKING.values():
        with pytest.raises(ValueError, match=r"recommendations is missing column\(s\) \['item"):
            metric(wrap(recs.drop(columns="item_id")), wrap(rel))
        with pytest.raises(ValueError, match=r"relevant is missing column\(s\) \['user_id'\]"):
            metric(wrap(recs), wrap(rel.drop(columns="user_id")))
        with pytest.raises(ValueError, match=r"missing column\(s\) \['rank'\].*'score'"):
            metric(wrap(recs.drop(columns="rank")), wrap(rel))
        with pytest.raises(ValueError, match=r"missing column\(s\) \['uid'\]"):
            metric(wrap(recs), wrap(rel), user_col="uid")
        for k in (0, -1, 2.5, True, "3"):
            with pytest.raises(ValueError, match="k must be an integer >= 1"):
                metric(wrap(recs), wrap(rel), k=k)
        with pytest.raises(ValueError, match="relevant is empty"):
            metric(wrap(recs), wrap(rel.iloc[:0]))
    with pytest.raises(ValueError, match="ranks that are not positive integers"):
        ndcg_at_k(wrap(recs.assign(rank=[0, 1])), wrap(rel))
    with pytest.raises(ValueError, match="ranks that are not positive integers"):
        map_at_k(wrap(recs.assign(rank=[1.5, 1.0])), wrap(rel))
    with pytest.raises(ValueError, match="'rank' must be numeric"):
        map_at_k(wrap(recs.assign(rank=["a", "b"])), wrap(rel))
    with pytest.raises(TypeError, match="must be a pandas or dask DataFrame"):
        precision_at_k(recs.to_numpy(), rel)


# --------------------------------------------------------------------------------------
# rmse
# --------------------------------------------------------------------------------------

def test_rmse_numpy_pandas_dask_match_sklearn(rng):
    y = rng.normal(size=101)
    p = y + rng.normal(scale=0.3, size=101)
    w = rng.random(101)
    expected = mean_squared_error(y, p) ** 0.5
    expected_w = mean_squared_error(y, p, sample_weight=w) ** 0.5
    dy, dp, dw = (da.from_array(v, chunks=17) for v in (y, p, w))
    sy, sp = dd.from_pandas(pd.Series(y), npartitions=4), dd.from_pandas(pd.Series(p), 3)
    cases = [(y, p), (pd.Series(y), pd.Series(p, index=np.arange(101)[::-1])), (dy, dp),
             (sy, sp), (y, dp), (sy, p), (dy, sp), (list(y), p.reshape(-1, 1))]
    for yt, yp in cases:
        got = rmse(yt, yp)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, rel=1e-12)
    for yt, yp, sw in [(y, p, w), (dy, dp, dw), (y, dp, w), (sy, p, dw), (dy, p, pd.Series(w))]:
        assert rmse(yt, yp, sample_weight=sw) == pytest.approx(expected_w, rel=1e-12)
    assert rmse(dy, dp, sample_weight=2.0) == pytest.approx(expected, rel=1e-12)
    assert rmse(np.arange(4), np.arange(4)) == 0.0


def test_rmse_dask_is_lazy_until_one_compute(rng):
    y = da.from_array(rng.normal(size=60), chunks=20)
    calls = []
    with dask.config.set(scheduler=counting_scheduler(calls)):
        assert rmse(y, y + 1.0) == pytest.approx(1.0)
    assert len(calls) == 1  # one pass computes the sums and the checks together


@pytest.mark.parametrize("lazy", [False, True])
def test_rmse_bad_input(lazy):
    wrap = (lambda v: da.from_array(np.asarray(v, dtype=float), chunks=2)) if lazy else np.asarray
    y = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match=r"y_pred contains NaN \(1 value\(s\)\).*drop those"):
        rmse(wrap(y), wrap([1.0, np.nan, 3.0, 4.0]))
    with pytest.raises(ValueError, match="y_pred contains infinity"):
        rmse(wrap(y), wrap([1.0, np.inf, 3.0, 4.0]))
    with pytest.raises(ValueError, match="y_true contains NaN or infinity"):
        rmse(wrap([np.nan, 2.0, 3.0, 4.0]), wrap(y))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[4, 3\]"):
        rmse(wrap(y), wrap(y[:3]))
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[4, 4, 2\]"):
        rmse(wrap(y), wrap(y), sample_weight=wrap([1.0, 1.0]))
    with pytest.raises(ValueError, match="0 sample"):
        rmse(wrap([]), wrap([]))
    with pytest.raises(ValueError, match="Negative values in sample_weight"):
        rmse(wrap(y), wrap(y), sample_weight=wrap([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="at least one non-zero weight"):
        rmse(wrap(y), wrap(y), sample_weight=wrap([0.0] * 4))
    with pytest.raises(ValueError, match="1-dimensional"):
        rmse(np.ones((2, 2)), wrap([1.0, 1.0]))
    with pytest.raises(TypeError, match="numeric"):
        rmse(pd.Series(["a", "b", "c", "d"]), wrap(y))
