"""ALS block kernels: numba vs array-API (NumPy and array_api_strict) vs a dense NumPy
reference solve, in float32 and float64, with rows without ratings, k = 1 and k = 16;
CG, nonnegative least squares, thread-count invariance, gram and bad inputs."""

import array_api_strict as xps
import numpy as np
import pytest
import scipy.optimize

from dmlkit._core.dispatch import to_numpy
from dmlkit.recommendation import _kernels_cpu as cpu
from dmlkit.recommendation import _kernels_xp as xpk

REG, ALPHA = 0.1, 2.0


def random_csr(rng, n_rows, n_other, max_per_row, empty_every=5, integer=False):
    """Duplicate-free CSR with positive ratings; every ``empty_every``-th row is empty."""
    indptr, indices, data = [0], [], []
    for u in range(n_rows):
        c = 0 if u % empty_every == 1 else int(rng.integers(1, max_per_row + 1))
        indices.append(rng.choice(n_other, c, replace=False))
        vals = rng.integers(1, 6, c) if integer else rng.uniform(0.5, 5.0, c)
        data.append(vals.astype(np.float64))
        indptr.append(indptr[-1] + c)
    return (np.asarray(indptr, dtype=np.int64), np.concatenate(indices).astype(np.int32),
            np.concatenate(data))


def systems(indptr, indices, data, Y, reg=REG, implicit=False, alpha=ALPHA):
    """Dense (A, b) of every row (None for rows without ratings)."""
    Y = Y.astype(np.float64)
    k = Y.shape[1]
    YtY = Y.T @ Y
    out = []
    for u in range(len(indptr) - 1):
        items = indices[indptr[u]:indptr[u + 1]]
        r = data[indptr[u]:indptr[u + 1]].astype(np.float64)
        if len(items) == 0:
            out.append(None)
            continue
        YI = Y[items]
        if implicit:
            c = 1 + alpha * r
            A = YtY + YI.T @ ((c - 1)[:, None] * YI) + reg * np.eye(k)
            b = YI.T @ c
        else:
            A = YI.T @ YI + reg * len(items) * np.eye(k)
            b = YI.T @ r
        out.append((A, b))
    return out


def reference(indptr, indices, data, Y, **kw):
    k = Y.shape[1]
    return np.stack([np.zeros(k) if s is None else np.linalg.solve(*s)
                     for s in systems(indptr, indices, data, Y, **kw)])


def solve(impl, indptr, indices, data, Y, **kw):
    if impl == "numba":
        return cpu.als_solve_rows_block(indptr, indices, data, Y, **kw)
    if impl == "xp-numpy":
        return xpk.als_solve_rows_block(indptr, indices, data, Y, **kw)
    if kw.get("X0") is not None:
        kw["X0"] = xps.asarray(kw["X0"])
    out = xpk.als_solve_rows_block(indptr, indices, data, xps.asarray(Y), **kw)
    assert isinstance(out, type(xps.asarray(0.0)))
    return to_numpy(out)


@pytest.fixture(params=["numba", "xp-numpy", "xp-strict"])
def impl(request):
    return request.param


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 16])
@pytest.mark.parametrize("implicit", [False, True])
def test_exact_solve_matches_reference(impl, dtype, k, implicit, rng):
    indptr, indices, data = random_csr(rng, 40, 60, 30)
    Y = rng.standard_normal((60, k)).astype(dtype)
    X = solve(impl, indptr, indices, data, Y, reg=REG, implicit=implicit, alpha=ALPHA,
              solver="cholesky")
    assert X.dtype == dtype and X.shape == (40, k)
    ref = reference(indptr, indices, data, Y, implicit=implicit)
    np.testing.assert_allclose(X, ref, **tol(dtype))
    empty = np.diff(indptr) == 0
    assert empty.any()
    np.testing.assert_array_equal(X[empty], 0)


@pytest.mark.parametrize("k", [7, 64])
@pytest.mark.parametrize("implicit", [False, True])
def test_exact_solve_with_many_ratings_per_row(impl, k, implicit, rng):
    # Rows of 0 to 300 ratings: the numba kernel gathers ratings 128 at a time, eight
    # per pass with a tail, pads k to a multiple of 4, and solves explicit rows with
    # fewer ratings than factors in the dual; every split must give the same system.
    counts = [0, 1, 3, 9, 63, 64, 65, 127, 128, 129, 137, 300]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate([rng.choice(400, c, replace=False) for c in counts])
    data = rng.uniform(0.5, 5.0, indptr[-1])
    Y = rng.standard_normal((400, k)) / np.sqrt(k)
    X = solve(impl, indptr, indices.astype(np.int32), data, Y, reg=REG, implicit=implicit,
              alpha=ALPHA, solver="cholesky")
    ref = reference(indptr, indices, data, Y, implicit=implicit)
    np.testing.assert_allclose(X, ref, rtol=1e-9, atol=1e-11)


def test_explicit_ridge_grows_with_the_number_of_ratings():
    # the ridge term grows with the row's number of ratings (Spark's ALS-WR)
    indptr = np.array([0, 1, 3])
    indices = np.array([0, 0, 1])
    data = np.array([2.0, 2.0, 4.0])
    Y = np.array([[1.0], [2.0]])
    X = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=0.5)
    np.testing.assert_allclose(X[:, 0], [2.0 / (1 + 0.5), (2 + 8) / (5 + 0.5 * 2)])


def test_yty_default_and_given_agree(rng):
    indptr, indices, data = random_csr(rng, 30, 50, 10)
    Y = rng.standard_normal((50, 8))
    a = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, implicit=True,
                                 solver="cholesky")
    b = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, implicit=True,
                                 solver="cholesky", YtY=Y.T @ Y)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("implicit", [False, True])
def test_cg_with_k_steps_is_close_to_exact(implicit, rng):
    k = 16
    indptr, indices, data = random_csr(rng, 60, 80, 40)
    Y = rng.standard_normal((80, k)) * 0.5
    ref = reference(indptr, indices, data, Y, implicit=implicit)
    X = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, implicit=implicit,
                                 alpha=ALPHA, solver="cg", cg_steps=k)
    np.testing.assert_allclose(X, ref, rtol=1e-6, atol=1e-8)
    # few steps from zero: not converged, but the residual shrinks
    X3 = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, implicit=implicit,
                                  alpha=ALPHA, solver="cg", cg_steps=3)
    assert 0 < np.abs(X3 - ref).max() < np.abs(ref).max()


def test_cg_warm_started_at_the_solution_stays_there(rng):
    k = 16
    indptr, indices, data = random_csr(rng, 50, 70, 30)
    Y = rng.standard_normal((70, k)) * 0.5
    ref = reference(indptr, indices, data, Y, implicit=True)
    X = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, implicit=True,
                                 alpha=ALPHA, X0=ref, cg_steps=3)
    np.testing.assert_allclose(X, ref, rtol=1e-10, atol=1e-12)


def test_auto_solver_is_cg_for_implicit_and_cholesky_for_explicit(rng):
    indptr, indices, data = random_csr(rng, 30, 40, 20)
    Y = rng.standard_normal((40, 8))
    kw = dict(reg=REG, alpha=ALPHA)
    for implicit, solver in ((True, "cg"), (False, "cholesky")):
        auto = cpu.als_solve_rows_block(indptr, indices, data, Y, implicit=implicit, **kw)
        named = cpu.als_solve_rows_block(indptr, indices, data, Y, implicit=implicit,
                                         solver=solver, **kw)
        np.testing.assert_array_equal(auto, named)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(implicit=True),
    dict(implicit=True, solver="cholesky"),
    dict(nonnegative=True),
    dict(implicit=True, nonnegative=True),
], ids=["explicit", "implicit-cg", "implicit-cholesky", "explicit-nnls", "implicit-nnls"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_threads_do_not_change_bits(kw, dtype, rng):
    # 1500 rows: several chunks, so the parallel build really splits the block
    indptr, indices, data = random_csr(rng, 1500, 300, 25, integer=True)
    Y = rng.standard_normal((300, 12)).astype(dtype)
    args = (indptr, indices, data, Y)
    one = cpu.als_solve_rows_block(*args, reg=REG, alpha=ALPHA, n_threads=1, **kw)
    two = cpu.als_solve_rows_block(*args, reg=REG, alpha=ALPHA, n_threads=2, **kw)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("k", [8, 67])
@pytest.mark.parametrize("implicit,solver", [(True, 0), (True, 1), (False, 0), (False, 1)],
                         ids=["implicit-cholesky", "implicit-cg", "explicit-cholesky",
                              "explicit-cg"])
def test_serial_and_parallel_builds_identical(implicit, solver, k, rng):
    # The two builds called directly, whatever threads this machine grants.  The kernels
    # let LLVM reassociate sums (to vectorise them): the order must still be the same
    # in both builds.  k = 67 has a remainder after any SIMD width; rows with fewer and
    # with more ratings than k take both explicit paths (n x n and k x k systems).
    indptr, indices, data = random_csr(rng, 1200, 200, 2 * k)
    Y = rng.standard_normal((200, k)).astype(np.float32)
    bounds = cpu._cost_bounds(indptr, k, 4)
    assert len(np.unique(bounds)) == 5
    X0 = rng.standard_normal((1200, k))
    args = (indptr, indices.astype(np.int64), data, Y, cpu.gram(Y), X0, bounds,
            REG, implicit, ALPHA, solver, 3, False, cpu.NNLS_SWEEPS)
    np.testing.assert_array_equal(cpu._als_rows.serial(*args), cpu._als_rows.parallel(*args))


@pytest.mark.parametrize("kw", [dict(), dict(implicit=True)], ids=["explicit", "implicit"])
def test_int32_and_int64_indices_give_the_same_bits(kw, rng):
    # the shuffle stores int32 ids when they fit; the kernels read either without a copy
    indptr, indices, data = random_csr(rng, 300, 100, 30)
    Y = rng.standard_normal((100, 16)).astype(np.float32)
    a = cpu.als_solve_rows_block(indptr, indices.astype(np.int32), data, Y, reg=REG, **kw)
    b = cpu.als_solve_rows_block(indptr, indices.astype(np.int64), data, Y, reg=REG, **kw)
    np.testing.assert_array_equal(a, b)
    la = cpu.als_loss_block(indptr, indices.astype(np.int32), data, a, Y, **kw)
    assert la == cpu.als_loss_block(indptr, indices.astype(np.int64), data, a, Y, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_explicit_rows_with_fewer_ratings_than_factors(dtype, rng):
    # Rows with n < k ratings are solved as an n x n system (x = Y_u^T z): the same
    # solution as the k x k one, checked on both sides of n = k.
    k = 64
    counts = [1, 5, 63, 64, 65, 120]
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([rng.choice(300, c, replace=False) for c in counts])
    data = rng.uniform(0.5, 5.0, indptr[-1])
    Y = rng.standard_normal((300, k)).astype(dtype)
    X = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG)
    np.testing.assert_allclose(X, reference(indptr, indices, data, Y), **tol(dtype))
    # reg = 0: the k x k system is singular, the n x n one gives the minimum-norm
    # solution that fits the ratings exactly
    X0 = cpu.als_solve_rows_block(indptr[:3], indices[:6], data[:6], Y, reg=0.0)
    for u in range(2):
        YI = Y[indices[indptr[u]:indptr[u + 1]]].astype(np.float64)
        np.testing.assert_allclose(X0[u], np.linalg.pinv(YI) @ data[indptr[u]:indptr[u + 1]],
                                   **tol(dtype))


def kkt_violation(A, b, x):
    g = A @ x - b
    scale = np.abs(b).max() + np.abs(A).max() * np.abs(x).max() + 1e-300
    return max(np.abs(g[x > 0]).max(initial=0.0),
               np.maximum(-g[x == 0], 0).max(initial=0.0)) / scale


@pytest.mark.parametrize("implicit", [False, True])
def test_nonnegative_satisfies_kkt_and_matches_scipy_nnls(impl, implicit, rng):
    k = 8
    indptr, indices, data = random_csr(rng, 40, 60, 30)
    Y = rng.standard_normal((60, k))
    X = solve(impl, indptr, indices, data, Y, reg=REG, implicit=implicit, alpha=ALPHA,
              nonnegative=True)
    assert (X >= 0).all()
    n_clipped = 0
    for x, s in zip(X, systems(indptr, indices, data, Y, implicit=implicit), strict=True):
        if s is None:
            np.testing.assert_array_equal(x, 0)
            continue
        A, b = s
        assert kkt_violation(A, b, x) < 1e-9
        # min 1/2 x'Ax - b'x = min 1/2 |U x - U^-T b|^2 + const with A = U'U
        L = np.linalg.cholesky(A)
        expected, _ = scipy.optimize.nnls(L.T, np.linalg.solve(L, b))
        np.testing.assert_allclose(x, expected, rtol=1e-7, atol=1e-9)
        n_clipped += (x == 0).any()
    assert n_clipped > 10  # the constraint is active on many rows


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonnegative_equals_unconstrained_when_that_is_feasible(impl, dtype, rng):
    # ratings generated by positive factors: the unconstrained solution is positive
    k = 6
    n, m = 30, 50
    Y = rng.uniform(0.1, 1.0, (m, k)).astype(dtype)
    X_true = rng.uniform(1.0, 2.0, (n, k))
    indptr, indices, _ = random_csr(rng, n, m, 40, empty_every=7)
    data = np.concatenate([Y[indices[indptr[u]:indptr[u + 1]]].astype(np.float64) @ X_true[u]
                           for u in range(n)])
    free = solve(impl, indptr, indices, data, Y, reg=1e-4)
    assert (free >= 0).all() and (free[np.diff(indptr) > 0] > 0).all()
    X = solve(impl, indptr, indices, data, Y, reg=1e-4, nonnegative=True)
    np.testing.assert_allclose(X, free, **tol(dtype))
    np.testing.assert_allclose(X, reference(indptr, indices, data, Y, reg=1e-4), **tol(dtype))


def test_nonnegative_warm_start_gives_the_same_solution(rng):
    indptr, indices, data = random_csr(rng, 30, 40, 25)
    Y = rng.standard_normal((40, 5))
    cold = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, nonnegative=True)
    X0 = rng.standard_normal((30, 5))  # negative entries are projected first
    warm = cpu.als_solve_rows_block(indptr, indices, data, Y, reg=REG, nonnegative=True, X0=X0)
    np.testing.assert_allclose(warm, cold, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram(impl, dtype, rng):
    Y = rng.standard_normal((1000, 7)).astype(dtype)
    if impl == "numba":
        G = cpu.gram(Y)
        assert (cpu.gram(Y, n_threads=2) == G).all()
    elif impl == "xp-numpy":
        G = xpk.gram(Y)
    else:
        G = to_numpy(xpk.gram(xps.asarray(Y)))
    assert G.dtype == np.float64 and G.shape == (7, 7)
    Y64 = Y.astype(np.float64)
    np.testing.assert_allclose(G, Y64.T @ Y64, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(G, G.T)


def test_blocks_without_rows_or_ratings(impl, rng):
    Y = rng.standard_normal((5, 3))
    for indptr in (np.array([0]), np.zeros(4, dtype=np.int64)):
        for kw in (dict(), dict(implicit=True), dict(nonnegative=True)):
            X = solve(impl, indptr, np.zeros(0, np.int32), np.zeros(0), Y, reg=REG, **kw)
            assert X.shape == (len(indptr) - 1, 3)
            assert (X == 0).all()


def test_xp_accepts_csr_from_the_same_namespace(rng):
    indptr, indices, data = random_csr(rng, 20, 30, 10)
    Y = rng.standard_normal((30, 4))
    a = xpk.als_solve_rows_block(xps.asarray(indptr), xps.asarray(indices),
                                 xps.asarray(data), xps.asarray(Y), reg=REG, implicit=True,
                                 alpha=ALPHA)
    np.testing.assert_allclose(to_numpy(a), reference(indptr, indices, data, Y, implicit=True),
                               rtol=1e-9, atol=1e-12)


def test_xp_row_with_many_ratings_spans_several_widths(monkeypatch, rng):
    monkeypatch.setattr(xpk, "GATHER_ELEMS", 64)
    indptr, indices, data = random_csr(rng, 12, 100, 60)
    Y = rng.standard_normal((100, 4))
    X = xpk.als_solve_rows_block(indptr, indices, data, Y, reg=REG)
    np.testing.assert_allclose(X, reference(indptr, indices, data, Y), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("module", [cpu, xpk], ids=["numba", "xp"])
def test_bad_inputs(module, rng):
    indptr, indices, data = np.array([0, 2, 3]), np.array([0, 4, 1]), np.ones(3)
    Y = rng.standard_normal((5, 2))
    f = module.als_solve_rows_block
    with pytest.raises(ValueError, match="2-d"):
        f(indptr, indices, data, Y[:, 0], reg=REG)
    with pytest.raises(ValueError, match="2-d"):
        f(indptr, indices, data, Y[None], reg=REG)
    with pytest.raises(ValueError, match="row ids of Y"):
        f(indptr, indices, data, Y[:4], reg=REG)
    with pytest.raises(ValueError, match="row ids of Y"):
        f(indptr, np.array([0, -1, 1]), data, Y, reg=REG)
    with pytest.raises(ValueError, match="reg"):
        f(indptr, indices, data, Y, reg=-0.1)
    with pytest.raises(ValueError, match="solver"):
        f(indptr, indices, data, Y, reg=REG, solver="lu")
    with pytest.raises(ValueError, match="X0"):
        f(indptr, indices, data, Y, reg=REG, X0=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="indptr"):
        f(np.array([0, 2, 9]), indices, data, Y, reg=REG)


@pytest.mark.gpu
@pytest.mark.parametrize("implicit", [False, True])
def test_cupy_kernel_matches_numba(implicit, rng):
    cp = pytest.importorskip("cupy")
    indptr, indices, data = random_csr(rng, 500, 300, 40)
    Y = rng.standard_normal((300, 16)).astype(np.float32)
    kw = dict(reg=REG, implicit=implicit, alpha=ALPHA, solver="cholesky")
    ref = cpu.als_solve_rows_block(indptr, indices, data, Y, **kw)
    got = xpk.als_solve_rows_block(indptr, indices, data, cp.asarray(Y), **kw)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-4, atol=1e-5)


def test_top_n_rows_is_a_full_sort_with_ties_to_the_lower_column():
    from dmlkit.recommendation._kernels_cpu import top_n_rows

    rng = np.random.default_rng(0)
    for _ in range(100):
        m, c = int(rng.integers(1, 20)), int(rng.integers(1, 50))
        S = rng.integers(-3, 4, (m, c)).astype(np.float32)  # many ties
        S[rng.random((m, c)) < 0.2] = -np.inf  # left out
        S[rng.random((m, c)) < 0.05] = np.nan
        n = int(rng.integers(1, 60))
        cols, best, counts = top_n_rows(S, n)
        for r in range(m):
            ok = np.flatnonzero(S[r] > -np.inf)
            ref = ok[np.lexsort((ok, -S[r, ok]))][:min(n, c)]
            assert counts[r] == len(ref)
            np.testing.assert_array_equal(cols[r, :counts[r]], ref)
            np.testing.assert_array_equal(best[r, :counts[r]], S[r, ref])
