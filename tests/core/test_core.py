"""The shared core: input blocks, fixed-order reduction, config, driver caching."""

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from dask.delayed import Delayed

import dmlkit
from dmlkit._core.blocks import to_row_blocks
from dmlkit._core.driver import Driver
from dmlkit._core.reduce import tree_reduce, tree_reduce_local


def test_numpy_becomes_row_blocks_with_one_column_chunk():
    X = np.arange(40.0).reshape(20, 2)
    with dmlkit.config_context(block_size=16 * 5):
        b = to_row_blocks(X, sample_weight=np.ones(20))
    assert b.X.chunks == ((5, 5, 5, 5), (2,))
    assert b.sample_weight.chunks == ((5, 5, 5, 5),)
    np.testing.assert_array_equal(b.row_offsets, [0, 5, 10, 15, 20])
    assert not b.lazy


def test_dask_inputs_keep_row_layout_and_get_one_column_chunk():
    X = da.ones((30, 4), chunks=(7, 2))
    b = to_row_blocks(X, sample_weight=da.ones(30, chunks=10))
    assert b.X.chunks == ((7, 7, 7, 7, 2), (4,))
    assert b.sample_weight.chunks == b.X.chunks[:1]
    assert b.lazy
    ints = to_row_blocks(da.ones((10, 2), dtype=np.int64, chunks=5))
    assert ints.X.dtype == np.float64
    f32 = to_row_blocks(da.ones((10, 2), dtype=np.float32, chunks=5))
    assert f32.X.dtype == np.float32


def test_dask_dataframe_records_feature_names():
    class Est:
        pass

    df = dd.from_pandas(pd.DataFrame({"a": np.arange(10.0), "b": np.ones(10)}), npartitions=3)
    est = Est()
    b = to_row_blocks(df, estimator=est)
    assert est.n_features_in_ == 2
    assert list(est.feature_names_in_) == ["a", "b"]
    assert sum(b.X.chunks[0]) == 10
    with pytest.raises(ValueError, match="feature names"):
        to_row_blocks(df.rename(columns={"a": "z"}), estimator=est, reset=False)


def test_tree_reduce_fixed_order_and_shape():
    seen = []

    def combine(*parts):
        seen.append(parts)
        return "(" + "+".join(parts) + ")"

    parts = [dask.delayed(str(i)) for i in range(5)]
    out = tree_reduce(parts, combine, split_every=2)
    assert out.compute(scheduler="threads") == "(((0+1)+(2+3))+4)"
    assert tree_reduce_local([str(i) for i in range(5)], combine, split_every=2) == \
        "(((0+1)+(2+3))+4)"
    with pytest.raises(ValueError):
        tree_reduce([], combine)


def test_config_context_validates():
    with pytest.raises(ValueError, match="Unknown dmlkit setting"):
        with dmlkit.config_context(blocksize="1MiB"):
            pass
    with pytest.raises(ValueError, match="backend"):
        with dmlkit.config_context(backend="gpu-please"):
            pass
    with dmlkit.config_context(retries=7):
        assert dmlkit.get_config("retries") == 7
    assert dmlkit.get_config("retries") == 3


def test_cache_auto_persists_small_and_streams_large():
    X = da.ones((100, 3), chunks=20)
    small = Driver("t", to_row_blocks(X), cache="auto")
    assert small.cached
    with dask.config.set({"dmlkit.cache-fraction": 1e-12}):
        big = Driver("t", to_row_blocks(X), cache="auto")
    assert not big.cached
    assert not Driver("t", to_row_blocks(X), cache=False).cached
    with pytest.raises(ValueError, match="cache"):
        Driver("t", to_row_blocks(X), cache="yes")


def test_streamed_and_cached_fits_agree():
    rng = np.random.default_rng(0)
    X = da.from_array(rng.standard_normal((3000, 3)), chunks=700)
    a = dmlkit.KMeans(4, random_state=1, cache=True).fit(X)
    b = dmlkit.KMeans(4, random_state=1, cache=False).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_shuffle_block_is_sorted_merged_and_stores_int32_ids_when_they_fit():
    from dmlkit._core.shuffle import build_block, shuffle_to_blocks

    rows = np.array([2, 0, 2, 1, 0], dtype=np.int64)
    cols = np.array([5, 3, 1, 3, 3], dtype=np.int64)
    vals = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    # two pieces, duplicates (0, 3) merged in arrival order
    indptr, indices, data = build_block(0, 3, False, "mean", (rows[:2], cols[:2], vals[:2]),
                                        (rows[2:], cols[2:], vals[2:]))
    np.testing.assert_array_equal(indptr, [0, 1, 2, 4])
    assert indices.dtype == np.int32
    np.testing.assert_array_equal(indices, [3, 3, 1, 5])
    np.testing.assert_array_equal(data, [4.0, 4.0, 3.0, 1.0])
    # the column layout of the same triples, through the lazy shuffle
    _, by_col = shuffle_to_blocks([(rows, cols, vals)], [0, 3], [0, 6], duplicates="sum")
    indptr, indices, data = by_col[0].compute()
    np.testing.assert_array_equal(indptr, [0, 0, 1, 1, 3, 3, 4])
    np.testing.assert_array_equal(indices, [2, 0, 1, 2])
    np.testing.assert_array_equal(data, [3.0, 8.0, 4.0, 1.0])
    # an id past int32 keeps the block's ids in int64
    big = np.array([2**31 + 5], dtype=np.int64)
    _, indices, _ = build_block(0, 1, False, "sum", (np.zeros(1, np.int64), big, vals[:1]))
    assert indices.dtype == np.int64 and indices[0] == 2**31 + 5
    with pytest.raises(ValueError, match="duplicate ratings"):
        build_block(0, 3, False, "error", (rows, cols, vals))


def test_small_nested_state_travels_inline_and_large_state_as_one_key():
    d = Driver("test", None)
    small = {"coef": np.zeros((1, 50)), "q": None, "t": 3.0, "pair": (np.ones(3), 1)}
    assert d.shared(small) is small  # inside each task's arguments
    big = {"coef": np.zeros((1, 2**16))}  # 512 KiB
    assert isinstance(d.shared(big), Delayed)
    assert isinstance(d.shared(pd.Index([1, 2])), Delayed)  # unknown types: a key
    assert d.shared(np.zeros(4)).shape == (4,)


def test_prefetch_changes_no_value_and_wants_a_contiguous_array():
    import numba
    from numba.core.errors import TypingError

    from dmlkit._core.numba_utils import prefetch

    @numba.njit
    def gather_with_prefetch(a, order, ahead):
        s = np.empty(order.shape[0])
        for i in range(order.shape[0]):
            if i + ahead < order.shape[0]:
                prefetch(a, order[i + ahead])
            prefetch(a, a.size + 1000)  # past the end: a hint, never a fault
            s[i] = a.ravel()[order[i]]
        return s

    a = np.random.default_rng(0).random((300, 7))
    order = np.random.default_rng(1).permutation(a.size)
    expected = a.ravel()[order]
    np.testing.assert_array_equal(gather_with_prefetch(a, order, 8), expected)
    np.testing.assert_array_equal(gather_with_prefetch(a, order.astype(np.int32), 0), expected)
    assert a[:, 0].flags.c_contiguous is False
    with pytest.raises(TypingError, match="prefetch"):
        gather_with_prefetch(a[:, ::2], order[:10] % 150, 1)


def test_parallel_always_runs_the_parallel_build_on_one_thread():
    from numba import prange

    from dmlkit._core.numba_utils import block_kernel, parallel_available

    def squares(x, n_chunks):
        out = np.empty(x.shape[0])
        step = -(-x.shape[0] // n_chunks)
        for c in prange(n_chunks):
            for i in range(c * step, min(x.shape[0], (c + 1) * step)):
                out[i] = x[i] * x[i]
        return out

    x = np.arange(10.0)
    always = block_kernel(parallel_always=True)(squares)
    default = block_kernel(squares)
    np.testing.assert_array_equal(always(x, 3, n_threads=1), x * x)
    np.testing.assert_array_equal(default(x, 3, n_threads=1), x * x)
    assert len(default.serial.signatures) == 1 and not default.parallel.signatures
    if parallel_available():
        assert len(always.parallel.signatures) == 1 and not always.serial.signatures
    else:  # no thread-safe layer: the serial build serves
        assert len(always.serial.signatures) == 1


def test_import_dmlkit_gives_its_submodules():
    # the README's snippets use dmlkit.datasets / dmlkit.metrics after `import dmlkit`
    import subprocess
    import sys

    code = ("import dmlkit; dmlkit.datasets.make_blobs; dmlkit.metrics.rmse; "
            "dmlkit.feature_extraction.transform_partitions; dmlkit.exceptions.ClusterError")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_openmp_threads_wait_passively_unless_the_user_says(given):
    # spinning OpenMP threads starve each other on busy cores (0.6 ms -> 110 ms a call)
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = "import os, dmlkit; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.strip()
    assert out == (given or "PASSIVE")


def test_one_in_memory_block_without_a_cluster_runs_passes_directly():
    # no dask graph per pass for a single in-memory block; the same bits as the graph
    X = np.random.default_rng(3).standard_normal((300, 4))
    y = (X[:, 0] - X[:, 1] > 0).astype(int)
    d = Driver("test", to_row_blocks(X, y=y, sample_weight=np.ones(300)))
    assert d._direct is not None
    lazy = Driver("test", to_row_blocks(da.from_array(X, chunks=(300, 4))))
    assert lazy._direct is None
    sgd = dmlkit.SGDClassifier(max_iter=7, tol=None, random_state=0, average=3)
    direct = sgd.fit(X, y, sample_weight=np.linspace(0.5, 1.5, 300)).coef_.copy()
    graph = sgd.fit(da.from_array(X, chunks=(300, 4)), da.from_array(y, chunks=300),
                    sample_weight=da.from_array(np.linspace(0.5, 1.5, 300), chunks=300)).coef_
    np.testing.assert_array_equal(direct, graph)
    km = dmlkit.KMeans(3, random_state=0, n_init=1)
    np.testing.assert_array_equal(km.fit(X).cluster_centers_,
                                  km.fit(da.from_array(X, chunks=(300, 4))).cluster_centers_)


def test_column_stats_of_csr_blocks_match_scikit_learn():
    import scipy.sparse as sp
    from sklearn.utils.sparsefuncs import mean_variance_axis

    from dmlkit._core.stats import column_stats

    X = sp.random(5000, 40, density=0.1, format="csr", random_state=0) * 3.0
    X = X.tolil()
    X[0, 0] = 1.0  # a row with a stored entry written twice below: summed, not squared
    X = X.tocsr()
    X.data = np.concatenate([X.data, [0.5]])
    X.indices = np.concatenate([X.indices, [0]]).astype(X.indices.dtype)
    X.indptr[1:] += 1
    X.has_canonical_format = False
    ref = X.copy()
    ref.sum_duplicates()
    with dmlkit.config_context(block_size="64KiB"):
        d = Driver("test", to_row_blocks(X, accept_sparse=True))
    assert d.blocks.n_blocks > 1
    n, mean, var = column_stats(d)
    want_mean, want_var = mean_variance_axis(ref, axis=0)
    assert n == 5000
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(var, want_var, rtol=1e-10)


def test_one_parameter_checker_with_scikit_learns_wording():
    from numbers import Integral

    from dmlkit._core.params import Interval, StrOptions, validate_params
    from dmlkit.exceptions import InvalidParameterError

    table = {"k": [Interval(Integral, 1, None, closed="left")],
             "mode": [StrOptions(("a", "b")), None]}
    validate_params(table, {"k": 3, "mode": None, "unlisted": object()}, "Est")
    with pytest.raises(InvalidParameterError,
                       match=r"^The 'k' parameter of Est must be an int in the range "
                             r"\[1, inf\)\. Got 0 instead\.$"):
        validate_params(table, {"k": 0}, "Est")
    with pytest.raises(ValueError, match="'k' parameter of Est"):
        validate_params(table, {"k": True}, "Est")  # a bool is not a count
    with pytest.raises(TypeError, match=r"a str among \{'a', 'b'\} or None\. Got 'c'"):
        validate_params(table, {"mode": "c"}, "Est")
