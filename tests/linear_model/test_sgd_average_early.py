"""Averaged SGD and early stopping: scikit-learn's rules, over blocks, deterministic."""

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import SGDClassifier as SkC
from sklearn.linear_model import SGDRegressor as SkR

from dmlkit.linear_model import SGDClassifier, SGDRegressor


@pytest.fixture(scope="module")
def data():
    return make_classification(3000, 10, n_informative=6, n_classes=3, random_state=1)


@pytest.mark.parametrize("average", [True, 1000])
@pytest.mark.parametrize("penalty, epochs", [("l2", 3), (None, 3), ("elasticnet", 1)])
@pytest.mark.parametrize("binary", [True, False])
def test_one_block_average_is_sklearns(average, penalty, epochs, binary, data):
    # scikit-learn's lazy average lets later L1 truncations leak into it; dmlkit folds
    # the average at every epoch's end (the blocks' models are mixed there), so with L1
    # the two agree within one epoch, and with L2 or no penalty over any number.
    X, y = data
    if binary:
        y = (y == 1).astype(int)
    kw = dict(loss="log_loss", penalty=penalty, learning_rate="invscaling", eta0=0.05,
              shuffle=False, tol=None, max_iter=epochs, average=average, alpha=1e-3)
    a = SkC(**kw).fit(X, y)
    b = SGDClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-7, atol=1e-10)
    assert b.t_ == a.t_


@pytest.mark.parametrize("binary", [True, False])
def test_average_partial_fit_continues_the_average(binary, data):
    # Three partial_fit calls visit the rows in the same order as one scikit-learn epoch
    # over all of them; the average and the SGD iterate carry over between calls.
    # (scikit-learn's own partial_fit restarts from a stale intercept once averaging
    # has started, so its one-epoch fit is the reference.)
    X, y = data
    if binary:
        y = (y == 1).astype(int)
    kw = dict(loss="hinge", learning_rate="constant", eta0=0.01, shuffle=False, average=10)
    b = SGDClassifier(**kw)
    for i in range(3):
        part = slice(i * 1000, (i + 1) * 1000)
        b.partial_fit(X[part], y[part], classes=np.unique(y))
    a = SkC(max_iter=1, tol=None, **kw).fit(X, y)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-7, atol=1e-10)


def test_one_block_average_regressor_is_sklearns():
    X, y = make_regression(2000, 6, noise=1.0, random_state=0)
    kw = dict(shuffle=False, tol=None, max_iter=4, average=True)
    np.testing.assert_allclose(SGDRegressor(**kw).fit(X, y).coef_, SkR(**kw).fit(X, y).coef_,
                               rtol=1e-7)


def test_average_over_blocks_is_the_mean_of_all_iterates():
    # Two blocks with shuffle=False: the average after one epoch is the mean over both
    # blocks' iterates, i.e. the row-weighted mean of the blocks' own averages.
    X, y = make_classification(400, 5, random_state=0)
    kw = dict(loss="hinge", learning_rate="constant", eta0=0.01, shuffle=False, tol=None,
              max_iter=1, average=True)
    m = SGDClassifier(**kw).fit(da.from_array(X, chunks=200), da.from_array(y, chunks=200))
    halves = [SkC(**kw).fit(X[:200], y[:200]), SkC(**kw).fit(X[200:], y[200:])]
    np.testing.assert_allclose(m.coef_, (halves[0].coef_ + halves[1].coef_) / 2, rtol=1e-9)


def test_average_improves_noisy_sgd_and_is_deterministic(client):
    X, y = make_classification(20_000, 20, n_informative=10, flip_y=0.1, random_state=0)
    Xd, yd = da.from_array(X, chunks=2500), da.from_array(y, chunks=2500)
    kw = dict(loss="hinge", learning_rate="constant", eta0=0.1, max_iter=3, tol=None,
              random_state=0)
    plain = SGDClassifier(**kw).fit(X[:15000], y[:15000]).score(X[15000:], y[15000:])
    avg = SGDClassifier(average=True, **kw).fit(X[:15000], y[:15000])
    assert avg.score(X[15000:], y[15000:]) >= plain - 0.005
    on_cluster = SGDClassifier(average=True, **kw).fit(Xd, yd)
    with __import__("dask").config.set(scheduler="threads"):
        local = SGDClassifier(average=True, **kw).fit(Xd, yd)
    np.testing.assert_array_equal(on_cluster.coef_, local.coef_)


@pytest.mark.parametrize("Est, make", [
    (SGDClassifier, lambda: make_classification(6000, 10, random_state=0)),
    (SGDRegressor, lambda: make_regression(6000, 10, noise=5.0, random_state=0)),
])
def test_early_stopping_stops_and_scores_well(Est, make, client):
    X, y = make()
    Xd, yd = da.from_array(X, chunks=1500), da.from_array(y, chunks=1500)
    m = Est(early_stopping=True, max_iter=200, random_state=0, n_iter_no_change=3).fit(Xd, yd)
    assert 3 < m.n_iter_ < 200
    sk = (SkC if Est is SGDClassifier else SkR)(early_stopping=True, max_iter=200,
                                                random_state=0, n_iter_no_change=3).fit(X, y)
    assert m.score(X, y) >= sk.score(X, y) - 0.02
    again = Est(early_stopping=True, max_iter=200, random_state=0, n_iter_no_change=3)
    again.fit(Xd, yd)
    np.testing.assert_array_equal(again.coef_, m.coef_)
    assert again.n_iter_ == m.n_iter_ and again.t_ == m.t_


def test_early_stopping_holds_out_the_validation_rows():
    # t_ counts training rows only: (1 - validation_fraction) of each block and class
    X, y = make_classification(2000, 5, random_state=0)
    m = SGDClassifier(early_stopping=True, validation_fraction=0.2, max_iter=5,
                      n_iter_no_change=100, tol=None, random_state=0)
    m.fit(da.from_array(X, chunks=500), da.from_array(y, chunks=500))
    assert m.n_iter_ == 5
    assert m.t_ == pytest.approx(1 + 5 * 2000 * 0.8, abs=5 * 4)


def test_early_stopping_adaptive_lowers_the_step():
    X, y = make_classification(3000, 8, flip_y=0.2, random_state=0)
    m = SGDClassifier(early_stopping=True, learning_rate="adaptive", eta0=0.5, max_iter=40,
                      n_iter_no_change=2, random_state=0).fit(X, y)
    assert m.n_iter_ < 40
    assert m.score(X, y) > 0.7
