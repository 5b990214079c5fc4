"""ALS on the real MovieLens 100k ratings (``../shared/data``; skipped when absent).

One 90/10 split of the rows (numpy ``default_rng(0)`` permutation of row positions).

* explicit: ``ALS(factors=10, regularization=0.1, iterations=15)`` against the figure
  Spark MLlib's ALS (same ALS-WR model, rank 10) is usually quoted at on this data set,
  RMSE about 0.92.  Measured here: 0.9162 (random_state 0; 0.9162-0.9184 over seeds
  0-2, float32 and float64 alike).  The split matters more than the seed: other split
  seeds (1-4) give 0.905-0.924, so the bound is for this split.
* implicit: every rating counts as one interaction (a user rated the movies they
  watched: all 100k rows carry that signal, and the larger held-out sets make
  precision@10 less noisy than keeping only ratings >= 4, which gave the same
  agreement at ~0.12).  dmlkit's ``ALS(implicit=True)`` and the implicit library's
  ``AlternatingLeastSquares`` fit the same Hu-Koren-Volinsky model (3 CG steps per row,
  warm-started): implicit 0.7 takes the confidence matrix as given (times its
  ``alpha``; C - 1 on the Gram side, C on the right-hand side) whereas dmlkit builds
  ``C = 1 + alpha * r`` itself, so implicit gets the matrix ``1 + alpha * r`` and
  ``alpha=1``.  Precision@10 (seen training items filtered) averaged over ten seeds:
  dmlkit 0.1886 (per seed 0.187-0.192; items solved first, the 'auto' order for
  implicit feedback; users first, the implicit library's order, gives 0.1868),
  implicit 0.1863 (per seed 0.184-0.190).
"""

from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dmlkit.metrics import precision_at_k, rmse
from dmlkit.recommendation import ALS

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "movielens-100k"
RATINGS = DATA / "ratings.parquet"
COLS = ["user_id", "item_id", "rating"]
SEEDS = tuple(range(10))
IMPLICIT = dict(factors=10, regularization=0.1, iterations=15)
ALPHA = 10.0

pytestmark = pytest.mark.skipif(not RATINGS.exists(),
                                reason=f"no MovieLens 100k copy at {RATINGS}")


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def split():
    df = pd.read_parquet(RATINGS, columns=COLS)
    assert len(df) == 100_000
    perm = np.random.default_rng(0).permutation(len(df))
    cut = int(0.9 * len(df))
    return (df.iloc[perm[:cut]].reset_index(drop=True),
            df.iloc[perm[cut:]].reset_index(drop=True))


def test_explicit_rmse_matches_spark_mllib(split):
    train, test = split
    m = ALS(factors=10, regularization=0.1, iterations=15, random_state=0).fit(train)
    pred = m.predict(test)
    known = ~np.isnan(pred)
    assert known.mean() > 0.99  # a few test items/users are not in the training 90%
    score = rmse(test["rating"][known], pred[known])
    assert score <= 0.92, score
    assert m.score(test) == pytest.approx(-score, rel=1e-12)
    # and the prediction beats the global mean by a wide margin
    mean = rmse(test["rating"], np.full(len(test), train["rating"].mean()))
    assert score < 0.85 * mean, (score, mean)


def _implicit_precision(train, test, users, items, seed):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    C = sp.csr_matrix((1.0 + ALPHA * train["rating"].to_numpy(),
                       (pd.Index(users).get_indexer(train["user_id"]),
                        pd.Index(items).get_indexer(train["item_id"]))),
                      shape=(len(users), len(items)))
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(alpha=1.0, random_state=seed, num_threads=1,
                                        **IMPLICIT)
        model.fit(C, show_progress=False)
    queries = pd.Index(users).get_indexer(test["user_id"].unique())
    queries = queries[queries >= 0]
    ids, scores = model.recommend(queries, C[queries], N=10,
                                  filter_already_liked_items=True)
    recs = pd.DataFrame({"user_id": np.repeat(users[queries], ids.shape[1]),
                         "item_id": items[ids.ravel()], "score": scores.ravel(),
                         "rank": np.tile(np.arange(1, ids.shape[1] + 1), len(queries))})
    recs = recs[np.isfinite(recs["score"])]
    return precision_at_k(recs, test, k=10)


def test_implicit_precision_matches_the_implicit_library(split):
    pytest.importorskip("implicit")
    train, test = (d[COLS].assign(rating=1.0) for d in split)  # every rating: one view
    users, items = np.sort(train["user_id"].unique()), np.sort(train["item_id"].unique())
    ours, theirs = [], []
    for seed in SEEDS:
        m = ALS(implicit=True, alpha=ALPHA, random_state=seed, **IMPLICIT).fit(train)
        recs = m.recommend(test["user_id"].unique(), n=10)
        ours.append(precision_at_k(recs, test, k=10))
        assert m.score(test) == ours[-1]
        theirs.append(_implicit_precision(train, test, users, items, seed))
    ours, theirs = float(np.mean(ours)), float(np.mean(theirs))
    # Same model and solver, different random starts: measured 0.1886 vs 0.1863 (0.1868
    # with dmlkit solving users first, as implicit does).  One
    # seed's precision has a std of ~0.0017 in either library, so the difference of two
    # 10-seed means has a std of ~0.0008: the 1% margin (0.0019) is over two of those
    # (the three seeds used before gave 0.1867 vs 0.1872: a draw, either way round).
    assert ours >= 0.99 * theirs, (ours, theirs)
    # both are well above recommending the most popular unseen movies
    popular = train["item_id"].value_counts().index.to_numpy()
    seen = train.groupby("user_id")["item_id"].agg(set)
    rows = []
    for u in test["user_id"].unique():
        top = [i for i in popular[:200] if i not in seen.get(u, set())][:10]
        rows.append(pd.DataFrame({"user_id": u, "item_id": top,
                                  "rank": np.arange(1, len(top) + 1)}))
    baseline = precision_at_k(pd.concat(rows, ignore_index=True), test, k=10)
    assert ours > 1.4 * baseline, (ours, baseline)  # measured 0.187 vs 0.110


# ------------------------------------------------------------------ solve order
ORDER_SEEDS = (0, 1, 2)


def _flip(df):
    return df.rename(columns={"user_id": "item_id", "item_id": "user_id"})[COLS]


def _rmse_by_order(train, test):
    out = {}
    for order in ("users", "items"):
        scores = []
        for seed in ORDER_SEEDS:
            m = ALS(factors=10, regularization=0.1, iterations=10, random_state=seed,
                    solve_order=order).fit(train)
            pred = m.predict(test)
            known = ~np.isnan(pred)
            scores.append(rmse(test["rating"][known], pred[known]))
        out[order] = float(np.mean(scores))
    return out, ALS(solve_order="auto")._first_side(train["user_id"].nunique(),
                                                    train["item_id"].nunique(), False) + "s"


@pytest.mark.parametrize("flipped", [False, True], ids=["movielens", "transposed"])
def test_auto_solve_order_gives_the_lower_rmse(split, flipped):
    """Explicit, rank 10, regularisation 0.1, 10 iterations, seeds 0-2.

    Split by time (the last 10% of the ratings by timestamp held out: the test pairs
    of a recommender in use, many by users and of movies with few earlier ratings),
    the order matters: measured mean RMSE, people solved first 1.0190 vs movies first
    1.0379 (MovieLens), 1.0140 vs 1.0277 (transposed); the rule ('auto': the side
    with fewer rows, the 943 people, first) picks the better one both times, and was
    better for every one of seeds 0-4.  On the random split the orders are within
    noise (seeds 0-2: 0.9189 vs 0.9188 and 0.9194 vs 0.9182; over 20 seeds the means
    differ by 0.00003 and 0.0003, the per-seed spread is 0.003): the rule must not
    lose there by more than that spread.
    """
    df = pd.read_parquet(RATINGS, columns=COLS + ["timestamp"])
    df = df.sort_values("timestamp", kind="stable")[COLS].reset_index(drop=True)
    cut = int(0.9 * len(df))
    by_time = df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)
    for (train, test), margin in ((by_time, -0.005), (split, 0.003)):
        if flipped:
            train, test = _flip(train), _flip(test)
        scores, chosen = _rmse_by_order(train, test)
        assert chosen == ("items" if flipped else "users")
        other = "items" if chosen == "users" else "users"
        assert scores[chosen] <= scores[other] + margin, (scores, chosen)
