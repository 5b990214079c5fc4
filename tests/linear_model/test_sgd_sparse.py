"""Sparse input: CSR kernel vs dense kernel, scikit-learn parity on sparse data, dask
arrays of scipy.sparse blocks (hashed text), and the errors of dense-only options."""

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import SGDClassifier as SkC
from sklearn.linear_model import SGDRegressor as SkR

import dmlkit
from dmlkit._core.blocks import estimate_nbytes, to_row_blocks
from dmlkit.linear_model import SGDClassifier, SGDRegressor
from dmlkit.linear_model import _kernels_cpu as cpu
from dmlkit.linear_model._loss import CLASSIFICATION_LOSSES, REGRESSION_LOSSES


def sparse_problem(n=2000, d=300, density=0.03, n_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.uniform(0.5, 2.0, k))
    W = rng.standard_normal((n_classes, d))
    scores = X @ W.T + 0.1 * rng.standard_normal((n, n_classes))
    y = (scores[:, 0] > np.median(scores[:, 0])).astype(int) if n_classes == 2 \
        else scores.argmax(1)
    return X, y


def kernel_params(loss, penalty, average=0, decay=1.0):
    ids = {**CLASSIFICATION_LOSSES, **REGRESSION_LOSSES}
    return {"loss": ids[loss], "penalty": {None: 0, "l2": 1, "l1": 2, "elasticnet": 3}[penalty],
            "alpha": 1e-3, "l1_ratio": 0.3, "epsilon": 0.1, "learning_rate": 2, "eta": 0.05,
            "power_t": 0.5, "optimal_init": 0.0, "t": 1.0, "fit_intercept": True,
            "average": average, "intercept_decay": decay}


@pytest.mark.parametrize("loss", sorted(CLASSIFICATION_LOSSES) + sorted(REGRESSION_LOSSES))
@pytest.mark.parametrize("penalty, average", [(None, 0), ("l2", 0), ("l2", 5)])
def test_csr_kernel_is_the_dense_kernel(loss, penalty, average):
    # Without L1 (whose truncation visits the stored entries only, as scikit-learn's
    # sparse SGD) the CSR and dense kernels make the same updates, to rounding.
    X, y = sparse_problem(400, 60, 0.1, n_classes=3)
    Y = np.where(y[:, None] == np.arange(3)[None, :], 1.0, -1.0)
    if loss in REGRESSION_LOSSES:
        Y = np.asarray(X @ np.linspace(-1, 1, 60))[:, None]
    M, d = Y.shape[1], X.shape[1]
    rng = np.random.default_rng(1)
    sw = rng.uniform(0.5, 2, X.shape[0])
    order = rng.permutation(X.shape[0])[:350]
    state = (np.zeros((M, d)), np.zeros(M), np.zeros(M), np.zeros((M, d)))
    avg = (np.zeros((M, d)), np.zeros(M))
    params = kernel_params(loss, penalty, average, decay=0.5)
    args = (Y, sw, order, *state, np.full(M, 1.5), np.ones(M), params)
    dense = cpu.sgd_epoch_block(X.toarray(), *args, avg_coef=avg[0], avg_intercept=avg[1])
    csr = cpu.sgd_epoch_block(X, *args, avg_coef=avg[0], avg_intercept=avg[1])
    for a, b in zip(csr, dense, strict=True):
        if a is None:
            assert b is None
            continue
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert np.abs(csr[0]).max() > 0


@pytest.mark.parametrize("penalty", [None, "l2", "l1", "elasticnet"])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("average", [False, True])
def test_one_block_sparse_is_sklearns_sparse_sgd(penalty, n_classes, average):
    # scikit-learn on sparse data: L1 on the stored entries, intercept steps x 0.01
    X, y = sparse_problem(n_classes=n_classes)
    kw = dict(loss="log_loss", penalty=penalty, learning_rate="invscaling", eta0=0.05,
              shuffle=False, tol=None, max_iter=1 if average and penalty else 3,
              alpha=1e-3, average=average)
    a = SkC(**kw).fit(X, y)
    b = SGDClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))


def test_one_block_sparse_regressor_is_sklearns():
    X, _ = sparse_problem()
    y = np.asarray(X @ np.linspace(-2, 2, X.shape[1])) + 1.0
    kw = dict(shuffle=False, tol=None, max_iter=3, penalty="elasticnet")
    np.testing.assert_allclose(SGDRegressor(**kw).fit(X, y).coef_,
                               SkR(**kw).fit(X, y).coef_, rtol=1e-7, atol=1e-10)


def csr_dask(X, rows):
    """A dask array of CSR blocks built from delayed pieces (as a loader would)."""
    blocks = [da.from_delayed(dask.delayed(lambda a, b: X[a:b])(a, min(a + rows, X.shape[0])),
                              shape=(min(a + rows, X.shape[0]) - a, X.shape[1]),
                              dtype=X.dtype, meta=sp.csr_matrix((0, X.shape[1])))
              for a in range(0, X.shape[0], rows)]
    return da.concatenate(blocks, axis=0)


def test_dask_csr_blocks_train_as_dense_blocks(client):
    # Same rows, same blocks, same seed: the CSR blocks give the dense blocks' model
    # (to rounding: the dot products add in another order); dask in, dask out.
    X, y = sparse_problem(4000, 200)
    Xs = csr_dask(X, 1000)
    Xd = da.from_array(X.toarray(), chunks=(1000, -1))
    yd = da.from_array(y, chunks=1000)
    kw = dict(loss="hinge", fit_intercept=False, max_iter=4, tol=None, random_state=0)
    ms = SGDClassifier(**kw).fit(Xs, yd)
    md = SGDClassifier(**kw).fit(Xd, yd)
    np.testing.assert_allclose(ms.coef_, md.coef_, rtol=1e-9, atol=1e-12)
    pred = ms.predict(Xs)
    assert isinstance(pred, da.Array)
    np.testing.assert_array_equal(pred.compute(), md.predict(X.toarray()))
    again = SGDClassifier(**kw).fit(Xs, yd)
    np.testing.assert_array_equal(again.coef_, ms.coef_)


def test_in_memory_csr_is_blocked_without_copies():
    X, _ = sparse_problem(5000, 100)
    blocks = to_row_blocks(X, accept_sparse=True, block_size="20KiB")
    assert blocks.sparse and blocks.n_blocks > 3
    parts = [p.compute() for p in blocks.X.to_delayed().ravel()]
    assert all(np.shares_memory(p.data, X.data) for p in parts)
    np.testing.assert_array_equal(sp.vstack(parts).toarray(), X.toarray())
    est = estimate_nbytes(blocks.X)
    assert 0.5 < est / (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) < 2


def test_hashed_text_from_dask_dataframe(client):
    # The text use: documents in a dask dataframe, hashed per partition with
    # scikit-learn's HashingVectorizer into CSR blocks, one estimator call.
    from sklearn.feature_extraction.text import HashingVectorizer

    from dmlkit.feature_extraction import transform_partitions

    rng = np.random.default_rng(0)
    vocab_pos = [f"good{i}" for i in range(30)] + [f"w{i}" for i in range(200)]
    vocab_neg = [f"bad{i}" for i in range(30)] + [f"w{i}" for i in range(200)]
    label = rng.integers(0, 2, 6000)
    docs = [" ".join(rng.choice(vocab_pos if c else vocab_neg, 12)) for c in label]
    ddf = dd.from_pandas(pd.DataFrame({"text": docs, "label": label}), npartitions=4)
    X = transform_partitions(ddf["text"], HashingVectorizer(n_features=2**12,
                                                            alternate_sign=False))
    assert X.chunks[0] == tuple(ddf.map_partitions(len).compute())
    m = SGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0)
    m.fit(X, ddf["label"])
    assert m.coef_.shape == (1, 2**12)
    acc = (m.predict(X).compute() == label).mean()
    Xs = X.compute()
    sk = SkC(loss="log_loss", max_iter=5, tol=None, random_state=0).fit(Xs, label)
    assert acc >= sk.score(Xs, label) - 0.005 and acc > 0.85
    proba = m.predict_proba(X).compute()
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_sparse_nan_is_reported():
    X, y = sparse_problem(500, 50)
    X = X.copy()
    X.data[7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SGDClassifier().fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        SGDClassifier(max_iter=2, tol=None).fit(csr_dask(X, 100), da.from_array(y, chunks=100))


def test_dense_only_options_reject_sparse_input():
    X, y = sparse_problem(500, 50)
    with dmlkit.config_context(backend="xp"):
        with pytest.raises(ValueError, match="needs dense blocks"):
            SGDClassifier(max_iter=2).fit(X, y)


def test_wrong_feature_count_at_predict_sparse():
    X, y = sparse_problem(500, 50)
    m = SGDClassifier(max_iter=2, tol=None).fit(X, y)
    with pytest.raises(ValueError, match="50 features"):
        m.predict(X[:, :40])
    np.testing.assert_array_equal(m.predict(X), m.predict(X.toarray()))
    np.testing.assert_array_equal(m.predict(X.tocsc()), m.predict(X))
