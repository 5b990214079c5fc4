"""Parquet-backed dask dataframes, as users read them: selected columns, filters, and y
from the same frame, over files of several row groups.

With selected columns dask fuses a different number of files or row groups into a
partition when it counts rows than when it reads the data; ``to_dask_array(lengths=True)``
then failed with "The number of items in 'lengths' does not match the number of
partitions".  The row counts are now measured on the array's own blocks.
"""

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import dmlkit

pytest.importorskip("pyarrow")

FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    """Five files of different lengths, each of several row groups, plus a label and an
    id column (not features)."""
    path = tmp_path_factory.mktemp("parquet")
    rng = np.random.default_rng(0)
    frames = []
    for f, n in enumerate([4000, 2500, 3000, 1000, 3500]):
        df = pd.DataFrame(rng.standard_normal((n, len(FEATURES))), columns=FEATURES)
        df.loc[: n // 2, "f0"] += 4.0
        df["label"] = (df["f0"] + 0.2 * rng.standard_normal(n) > 2).astype(np.int64)
        df["target"] = df["f0"] * 2.0 - df["f1"] + 0.1 * rng.standard_normal(n)
        df["id"] = np.arange(n) + 10_000 * f
        df["part"] = f
        df.to_parquet(path / f"part-{f}.parquet", row_group_size=700, index=False)
        frames.append(df)
    return path, pd.concat(frames, ignore_index=True)


def _sources(path):
    """(X, y-frame) pairs as users write them."""
    full = dd.read_parquet(path)
    cols = FEATURES[:3]
    return {
        "getitem": (full[cols], full),
        "columns=": (dd.read_parquet(path, columns=cols), full),
        "one-column": (full[["f0"]], full),
        "split_row_groups": (dd.read_parquet(path, columns=cols, split_row_groups=True),
                             dd.read_parquet(path, split_row_groups=True)),
    }


@pytest.mark.parametrize("how", ["getitem", "columns=", "one-column", "split_row_groups"])
def test_sgd_and_kmeans_fit_selected_parquet_columns(parquet_dir, how):
    path, df = parquet_dir
    X, frame = _sources(path)[how]
    cols = list(X.columns)
    clf = dmlkit.SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0)
    clf.fit(X, frame["label"])
    assert list(clf.feature_names_in_) == cols
    pred = clf.predict(X).compute()
    assert len(pred) == len(df) and (pred == df["label"].to_numpy()).mean() > 0.9
    reg = dmlkit.SGDRegressor(max_iter=5, tol=None, random_state=0).fit(X, frame["target"])
    assert reg.score(df[cols], df["target"]) > (0.5 if "f1" in cols else 0.3)
    # KMeans from fixed initial centres gives the in-memory fit's centres
    init = df[cols].to_numpy()[[0, 1, -1]]
    km = dmlkit.KMeans(3, init=init, max_iter=20, tol=0).fit(X)
    ref = dmlkit.KMeans(3, init=init, max_iter=20, tol=0).fit(df[cols].to_numpy())
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-9)
    assert km.labels_.compute().shape == (len(df),)


def test_filters_and_empty_partitions(parquet_dir):
    path, df = parquet_dir
    # a filter that leaves one file with no rows and the others shorter
    flt = [("part", "!=", 3), ("f2", ">", -0.5)]
    frame = dd.read_parquet(path, filters=flt)
    keep = df[(df["part"] != 3) & (df["f2"] > -0.5)]
    X = frame[FEATURES[:3]]
    clf = dmlkit.SGDClassifier(max_iter=3, tol=None, random_state=0).fit(X, frame["label"])
    assert clf.predict(X).compute().shape == (len(keep),)
    km = dmlkit.KMeans(2, random_state=0).fit(X)
    assert km.labels_.compute().shape == (len(keep),)
    # a partition emptied by a row filter of the dataframe itself
    sub = dd.read_parquet(path)
    sub = sub[sub["part"] != 1]
    m = dmlkit.SGDRegressor(max_iter=3, tol=None, random_state=0).fit(sub[FEATURES],
                                                                      sub["target"])
    assert m.coef_.shape == (len(FEATURES),)


def test_als_from_parquet_columns(parquet_dir, tmp_path):
    path, df = parquet_dir
    ratings = pd.DataFrame({"user_id": df["id"] % 97, "item_id": df["id"] % 31,
                            "rating": df["f0"].abs(), "noise": df["f1"]})
    ratings.to_parquet(tmp_path / "ratings.parquet", row_group_size=1000, index=False)
    src = dd.read_parquet(tmp_path / "ratings.parquet", columns=["user_id", "item_id",
                                                                  "rating"])
    als = dmlkit.ALS(factors=4, iterations=2, random_state=0).fit(src)
    ref = dmlkit.ALS(factors=4, iterations=2, random_state=0).fit(
        ratings[["user_id", "item_id", "rating"]])
    np.testing.assert_array_equal(als.user_factors_, ref.user_factors_)


def test_nullable_float_columns_are_floats_and_missing_values_say_so():
    pdf = pd.DataFrame({"a": pd.array(np.arange(20.0), dtype="Float64"),
                        "b": pd.array(np.arange(20) % 3, dtype="Int64"),
                        "c": pd.array(np.linspace(0, 1, 20), dtype="Float32")})
    X = dd.from_pandas(pdf, npartitions=3)
    km = dmlkit.KMeans(2, random_state=0).fit(X)
    ref = dmlkit.KMeans(2, random_state=0).fit(
        dd.from_pandas(pdf.astype("float64"), npartitions=3))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.cluster_centers_.dtype == np.float64
    f32 = dd.from_pandas(pdf[["c"]], npartitions=2)
    assert dmlkit.KMeans(2, random_state=0).fit(f32).cluster_centers_.dtype == np.float32
    y = dd.from_pandas(pd.Series(pd.array(np.arange(20) % 2, dtype="Int64")), npartitions=3)
    clf = dmlkit.SGDClassifier(max_iter=2, tol=None, random_state=0).fit(X, y)
    assert list(clf.classes_) == [0, 1]
    pdf.loc[4, "a"] = pd.NA
    with pytest.raises(ValueError, match="NaN"):
        dmlkit.KMeans(2, random_state=0).fit(dd.from_pandas(pdf, npartitions=3))


def test_known_row_chunks_measures_the_blocks_themselves():
    from dmlkit._core.blocks import known_row_chunks

    x = da.from_array(np.arange(10.0), chunks=4)
    x = x[x > 2.5]  # unknown chunk sizes
    (k,) = known_row_chunks(x)
    assert k.chunks == ((1, 4, 2),)
    np.testing.assert_array_equal(k.compute(), np.arange(3.0, 10.0))
