"""SGDClassifier / SGDRegressor: scikit-learn's update rule, quality, determinism, errors."""

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import SGDClassifier as SkC
from sklearn.linear_model import SGDRegressor as SkR
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from dmlkit.exceptions import InvalidParameterError
from dmlkit.linear_model import SGDClassifier, SGDRegressor


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(3000, 8, random_state=0)
    return X, y


@pytest.fixture(scope="module")
def multiclass():
    X, y = make_classification(3000, 8, n_informative=5, n_classes=3, random_state=0)
    return X, y


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "modified_huber", "squared_hinge",
                                  "perceptron"])
@pytest.mark.parametrize("penalty", [None, "l2", "l1", "elasticnet"])
@pytest.mark.parametrize("schedule", [("constant", 0.01), ("invscaling", 0.05)])
@pytest.mark.parametrize("data", ["binary", "multiclass"])
def test_one_block_is_sklearns_sgd(loss, penalty, schedule, data, request):
    # With one block and no shuffling, parameter mixing is plain SGD: the same update
    # rule as scikit-learn gives the same model (to rounding).
    X, y = request.getfixturevalue(data)
    kw = dict(loss=loss, penalty=penalty, learning_rate=schedule[0], eta0=schedule[1],
              shuffle=False, tol=None, max_iter=3, class_weight={0: 2.0}, alpha=1e-3)
    a = SkC(**kw).fit(X, y)
    b = SGDClassifier(**kw).fit(X, y)
    np.testing.assert_allclose(b.coef_, a.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b.intercept_, a.intercept_, rtol=1e-6, atol=1e-9)
    assert b.t_ == a.t_ and b.n_iter_ == a.n_iter_


@pytest.mark.parametrize("data", ["binary", "multiclass"])
def test_balanced_class_weight_is_sklearns(data, request):
    X, y = request.getfixturevalue(data)
    keep = (y != 0) | (np.arange(len(y)) % 5 == 0)  # make class 0 rare
    X, y = X[keep], y[keep]
    kw = dict(loss="log_loss", learning_rate="constant", eta0=0.01, shuffle=False, tol=None,
              max_iter=2, class_weight="balanced")
    np.testing.assert_allclose(SGDClassifier(**kw).fit(da.from_array(X, chunks=len(X)),
                                                       da.from_array(y, chunks=len(y))).coef_,
                               SkC(**kw).fit(X, y).coef_, rtol=1e-6)


@pytest.mark.parametrize("loss", ["hinge", "perceptron"])
def test_one_block_optimal_schedule_is_sklearns(loss, binary):
    X, y = binary
    kw = dict(loss=loss, shuffle=False, tol=None, max_iter=3)
    np.testing.assert_allclose(SGDClassifier(**kw).fit(X, y).coef_,
                               SkC(**kw).fit(X, y).coef_, rtol=1e-6)


@pytest.mark.parametrize("loss", ["squared_error", "huber", "epsilon_insensitive",
                                  "squared_epsilon_insensitive"])
@pytest.mark.parametrize("penalty", [None, "l2", "l1", "elasticnet"])
def test_one_block_regressor_is_sklearns(loss, penalty):
    X, y = make_regression(2000, 6, noise=1, random_state=0)
    kw = dict(loss=loss, penalty=penalty, shuffle=False, tol=None, max_iter=3)
    np.testing.assert_allclose(SGDRegressor(**kw).fit(X, y).coef_,
                               SkR(**kw).fit(X, y).coef_, rtol=1e-6)


def _split(X, y):
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("loss", ["hinge", "log_loss"])
def test_accuracy_close_to_sklearn_on_blocks(n_classes, loss):
    X, y = make_classification(40_000, 20, n_informative=12, n_classes=n_classes,
                               class_sep=1.5, random_state=1)
    Xtr, Xte, ytr, yte = _split(X, y)
    sk = np.mean([SkC(loss=loss, random_state=s).fit(Xtr, ytr).score(Xte, yte)
                  for s in range(3)])
    Xd, yd = da.from_array(Xtr, chunks=7500), da.from_array(ytr, chunks=7500)
    dm = np.mean([SGDClassifier(loss=loss, random_state=s).fit(Xd, yd).score(Xte, yte)
                  for s in range(3)])
    assert dm >= sk - 0.005, (dm, sk)


def test_regressor_r2_close_to_sklearn():
    X, y = make_regression(30_000, 15, noise=10, random_state=0)
    Xtr, Xte, ytr, yte = _split(X, y)
    sk = SkR(random_state=0).fit(Xtr, ytr).score(Xte, yte)
    dm = SGDRegressor(random_state=0).fit(da.from_array(Xtr, chunks=6000),
                                          da.from_array(ytr, chunks=6000)).score(Xte, yte)
    assert dm >= sk - 0.01


def test_log_loss_probabilities_calibrated_like_sklearn():
    X, y = make_classification(30_000, 10, random_state=2)
    Xtr, Xte, ytr, yte = _split(X, y)
    sk = SkC(loss="log_loss", random_state=0).fit(Xtr, ytr)
    dm = SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr)
    p_sk, p_dm = sk.predict_proba(Xte)[:, 1], dm.predict_proba(Xte)[:, 1]
    # Reliability: mean predicted probability vs observed rate in probability bins.
    bins = np.linspace(0, 1, 6)
    idx = np.digitize(p_dm, bins[1:-1])
    gaps = [abs(p_dm[idx == b].mean() - yte[idx == b].mean()) for b in range(5)
            if (idx == b).sum() > 100]
    assert max(gaps) < 0.1
    assert abs(np.mean(np.abs(p_dm - p_sk))) < 0.1
    np.testing.assert_allclose(dm.predict_proba(Xte).sum(1), 1.0)


def test_imbalanced_balanced_class_weight_gives_sound_auc():
    # 1% positives (fraud-like).  The ceiling is exact logistic regression's AUC (~0.81
    # on this data); SGD with class_weight='balanced' must get close to it, like
    # scikit-learn's SGD does, averaged over seeds.
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(30_000, 12, weights=[0.99, 0.01], class_sep=1.0,
                               random_state=3)
    Xtr, Xte, ytr, yte = _split(X, y)
    ceiling = roc_auc_score(yte, LogisticRegression(class_weight="balanced").fit(
        Xtr, ytr).decision_function(Xte))
    Xd, yd = da.from_array(Xtr, chunks=5000), da.from_array(ytr, chunks=5000)
    dm = np.mean([roc_auc_score(yte, SGDClassifier(
        loss="log_loss", class_weight="balanced", random_state=s).fit(Xd, yd)
        .decision_function(Xte)) for s in range(3)])
    sk = np.mean([roc_auc_score(yte, SkC(loss="log_loss", class_weight="balanced",
                                         random_state=s).fit(Xtr, ytr).decision_function(Xte))
                  for s in range(3)])
    assert dm > ceiling - 0.03 and dm > sk - 0.01, (dm, sk, ceiling)


def test_same_seed_same_bits_threads_sync_and_cluster(client):
    X, y = make_classification(8000, 6, random_state=0)
    Xd, yd = da.from_array(X, chunks=2000), da.from_array(y, chunks=2000)
    ref = SGDClassifier(random_state=7, max_iter=5, tol=None).fit(Xd, yd)
    with dask.config.set(scheduler="sync"):
        sync = SGDClassifier(random_state=7, max_iter=5, tol=None).fit(Xd, yd)
    with client.as_current():
        dist = SGDClassifier(random_state=7, max_iter=5, tol=None).fit(Xd, yd)
    for other in (sync, dist):
        np.testing.assert_array_equal(other.coef_, ref.coef_)
        np.testing.assert_array_equal(other.intercept_, ref.intercept_)


def test_partial_fit_and_classes(binary):
    X, y = binary
    # Unshuffled, each partial_fit is one scikit-learn epoch on the batch: same model.
    m = SGDClassifier(random_state=0, shuffle=False)
    sk = SkC(random_state=0, shuffle=False)
    with pytest.raises(ValueError, match="classes must be passed"):
        m.partial_fit(X[:100], y[:100])
    for i in range(0, 3000, 500):
        m.partial_fit(X[i:i + 500], y[i:i + 500], classes=[0, 1])
        sk.partial_fit(X[i:i + 500], y[i:i + 500], classes=[0, 1])
        np.testing.assert_allclose(m.coef_, sk.coef_, rtol=1e-9)
        np.testing.assert_allclose(m.intercept_, sk.intercept_, rtol=1e-9)
    assert m.n_iter_ == 6 and list(m.classes_) == [0, 1]
    assert m.t_ == sk.t_
    with pytest.raises(ValueError, match="not in classes"):
        m.partial_fit(X[:10], np.full(10, 5))
    with pytest.raises(ValueError, match="features"):
        m.partial_fit(X[:10, :3], y[:10])


def test_warm_start_continues(binary):
    X, y = binary
    a = SGDClassifier(random_state=0, max_iter=2, tol=None, warm_start=True).fit(X, y)
    c1 = a.coef_.copy()
    a.fit(X, y)
    assert not np.array_equal(a.coef_, c1)


def test_dask_in_dask_out(binary):
    X, y = binary
    m = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    Xd = da.from_array(X, chunks=700)
    assert isinstance(m.predict(Xd), da.Array)
    np.testing.assert_array_equal(m.predict(Xd).compute(), m.predict(X))
    np.testing.assert_allclose(m.predict_proba(Xd).compute(), m.predict_proba(X))


@pytest.mark.parametrize("make, kw, match", [
    (lambda X, y: (X, np.zeros_like(y)), {}, "classes has to be greater than one"),
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y), {},
     "NaN"),
    (lambda X, y: (X, y[:-1]), {}, "rows but X has"),
    (lambda X, y: (X, y.astype(float) + 0.5), {}, "Unknown label type|continuous"),
])
def test_bad_input(binary, make, kw, match):
    X, y = make(*binary)
    for data in (X, da.from_array(X, chunks=1000)):
        target = y if isinstance(data, np.ndarray) else da.from_array(y, chunks=1000)
        with pytest.raises(ValueError, match=match):
            SGDClassifier(**kw).fit(data, target)


def test_init_of_the_wrong_shape_is_refused_and_nothing_changes(binary, multiclass):
    X, y = binary
    m = SGDClassifier(random_state=0).fit(X, y)
    coef, intercept = m.coef_.copy(), m.intercept_.copy()
    with pytest.raises(ValueError, match=r"coef_init does not match dataset: expected "
                                         r"shape \(1, 8\)"):
        m.fit(X, y, coef_init=np.zeros(7))
    with pytest.raises(ValueError, match="intercept_init does not match"):
        m.fit(X, y, intercept_init=np.zeros(2))
    np.testing.assert_array_equal(m.coef_, coef)
    np.testing.assert_array_equal(m.intercept_, intercept)
    with pytest.raises(ValueError, match=r"expected shape \(3, 8\)"):
        SGDClassifier().fit(*multiclass, coef_init=np.zeros((1, 8)))
    Xr, yr = make_regression(200, 8, random_state=0)
    with pytest.raises(ValueError, match=r"coef_init does not match dataset"):
        SGDRegressor().fit(Xr, yr, coef_init=np.zeros((8, 2)))
    # the right size is taken, flat or not, and is where the fit starts
    flat = SGDClassifier(max_iter=1, tol=None, random_state=0).fit(X, y, coef_init=coef[0])
    shaped = SGDClassifier(max_iter=1, tol=None, random_state=0).fit(X, y, coef_init=coef)
    np.testing.assert_array_equal(flat.coef_, shaped.coef_)


@pytest.mark.parametrize("params, match", [
    ({"loss": "squared_loss"}, "The 'loss' parameter of SGDClassifier must be a str among"),
    ({"penalty": "l3"}, "The 'penalty' parameter of SGDClassifier must be a str among"),
    ({"learning_rate": "fast"}, "'learning_rate' parameter"),
    ({"alpha": -1.0}, r"'alpha' parameter of SGDClassifier must be a float in the range "
                      r"\[0.0, inf\). Got -1.0 instead."),
    ({"l1_ratio": 2.0}, "'l1_ratio' parameter"),
    ({"max_iter": 0}, r"'max_iter' parameter of SGDClassifier must be an int in the range "
                      r"\[1, inf\)"),
    ({"eta0": 0.0}, r"'eta0' parameter of SGDClassifier must be a float in the range "
                    r"\(0.0, inf\)"),
    ({"n_jobs": "all"}, "'n_jobs' parameter"),
    ({"class_weight": "auto"}, "'class_weight' parameter"),
])
def test_bad_params(binary, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        SGDClassifier(**params).fit(*binary)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("lazy", [False, True])
def test_regressor_rejects_non_finite_y(bad, lazy):
    X, y = make_regression(500, 4, random_state=0)
    y[17] = bad
    if lazy:
        X, y = da.from_array(X, chunks=100), da.from_array(y, chunks=100)
    with pytest.raises(ValueError, match="y contains NaN or infinity"):
        SGDRegressor(max_iter=2, tol=None).fit(X, y)


def test_wrong_feature_count_at_predict(binary):
    X, y = binary
    m = SGDClassifier(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :4])


def test_predict_proba_only_for_probabilistic_losses(binary):
    with pytest.raises(AttributeError, match="predict_proba"):
        SGDClassifier(loss="hinge").fit(*binary).predict_proba(binary[0])
    assert not hasattr(SGDClassifier(loss="hinge"), "predict_proba")


@pytest.mark.parametrize("params, match", [
    ({"average": -1}, "'average' parameter"),
    ({"average": 1.5}, "'average' parameter"),
    ({"validation_fraction": 1.0}, "'validation_fraction' parameter"),
    ({"early_stopping": "yes"}, "'early_stopping' parameter"),
    ({"batch_size": 0}, "'batch_size' parameter"),
    ({"cache": "yes"}, "'cache' parameter"),
])
def test_bad_params_average_early_stopping(binary, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        SGDClassifier(**params).fit(*binary)


def test_early_stopping_with_too_few_rows_says_so():
    X, y = make_classification(8, 3, n_informative=2, n_redundant=0, random_state=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        SGDClassifier(early_stopping=True, validation_fraction=0.05).fit(X, y)


def test_xp_backend_with_batch_1_is_the_numba_fit(binary):
    # The array-API kernel (what CuPy blocks run) with one row per step is the numba
    # kernel's per-sample SGD, to rounding, through the whole estimator.
    import dmlkit

    X, y = binary
    Xd, yd = da.from_array(X, chunks=1000), da.from_array(y, chunks=1000)
    # (with L1 and averaging both, numba keeps scikit-learn's lazy average, into which
    # later L1 truncations leak; the array-API kernel averages the truncated iterates)
    for penalty, average in (("elasticnet", False), ("l2", 100)):
        kw = dict(loss="log_loss", penalty=penalty, learning_rate="invscaling", eta0=0.05,
                  tol=None, max_iter=3, batch_size=1, random_state=0, average=average)
        ref = SGDClassifier(**kw).fit(Xd, yd)
        with dmlkit.config_context(backend="xp"):
            got = SGDClassifier(**kw).fit(Xd, yd)
        np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-9, atol=1e-12)
        assert got.t_ == ref.t_


@pytest.mark.parametrize("Est, make", [
    (SGDClassifier, lambda: make_classification(20_000, 10, random_state=0)),
    (SGDRegressor, lambda: make_regression(20_000, 10, noise=5.0, random_state=0)),
])
def test_xp_backend_minibatches_score_like_sklearn(Est, make):
    import dmlkit

    X, y = make()
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    sk = (SkC if Est is SGDClassifier else SkR)(random_state=0).fit(Xtr, ytr)
    with dmlkit.config_context(backend="xp"):
        m = Est(random_state=0, batch_size=32).fit(da.from_array(Xtr, chunks=5000),
                                                   da.from_array(ytr, chunks=5000))
    assert m.score(Xte, yte) >= sk.score(Xte, yte) - 0.01
