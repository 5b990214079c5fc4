"""ALS serving features: candidate subsets (``items=``, ``filter_items=``) in
``recommend`` and ``recommend_all``, ``recommend_all(users=...)``, and
``partial_fit_users`` / ``partial_fit_items`` (solves of some rows against the other
side's fixed factors, new ids appended), with their bad input."""

import copy

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from dmlkit.datasets import make_ratings
from dmlkit.exceptions import DmlkitWarning
from dmlkit.recommendation import ALS

U, I, R = "user_id", "item_id", "rating"
N_USERS, N_ITEMS = 120, 60


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _ratings(implicit=False):
    df = make_ratings(N_USERS, N_ITEMS, 2000, rank=3, noise=0.05, implicit=implicit,
                      random_state=0)
    return df.compute().reset_index(drop=True)


@pytest.fixture(scope="module")
def ratings():
    return _ratings()


@pytest.fixture(scope="module")
def implicit_ratings():
    return _ratings(True)


def als(**kw):
    return ALS(**{"factors": 4, "regularization": 0.05, "iterations": 6, "random_state": 0,
                  "dtype": "float64", **kw})


@pytest.fixture(scope="module")
def fitted(ratings):
    with dask.config.set(scheduler="threads"):
        return als().fit(ratings)


@pytest.fixture(scope="module")
def fitted_implicit(implicit_ratings):
    with dask.config.set(scheduler="threads"):
        return als(implicit=True, alpha=2.0).fit(implicit_ratings)


def solve_rows(rows, other, reg, implicit=False, alpha=1.0):
    """np.linalg.solve of each (indices, values) row against ``other`` (fit's rules)."""
    Y = other.astype(np.float64)
    k = Y.shape[1]
    out = []
    for idx, r in rows:
        Yi = Y[idx]
        if implicit:
            c = 1 + alpha * r
            A = Y.T @ Y + Yi.T @ ((c - 1)[:, None] * Yi) + reg * np.eye(k)
            b = Yi.T @ c
        else:
            A = Yi.T @ Yi + reg * len(idx) * np.eye(k)
            b = Yi.T @ r
        out.append(np.linalg.solve(A, b))
    return np.array(out)


def seen_items(model, user):
    code = pd.Index(model.user_ids_).get_loc(user)
    lo, hi = model._seen_indptr[code], model._seen_indptr[code + 1]
    return set(model.item_ids_[model._seen_indices[lo:hi]])


# ------------------------------------------------------------------ candidate subsets
def test_items_subset_is_the_full_ranking_restricted(fitted, ratings):
    users = [5, 17, 40]
    subset = [3, 9, 12, 20, 21, 33, 34, 50, 58, 59]
    recs = fitted.recommend(users, n=4, items=list(reversed(subset)))
    full = fitted.recommend(users, n=N_ITEMS)  # every unseen item, best first
    for u in users:
        want = full[(full[U] == u) & full[I].isin(subset)].head(4)
        got = recs[recs[U] == u]
        np.testing.assert_array_equal(got[I], want[I])
        np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
        assert got["rank"].tolist() == list(range(1, len(got) + 1))
        assert set(got[I]) <= set(subset) and not set(got[I]) & seen_items(fitted, u)
    # seen items are filtered inside the subset too; without the filter they are ranked
    u = 5
    seen_in = sorted(seen_items(fitted, u) & set(range(N_ITEMS)))[:3]
    assert len(fitted.recommend([u], n=10, items=seen_in)) == 0
    got = fitted.recommend([u], n=10, items=seen_in, filter_seen=False)
    assert sorted(got[I]) == seen_in


def test_n_is_capped_at_the_candidates(fitted):
    u = 5
    unseen = [i for i in fitted.item_ids_ if i not in seen_items(fitted, u)][:3]
    recs = fitted.recommend([u], n=50, items=unseen)
    assert sorted(recs[I]) == sorted(unseen) and recs["rank"].tolist() == [1, 2, 3]


def test_filter_items_are_never_recommended(fitted):
    users = fitted.user_ids_[:30]
    base = fitted.recommend(users, n=5)
    banned = base[I].value_counts().index[:4].tolist()  # the most recommended items
    recs = fitted.recommend(users, n=5, filter_items=banned)
    assert not set(recs[I]) & set(banned)
    full = fitted.recommend(users, n=N_ITEMS)
    for u in users[:5]:
        want = full[(full[U] == u) & ~full[I].isin(banned)].head(5)
        got = recs[recs[U] == u]
        np.testing.assert_array_equal(got[I], want[I])
        np.testing.assert_array_equal(got["score"], want["score"])  # same matrix product
    # with a subset: the subset minus the filtered items
    subset = banned + [int(i) for i in fitted.item_ids_[:10] if i not in banned]
    got = fitted.recommend(users, n=N_ITEMS, items=subset, filter_items=banned,
                           filter_seen=False)
    assert set(got[I]) == set(subset) - set(banned)
    # the fold-in takes them too
    new = pd.DataFrame({U: ["new"] * 3, I: [1, 2, 3], R: [5.0, 4.0, 1.0]})
    got = fitted.recommend(["new"], n=N_ITEMS, ratings=new, filter_items=banned)
    assert not set(got[I]) & (set(banned) | {1, 2, 3})
    assert len(got) == N_ITEMS - len(set(banned) | {1, 2, 3})


def test_recommend_all_takes_users_items_and_filter_items(fitted):
    users = [40, 3, 17, 3]
    with pytest.warns(DmlkitWarning, match=r"1 of the 4 users .*\[9999\]"):
        lazy = fitted.recommend_all(n=3, users=users + [9999])
    assert isinstance(lazy, dd.DataFrame)
    got = lazy.compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, fitted.recommend(users, n=3))
    subset, banned = list(range(1, 30)), [4, 5]
    got = fitted.recommend_all(n=3, items=subset, filter_items=banned).compute()
    want = fitted.recommend(fitted.user_ids_, n=3, items=subset, filter_items=banned)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
    got = fitted.recommend_all(n=3, filter_items=banned, filter_seen=False).compute()
    want = fitted.recommend(fitted.user_ids_, n=3, filter_items=banned, filter_seen=False)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
    assert len(fitted.recommend_all(n=3, users=[]).compute()) == 0
    quiet = copy.copy(fitted).set_params(cold_start="drop")  # no warning
    assert len(quiet.recommend_all(n=3, users=[9999]).compute()) == 0


def test_recommend_all_without_users_is_unchanged(fitted):
    # the partitions of every user, bit for bit as recommend of all users
    got = fitted.recommend_all(n=5).compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(got, fitted.recommend(fitted.user_ids_, n=5))
    assert fitted.recommend_all(n=5).npartitions == fitted.recommend_all(
        n=5, users=fitted.user_ids_).npartitions


@pytest.mark.parametrize("kw, match", [
    ({"items": [1, 2, 1000, 2000]}, r"items has 2 item id\(s\) not seen in fit "
                                    r"\(e\.g\. \[1000, 2000\]\)"),
    ({"filter_items": ["x"]}, r"filter_items has 1 item id\(s\) not seen in fit"),
    ({"items": []}, "items is empty"),
    ({"items": [1, 2], "filter_items": [2, 1]}, "no candidate item is left"),
])
def test_bad_candidates_raise(fitted, kw, match):
    with pytest.raises(ValueError, match=match):
        fitted.recommend([5], **kw)
    with pytest.raises(ValueError, match=match):
        fitted.recommend_all(**kw)


# ------------------------------------------------------------------ partial fit
def _rows(model, df, side):
    """(other-side codes, ratings) of each id of ``side`` in ``df``, in id order."""
    own, other = (U, I) if side == "user" else (I, U)
    index = pd.Index(model.item_ids_ if side == "user" else model.user_ids_)
    out = {}
    for key, g in df.groupby(own):
        g = g.assign(c=index.get_indexer(g[other])).sort_values("c")
        out[key] = (g["c"].to_numpy(), g[R].to_numpy(np.float64))
    return out


@pytest.mark.parametrize("order", ["users", "items"])
def test_partial_fit_of_the_last_side_reproduces_it(ratings, order):
    # the side solved last is an exact solve against the other's final factors: solving
    # it again from the same ratings gives the same bits (the task fit runs)
    m = als(solve_order=order).fit(ratings)
    last = "item" if order == "users" else "user"
    before = getattr(m, f"{last}_factors_").copy()
    ids = getattr(m, f"{last}_ids_")
    seen = (m._seen_indptr.copy(), m._seen_indices.copy())
    getattr(m, f"partial_fit_{last}s")(ids[::-1], ratings.sample(frac=1.0, random_state=1))
    assert getattr(m, f"{last}_factors_").tobytes() == before.tobytes()
    np.testing.assert_array_equal(m._seen_indptr, seen[0])
    np.testing.assert_array_equal(m._seen_indices, seen[1])


@pytest.mark.parametrize("implicit", [False, True])
def test_partial_fit_users_changes_only_their_rows(ratings, implicit_ratings, fitted,
                                                   fitted_implicit, implicit):
    model = copy.deepcopy(fitted_implicit if implicit else fitted)
    data = implicit_ratings if implicit else ratings
    X0, Y0 = model.user_factors_.copy(), model.item_factors_.copy()
    users = [7, 42]
    mine = data[data[U].isin(users)]
    new = pd.concat([mine[mine[U] == 7].iloc[:4],  # user 7 keeps 4 ratings
                     mine[mine[U] == 42].assign(**{R: mine[R] * 0 + 5.0}),
                     data[data[U] == 8]])  # not asked for: ignored
    model.partial_fit_users(users, dd.from_pandas(new, npartitions=2))
    codes = pd.Index(model.user_ids_).get_indexer(users)
    others = np.setdiff1d(np.arange(len(X0)), codes)
    np.testing.assert_array_equal(model.user_factors_[others], X0[others])
    np.testing.assert_array_equal(model.item_factors_, Y0)
    rows = _rows(model, new[new[U].isin(users)], "user")
    want = solve_rows([rows[u] for u in users], Y0, model.regularization, implicit,
                      model.alpha)
    np.testing.assert_allclose(model.user_factors_[codes], want, rtol=1e-8, atol=1e-10)
    assert not np.allclose(model.user_factors_[codes], X0[codes])
    assert seen_items(model, 7) == set(new[new[U] == 7][I])
    assert seen_items(model, 8) == seen_items(fitted, 8)
    recs = model.recommend([7], n=N_ITEMS)
    assert len(recs) == N_ITEMS - 4 and not set(recs[I]) & seen_items(model, 7)


def test_partial_fit_users_appends_new_users(fitted, ratings):
    model = copy.deepcopy(fitted)
    n = len(model.user_ids_)
    given = ratings[ratings[U] == 42]
    new = pd.concat([given.assign(**{U: 5000}), given.iloc[:3].assign(**{U: 4000})])
    model.partial_fit_users([5000, 4000, 42], pd.concat([new, given]))
    assert model.user_ids_.dtype == fitted.user_ids_.dtype
    np.testing.assert_array_equal(model.user_ids_, np.r_[fitted.user_ids_, 5000, 4000])
    assert model.user_factors_.shape == (n + 2, fitted.factors)
    np.testing.assert_array_equal(model.user_factors_[:n][model.user_ids_[:n] != 42],
                                  fitted.user_factors_[fitted.user_ids_ != 42])
    # the same ratings, the same solve: the new user equals user 42 bit for bit
    code42 = pd.Index(model.user_ids_).get_loc(42)
    assert model.user_factors_[n].tobytes() == model.user_factors_[code42].tobytes()
    pd.testing.assert_frame_equal(
        model.recommend([5000], n=5).drop(columns=U),
        model.recommend([42], n=5).drop(columns=U))
    assert seen_items(model, 4000) == set(given.iloc[:3][I])
    assert len(model.recommend_all(n=2).compute()) == 2 * (n + 2)
    assert model.predict(pd.DataFrame({U: [5000], I: [given[I].iloc[0]]}))[0] \
        == pytest.approx(model.predict(pd.DataFrame({U: [42], I: [given[I].iloc[0]]}))[0])
    # and the appended ids round-trip through pickling and later partial fits
    again = copy.deepcopy(model).partial_fit_users([5000], given.assign(**{U: 5000}))
    np.testing.assert_array_equal(again.user_factors_, model.user_factors_)


def test_partial_fit_items_replaces_their_pairs(fitted, ratings):
    model = copy.deepcopy(fitted)
    n_items = len(model.item_ids_)
    X0 = model.user_factors_.copy()
    item = 9
    raters = ratings[ratings[I] == item]
    keep = raters.iloc[:5]  # the item keeps 5 of its raters
    fresh = raters.iloc[:3].assign(**{I: "new-item"})
    model.partial_fit_items([item, "new-item"], pd.concat([keep, fresh]))
    np.testing.assert_array_equal(model.user_factors_, X0)
    assert list(model.item_ids_[-1:]) == ["new-item"] and len(model.item_ids_) == n_items + 1
    rows = _rows(model, pd.concat([keep, fresh]), "item")
    want = solve_rows([rows[item], rows["new-item"]], X0, model.regularization)
    got = model.item_factors_[pd.Index(model.item_ids_).get_indexer([item, "new-item"])]
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    # the seen pairs of the item: exactly the given raters
    for u in raters[U]:
        assert (item in seen_items(model, u)) == (u in set(keep[U]))
        assert ("new-item" in seen_items(model, u)) == (u in set(fresh[U]))
    # the other items' pairs are untouched
    for u in raters[U].iloc[:10]:
        assert seen_items(model, u) - {item, "new-item"} == seen_items(fitted, u) - {item}
    recs = model.recommend(fresh[U].iloc[:1], n=len(model.item_ids_), filter_seen=False)
    assert "new-item" in set(recs[I])


def test_partial_fit_bad_input(fitted, ratings, implicit_ratings, fitted_implicit):
    model = copy.deepcopy(fitted)
    before = model.user_factors_.copy()
    with pytest.raises(ValueError, match=r"1 of the user_ids have no rating .*\[777\]"):
        model.partial_fit_users([5, 777], ratings)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rating'\]"):
        model.partial_fit_users([5], ratings[[U, I]])
    with pytest.raises(TypeError, match="must be a pandas or dask DataFrame"):
        model.partial_fit_users([5], [[5, 1, 3.0]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.partial_fit_users([5], pd.DataFrame({U: [5], I: [1], R: [np.nan]}))
    with pytest.raises(ValueError, match="duplicate"):
        copy.deepcopy(model).set_params(duplicates="error").partial_fit_users(
            [5], pd.DataFrame({U: [5, 5], I: [1, 1], R: [3.0, 4.0]}))
    with pytest.raises(ValueError, match=">= 0"):
        copy.deepcopy(fitted_implicit).partial_fit_users(
            [5], pd.DataFrame({U: [5], I: [1], R: [-1.0]}))
    np.testing.assert_array_equal(model.user_factors_, before)  # nothing changed
    # ratings of items unseen in fit are left out, with a warning
    given = pd.DataFrame({U: [5, 5, 5], I: [1, 2, 12345], R: [4.0, 3.0, 5.0]})
    with pytest.warns(DmlkitWarning, match=r"1 rating\(s\) are of 1 item\(s\) unseen in fit "
                                           r"\(e\.g\. \[12345\]\)"):
        model.partial_fit_users([5], given)
    assert seen_items(model, 5) == {1, 2}
    quiet = copy.deepcopy(fitted).set_params(cold_start="drop")
    quiet.partial_fit_users([5], given)  # no warning
    np.testing.assert_array_equal(quiet.user_factors_, model.user_factors_)
    # an empty list changes nothing; a fit is needed
    assert model.partial_fit_users([], ratings) is model
    with pytest.raises(Exception, match="not fitted"):
        ALS().partial_fit_items([1], ratings)
