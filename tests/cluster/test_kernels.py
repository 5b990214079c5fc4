"""k-means block kernels: numba vs array-API (NumPy and array_api_strict) vs a NumPy
reference, in float32 and float64, with empty clusters and exact ties."""

import array_api_strict as xps
import numpy as np
import pytest

from dmlkit._core.dispatch import to_numpy
from dmlkit.cluster import _kernels_cpu as cpu
from dmlkit.cluster import _kernels_xp as xpk


def reference(X, w, C):
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    d2 = ((X64[:, None, :] - C64[None, :, :]) ** 2).sum(-1)
    labels = d2.argmin(1)  # first index on ties
    w = np.ones(len(X)) if w is None else w.astype(np.float64)
    k = len(C)
    sums = np.zeros((k, X.shape[1]))
    np.add.at(sums, labels, X64 * w[:, None])
    counts = np.bincount(labels, weights=w, minlength=k)
    inertia = float((w * d2[np.arange(len(X)), labels]).sum())
    return labels, d2, sums, counts, inertia


def strict(a):
    return None if a is None else xps.asarray(a)


@pytest.fixture(params=["numba", "xp-numpy", "xp-strict"])
def impl(request):
    return request.param


def run_assign(impl, X, w, C, n_threads=1):
    if impl == "numba":
        return cpu.assign_partial_sums_block(X, w, C, n_threads=n_threads)
    if impl == "xp-numpy":
        return xpk.assign_partial_sums_block(X, w, C)
    out = xpk.assign_partial_sums_block(strict(X), strict(w), strict(C))
    return tuple(to_numpy(o) for o in out)


def run_labels(impl, X, C):
    if impl == "numba":
        return cpu.labels_sqdist_block(X, C)
    if impl == "xp-numpy":
        return xpk.labels_sqdist_block(X, C)
    return tuple(to_numpy(o) for o in xpk.labels_sqdist_block(strict(X), strict(C)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [1, 37, 10_000])
def test_assign_partial_sums_matches_reference(impl, dtype, weighted, n, rng):
    d, k = 5, 7
    X = rng.standard_normal((n, d)).astype(dtype)
    C = rng.standard_normal((k, d)).astype(dtype)
    w = rng.uniform(0.5, 2.0, n).astype(dtype) if weighted else None
    sums, counts, inertia = run_assign(impl, X, w, C)
    _, _, rsums, rcounts, rinertia = reference(X, w, C)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(counts, rcounts, rtol=rtol)
    np.testing.assert_allclose(sums, rsums, rtol=rtol, atol=rtol * n)
    np.testing.assert_allclose(float(inertia), rinertia, rtol=rtol)
    assert np.asarray(sums).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_labels_match_reference(impl, dtype, rng):
    X = rng.standard_normal((3000, 6)).astype(dtype)
    C = rng.standard_normal((9, 6)).astype(dtype)
    labels, d2 = run_labels(impl, X, C)
    rlabels, rd2, *_ = reference(X, None, C)
    # Labels may differ only where two centres are within rounding of each other.
    gap = np.sort(rd2, axis=1)[:, 1] - np.sort(rd2, axis=1)[:, 0]
    safe = gap > (1e-3 if dtype == np.float32 else 1e-9)
    np.testing.assert_array_equal(np.asarray(labels)[safe], rlabels[safe])
    assert (np.asarray(labels) == rlabels).mean() > 0.999
    np.testing.assert_allclose(np.asarray(d2)[safe], rd2[np.arange(3000), rlabels][safe],
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_empty_clusters_get_zero_weight(impl):
    X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0]])
    C = np.array([[0.0, 0.0], [100.0, 100.0], [10.0, 10.0], [-50.0, 3.0]])
    sums, counts, inertia = run_assign(impl, X, None, C)
    np.testing.assert_array_equal(counts, [2.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(sums[1], [0.0, 0.0])
    np.testing.assert_allclose(sums[0], [0.1, 0.0])
    np.testing.assert_allclose(float(inertia), 0.01)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_go_to_lowest_index(impl, dtype):
    # Integer data: every distance is exact, so these are true ties.
    X = np.array([[0, 0], [2, 0], [1, 0], [1, 1]], dtype=dtype)
    C = np.array([[0, 1], [2, 1], [1, 0], [1, 0]], dtype=dtype)
    labels, d2 = run_labels(impl, X, C)
    rlabels, *_ = reference(X, None, C)
    np.testing.assert_array_equal(np.asarray(labels), rlabels)
    np.testing.assert_array_equal(np.asarray(labels), [0, 1, 2, 0])


def test_numba_threads_do_not_change_bits(rng):
    X = rng.standard_normal((70_000, 8)).astype(np.float32)
    C = rng.standard_normal((5, 8)).astype(np.float32)
    one = cpu.assign_partial_sums_block(X, None, C, n_threads=1)
    two = cpu.assign_partial_sums_block(X, None, C, n_threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert one[2] == two[2]


def test_numba_accepts_readonly_and_fortran_blocks(rng):
    X = np.asfortranarray(rng.standard_normal((500, 4)))
    X.setflags(write=False)
    C = rng.standard_normal((3, 4))
    out = cpu.assign_partial_sums_block(X, None, C)
    ref = cpu.assign_partial_sums_block(np.ascontiguousarray(X), None, C)
    np.testing.assert_array_equal(out[0], ref[0])


def test_sqdist_all(impl, rng):
    X = rng.standard_normal((50, 3))
    C = rng.standard_normal((4, 3))
    if impl == "numba":
        out = cpu.sqdist_block(X, C)
    elif impl == "xp-numpy":
        out = xpk.sqdist_block(X, C)
    else:
        out = to_numpy(xpk.sqdist_block(strict(X), strict(C)))
    _, rd2, *_ = reference(X, None, C)
    np.testing.assert_allclose(out, rd2, rtol=1e-12)


def test_inertia_can_be_skipped_without_changing_sums(impl, rng):
    X = rng.standard_normal((5000, 4))
    C = rng.standard_normal((3, 4))
    w = rng.uniform(0.5, 1.5, 5000)
    exact = run_assign(impl, X, w, C)
    if impl == "numba":
        fast = cpu.assign_partial_sums_block(X, w, C, exact_inertia=False)
    elif impl == "xp-numpy":
        fast = xpk.assign_partial_sums_block(X, w, C, exact_inertia=False)
    else:
        fast = tuple(to_numpy(o) for o in xpk.assign_partial_sums_block(
            strict(X), strict(w), strict(C), exact_inertia=False))
    np.testing.assert_array_equal(fast[0], exact[0])
    np.testing.assert_array_equal(fast[1], exact[1])
    assert np.isnan(float(fast[2])) and np.isfinite(float(exact[2]))


# --- dense numba kernels: explicit SIMD, 8 rows x panels of one vector of centres -------
def _labels_safe(rd2, dtype):
    """Rows whose nearest centre is clear of rounding (the two nearest apart)."""
    two = np.sort(rd2, axis=1)[:, :2] if rd2.shape[1] > 1 else np.c_[rd2, rd2 + 1]
    scale = np.abs(rd2).max(axis=1) + 1.0
    return (two[:, 1] - two[:, 0]) > scale * (1e-4 if dtype == np.float32 else 1e-12)


# k around the vector width (16 float32 / 8 float64 lanes), several panels of centres and
# the pairs of panels scored together; d with and without a whole number of vectors; n
# with a tail of single rows after the groups of 8
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (7, 1, 2), (203, 7, 8), (203, 9, 15),
                                   (1000, 16, 16), (1000, 17, 17), (1001, 33, 33),
                                   (5003, 32, 70), (777, 130, 48)])
@pytest.mark.parametrize("weighted", [False, True])
def test_numba_dense_kernels_match_numpy_reference(dtype, n, d, k, weighted, rng):
    X = (rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)).astype(dtype)
    C = (X[rng.integers(n, size=k)] + rng.standard_normal((k, d))).astype(dtype)
    w = rng.uniform(0.5, 2.0, n).astype(dtype) if weighted else None
    rlabels, rd2, _, _, rinertia = reference(X, w, C)
    labels, d2 = cpu.labels_sqdist_block(X, C)
    assert labels.dtype == np.int32 and ((labels >= 0) & (labels < k)).all()
    safe = _labels_safe(rd2, dtype)
    assert safe.mean() > 0.99
    np.testing.assert_array_equal(labels[safe], rlabels[safe])
    np.testing.assert_allclose(d2, rd2[np.arange(n), labels], rtol=1e-12, atol=1e-12)
    # the fused pass assigns the same labels, and (one row chunk under 8192 rows) sums
    # each cluster's rows in row order in float64: NumPy's np.add.at, bit for bit
    sums, counts, inertia = cpu.assign_partial_sums_block(X, w, C)
    wf = np.ones(n) if w is None else w.astype(np.float64)
    exact_sums = np.zeros((k, d))
    np.add.at(exact_sums, labels, X.astype(np.float64) * wf[:, None])
    np.testing.assert_array_equal(counts, np.bincount(labels, weights=wf, minlength=k))
    np.testing.assert_array_equal(sums, exact_sums)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(float(inertia), rinertia, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_dense_label_depends_on_the_row_only(dtype, rng):
    # a row scores the same whether it falls in a group of 8, in the tail, in another
    # chunk or block, on any thread count
    X = rng.standard_normal((20_011, 5)).astype(dtype)
    C = rng.standard_normal((37, 5)).astype(dtype)
    labels, d2 = cpu.labels_sqdist_block(X, C)
    for start in (1, 3, 8, 13, 4099):
        sub, subd2 = cpu.labels_sqdist_block(X[start:], C, n_threads=2)
        np.testing.assert_array_equal(sub, labels[start:])
        np.testing.assert_array_equal(subd2, d2[start:])
    one = cpu.assign_partial_sums_block(X, None, C, n_threads=1)
    parts = [cpu.assign_partial_sums_block(X[a:b], None, C) for a, b in
             ((0, 7), (7, 9000), (9000, 20_011))]
    np.testing.assert_array_equal(sum(p[1] for p in parts), one[1])
    np.testing.assert_array_equal(one[1], np.bincount(labels, minlength=37))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_dense_threads_do_not_change_bits(dtype, rng):
    X = rng.standard_normal((70_001, 11)).astype(dtype)
    C = rng.standard_normal((40, 11)).astype(dtype)
    w = rng.uniform(0.5, 2.0, 70_001).astype(dtype)
    one = cpu.assign_partial_sums_block(X, w, C, n_threads=1)
    two = cpu.assign_partial_sums_block(X, w, C, n_threads=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(cpu.labels_sqdist_block(X, C, n_threads=1),
                    cpu.labels_sqdist_block(X, C, n_threads=2), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_dense_ties_across_panels_go_to_lowest_index(dtype):
    # integer data: exact scores.  Centre 2 is repeated at 20 (float32: the next panel of
    # 16) and at 40 (a third panel, scored in a pair with the second one for float64);
    # centre 17 at 33.
    k = 45
    C = np.full((k, 3), 100.0, dtype=dtype)
    C[2] = C[20] = C[40] = [1, 2, 3]
    C[17] = C[33] = [-5, 0, 5]
    X = np.array([[1, 2, 3], [-5, 0, 5], [1, 2, 4], [-5, 1, 5]] * 5, dtype=dtype)
    labels, d2 = cpu.labels_sqdist_block(X, C)
    np.testing.assert_array_equal(labels, [2, 17, 2, 17] * 5)
    np.testing.assert_array_equal(d2, [0, 0, 1, 1] * 5)
    _, counts, _ = cpu.assign_partial_sums_block(X, None, C)
    assert counts[2] == 10 and counts[17] == 10 and counts.sum() == 20


def test_numba_dense_nonfinite_rows_get_a_valid_label():
    # NaN, inf and overflowing rows (the fit rejects them; the kernel must stay in range
    # and never pick a padding lane)
    X = np.array([[np.nan, 0.0], [np.inf, 1.0], [-np.inf, 0.0], [3e38, 3e38], [1.5, 1.5]],
                 dtype=np.float32)
    C = np.array([[0.0, 0.0], [2.0, 2.0], [1e38, 1e38]], dtype=np.float32)
    labels, _ = cpu.labels_sqdist_block(X, C)
    assert ((labels >= 0) & (labels < 3)).all()
    assert labels[0] == 0 and labels[4] == 1
    _, counts, _ = cpu.assign_partial_sums_block(X, None, C, exact_inertia=False)
    assert counts.sum() == 5
