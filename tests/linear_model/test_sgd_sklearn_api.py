"""SGD estimators: scikit-learn's API where scikit-learn's own test_sgd.py checks it
(dtypes, parameters and their errors, averaged attributes, class weights, sparsify,
early stopping's split and errors, the overflow message)."""

import pickle
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import load_iris, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier as SkC
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.preprocessing import MinMaxScaler

from dmlkit.linear_model import SGDClassifier, SGDRegressor

X6 = np.array([[-2, -1], [-1, -1], [-1, -2], [1, 1], [1, 2], [2, 1]], dtype=float)
Y6 = np.array([1, 1, 1, 2, 2, 2])
FAST = dict(max_iter=5, tol=None, random_state=0)


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    return data.data, data.target


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("lazy", [False, True])
def test_float32_input_gives_float32_model(Est, sparse, lazy):
    # scikit-learn keeps float32 for float32 X; the mixed state stays float64, so the
    # model is the float64 fit's, rounded
    X, y = make_classification(600, 6, random_state=0)

    def container(dtype):
        Xc = X.astype(np.float32).astype(dtype)
        Xc = sp.csr_matrix(Xc) if sparse else Xc
        return da.from_array(Xc, chunks=(200, 6)) if lazy else Xc

    if lazy:
        y = da.from_array(y, chunks=200)
    Xin = container(np.float32)
    m = Est(average=True, **FAST).fit(Xin, y)
    for name in ("coef_", "intercept_", "_average_coef", "_average_intercept",
                 "_standard_coef", "_standard_intercept"):
        assert getattr(m, name).dtype == np.float32, name
    ref = Est(average=True, **FAST).fit(container(np.float64), y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    d = m.predict(Xin)
    assert (d.compute() if lazy else d).dtype == (np.float32 if Est is SGDRegressor
                                                 else y.dtype)


def test_float32_decision_function_is_float32_dask_and_numpy():
    X = make_classification(300, 4, random_state=0)[0].astype(np.float32)
    m = SGDRegressor(**FAST).fit(X, X[:, 0])
    assert m.predict(X).dtype == np.float32
    lazy = m.predict(da.from_array(X, chunks=100))
    assert lazy.dtype == np.float32 and lazy.compute().dtype == np.float32


def test_n_jobs_is_a_parameter_and_changes_nothing(iris):
    X, y = iris
    a = SGDClassifier(n_jobs=4, **FAST)
    assert a.get_params()["n_jobs"] == 4 and clone(a).n_jobs == 4
    b = SGDClassifier(n_jobs=None, **FAST).fit(X, y)
    np.testing.assert_array_equal(a.fit(X, y).coef_, b.coef_)


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
@pytest.mark.parametrize("params, match", [
    ({"alpha": -1}, r"The 'alpha' parameter of \w+ must be a float in the range \[0.0, inf\)"
                    r". Got -1 instead."),
    ({"l1_ratio": 1.5}, r"'l1_ratio' parameter of \w+ must be a float in the range "
                        r"\[0.0, 1.0\] or None"),
    ({"power_t": np.inf}, "'power_t' parameter"),
    ({"eta0": 0}, r"must be a float in the range \(0.0, inf\)"),
    ({"tol": -1.0}, "'tol' parameter"),
    ({"loss": "log"}, "'loss' parameter"),
    ({"learning_rate": "pa1"}, "'learning_rate' parameter"),
    ({"n_iter_no_change": 0}, "'n_iter_no_change' parameter"),
    ({"shuffle": 1}, "'shuffle' parameter"),
    ({"random_state": -1}, "'random_state' parameter"),
])
def test_parameters_are_validated_with_sklearns_wording(Est, params, match):
    from dmlkit.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=match) as info:
        Est(**params).fit(X6, Y6)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_l1_ratio_none_is_taken_where_it_is_not_used(Est):
    a = Est(penalty="l1", l1_ratio=None, **FAST).fit(X6, Y6)
    b = Est(penalty="l1", l1_ratio=0.7, **FAST).fit(X6, Y6)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    with pytest.raises(ValueError, match="l1_ratio must be set when penalty is 'elasticnet'"):
        Est(penalty="elasticnet", l1_ratio=None).fit(X6, Y6)


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_negative_power_t_warns_as_sklearn(Est):
    with pytest.warns(FutureWarning, match="Negative values for `power_t` are deprecated"):
        Est(power_t=-1.0, **FAST).fit(X6, Y6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Est(power_t=0.0, **FAST).fit(X6, Y6)


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_one_epoch_with_tol_warns_it_did_not_converge(Est):
    with pytest.warns(ConvergenceWarning, match="Maximum number of iteration reached"):
        m = Est(max_iter=1, random_state=0).fit(X6, Y6)
    assert m.n_iter_ == 1


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_early_stopping_is_refused_by_partial_fit(Est):
    # before any other check (the classifier's missing `classes` included)
    with pytest.raises(ValueError, match="early_stopping should be False with partial_fit"):
        Est(early_stopping=True).partial_fit(X6, Y6)


def test_balanced_class_weight_refused_by_partial_fit_as_sklearn():
    with pytest.raises(ValueError, match=r"class_weight 'balanced' is not supported for "
                                         r"partial_fit\. In order to use 'balanced' weights, "
                                         r"use compute_class_weight\('balanced'"):
        SGDClassifier(class_weight="balanced").partial_fit(X6, Y6, classes=[1, 2])
    # after a fit, partial_fit weighs each batch by its own counts (as scikit-learn)
    m = SGDClassifier(class_weight="balanced", **FAST).fit(X6, Y6)
    m.partial_fit(X6, Y6)


def test_class_weight_naming_a_class_not_in_y_raises():
    with pytest.raises(ValueError, match=r"The classes, \[1, 2\], are not in class_weight"):
        SGDClassifier(class_weight={0: 0.5}, **FAST).fit(X6, Y6)
    # a dict naming some of the classes weighs those, the others get 1
    a = SGDClassifier(class_weight={2: 1.0}, **FAST).fit(X6, Y6)
    b = SGDClassifier(**FAST).fit(X6, Y6)
    np.testing.assert_array_equal(a.coef_, b.coef_)


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_average_attributes_as_sklearn(Est):
    m = Est(average=True, **FAST).fit(X6, Y6)
    # averaging has started: coef_ is the average, _standard_coef the SGD iterate
    np.testing.assert_array_equal(m.coef_, m._average_coef)
    np.testing.assert_array_equal(m.intercept_, m._average_intercept)
    assert not np.array_equal(m._standard_coef, m._average_coef)
    assert m._standard_coef.shape == m.coef_.shape
    assert m._standard_intercept.shape == m.intercept_.shape
    late = Est(average=10_000, **FAST).fit(X6, Y6)  # not started: coef_ is the iterate
    np.testing.assert_array_equal(late.coef_, late._standard_coef)
    m.set_params(average=False).fit(X6, Y6)
    for name in ("_average_coef", "_average_intercept", "_standard_coef",
                 "_standard_intercept"):
        assert not hasattr(m, name)


def test_classifier_takes_regression_losses_as_sklearn():
    X, y = make_classification(400, 5, random_state=0)
    for loss in ("squared_error", "huber", "epsilon_insensitive",
                 "squared_epsilon_insensitive"):
        kw = dict(loss=loss, learning_rate="constant", eta0=0.01, shuffle=False, max_iter=3,
                  tol=None)
        m = SGDClassifier(**kw).fit(X, y)
        np.testing.assert_allclose(m.coef_, SkC(**kw).fit(X, y).coef_, rtol=1e-9)
        assert not hasattr(m, "predict_proba")
    assert set(SGDClassifier.loss_functions) == set(SkC.loss_functions)
    assert SGDRegressor(epsilon=0.9).loss_functions["huber"][1] == 0.1  # the default


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_sparsify_densify(Est):
    X, y = make_classification(300, 20, n_informative=3, random_state=0)
    m = Est(penalty="l1", alpha=0.05, **FAST).fit(X, y)
    dense_pred = m.predict(X)
    assert sp.issparse(m.sparsify().coef_)
    np.testing.assert_array_equal(m.predict(X), dense_pred)
    m = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m.predict(X), dense_pred)
    m.set_params(warm_start=True).fit(X, y)  # a warm start reads the sparse coef_
    assert not sp.issparse(m.densify().coef_)


@pytest.mark.parametrize("lazy", [False, True])
def test_overflow_says_so_as_sklearn(lazy):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(100, 10))
    X[:, :2] *= 1e300
    y = (MinMaxScaler().fit_transform(X) @ rng.normal(size=10) > 0).astype(int)

    def data(X):
        return (da.from_array(X, chunks=50), da.from_array(y, chunks=50)) if lazy else (X, y)

    with pytest.raises(ValueError, match=r"Floating-point under-/overflow occurred at epoch "
                                         r"#\d+. Scaling input data with StandardScaler"):
        SGDClassifier(alpha=0.1, loss="squared_hinge", max_iter=500).fit(*data(X))
    # NaN in the input is still reported as such (lazy input is checked on this path)
    X = MinMaxScaler().fit_transform(X)
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        SGDClassifier(alpha=0.1, loss="squared_hinge", max_iter=5).fit(*data(X))


@pytest.mark.parametrize("Est, splitter", [(SGDClassifier, StratifiedShuffleSplit),
                                           (SGDRegressor, ShuffleSplit)])
def test_one_block_early_stopping_holds_out_sklearns_rows(Est, splitter, iris):
    # scikit-learn's test_validation_set_not_used_for_training: the early-stopping fit
    # trains on exactly the rows scikit-learn's split leaves for training
    X, y = iris
    kw = dict(learning_rate="constant", eta0=0.01, tol=None, max_iter=10, shuffle=False)
    a = Est(early_stopping=True, validation_fraction=0.4, random_state=42, **kw).fit(X, y)
    train, _ = next(splitter(test_size=0.4, random_state=42).split(X, y))
    train = np.sort(train)
    b = Est(random_state=42, **kw).fit(X[train], y[train])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.n_iter_ == b.n_iter_ == 10
    # a RandomState instance is read as scikit-learn reads it
    c = Est(early_stopping=True, validation_fraction=0.4,
            random_state=np.random.RandomState(42), **kw).fit(X, y)
    np.testing.assert_array_equal(c.coef_, b.coef_)


def test_blocks_hold_out_sklearns_share_and_the_same_rows_every_time():
    # ShuffleSplit's count per block: ceil(fraction * rows), here 51 of 500
    X, y = make_regression(1500, 5, random_state=0)
    Xd, yd = da.from_array(X, chunks=500), da.from_array(y, chunks=500)
    kw = dict(early_stopping=True, validation_fraction=0.101, n_iter_no_change=100,
              max_iter=4, tol=None, random_state=0)
    a = SGDRegressor(**kw).fit(Xd, yd)
    assert a.t_ == 1 + 4 * 3 * (500 - 51)
    np.testing.assert_array_equal(SGDRegressor(**kw).fit(Xd, yd).coef_, a.coef_)
    # a block the stratified split cannot divide (3 rows, one of a class) is split
    # unstratified in a fit of several blocks, where one block alone would raise
    X, y = make_classification(403, 5, random_state=0)
    y[400:] = [0, 1, 0]
    kw = dict(kw, validation_fraction=0.2, max_iter=3)
    m = SGDClassifier(**kw).fit(da.from_array(X, chunks=200), da.from_array(y, chunks=200))
    assert m.t_ == 1 + 3 * (160 + 160 + 2)
    with pytest.raises(ValueError, match="cannot hold out validation_fraction=0.2 of 3"):
        SGDClassifier(**kw).fit(X[400:], y[400:])


def test_zero_weights_on_the_validation_rows_raise_as_sklearn(iris):
    X, y = iris
    msg = "The sample weights for validation set are all zero"
    with pytest.raises(ValueError, match=msg):
        SGDClassifier(early_stopping=True, validation_fraction=0.4, random_state=0).fit(
            X, y, sample_weight=np.zeros(len(y)))
    # weights that are zero on exactly the held-out rows (scikit-learn's split)
    _, val = next(StratifiedShuffleSplit(test_size=0.4, random_state=0).split(X, y))
    w = np.ones(len(y))
    w[val] = 0.0
    with pytest.raises(ValueError, match=msg):
        SGDClassifier(early_stopping=True, validation_fraction=0.4, random_state=0).fit(
            X, y, sample_weight=w)


@pytest.mark.parametrize("learning_rate", ["optimal", "adaptive"])
def test_one_vs_rest_models_converge_each_on_its_own_as_sklearn(learning_rate):
    # scikit-learn fits each one-vs-rest model apart, each with its own tol rule (and
    # its own step under 'adaptive'); a model that has converged stops training
    X, y = make_classification(600, 20, n_informative=8, n_classes=4, random_state=0)
    kw = dict(max_iter=1000, random_state=0, shuffle=False, learning_rate=learning_rate,
              eta0=0.01)
    a = SkC(**kw).fit(X, y)
    b = SGDClassifier(**kw).fit(X, y)
    assert b.n_iter_ == a.n_iter_
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-9, atol=1e-11)


def test_array_api_kernel_converges_each_model_on_its_own_too():
    # the array-API (GPU) kernel with one row per step: each model's own adaptive step
    import dmlkit

    X, y = make_classification(600, 20, n_informative=8, n_classes=4, random_state=0)
    kw = dict(max_iter=1000, random_state=0, shuffle=False, learning_rate="adaptive",
              eta0=0.01)
    a = SkC(**kw).fit(X, y)
    with dmlkit.config_context(backend="xp"):
        b = SGDClassifier(batch_size=1, **kw).fit(X, y)
    assert b.n_iter_ == a.n_iter_
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-7, atol=1e-9)
