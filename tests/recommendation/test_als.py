"""The ALS estimator on synthetic ratings: planted-model recovery, a dense NumPy ALS-WR
reference, the recorded objective, bit-for-bit determinism (partitions, blocks, row
order, schedulers), input forms and id decoding, predict / recommend / fold-in /
recommend_all / similar_*, duplicates, bad input (state kept), score, pickling and
scikit-learn model selection, the array-API kernels, nonnegative factors and
out-of-core input (parquet, cache=False, tiny blocks)."""

import copy
import pickle

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold

import dmlkit
from dmlkit.datasets import make_ratings
from dmlkit.exceptions import DmlkitWarning
from dmlkit.metrics import precision_at_k, rmse
from dmlkit.recommendation import ALS

RANK = 4
# make_ratings' explicit ratings are clip(3 + U V^T + noise): the offset 3 is one more
# rank-one term (ALS has no bias), so the planted model has rank RANK + 1.
K = RANK + 1
N_USERS, N_ITEMS, N_RATINGS = 300, 150, 6000
REG = 0.03
U, I, R = "user_id", "item_id", "rating"


@pytest.fixture(autouse=True)
def _threads():
    # the threaded scheduler unless a test sets up a client of its own
    with dask.config.set(scheduler="threads"):
        yield


def planted(implicit=False, seed=0):
    df, Uf, Vf = make_ratings(N_USERS, N_ITEMS, N_RATINGS, rank=RANK, noise=0.05,
                              implicit=implicit, random_state=seed, return_factors=True)
    return df.compute().reset_index(drop=True), Uf, Vf


@pytest.fixture(scope="module")
def ratings():
    return planted()[0]


@pytest.fixture(scope="module")
def split(ratings):
    test = np.random.default_rng(0).random(len(ratings)) < 0.1
    return ratings[~test].reset_index(drop=True), ratings[test].reset_index(drop=True)


@pytest.fixture(scope="module")
def implicit_ratings():
    return planted(implicit=True)[0]


def als(**kw):
    kw = {"factors": K, "regularization": REG, "iterations": 8, "random_state": 0,
          "dtype": "float64", **kw}
    return ALS(**kw)


@pytest.fixture(scope="module")
def fitted(split):
    """Explicit float64 model fitted on the training split (do not modify it)."""
    with dask.config.set(scheduler="threads"):
        return als(iterations=10).fit(split[0])


@pytest.fixture(scope="module")
def fitted_implicit(implicit_ratings):
    with dask.config.set(scheduler="threads"):
        return als(implicit=True, alpha=2.0, regularization=0.1, iterations=6,
                   factors=8).fit(implicit_ratings)


def same_factors(a, b):
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    np.testing.assert_array_equal(a.user_ids_, b.user_ids_)
    np.testing.assert_array_equal(a.item_ids_, b.item_ids_)


def codes(model, df):
    return (pd.Index(model.user_ids_).get_indexer(df[U]),
            pd.Index(model.item_ids_).get_indexer(df[I]))


# ------------------------------------------------------------------ dense references
def dense(df, n_users, n_items, ucodes=None, icodes=None):
    u = df[U].to_numpy() if ucodes is None else ucodes
    i = df[I].to_numpy() if icodes is None else icodes
    r = df[R].to_numpy(np.float64) if R in df else np.ones(len(df))
    return sp.csr_matrix((r, (u, i)), shape=(n_users, n_items))


def solve_rows(M, Y, reg, implicit=False, alpha=1.0):
    """Exact least-squares solve of every row of CSR ``M`` against Y (np.linalg.solve)."""
    Y = Y.astype(np.float64)
    k = Y.shape[1]
    out = np.zeros((M.shape[0], k))
    YtY = Y.T @ Y
    for u in range(M.shape[0]):
        idx = M.indices[M.indptr[u]:M.indptr[u + 1]]
        r = M.data[M.indptr[u]:M.indptr[u + 1]]
        if len(idx) == 0:
            continue
        Yi = Y[idx]
        if implicit:
            c = 1 + alpha * r
            A = YtY + Yi.T @ ((c - 1)[:, None] * Yi) + reg * np.eye(k)
            b = Yi.T @ c
        else:
            A = Yi.T @ Yi + reg * len(idx) * np.eye(k)
            b = Yi.T @ r
        out[u] = np.linalg.solve(A, b)
    return out


def reference_als_wr(M, X, Y, reg, iterations, first="users"):
    for _ in range(iterations):
        if first == "users":
            X = solve_rows(M, Y, reg)
        Y = solve_rows(M.T.tocsr(), X, reg)
        if first == "items":
            X = solve_rows(M, Y, reg)
    return X, Y


def explicit_objective(M, X, Y, reg):
    M = M.tocoo()
    pred = np.einsum("ij,ij->i", X[M.row], Y[M.col])
    nu, ni = np.diff(M.tocsr().indptr), np.diff(M.tocsc().indptr)
    pen = reg * (nu @ (X ** 2).sum(1) + ni @ (Y ** 2).sum(1))
    return (((M.data - pred) ** 2).sum() + pen) / M.nnz


def implicit_objective(M, X, Y, reg, alpha):
    P = X @ Y.T
    C = np.ones_like(P)
    T = np.zeros_like(P)
    M = M.tocoo()
    C[M.row, M.col] += alpha * M.data
    T[M.row, M.col] = 1.0
    return ((C * (T - P) ** 2).sum() + reg * ((X ** 2).sum() + (Y ** 2).sum())) / M.nnz


# ------------------------------------------------------------------ planted model
@pytest.mark.parametrize("seed", [0, 1])
def test_explicit_recovers_the_planted_model(seed):
    # denser than the other tests' data (33 ratings a user): a held-out error well below
    # the ratings' spread, whatever the start (measured over 8 seeds: 0.171-0.173)
    df, Uf, Vf = make_ratings(N_USERS, N_ITEMS, 10_000, rank=RANK, noise=0.05,
                              random_state=0, return_factors=True)
    df = df.compute().reset_index(drop=True)
    test = np.random.default_rng(0).random(len(df)) < 0.1
    train, test = df[~test], df[test]
    m = als(regularization=0.02, iterations=15, random_state=seed).fit(train)
    train_rmse = rmse(train[R], m.predict(train))
    test_pred = m.predict(test)
    known = ~np.isnan(test_pred)
    assert known.mean() > 0.95
    test_rmse = rmse(test[R][known], test_pred[known])
    std = float(test[R].std())
    assert std > 0.85
    assert train_rmse < 0.15, train_rmse
    assert test_rmse < 0.25 * std, (test_rmse, std)
    # every cell of the matrix (80% never rated) against the noiseless planted ratings
    # clip(3 + U V^T, 1, 5): measured 0.144-0.145 over 4 seeds, spread 0.895
    truth = np.clip(3 + Uf @ Vf.T, 1, 5)
    np.testing.assert_array_equal(m.user_ids_, np.arange(N_USERS))
    np.testing.assert_array_equal(m.item_ids_, np.arange(N_ITEMS))
    full = m.user_factors_ @ m.item_factors_.T
    assert rmse(truth.ravel(), full.ravel()) < 0.25 * truth.std()
    # one factor too few cannot represent the offset: the planted rank is RANK + 1
    short = als(factors=RANK, regularization=0.02, iterations=15).fit(train)
    assert rmse(train[R], short.predict(train)) > 2 * train_rmse


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(), dict(nonnegative=True), dict(implicit=True),
                                dict(implicit=True, nonnegative=True)],
                         ids=["explicit", "explicit-nnls", "implicit", "implicit-nnls"])
def test_training_loss_never_increases(ratings, implicit_ratings, kw, dtype):
    # Every half-step minimises the objective over one side (exact solve; CG warm-started
    # at the previous factors minimises over a Krylov space that contains the start; the
    # NNLS descent starts at the previous factors): the recorded objective cannot rise.
    data = implicit_ratings if kw.get("implicit") else ratings
    m = als(calculate_training_loss=True, iterations=8, dtype=dtype, alpha=2.0, **kw)
    m.fit(data)
    loss = np.array(m.loss_curve_)
    assert len(loss) == m.n_iter_ == 8 and np.isfinite(loss).all()
    assert (loss[1:] <= loss[:-1] * (1 + 1e-6)).all(), loss
    assert loss[-1] < loss[0]


@pytest.mark.parametrize("implicit", [False, True])
def test_training_loss_is_the_documented_objective(ratings, implicit_ratings, implicit):
    data = implicit_ratings if implicit else ratings
    m = als(calculate_training_loss=True, iterations=3, implicit=implicit, alpha=2.0,
            regularization=0.05).fit(data)
    M = dense(data, N_USERS, N_ITEMS, *codes(m, data))
    X, Y = m.user_factors_, m.item_factors_
    want = (implicit_objective(M, X, Y, 0.05, 2.0) if implicit
            else explicit_objective(M, X, Y, 0.05))
    np.testing.assert_allclose(m.loss_curve_[-1], want, rtol=1e-9)


# ------------------------------------------------------------------ NumPy reference
@pytest.mark.parametrize("order", ["auto", "users", "items"])
def test_explicit_matches_a_dense_numpy_als_wr(ratings, order):
    m = als(iterations=3, regularization=0.05, solve_order=order).fit(ratings)
    # 'auto': the side with fewer rows first, here the items (300 users x 150 items)
    assert m.solve_order_ == ("items" if order == "auto" else order)
    M = dense(ratings, N_USERS, N_ITEMS, *codes(m, ratings))
    # the same start: the estimator's own initial factors (unit-norm Gaussian rows)
    X0, Y0 = m._init_factors(N_USERS, N_ITEMS, K, np.float64)
    np.testing.assert_allclose(np.linalg.norm(Y0, axis=1), 1.0, rtol=1e-12)
    # one stream per side: the items' start does not depend on the number of users
    np.testing.assert_array_equal(m._init_factors(7, N_ITEMS, K, np.float64)[1], Y0)
    assert not np.array_equal(X0[:N_ITEMS], Y0)
    X, Y = reference_als_wr(M, X0, Y0, 0.05, 3, first=m.solve_order_)
    np.testing.assert_allclose(m.user_factors_, X, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(m.item_factors_, Y, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("order", ["users", "items"])
@pytest.mark.parametrize("implicit", [False, True])
def test_last_half_step_is_an_exact_solve(ratings, implicit_ratings, implicit, order):
    # the side solved second is solved last, against the other side's final factors: a
    # fresh np.linalg.solve of every row's system (YᵢᵀYᵢ + reg nᵢ I for explicit) gives
    # its factors again.  Implicit uses 3 CG steps per half-iteration, so there it is
    # exact only with cg_steps >= factors (CG converges in at most k steps).
    data = implicit_ratings if implicit else ratings
    m = als(iterations=4, implicit=implicit, alpha=2.0, regularization=0.05,
            cg_steps=K, solve_order=order).fit(data)
    M = dense(data, N_USERS, N_ITEMS, *codes(m, data))
    if order == "users":
        got, want = m.item_factors_, solve_rows(M.T.tocsr(), m.user_factors_, 0.05,
                                                implicit=implicit, alpha=2.0)
    else:
        got, want = m.user_factors_, solve_rows(M, m.item_factors_, 0.05,
                                                implicit=implicit, alpha=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("implicit", [False, True])
def test_same_seed_same_bits_whatever_partitions_blocks_or_row_order(
        ratings, implicit_ratings, implicit):
    data = implicit_ratings if implicit else ratings
    kw = dict(implicit=implicit, dtype="float32", iterations=4)
    ref = als(**kw).fit(data)
    same_factors(ref, als(**kw).fit(data))
    same_factors(ref, als(**kw).fit(dd.from_pandas(data, npartitions=7, sort=False)))
    shuffled = data.sample(frac=1.0, random_state=3)
    same_factors(ref, als(**kw).fit(dd.from_pandas(shuffled, npartitions=3, sort=False)))
    with dmlkit.config_context(block_size="4KiB"):  # ~24 user and item blocks
        same_factors(ref, als(**kw).fit(data))
    with dask.config.set(scheduler="sync"):
        same_factors(ref, als(**kw).fit(data))
    other = als(random_state=1, **kw).fit(data)
    assert not np.array_equal(ref.user_factors_, other.user_factors_)


def _als_keys(tasks):
    return {t["key"] for t in tasks if str(t["key"]).startswith("dmlkit-als-")}


def test_distributed_client_gives_the_same_bits(ratings):
    from distributed import Client, LocalCluster, get_task_stream

    kw = dict(dtype="float32", iterations=4)
    local = als(**kw).fit(ratings)
    local_imp = als(implicit=True, **kw).fit(ratings)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        # every fit on the cluster, however small (the default solves these here)
        with dmlkit.config_context(local_fit_bytes=0), get_task_stream() as ts:
            dist = als(**kw).fit(dd.from_pandas(ratings, npartitions=4, sort=False))
            dist_imp = als(implicit=True, **kw).fit(ratings)
        assert len(client.scheduler_info()["workers"]) == 2
        assert any("-users-" in str(k) for k in _als_keys(ts.data))
        recs = dist.recommend_all(n=4).compute().reset_index(drop=True)
        pred = dist.predict(dd.from_pandas(ratings, npartitions=3)).compute()
    same_factors(local, dist)
    same_factors(local_imp, dist_imp)
    pd.testing.assert_frame_equal(recs, local.recommend(local.user_ids_, n=4))
    np.testing.assert_array_equal(pred, local.predict(ratings))


def test_small_fit_with_a_cluster_is_solved_here_with_the_same_bits(ratings):
    from distributed import Client, LocalCluster, get_task_stream

    kw = dict(dtype="float32", iterations=3)
    ref = als(**kw).fit(ratings)
    ref_imp = als(implicit=True, **kw).fit(ratings)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
        data = dd.from_pandas(ratings, npartitions=3, sort=False)
        # 6000 ratings: far under the default local-fit-bytes
        with dmlkit.config_context(local_fit_bytes="8MiB"), get_task_stream() as ts:
            small = als(**kw).fit(data)
            small_imp = als(implicit=True, **kw).fit(ratings)
        # the scan and the fetch ran on the cluster; no half-iteration did
        assert ts.data and not _als_keys(ts.data)
        with dmlkit.config_context(local_fit_bytes=12 * 2 * len(ratings) - 1), \
                get_task_stream() as ts:
            just_over = als(**kw).fit(data)
        assert _als_keys(ts.data)
    same_factors(ref, small)
    same_factors(ref_imp, small_imp)
    same_factors(ref, just_over)


# ------------------------------------------------------------------ input forms
def test_pandas_dask_and_sparse_inputs_agree(ratings):
    ref = als(iterations=3).fit(ratings)
    same_factors(ref, als(iterations=3).fit(dd.from_pandas(ratings, npartitions=4)))
    M = dense(ratings, N_USERS, N_ITEMS)
    sparse = als(iterations=3).fit(M)
    np.testing.assert_array_equal(sparse.user_ids_, np.arange(N_USERS))
    np.testing.assert_array_equal(sparse.item_ids_, np.arange(N_ITEMS))
    same_factors(ref, sparse)  # every id 0..n-1 is rated here, so the codes agree


def test_sparse_input_keeps_rows_and_columns_without_ratings():
    M = sp.csr_matrix(np.array([[5.0, 0, 0, 1.0], [0, 0, 0, 0], [0, 3.0, 0, 4.0]]))
    m = als(factors=2, iterations=3).fit(M)
    np.testing.assert_array_equal(m.user_ids_, [0, 1, 2])
    np.testing.assert_array_equal(m.item_ids_, [0, 1, 2, 3])
    assert m.user_factors_.shape == (3, 2) and m.item_factors_.shape == (4, 2)
    np.testing.assert_array_equal(m.user_factors_[1], 0)  # no ratings: x = 0
    np.testing.assert_array_equal(m.item_factors_[2], 0)
    recs = m.recommend([1, 0], n=2)
    assert recs[U].tolist() == [1, 1, 0, 0]


def test_string_ids_sorted_like_the_integers_give_the_same_factors(ratings):
    ref = als(iterations=3).fit(ratings)
    named = ratings.assign(user_id="u" + ratings[U].map("{:04d}".format),
                           item_id="i" + ratings[I].map("{:04d}".format))
    m = als(iterations=3).fit(named)
    np.testing.assert_array_equal(m.user_ids_, [f"u{j:04d}" for j in range(N_USERS)])
    np.testing.assert_array_equal(m.user_factors_, ref.user_factors_)
    np.testing.assert_array_equal(m.item_factors_, ref.item_factors_)
    want = ref.recommend([7, 3], n=4)
    got = m.recommend(["u0007", "u0003"], n=4)
    assert got[U].tolist() == [f"u{u:04d}" for u in want[U]]
    assert got[I].tolist() == [f"i{i:04d}" for i in want[I]]
    np.testing.assert_array_equal(got["score"], want["score"])


def test_string_ids_are_decoded_in_every_output(ratings):
    named = ratings.assign(user_id="u" + ratings[U].astype(str),
                           item_id="i" + ratings[I].astype(str))
    m = als(iterations=3).fit(named)
    assert sorted(m.user_ids_) == list(m.user_ids_) and "u12" in set(m.user_ids_)
    assert set(m.item_ids_) == {f"i{j}" for j in range(N_ITEMS)}
    with pytest.warns(DmlkitWarning, match=r"1 of the 3 users .*\['nobody'\]"):
        recs = m.recommend(["u12", "u3", "nobody"], n=5)
    assert recs[U].tolist() == ["u12"] * 5 + ["u3"] * 5
    assert set(recs[I]) <= set(m.item_ids_)
    assert recs[I].map(type).eq(str).all()
    all_recs = m.recommend_all(n=3).compute()
    assert set(all_recs[U]) == set(m.user_ids_)
    assert set(all_recs[I]) <= set(m.item_ids_)
    si = m.similar_items(["i7", "i_nope"], n=4)
    assert si[I].tolist() == ["i7"] * 4 and si[f"similar_{I}"].str.startswith("i").all()
    su = m.similar_users(["u12"], n=4)
    assert su[U].tolist() == ["u12"] * 4 and su[f"similar_{U}"].str.startswith("u").all()
    pairs = pd.DataFrame({U: ["u12", "u12", "zz"], I: ["i7", "i0", "i7"]})
    pred = m.predict(pairs)
    u12, i7, i0 = (pd.Index(m.user_ids_).get_loc("u12"), pd.Index(m.item_ids_).get_loc("i7"),
                   pd.Index(m.item_ids_).get_loc("i0"))
    np.testing.assert_allclose(pred[:2], [m.user_factors_[u12] @ m.item_factors_[i7],
                                          m.user_factors_[u12] @ m.item_factors_[i0]])
    assert np.isnan(pred[2])


def test_implicit_without_a_rating_column_counts_each_row_once(implicit_ratings):
    pairs = implicit_ratings[[U, I]]
    m = als(implicit=True, iterations=3).fit(pairs)
    ones = als(implicit=True, iterations=3).fit(pairs.assign(rating=1.0))
    same_factors(m, ones)
    recs = m.recommend([0, 1], n=3)
    assert len(recs) == 6
    given = pairs[pairs[U] == 1].assign(user_id=9999)
    pd.testing.assert_frame_equal(m.recommend([9999], ratings=given),
                                  m.recommend([9999], ratings=given.assign(rating=1.0)))
    with pytest.raises(ValueError, match="missing column"):
        als(iterations=1).fit(pairs)  # explicit feedback needs the ratings


# ------------------------------------------------------------------ predict
def test_predict_known_unknown_and_dask_pairs(fitted, split):
    test = split[1]
    X, Y = fitted.user_factors_, fitted.item_factors_
    pairs = pd.concat([test[[U, I]],
                       pd.DataFrame({U: [N_USERS + 5, 0], I: [0, N_ITEMS + 9]})],
                      ignore_index=True)
    pred = fitted.predict(pairs)
    assert pred.shape == (len(pairs),) and pred.dtype == np.float64
    u, i = codes(fitted, pairs)
    known = (u >= 0) & (i >= 0)
    assert not known[-2:].any() and known[:-2].mean() > 0.95
    np.testing.assert_allclose(pred[known], np.einsum("ij,ij->i", X[u[known]], Y[i[known]]),
                               rtol=1e-12)
    assert np.isnan(pred[~known]).all()

    lazy = fitted.predict(dd.from_pandas(pairs, npartitions=3))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), pred)

    drop = copy.deepcopy(fitted).set_params(cold_start="drop")
    dropped = drop.predict(pairs)
    np.testing.assert_array_equal(dropped, pred[known])
    np.testing.assert_array_equal(drop.predict(dd.from_pandas(pairs, npartitions=3))
                                  .compute(), pred[known])


def test_verbose_shows_a_progress_bar(ratings, capsys):
    als(iterations=2, verbose=1, calculate_training_loss=True).fit(ratings)
    assert "ALS" in capsys.readouterr().err


def test_predict_and_recommend_need_a_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ALS().predict(pd.DataFrame({U: [1], I: [1]}))
    with pytest.raises(NotFittedError):
        ALS().recommend([1])


# ------------------------------------------------------------------ recommend
def test_recommend_layout_order_and_seen_items(fitted, split):
    train = split[0]
    users = [17, 3, 250, N_USERS + 100, 3]  # an unknown user and a repeat
    n = 6
    with pytest.warns(DmlkitWarning, match=f"1 of the 4 users .*{N_USERS + 100}"):
        recs = fitted.recommend(users, n=n)
    assert list(recs.columns) == [U, I, "score", "rank"]
    assert recs[U].tolist() == [17] * n + [3] * n + [250] * n  # order given, unknown gone
    seen = train.groupby(U)[I].agg(set)
    X, Y = fitted.user_factors_, fitted.item_factors_
    for user, g in recs.groupby(U, sort=False):
        assert g["rank"].tolist() == list(range(1, n + 1))
        assert (np.diff(g["score"]) <= 0).all()
        assert not set(g[I]) & seen[user]
        # the true top n of the unseen items, scores x_u . y_i
        code = pd.Index(fitted.user_ids_).get_loc(user)
        s = Y @ X[code]
        s[pd.Index(fitted.item_ids_).get_indexer(list(seen[user]))] = -np.inf
        np.testing.assert_allclose(g["score"], np.sort(s)[::-1][:n], rtol=1e-12)
        np.testing.assert_array_equal(g[I], fitted.item_ids_[np.argsort(-s, kind="stable")[:n]])
    unfiltered = fitted.recommend([17], n=N_ITEMS, filter_seen=False)
    assert len(unfiltered) == N_ITEMS and seen[17] <= set(unfiltered[I])
    assert len(fitted.recommend([17], n=N_ITEMS)) == N_ITEMS - len(seen[17])
    with pytest.warns(DmlkitWarning, match="get no recommendations"):
        assert len(fitted.recommend([N_USERS + 100], n=3)) == 0
    # cold_start='drop' asks for them to be left out: no warning (warnings are errors here)
    dropping = copy.copy(fitted).set_params(cold_start="drop")
    assert dropping.recommend(users, n=n).equals(recs)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        fitted.recommend([17], n=0)


def test_recommend_all_equals_recommend_of_every_user(fitted):
    lazy = fitted.recommend_all(n=5)
    assert isinstance(lazy, dd.DataFrame)
    got = lazy.compute().reset_index(drop=True)
    want = fitted.recommend(fitted.user_ids_, n=5)
    pd.testing.assert_frame_equal(got, want)
    got = fitted.recommend_all(n=5, filter_seen=False).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, fitted.recommend(fitted.user_ids_, n=5,
                                                        filter_seen=False))


@pytest.mark.parametrize("implicit", [False, True])
def test_fold_in_is_one_exact_solve(fitted, fitted_implicit, split, implicit_ratings,
                                    implicit):
    model = fitted_implicit if implicit else fitted
    data = implicit_ratings if implicit else split[0]
    own = data[data[U] == 42]
    new = own.assign(user_id=10_000)  # the same ratings under an id unseen in fit
    given = pd.concat([own, new, data[data[U] == 43]])
    recs = model.recommend([10_000, 42, 7], n=5, ratings=given)
    assert recs[U].tolist() == [10_000] * 5 + [42] * 5 + [7] * 5
    a, b = recs[recs[U] == 10_000], recs[recs[U] == 42]
    np.testing.assert_array_equal(a[I], b[I])
    np.testing.assert_array_equal(a["score"], b["score"])
    assert not set(a[I]) & set(own[I])  # the given items are the seen ones
    # a fresh least-squares solve against the item factors
    Y = model.item_factors_
    M = dense(own.assign(user_id=0), 1, len(model.item_ids_),
              np.zeros(len(own), int), pd.Index(model.item_ids_).get_indexer(own[I]))
    x = solve_rows(M, Y, model.regularization, implicit=implicit, alpha=model.alpha)[0]
    s = Y @ x
    s[M.indices] = -np.inf
    np.testing.assert_allclose(a["score"], np.sort(s)[::-1][:5], rtol=1e-9)
    np.testing.assert_array_equal(a[I], model.item_ids_[np.argsort(-s, kind="stable")[:5]])
    # the same fold-in from a dask frame or a sparse matrix (ids = row / column numbers)
    lazy = model.recommend([10_000, 42, 7], n=5, ratings=dd.from_pandas(given,
                                                                        npartitions=2))
    pd.testing.assert_frame_equal(lazy, recs)
    # sparse rows are users 0..n-1: fold in user 42's row
    rows = sp.csr_matrix((own[R].to_numpy(np.float64), (np.full(len(own), 42),
                                                         own[I].to_numpy())),
                         shape=(43, N_ITEMS))
    sparse = model.recommend([42], n=5, ratings=rows)
    np.testing.assert_array_equal(sparse[I], b[I])
    np.testing.assert_allclose(sparse["score"], b["score"], rtol=1e-12)
    # a trained user not in ``ratings`` keeps its trained factors (with a fold-in the
    # user column comes back as object dtype: ids of both kinds are concatenated)
    pd.testing.assert_frame_equal(recs[recs[U] == 7].reset_index(drop=True),
                                  model.recommend([7], n=5), check_dtype=False)
    if not implicit:
        # converged: the fold-in is close to the trained factor, so are the rankings
        trained = model.recommend([42], n=5)
        assert len(set(trained[I]) & set(a[I])) >= 3


def _doubled_fold_in(model, data, user=42):
    own = data[data[U] == user].assign(user_id=9999)
    rec = model.recommend([9999], n=5, ratings=pd.concat([own, own]))
    as_sum = model.recommend([9999], n=5, ratings=own.assign(rating=own[R] * 2))
    as_mean = model.recommend([9999], n=5, ratings=own)
    return rec, as_sum, as_mean


@pytest.mark.parametrize("implicit, duplicates, merged", [
    (False, "auto", "mean"), (False, "mean", "mean"), (False, "sum", "sum"),
    (True, "auto", "sum"), (True, "sum", "sum"),
    (True, "mean", "mean"),
])
def test_fold_in_merges_duplicates_as_fit_does(ratings, implicit_ratings, implicit,
                                               duplicates, merged):
    data = implicit_ratings if implicit else ratings
    m = als(implicit=implicit, duplicates=duplicates, iterations=3).fit(data)
    rec, as_sum, as_mean = _doubled_fold_in(m, data)
    pd.testing.assert_frame_equal(rec, as_sum if merged == "sum" else as_mean,
                                  check_dtype=False)


def test_fold_in_with_duplicates_error_raises(ratings):
    m = als(duplicates="error", iterations=2).fit(ratings)
    with pytest.raises(ValueError, match="duplicate"):
        _doubled_fold_in(m, ratings)


def test_fold_in_rejects_negative_implicit_ratings(fitted_implicit):
    given = pd.DataFrame({U: [9999, 9999], I: [1, 2], R: [-50.0, -3.0]})
    with pytest.raises(ValueError, match=">= 0"):
        fitted_implicit.recommend([9999], ratings=given)


def test_fold_in_of_unknown_items_only_gives_no_rows(fitted):
    given = pd.DataFrame({U: [5000], I: [N_ITEMS + 3], R: [4.0]})
    with pytest.warns(DmlkitWarning, match=r"\[5000\]"):
        assert len(fitted.recommend([5000], ratings=given)) == 0


@pytest.mark.parametrize("twin", [-1, 10_000], ids=["twin-first", "twin-last"])
def test_tied_scores_go_to_the_lower_id(ratings, twin):
    # a twin of item 10 (the same ratings from the same users) gets the same bits as
    # item 10 after the first item half-step, so every user scores them equally
    data = pd.concat([ratings, ratings[ratings[I] == 10].assign(item_id=twin)],
                     ignore_index=True)
    m = als(iterations=3, dtype="float32").fit(data)
    a, b = pd.Index(m.item_ids_).get_loc(10), pd.Index(m.item_ids_).get_loc(twin)
    np.testing.assert_array_equal(m.item_factors_[a], m.item_factors_[b])
    first, second = sorted([10, twin])
    raters = set(data.loc[data[I] == 10, U])
    user = next(u for u in m.user_ids_ if u not in raters)
    full = m.recommend([user], n=N_ITEMS + 1)
    pos = full[I].tolist().index(first)
    assert full[I].iloc[pos + 1] == second
    assert full["score"].iloc[pos] == full["score"].iloc[pos + 1]
    # cut between the twins: the lower id stays in (argpartition may pick either)
    cut = m.recommend([user], n=pos + 1)
    assert cut[I].iloc[-1] == first and second not in set(cut[I])
    # the same in one call over many users (rows of one score chunk)
    others = [u for u in m.user_ids_ if u not in raters]
    for n in range(1, 40):
        recs = m.recommend(others, n=n)
        for _, g in recs.groupby(U, sort=False):
            got = g[I].tolist()
            if second in got:
                assert first in got and got.index(first) + 1 == got.index(second)
            if first in got and second not in got:
                assert got[-1] == first
    sim = m.similar_items([10], n=3)
    assert sim[f"similar_{I}"].iloc[0] == twin
    assert sim["score"].iloc[0] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------ similar
@pytest.mark.parametrize("side", ["items", "users"])
def test_similar_are_cosines_without_the_query(fitted, side):
    F = fitted.item_factors_ if side == "items" else fitted.user_factors_
    ids = fitted.item_ids_ if side == "items" else fitted.user_ids_
    col = I if side == "items" else U
    query = [ids[5], ids[0], ids[-1]]
    out = getattr(fitted, f"similar_{side}")(query + [-1], n=7)
    assert list(out.columns) == [col, f"similar_{col}", "score", "rank"]
    assert out[col].tolist() == [q for q in query for _ in range(7)]
    G = F / np.linalg.norm(F, axis=1, keepdims=True)
    for q, g in out.groupby(col, sort=False):
        assert q not in set(g[f"similar_{col}"])
        assert g["rank"].tolist() == list(range(1, 8))
        assert (np.diff(g["score"]) <= 0).all()
        assert (g["score"].abs() <= 1 + 1e-12).all()
        j = list(ids).index(q)
        cos = G @ G[j]
        cos[j] = -np.inf
        np.testing.assert_allclose(g["score"], np.sort(cos)[::-1][:7], rtol=1e-10)


def test_similar_follows_a_refit(ratings):
    # the unit-norm rows are cached per factor matrix: a refit must not reuse them
    m = als(iterations=2, random_state=0).fit(ratings)
    first = m.similar_items(m.item_ids_[:3], n=4)
    pd.testing.assert_frame_equal(m.similar_items(m.item_ids_[:3], n=4), first)
    m.set_params(random_state=1, factors=3).fit(ratings)
    fresh = als(iterations=2, random_state=1, factors=3).fit(ratings)
    pd.testing.assert_frame_equal(m.similar_items(m.item_ids_[:3], n=4),
                                  fresh.similar_items(m.item_ids_[:3], n=4))
    assert not m.similar_items(m.item_ids_[:3], n=4).equals(first)
    assert "_unit_cache" not in pickle.loads(pickle.dumps(m)).__dict__


# ------------------------------------------------------------------ duplicates
def test_duplicates_auto_is_mean_for_explicit_and_sum_for_implicit(ratings):
    # integer ratings: sums and means of duplicates are exact whatever the order
    base = ratings.assign(rating=np.round(ratings[R]).astype(np.float64))
    extra = base.sample(n=900, random_state=1).assign(
        rating=lambda d: np.random.default_rng(2).integers(1, 6, len(d)).astype(float))
    extra2 = extra.sample(n=300, random_state=3).assign(rating=2.0)
    dup = pd.concat([base, extra, extra2], ignore_index=True)
    dup = dup.sample(frac=1.0, random_state=4)
    for implicit, how in ((False, "mean"), (True, "sum")):
        agg = dup.groupby([U, I], as_index=False)[R].agg(how)
        kw = dict(implicit=implicit, iterations=3, dtype="float32")
        auto = als(**kw).fit(dd.from_pandas(dup, npartitions=3, sort=False))
        same_factors(auto, als(**kw).fit(agg))
        same_factors(auto, als(duplicates=how, **kw).fit(dup))
        other = als(duplicates="sum" if how == "mean" else "mean", **kw).fit(dup)
        assert not np.array_equal(auto.user_factors_, other.user_factors_)
    with pytest.raises(ValueError, match="duplicate"):
        als(duplicates="error").fit(dup)
    # non-integer duplicates (sums that depend on order): the same rows cut into other
    # partitions or blocks merge in the same order, so the same bits
    frac = dup.assign(rating=np.random.default_rng(5).uniform(1, 5, len(dup)))
    kw = dict(iterations=2, dtype="float64")
    one = als(**kw).fit(frac)
    same_factors(one, als(**kw).fit(dd.from_pandas(frac, npartitions=6, sort=False)))
    with dmlkit.config_context(block_size="4KiB"):
        same_factors(one, als(**kw).fit(frac))
    als(duplicates="error", iterations=1).fit(base)  # no duplicates: fine


# ------------------------------------------------------------------ bad input
def _frame(**cols):
    base = {U: [1, 2, 3], I: [1, 2, 1], R: [4.0, 3.0, 5.0]}
    base.update(cols)
    return pd.DataFrame(base)


BAD_FITS = [
    ("missing-column", {}, pd.DataFrame({U: [1], "item": [1], R: [1.0]}), ValueError,
     r"missing column\(s\) \['item_id'\]"),
    ("nan", {}, _frame(rating=[4.0, np.nan, 5.0]), ValueError, "NaN or infinite"),
    ("inf", {}, _frame(rating=[4.0, np.inf, 5.0]), ValueError, "NaN or infinite"),
    ("negative-implicit", {"implicit": True}, _frame(rating=[4.0, -1.0, 5.0]), ValueError,
     "ratings >= 0"),
    ("empty", {}, _frame().iloc[:0], ValueError, "empty"),
    ("factors", {"factors": 0}, _frame(), ValueError,
     r"The 'factors' parameter of ALS must be an int in the range \[1, inf\)\. Got 0 "
     "instead"),
    ("iterations", {"iterations": 0}, _frame(), ValueError,
     r"'iterations' parameter of ALS must be an int in the range \[1, inf\)"),
    ("regularization", {"regularization": -1}, _frame(), ValueError,
     r"'regularization' parameter of ALS must be a float in the range \[0\.0, inf\)"),
    ("regularization-inf", {"regularization": np.inf}, _frame(), ValueError,
     "'regularization' parameter of ALS"),
    ("factors-bool", {"factors": True}, _frame(), TypeError, "'factors' parameter of ALS"),
    ("cold-start", {"cold_start": "bogus"}, _frame(), ValueError,
     r"'cold_start' parameter of ALS must be a str among \{'nan', 'drop'\}"),
    ("dtype", {"dtype": "int8"}, _frame(), ValueError,
     "'dtype' parameter of ALS must be 'float32' or 'float64'"),
    ("duplicates", {"duplicates": "max"}, _frame(), ValueError,
     "'duplicates' parameter of ALS must be a str among"),
    ("implicit", {"implicit": "yes"}, _frame(), ValueError, "'implicit' parameter of ALS"),
    ("cache", {"cache": "yes"}, _frame(), ValueError, "'cache' parameter of ALS"),
    ("non-numeric", {}, _frame(rating=["a", "b", "c"]), TypeError, "must be numeric"),
    ("bool-rating", {}, _frame(rating=[True, False, True]), TypeError, "must be numeric"),
    ("list", {}, [(1, 1, 4.0)], TypeError, "must be a pandas or dask DataFrame"),
    ("ndarray", {}, np.ones((3, 3)), TypeError, "must be a pandas or dask DataFrame"),
    ("null-user", {}, _frame(user_id=[1.0, np.nan, 3.0]), ValueError,
     r"ratings\['user_id'\] has 1 missing value"),
    ("null-item", {}, _frame(item_id=["a", None, "b"]), ValueError,
     r"ratings\['item_id'\] has 1 missing value"),
]


@pytest.mark.parametrize("params, data, exc, match", [b[1:] for b in BAD_FITS],
                         ids=[b[0] for b in BAD_FITS])
def test_bad_input_raises_and_keeps_the_fitted_state(fitted, params, data, exc, match):
    m = copy.deepcopy(fitted)
    m.set_params(**params)
    before = dict(m.__dict__)
    with pytest.raises(exc, match=match):
        m.fit(data)
    assert m.__dict__.keys() == before.keys()
    for key, value in before.items():
        assert m.__dict__[key] is value, key
    np.testing.assert_array_equal(m.user_factors_, fitted.user_factors_)


@pytest.mark.parametrize("dtype", ["Float64", "Int64"])
@pytest.mark.parametrize("lazy", [False, True], ids=["pandas", "dask"])
def test_missing_rating_in_a_nullable_column_is_rejected(fitted, dtype, lazy):
    df = _frame(rating=pd.array([4, None, 5], dtype=dtype))
    m = copy.deepcopy(fitted)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.fit(dd.from_pandas(df, npartitions=1) if lazy else df)
    np.testing.assert_array_equal(m.user_factors_, fitted.user_factors_)


@pytest.mark.parametrize("kind", ["object-ints", "mixed"])
def test_object_ids_in_a_pandas_frame(ratings, kind):
    ids = ratings[U].astype(object)
    if kind == "mixed":
        ids = ratings[U].map(lambda u: u if u % 2 else f"s{u}").astype(object)
    m = als(iterations=2).fit(ratings.assign(user_id=ids))
    assert len(m.user_ids_) == N_USERS
    assert len(m.recommend([ids.iloc[0]], n=3)) == 3


def test_bad_input_in_a_lazy_frame_is_caught_too(fitted):
    m = copy.deepcopy(fitted)
    before = dict(m.__dict__)
    df = dd.from_pandas(_frame(rating=[4.0, np.nan, 5.0]), npartitions=2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.fit(df)
    assert all(m.__dict__[k] is v for k, v in before.items())


def test_bad_calls_after_fit(fitted):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        fitted.recommend([1], n=0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        fitted.recommend_all(n=-2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        fitted.similar_items([1], n=0)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['item_id'\]"):
        fitted.predict(pd.DataFrame({U: [1]}))
    with pytest.raises(TypeError, match="pairs must be a pandas or dask DataFrame"):
        fitted.predict([(1, 2)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fitted.recommend([5000], ratings=pd.DataFrame({U: [5000], I: [1], R: [np.nan]}))


# ------------------------------------------------------------------ score
def test_score_explicit_is_minus_rmse_on_known_pairs(fitted, split):
    test = split[1]
    unknown = pd.DataFrame({U: [N_USERS + 1], I: [0], R: [3.0]})
    scored = pd.concat([test, unknown], ignore_index=True)
    pred = fitted.predict(test)
    keep = ~np.isnan(pred)
    want = -rmse(test[R][keep], pred[keep])
    assert fitted.score(scored) == pytest.approx(want, rel=1e-12)
    assert fitted.score(dd.from_pandas(scored, npartitions=2)) == pytest.approx(want,
                                                                                rel=1e-12)
    with pytest.raises(ValueError, match="nothing to score"):
        fitted.score(unknown)
    with pytest.raises(ValueError, match="nothing to score"):
        fitted.score(dd.from_pandas(unknown, npartitions=1))
    bad = scored.assign(**{R: scored[R].where(scored.index != 3, np.nan)})
    for frame in (bad, dd.from_pandas(bad, npartitions=3)):
        with pytest.raises(ValueError, match="1 NaN or infinite"):
            fitted.score(frame)


def test_score_implicit_on_dask_equals_pandas(fitted_implicit, implicit_ratings):
    held = implicit_ratings.sample(n=500, random_state=1)
    assert fitted_implicit.score(dd.from_pandas(held, npartitions=3)) == \
        fitted_implicit.score(held)


def test_score_implicit_is_precision_at_10(fitted_implicit, implicit_ratings):
    held = implicit_ratings.sample(n=500, random_state=0)
    got = fitted_implicit.score(held)
    assert 0.0 <= got <= 1.0
    want = precision_at_k(fitted_implicit.recommend(held[U].unique(), n=10), held, k=10)
    assert got == want
    # scored on its own training interactions: those are all filtered as seen, so no
    # recommended item can be a hit
    assert fitted_implicit.score(implicit_ratings) == 0.0


# ------------------------------------------------------------------ scikit-learn
def test_pickle_and_clone(fitted, split):
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.predict(split[1]), fitted.predict(split[1]))
    pd.testing.assert_frame_equal(back.recommend([1, 2], n=4), fitted.recommend([1, 2], n=4))
    c = clone(fitted)
    assert c.get_params() == fitted.get_params()
    assert not hasattr(c, "user_factors_")


def test_grid_search_picks_the_lower_rmse(ratings):
    # rows shuffled: cv=2 cuts them in two halves (unshuffled, the halves would hold
    # disjoint users and score() would find no pair to score)
    shuffled = ratings.sample(frac=1.0, random_state=0).reset_index(drop=True)
    grid = {"regularization": [0.03, 3.0]}
    search = GridSearchCV(als(iterations=5), grid, cv=2).fit(shuffled)
    assert search.best_params_ == {"regularization": 0.03}
    # the same folds by hand
    folds = list(KFold(2).split(shuffled))
    for j, reg in enumerate(grid["regularization"]):
        scores = [als(iterations=5, regularization=reg).fit(shuffled.iloc[a])
                  .score(shuffled.iloc[b]) for a, b in folds]
        assert search.cv_results_["mean_test_score"][j] == pytest.approx(np.mean(scores))
        assert np.mean(scores) < 0  # minus an RMSE
    assert search.best_estimator_.user_factors_.shape == (N_USERS, K)


# ------------------------------------------------------------------ kernels, constraints
def test_array_api_kernels_agree_with_numba(ratings):
    ref = als(iterations=4).fit(ratings)
    with dmlkit.config_context(backend="xp"):
        xp = als(iterations=4).fit(ratings)
    np.testing.assert_allclose(xp.user_factors_, ref.user_factors_, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(xp.item_factors_, ref.item_factors_, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("implicit", [False, True])
def test_nonnegative_factors(ratings, implicit):
    m = als(nonnegative=True, implicit=implicit, iterations=4).fit(ratings)
    assert (m.user_factors_ >= 0).all() and (m.item_factors_ >= 0).all()
    assert (m.user_factors_ > 0).any() and (m.item_factors_ > 0).any()
    free = als(implicit=implicit, iterations=4).fit(ratings)
    assert (free.user_factors_ < 0).any()


# ------------------------------------------------------------------ out of core
def test_parquet_source_cache_and_tiny_blocks_give_the_same_bits(ratings, tmp_path):
    shuffled = ratings.sample(frac=1.0, random_state=5)
    for j, rows in enumerate(np.array_split(np.arange(len(shuffled)), 4)):
        shuffled.iloc[rows].to_parquet(tmp_path / f"part-{j}.parquet", index=False)
    source = dd.read_parquet(tmp_path)
    assert source.npartitions == 4
    kw = dict(iterations=3, dtype="float32")
    ref = als(**kw).fit(ratings)
    streamed = als(cache=False, **kw).fit(source)
    same_factors(ref, streamed)
    same_factors(ref, als(cache=True, **kw).fit(source))
    with dmlkit.config_context(block_size="4KiB"):
        same_factors(ref, als(cache=False, **kw).fit(source))
    recs = streamed.recommend_all(n=3).compute()
    assert len(recs) == 3 * N_USERS


# ------------------------------------------------------------------ solve order
@pytest.mark.parametrize("implicit", [False, True])
def test_solve_order_auto_follows_the_shape_and_the_feedback(ratings, implicit_ratings,
                                                             implicit):
    # explicit: the side with fewer rows first (300 users x 150 items: the items; the
    # transposed copy: its users, the same physical side); implicit: always the items
    data = implicit_ratings if implicit else ratings
    flipped = data.rename(columns={U: I, I: U})[[U, I] + ([R] if R in data else [])]
    for frame, want in ((data, "items"), (flipped, "items" if implicit else "users")):
        m = als(implicit=implicit, iterations=2).fit(frame)
        assert m.solve_order_ == want
        same_factors(m, als(implicit=implicit, iterations=2, solve_order=want).fit(frame))
        other = "users" if want == "items" else "items"
        assert not np.array_equal(
            m.user_factors_, als(implicit=implicit, iterations=2,
                                 solve_order=other).fit(frame).user_factors_)
    assert ALS._first_side(10, 10, False) == "user"  # a tie keeps users first
