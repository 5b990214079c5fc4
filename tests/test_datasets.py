import itertools
import os
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest

from dmlkit import datasets
from dmlkit.datasets import load_movielens, make_documents, make_ratings, make_transactions

DTYPES = {"user_id": np.int64, "item_id": np.int64, "rating": np.float32, "timestamp": np.int64}
SHARED_100K = Path("/work/shared/data/movielens-100k")

# (user, item, rating, timestamp): a half star as in ML-10M and later, a large timestamp
ROWS = [(1, 1193, 5.0, 978300760), (1, 661, 3.0, 978302109), (2, 3068, 3.5, 978299000),
        (10, 1, 0.5, 1_700_000_000), (6040, 2019, 4.0, 956703932)]
EXPECTED = pd.DataFrame(ROWS, columns=list(DTYPES)).astype(DTYPES)


def _text(fmt, rows=ROWS):
    if fmt == "u.data":
        lines = [f"{u}\t{i}\t{r:g}\t{t}" for u, i, r, t in rows]
    elif fmt == "ratings.dat":
        lines = [f"{u}::{i}::{r:g}::{t}" for u, i, r, t in rows]
    else:
        lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r:g},{t}" for u, i, r, t in rows]
    return "\n".join(lines) + "\n"


def _write(directory, name, rows=ROWS):
    path = directory / name
    if name.endswith(".parquet"):
        pd.DataFrame(rows, columns=list(DTYPES)).astype(
            {"user_id": "int32", "item_id": "int32"}).to_parquet(path, index=False)
    else:
        path.write_text(_text(name, rows))
    return path


def _check(df, expected=EXPECTED):
    assert dict(df.dtypes) == DTYPES
    result = df.compute(scheduler="sync")
    assert dict(result.dtypes) == DTYPES
    pd.testing.assert_frame_equal(result.reset_index(drop=True), expected)


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv", "ratings.parquet"])
def test_load_each_format(tmp_path, name):
    _check(load_movielens(_write(tmp_path, name)))
    _check(load_movielens(str(tmp_path / name)))


@pytest.mark.parametrize("name", ["u.data", "ratings.dat", "ratings.csv"])
def test_load_small_blocks(tmp_path, name):
    rng = np.random.default_rng(0)
    n = 500
    rows = list(zip(rng.integers(1, 10**6, n).tolist(), rng.integers(1, 10**5, n).tolist(),
                    (rng.integers(1, 11, n) / 2).tolist(), rng.integers(0, 2**31, n).tolist(),
                    strict=True))
    path = _write(tmp_path, name, rows)
    df = load_movielens(path, blocksize=97)      # cuts inside lines and inside the header
    assert df.npartitions > 50
    expected = pd.DataFrame(rows, columns=list(DTYPES)).astype(DTYPES)
    _check(df, expected)
    # column projection is not pushed into the block reader
    assert df.rating.sum().compute(scheduler="sync") == pytest.approx(expected.rating.sum())
    pd.testing.assert_frame_equal(df[["item_id"]].compute(scheduler="sync")
                                  .reset_index(drop=True), expected[["item_id"]])
    assert load_movielens(path, blocksize=None).npartitions == 1


def test_csv_header_aliases_and_order(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("timestamp,rating,item_id,user_id\r\n978300760,4.5,7,3\r\n1,1,2,4\r\n")
    expected = pd.DataFrame([(3, 7, 4.5, 978300760), (4, 2, 1.0, 1)],
                            columns=list(DTYPES)).astype(DTYPES)
    _check(load_movielens(path), expected)


def test_directory_detection(tmp_path):
    _write(tmp_path, "u.data", ROWS[:2])
    _check(load_movielens(tmp_path), EXPECTED[:2])
    _write(tmp_path, "ratings.dat", ROWS[:3])
    _check(load_movielens(str(tmp_path) + "/"), EXPECTED[:3])
    _write(tmp_path, "ratings.csv", ROWS[:4])
    _check(load_movielens(tmp_path), EXPECTED[:4])
    _write(tmp_path, "ratings.parquet", ROWS)
    _check(load_movielens(f"file://{tmp_path}"))


def test_parquet_dataset_directory(tmp_path):
    (tmp_path / "ratings.parquet").mkdir()
    _write(tmp_path / "ratings.parquet", "part.0.parquet", ROWS[:2])
    _write(tmp_path / "ratings.parquet", "part.1.parquet", ROWS[2:])
    _check(load_movielens(tmp_path))


def test_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    root = "memory://dmlkit-test-datasets/ml-1m"
    try:
        with fs.open(f"{root}/ratings.dat", "w") as f:
            f.write(_text("ratings.dat"))
        _check(load_movielens(root, blocksize=40))
    finally:
        fs.rm("memory://dmlkit-test-datasets", recursive=True)


def test_missing_files(tmp_path):
    looked_for = r"ratings\.parquet, ratings\.csv, ratings\.dat, u\.data"
    with pytest.raises(FileNotFoundError, match=looked_for):
        load_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_movielens(tmp_path / "nope" / "u.data")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_movielens(tmp_path / "nope")
    (tmp_path / "movies.txt").write_text("1\t2\t3\t4\n")
    with pytest.raises(ValueError, match="movies.txt"):
        load_movielens(tmp_path / "movies.txt")


@pytest.mark.parametrize("name, content, match", [
    ("u.data", "1\t2\t3\t4\t5\n6\t7\t8\t9\n", "line at byte 0.*expected 4 fields"),
    ("u.data", "1\t2\t3\t4\n6\t7\t8\t9\t10\n", "line at byte 8.*found 5"),
    ("u.data", "1\t2\t3\t4\n6\t7\t8\n", "found 3"),
    ("u.data", "1\t2\t3\t4\n6\tabc\t8\t9\n", "item_id 'abc' is not an integer"),
    ("u.data", "1\t2\t\t4\n", "rating '' is not a number"),
    ("ratings.dat", "1::2::3::4\n1:2:3:4\n", "expected 4 fields"),
    ("ratings.dat", "1::2::3::4\n1::2::3\n", "found 3"),
    ("ratings.dat", "1::2::3::4\nx::2::3::4\n", "user_id 'x' is not an integer"),
    ("ratings.dat", "1::2::3::4\n1::2::3::4::5\n", "found 5"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3\n", "found 3"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,x,4\n",
     "rating 'x' is not a number"),
])
def test_malformed_content(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    df = load_movielens(tmp_path)          # lazy: nothing parsed yet
    with pytest.raises(ValueError, match=match) as info:
        df.compute(scheduler="sync")
    assert str(path) in str(info.value)


def test_malformed_header_and_schema(tmp_path):
    (tmp_path / "ratings.csv").write_text("user,movie,stars,time\n1,2,3,4\n")
    with pytest.raises(ValueError, match=r"ratings\.csv.*\['item_id', 'rating', 'timestamp'\]"):
        load_movielens(tmp_path)
    (tmp_path / "ratings.csv").write_text("1,2,3,4\n")
    with pytest.raises(ValueError, match=r"ratings\.csv"):
        load_movielens(tmp_path)
    pd.DataFrame({"user_id": ["a"], "item_id": [1], "rating": [1.0], "timestamp": [1]}
                 ).to_parquet(tmp_path / "ratings.parquet")
    with pytest.raises(ValueError, match=r"ratings\.parquet.*'user_id'.*integer"):
        load_movielens(tmp_path)
    (tmp_path / "ratings.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"ratings\.parquet"):
        load_movielens(tmp_path)


@pytest.mark.skipif(not SHARED_100K.exists(), reason="no shared MovieLens 100k copy")
def test_shared_movielens_100k():
    df = load_movielens(SHARED_100K)
    assert dict(df.dtypes) == DTYPES
    ratings = df.compute()
    assert len(ratings) == 100_000
    assert ratings.user_id.nunique() == 943 and ratings.item_id.nunique() == 1682
    assert ratings.user_id.min() == 1 and ratings.user_id.max() == 943
    assert set(np.unique(ratings.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert not ratings.duplicated(["user_id", "item_id"]).any()


# ------------------------------------------------------------------------------ make_ratings

def test_make_ratings_schema():
    df = make_ratings(300, 80, 4000, npartitions=3, random_state=1)
    assert dict(df.dtypes) == {"user_id": np.int64, "item_id": np.int64, "rating": np.float32}
    assert df.known_divisions and df.divisions == (0, 100, 200, 299)
    parts = [df.get_partition(i).compute() for i in range(3)]
    for i, part in enumerate(parts):
        assert part.user_id.between(100 * i, 100 * i + 99).all()
        np.testing.assert_array_equal(part.index, part.user_id)
        assert not part.duplicated(["user_id", "item_id"]).any()
        keys = part.user_id.to_numpy() * 80 + part.item_id.to_numpy()
        assert (np.diff(keys) > 0).all()             # sorted by (user_id, item_id)
    ratings = pd.concat(parts)
    assert len(ratings) == 4000                      # exact
    assert df.rating.sum().compute() == pytest.approx(ratings.rating.sum(), rel=1e-6)
    assert ratings.user_id.nunique() == 300          # every user has a rating
    assert ratings.item_id.between(0, 79).all()
    assert ratings.rating.between(1, 5).all()
    assert make_ratings(10, 5, 50).compute().groupby("user_id").size().eq(5).all()


def test_make_ratings_deterministic():
    kwargs = dict(n_users=500, n_items=200, n_ratings=10_000, npartitions=4, random_state=7)
    df = make_ratings(**kwargs)
    with dask.config.set(scheduler="sync"):
        a = df.compute()
    with dask.config.set(scheduler="threads"):
        b = make_ratings(**kwargs).compute()
    pd.testing.assert_frame_equal(a, b)
    other = make_ratings(**{**kwargs, "random_state": 8}).compute()
    assert not a.reset_index(drop=True).equals(other.reset_index(drop=True))
    # a partition computed alone, in a fresh collection, equals the same rows of the whole
    alone = make_ratings(**kwargs).partitions[2].compute()
    pd.testing.assert_frame_equal(alone, a[a.user_id.between(250, 374)])
    # random_state=None draws one seed per call: the collection is still reproducible
    df = make_ratings(50, 20, 200, random_state=None)
    pd.testing.assert_frame_equal(df.compute(), df.compute(scheduler="threads"))


def test_make_ratings_factors_explain_ratings():
    df, U, V = make_ratings(400, 150, 12_000, rank=4, noise=0.05, npartitions=2,
                            random_state=3, return_factors=True)
    assert U.shape == (400, 4) and V.shape == (150, 4)
    r = df.compute()
    score = np.einsum("ij,ij->i", U[r.user_id], V[r.item_id])
    assert abs(score.std() - 1) < 0.2                # unit-variance scores
    assert np.corrcoef(score, r.rating)[0, 1] > 0.95
    inside = r.rating.between(1.001, 4.999).to_numpy()
    np.testing.assert_allclose(r.rating[inside], 3 + score[inside], atol=0.3)
    noisy = make_ratings(400, 150, 12_000, rank=4, noise=1.0, npartitions=2,
                         random_state=3).compute()
    assert np.corrcoef(score, noisy.rating)[0, 1] < 0.8
    # the factors depend on the seed only, not on the partitioning
    _, U2, V2 = make_ratings(400, 150, 12_000, rank=4, npartitions=5, random_state=3,
                             return_factors=True)
    np.testing.assert_array_equal(U, U2)
    np.testing.assert_array_equal(V, V2)


def test_make_ratings_implicit():
    df, U, V = make_ratings(300, 100, 9_000, noise=0.05, implicit=True, random_state=4,
                            return_factors=True)
    r = df.compute()
    assert r.rating.dtype == np.float32
    assert (r.rating >= 1).all() and (r.rating == np.round(r.rating)).all()
    score = np.einsum("ij,ij->i", U[r.user_id], V[r.item_id])
    assert np.corrcoef(score, np.log(r.rating))[0, 1] > 0.5


def test_make_ratings_popularity():
    counts = make_ratings(1000, 400, 30_000, random_state=5).compute().item_id.value_counts()
    counts = counts.reindex(range(400), fill_value=0).sort_values(ascending=False)
    assert counts.iloc[:40].mean() > 5 * counts.median()
    assert counts.index[:40].max() > 100              # popular items are not the low ids
    flat = make_ratings(1000, 400, 30_000, popularity=0, random_state=5).compute()
    flat = flat.item_id.value_counts().reindex(range(400), fill_value=0).sort_values()[::-1]
    assert flat.iloc[:40].mean() < 1.5 * flat.median()


def test_sampling_law():
    """Both samplers draw items without replacement, proportionally to the weights."""
    w = np.array([5.0, 3.0, 1.0, 0.5, 0.25])
    p = w / w.sum()
    exact = np.zeros(5)                              # inclusion probabilities for k = 2
    for i, j in itertools.permutations(range(5), 2):
        exact[[i, j]] += p[i] * p[j] / (1 - p[i])
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    n = 50_000
    for tail in (np.ones(6), np.zeros(6)):           # rejection sampling, Gumbel-top-k
        keys = datasets._sample_items(np.random.default_rng(0), np.full(n, 2), np.log(w),
                                      cdf, tail)
        assert keys.size == 2 * n and (np.diff(keys) > 0).all()
        np.testing.assert_allclose(np.bincount(keys % 5) / n, exact, atol=0.01)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_users=0), "n_users"),
    (dict(n_items=2.5), "n_items"),
    (dict(n_ratings=True), "n_ratings"),
    (dict(n_users=10, n_ratings=5), "at least|between"),
    (dict(n_users=10, n_items=3, n_ratings=31), "between"),
    (dict(rank=0), "rank"),
    (dict(noise=-0.1), "noise"),
    (dict(noise=float("nan")), "noise"),
    (dict(popularity=-1), "popularity"),
    (dict(implicit="yes"), "implicit"),
    (dict(npartitions=0), "npartitions"),
    (dict(n_users=10, n_ratings=100, npartitions=11), "npartitions"),
    (dict(random_state=-1), "random_state"),
    (dict(random_state="0"), "random_state"),
    (dict(return_factors=1), "return_factors"),
])
def test_make_ratings_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_ratings(**kwargs)


def test_load_movielens_bad_blocksize(tmp_path):
    _write(tmp_path, "u.data")
    with pytest.raises(ValueError, match="blocksize"):
        load_movielens(tmp_path, blocksize=0)
    assert os.path.exists(tmp_path / "u.data")


# ------------------------------------------------------------------------- make_transactions

TRANSACTION_DTYPES = {"amount": np.float64, "hour": np.float64, "distance_km": np.float64,
                      "merchant_risk": np.float64, "n_last_24h": np.int64, "online": np.int8,
                      "foreign": np.int8, "is_fraud": np.int8}


def test_make_transactions_shape_and_chunks():
    df = make_transactions(10_500, chunks=4_000, random_state=0)
    assert dict(df.dtypes) == TRANSACTION_DTYPES
    assert df.npartitions == 3 and df.divisions == (0, 4_000, 8_000, 10_499)
    parts = [df.get_partition(i).compute() for i in range(3)]
    assert [len(p) for p in parts] == [4_000, 4_000, 2_500]
    whole = df.compute()
    assert dict(whole.dtypes) == TRANSACTION_DTYPES
    np.testing.assert_array_equal(whole.index, np.arange(10_500))
    assert whole.amount.gt(0).all() and whole.distance_km.ge(0).all()
    assert whole.hour.between(0, 24, inclusive="left").all()
    assert whole.merchant_risk.between(0, 1).all() and whole.n_last_24h.ge(0).all()
    assert set(whole.online.unique()) == {0, 1} and set(whole.foreign.unique()) <= {0, 1}
    assert len(make_transactions(7, chunks=100, random_state=0).compute()) == 7


@pytest.mark.parametrize("rate", [0.002, 0.05])
def test_make_transactions_fraud_rate(rate):
    n = 400_000
    y = make_transactions(n, fraud_rate=rate, chunks=100_000, random_state=1).is_fraud
    observed = y.mean().compute()
    assert abs(observed - rate) < 4 * (rate * (1 - rate) / n) ** 0.5
    assert make_transactions(1_000, fraud_rate=0).is_fraud.sum().compute() == 0
    assert make_transactions(1_000, fraud_rate=1).is_fraud.min().compute() == 1


def test_make_transactions_features_tell_fraud():
    df = make_transactions(200_000, fraud_rate=0.05, random_state=2).compute()
    fraud, legit = df[df.is_fraud == 1], df[df.is_fraud == 0]
    assert fraud.amount.median() > 1.5 * legit.amount.median()
    assert fraud.distance_km.mean() > 3 * legit.distance_km.mean()
    assert fraud.online.mean() > 2 * legit.online.mean()
    night = (df.hour < 5) | (df.hour > 22)
    assert night[df.is_fraud == 1].mean() > 2 * night[df.is_fraud == 0].mean()
    # no single feature gives fraud away: the most fraudulent-looking legitimate
    # transactions outnumber the frauds among the largest amounts
    top = df.nlargest(2_000, "amount")
    assert 0.1 < top.is_fraud.mean() < 0.9


def test_make_transactions_deterministic():
    kwargs = dict(n_samples=30_000, fraud_rate=0.01, chunks=7_000, random_state=3)
    with dask.config.set(scheduler="sync"):
        a = make_transactions(**kwargs).compute()
    with dask.config.set(scheduler="threads"):
        b = make_transactions(**kwargs).compute()
    pd.testing.assert_frame_equal(a, b)
    alone = make_transactions(**kwargs).partitions[2].compute()   # computed alone
    pd.testing.assert_frame_equal(alone, a.iloc[14_000:21_000])
    # a block depends on its index, not on the others: the same rows with a longer tail
    longer = make_transactions(**{**kwargs, "n_samples": 50_000}).compute()
    pd.testing.assert_frame_equal(longer.iloc[:28_000], a.iloc[:28_000])
    other = make_transactions(**{**kwargs, "random_state": 4}).compute()
    assert not np.array_equal(other.amount, a.amount)
    df = make_transactions(1_000, random_state=None)
    pd.testing.assert_frame_equal(df.compute(), df.compute(scheduler="threads"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0), "n_samples"),
    (dict(chunks=0), "chunks"),
    (dict(chunks=2.5), "chunks"),
    (dict(fraud_rate=1.5), "fraud_rate"),
    (dict(fraud_rate=-0.1), "fraud_rate"),
    (dict(fraud_rate=float("nan")), "fraud_rate"),
    (dict(fraud_rate=True), "fraud_rate"),
    (dict(random_state=-1), "random_state"),
])
def test_make_transactions_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_transactions(**kwargs)


# --------------------------------------------------------------------------- make_documents

def test_make_documents_shape_and_chunks():
    df, words = make_documents(2_500, n_topics=3, words_per_topic=20, n_words=500,
                               doc_length=12, chunks=1_000, random_state=0,
                               return_topics=True)
    assert list(df.columns) == ["text", "topic"] and df.topic.dtype == np.int64
    assert df.npartitions == 3 and df.divisions == (0, 1_000, 2_000, 2_499)
    docs = df.compute()
    assert [len(df.get_partition(i).compute()) for i in range(3)] == [1_000, 1_000, 500]
    np.testing.assert_array_equal(docs.index, np.arange(2_500))
    assert set(docs.topic.unique()) == {0, 1, 2}
    assert words.shape == (3, 20) and len(set(words.ravel())) == 60   # disjoint topics
    tokens = docs.text.str.split()
    lengths = tokens.str.len()
    assert lengths.min() >= 1 and abs(lengths.mean() - 12) < 0.3
    vocabulary = set(tokens.explode())
    assert len(vocabulary) <= 500 and set(words.ravel()) <= vocabulary
    assert all(w.isalpha() and w.islower() and 4 <= len(w) <= 8 for w in vocabulary)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_make_documents_topic_share(share):
    df, words = make_documents(3_000, n_topics=4, topic_share=share, random_state=1,
                               return_topics=True)
    docs = df.compute()
    owner = {w: t for t, row in enumerate(words) for w in row}
    own = other = total = 0
    for text, topic in zip(docs.text, docs.topic, strict=True):
        for w in text.split():
            t = owner.get(w)
            total += 1
            own += t == topic
            other += t is not None and t != topic
    own, other = own / total, other / total / 3    # the share of one other topic
    # the background law also picks topic words, equally for every topic
    assert abs(own - other - share) < 0.02
    if share == 1.0:
        assert other == 0


def test_make_documents_deterministic():
    kwargs = dict(n_samples=5_000, chunks=2_000, random_state=5)
    with dask.config.set(scheduler="sync"):
        a = make_documents(**kwargs).compute()
    b = make_documents(**kwargs).compute(scheduler="threads")
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(make_documents(**kwargs).partitions[1].compute(),
                                  a.iloc[2_000:4_000])
    _, w1 = make_documents(10, random_state=5, return_topics=True)
    _, w2 = make_documents(10_000, chunks=10, random_state=5, return_topics=True)
    np.testing.assert_array_equal(w1, w2)       # the topics depend on the seed only
    other = make_documents(**{**kwargs, "random_state": 6}).compute()
    assert not a.text.equals(other.text)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0), "n_samples"),
    (dict(n_topics=0), "n_topics"),
    (dict(n_topics=10, words_per_topic=50, n_words=400), "n_words"),
    (dict(doc_length=0), "doc_length"),
    (dict(topic_share=1.5), "topic_share"),
    (dict(chunks=-1), "chunks"),
    (dict(return_topics="yes"), "return_topics"),
])
def test_make_documents_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_documents(**kwargs)
