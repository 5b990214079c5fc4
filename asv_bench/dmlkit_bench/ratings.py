"""Ratings for ALS: train/test splits written once as parquet, and the quality measures
computed the same way from every system's factors.

- Synthetic: ``dmlkit.datasets.make_ratings`` (planted rank 8, noise 0.1, Zipf item
  popularity, seed 0), explicit "stars" or implicit interaction counts.
- MovieLens 100k (``DMLKIT_BENCH_MOVIELENS``, default
  ``<repo>/../shared/data/movielens-100k/ratings.parquet``); in implicit mode the star
  ratings are the interaction strengths.

10% of the ratings (drawn with a fixed seed) are held out.  Columns ``user_id`` (int64),
``item_id`` (int64), ``rating`` (float32).

On synthetic implicit data the precision@10 of every system is below the popularity
baseline: ``make_ratings`` draws *which* items a user has from item popularity alone
(the planted factors only set the counts), so it compares systems, not absolute skill.
"""

from __future__ import annotations

import os

import numpy as np

from .settings import ALS_ITEMS, ALS_RATINGS, ALS_USERS, MOVIELENS, data_dir

ALS_SEED = 0
TEST_FRACTION = 0.1
EVAL_USERS = 2000  # users sampled for precision@10
PLANTED_RANK, NOISE, POPULARITY = 8, 0.1, 1.0
MODES = ("explicit", "implicit")


def _write_parquet(df, path):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        df.to_parquet(tmp, index=False, row_group_size=1 << 20)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _split(df, test_fraction, seed):
    """(train, test): each rating held out with probability ``test_fraction``."""
    rng = np.random.default_rng([seed, 90210])
    test = rng.random(len(df)) < test_fraction
    return (df[~test].reset_index(drop=True), df[test].reset_index(drop=True))


def synthetic_paths(n_ratings=ALS_RATINGS, n_users=ALS_USERS, n_items=ALS_ITEMS, *,
                    implicit=False, rank=PLANTED_RANK, noise=NOISE, popularity=POPULARITY,
                    seed=ALS_SEED, test_fraction=TEST_FRACTION):
    """(train, test) parquet paths of a ``make_ratings`` data set, generated once.

    Columns ``user_id`` (int64), ``item_id`` (int64), ``rating`` (float32).
    """
    kind = "implicit" if implicit else "explicit"
    stem = (f"ratings_{kind}_{n_users}u_{n_items}i_{n_ratings}r_rank{rank}_noise{noise:g}_"
            f"pop{popularity:g}_s{seed}_test{test_fraction:g}")
    paths = tuple(os.path.join(data_dir(), f"{stem}_{p}.parquet") for p in ("train", "test"))
    if all(os.path.exists(p) for p in paths):
        return paths
    import dask
    from dmlkit.datasets import make_ratings

    ddf = make_ratings(n_users, n_items, n_ratings, rank=rank, noise=noise,
                       popularity=popularity, implicit=implicit, random_state=seed)
    with dask.config.set(scheduler="threads"):
        df = ddf.compute().reset_index(drop=True)
    for part, path in zip(_split(df, test_fraction, seed), paths, strict=True):
        _write_parquet(part, path)
    return paths


def movielens_paths(path=MOVIELENS, *, seed=ALS_SEED, test_fraction=TEST_FRACTION):
    """(train, test) parquet paths of a MovieLens file's 90/10 split, or None if absent."""
    if not os.path.exists(path):
        return None
    st = os.stat(path)
    name = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    parent = os.path.basename(os.path.dirname(os.path.normpath(path)))
    stem = f"movielens_{parent}_{name}_{st.st_size}_s{seed}_test{test_fraction:g}"
    paths = tuple(os.path.join(data_dir(), f"{stem}_{p}.parquet") for p in ("train", "test"))
    if all(os.path.exists(p) for p in paths):
        return paths
    from dmlkit.datasets import load_movielens

    df = load_movielens(path).compute()[["user_id", "item_id", "rating"]]
    df = df.astype({"user_id": np.int64, "item_id": np.int64, "rating": np.float32})
    for part, out in zip(_split(df.reset_index(drop=True), test_fraction, seed), paths,
                         strict=True):
        _write_parquet(part, out)
    return paths


class RatingsData:
    """One train/test split, loaded lazily, with the pieces every system needs.

    ``user_ids`` / ``item_ids``: the sorted distinct ids of the training ratings; factors
    of every system are returned aligned to them (row j belongs to id j).
    """

    def __init__(self, name, train_path, test_path, implicit):
        self.name = name
        self.train_path = train_path
        self.test_path = test_path
        self.implicit = bool(implicit)
        self.mode = "implicit" if implicit else "explicit"
        self._train = self._test = self._codes = self._seen = None

    @property
    def train(self):
        if self._train is None:
            import pandas as pd

            self._train = pd.read_parquet(self.train_path)
        return self._train

    @property
    def test(self):
        if self._test is None:
            import pandas as pd

            self._test = pd.read_parquet(self.test_path)
        return self._test

    def codes(self):
        """(user_ids, item_ids, user codes, item codes) of the training ratings."""
        if self._codes is None:
            u = self.train["user_id"].to_numpy()
            i = self.train["item_id"].to_numpy()
            uids, ucodes = np.unique(u, return_inverse=True)
            iids, icodes = np.unique(i, return_inverse=True)
            self._codes = (uids, iids, ucodes.astype(np.int32), icodes.astype(np.int32))
        return self._codes

    @property
    def user_ids(self):
        return self.codes()[0]

    @property
    def item_ids(self):
        return self.codes()[1]

    def csr(self, values):
        """Users x items CSR (codes) of the training pairs holding ``values``."""
        import scipy.sparse as sp

        uids, iids, uc, ic = self.codes()
        m = sp.csr_matrix((np.asarray(values, dtype=np.float32), (uc, ic)),
                          shape=(len(uids), len(iids)))
        m.sum_duplicates()
        m.sort_indices()
        return m

    def seen(self):
        if self._seen is None:
            self._seen = self.csr(np.ones(len(self.train), dtype=np.float32))
        return self._seen

    @property
    def key(self):
        return (self.train_path, self.implicit)

    def head(self, n=5000):
        return self.train.iloc[:n].copy()

    def nbytes(self) -> int:
        """Bytes of the training frame in memory."""
        return int(self.train.memory_usage(index=False, deep=True).sum())

    def describe(self):
        tr, te = self.train, self.test
        return (f"{self.name} ({self.mode}): {len(tr):,} training + {len(te):,} held-out "
                f"ratings, {len(self.user_ids):,} users x {len(self.item_ids):,} items "
                f"(density {len(tr) / (len(self.user_ids) * len(self.item_ids)):.2%})")

    def release(self):
        self._train = self._test = self._codes = self._seen = None


def synthetic_data(implicit, n_ratings=ALS_RATINGS, n_users=ALS_USERS, n_items=ALS_ITEMS,
                   **kw):
    train, test = synthetic_paths(n_ratings, n_users, n_items, implicit=implicit, **kw)
    return RatingsData(f"synthetic {n_ratings:,} ratings", train, test, implicit)


def movielens_data(implicit, path=MOVIELENS, **kw):
    paths = movielens_paths(path, **kw)
    if paths is None:
        return None
    return RatingsData("MovieLens 100k" if "100k" in path else "MovieLens", *paths, implicit)


# ----------------------------------------------------------------------------------
# quality, computed the same way from every system's factors
# ----------------------------------------------------------------------------------
def align(ids, F, want):
    """Rows of ``F`` (factors of ``ids``) reordered to ``want``; unseen ids get NaN."""
    import pandas as pd

    F = np.asarray(F, dtype=np.float32)
    ids = np.asarray(ids)
    if ids.shape == want.shape and np.array_equal(ids, want):
        return F
    pos = pd.Index(ids).get_indexer(want)
    out = np.full((len(want), F.shape[1]), np.nan, dtype=np.float32)
    out[pos >= 0] = F[pos[pos >= 0]]
    return out


def heldout_rmse(data, U, V):
    """RMSE on the held-out ratings of (user, item) pairs both seen in training."""
    import pandas as pd
    from dmlkit.metrics import rmse

    test = data.test
    u = pd.Index(data.user_ids).get_indexer(test["user_id"])
    i = pd.Index(data.item_ids).get_indexer(test["item_id"])
    keep = (u >= 0) & (i >= 0)
    pred = np.einsum("ij,ij->i", U[u[keep]].astype(np.float64), V[i[keep]].astype(np.float64))
    keep_pred = np.isfinite(pred)
    r = test["rating"].to_numpy(dtype=np.float64)[keep][keep_pred]
    return float(rmse(r, pred[keep_pred]))


def precision_at_10(data, U, V, n_users=EVAL_USERS, k=10, seed=ALS_SEED):
    """Precision@k of the top-k unseen items of up to ``n_users`` held-out users (drawn
    with a fixed seed) against their held-out items (``dmlkit.metrics.precision_at_k``)."""
    import pandas as pd
    from dmlkit.metrics import precision_at_k

    test = data.test
    codes = pd.Index(data.user_ids).get_indexer(test["user_id"])
    users = np.unique(codes[codes >= 0])
    rng = np.random.default_rng([seed, 10])
    if len(users) > n_users:
        users = np.sort(rng.choice(users, n_users, replace=False))
    seen = data.seen()
    rows, cols = [], []
    Vt = np.nan_to_num(V.astype(np.float32)).T
    for s in range(0, len(users), 512):
        us = users[s:s + 512]
        S = np.nan_to_num(U[us].astype(np.float32), nan=0.0) @ Vt
        sub = seen[us]
        S[np.repeat(np.arange(len(us)), np.diff(sub.indptr)), sub.indices] = -np.inf
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        rows.append(np.repeat(us, k))
        cols.append(top.ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    recs = pd.DataFrame({"user_id": data.user_ids[rows], "item_id": data.item_ids[cols],
                         "rank": np.tile(np.arange(1, k + 1), len(users))})
    rel = test[test["user_id"].isin(data.user_ids[users])][["user_id", "item_id"]]
    return float(precision_at_k(recs, rel, k=k))


def quality(data, U, V):
    """("rmse", value) for explicit data, ("p@10", value) for implicit data."""
    if data.implicit:
        return "p@10", precision_at_10(data, U, V)
    return "rmse", heldout_rmse(data, U, V)


