"""scikit-learn's estimator checks on NumPy input, for every dmlkit estimator."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from dmlkit import (
    KMeans,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)

# Fast settings for the checks, one entry per estimator (as scikit-learn's INIT_PARAMS).
ESTIMATORS = [
    KMeans(n_clusters=2, n_init=2, max_iter=5, random_state=0),
    SGDClassifier(max_iter=5, tol=None, random_state=0),
    SGDRegressor(max_iter=5, tol=None, random_state=0),
    LogisticRegression(),
    LinearRegression(),
    Ridge(),
    PoissonRegressor(),
]

# Checks that fail by design, with the reason.  Keep this short.
# (scikit-learn lists check_sample_weight_equivalence_on_dense_data for its own KMeans;
# dmlkit's init passes it, so it is not listed there.)
_SGD_WEIGHTS = ("SGD visits a repeated row twice, which is not one update with twice the "
                "weight; scikit-learn lists this check for its own SGD estimators "
                "(scikit-learn meta-issue #16298).")
EXPECTED_FAILED: dict[str, dict[str, str]] = {
    name: {"check_sample_weight_equivalence_on_dense_data": _SGD_WEIGHTS,
           "check_sample_weight_equivalence_on_sparse_data": _SGD_WEIGHTS}
    for name in ("SGDClassifier", "SGDRegressor")
}


def _expected_failed(estimator):
    return EXPECTED_FAILED.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
