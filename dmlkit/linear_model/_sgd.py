"""SGDClassifier and SGDRegressor by iterative parameter mixing over row blocks.

Each epoch, every block runs one local SGD pass (scikit-learn's update rule, see
``_kernels_cpu``) starting from the current global model, visiting its rows in an order
drawn from (seed, epoch, block index); the driver averages the block models weighted
by their rows.  All one-vs-rest classes train in the same pass.
"""

from __future__ import annotations

import numbers
import warnings

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import check_finite_result, is_dask_collection, to_row_blocks
from dmlkit._core.dispatch import to_numpy
from dmlkit._core.driver import Driver
from dmlkit.base import keep_state_on_error
from dmlkit.exceptions import ConvergenceWarning
from dmlkit.linear_model import _kernels_cpu as kernels
from dmlkit.linear_model._loss import (
    CLASSIFICATION_LOSSES,
    LEARNING_RATES,
    PENALTIES,
    PROBA_LOSSES,
    REGRESSION_LOSSES,
)

DEFAULT_EPSILON = 0.1


# ----------------------------------------------------------------------------------
def _targets(y, classes):
    """Per-model targets: the values for regression, +-1 per one-vs-rest model."""
    y = to_numpy(y)
    if classes is None:
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():  # the NaN/inf check of y, folded into the pass
            raise ValueError("Input y contains NaN or infinity.")
        return y[:, None]
    if len(classes) == 2:
        return np.where(y == classes[1], 1.0, -1.0)[:, None]
    return np.where(y[:, None] == classes[None, :], 1.0, -1.0)


def _epoch_task(x, w, offset, y, block, classes, state, pos_w, neg_w, params, seed, epoch,
                shuffle, n_threads=1):
    x = to_numpy(x)
    n = x.shape[0]
    Y = _targets(y, classes)
    sw = np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    if shuffle:
        order = np.random.default_rng([int(seed), int(epoch), int(block)]).permutation(n)
    else:
        order = np.arange(n)
    coef, intercept, u, q = state
    W, b, u, q, sumloss = kernels.sgd_epoch_block(x, Y, sw, order.astype(np.int64), coef,
                                                  intercept, u, q, pos_w, neg_w, params,
                                                  n_threads=n_threads,
                                                  want_loss=params["want_loss"])
    # Row-weighted sums: the driver divides by the total rows (parameter mixing).
    return (W * n, b * n, u * n, q * n), float(n), sumloss


def _combine_epochs(*parts):
    sums = [a.copy() for a in parts[0][0]]
    n, loss = parts[0][1], parts[0][2].copy()
    for si, ni, li in parts[1:]:
        for acc, v in zip(sums, si, strict=True):
            acc += v
        n += ni
        loss += li
    return sums, n, loss


def _label_counts(blocks):
    """Distinct labels of y and their counts, in one pass (dask or in-memory y)."""
    y = blocks.y
    labels, counts = da.unique(y, return_counts=True) if blocks.lazy else np.unique(
        y.compute(), return_counts=True)
    if blocks.lazy:
        labels, counts = dask.compute(labels, counts)
    return np.asarray(labels), np.asarray(counts)


def _decision_block(x, coef, intercept):
    return to_numpy(x) @ coef.T + intercept


# ----------------------------------------------------------------------------------
class _BaseSGD(BaseEstimator):
    _losses: dict = {}

    def _check_params(self):
        if self.loss not in self._losses:
            raise ValueError(f"loss must be one of {sorted(self._losses)}, got {self.loss!r}.")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {sorted(map(str, PENALTIES))}, "
                             f"got {self.penalty!r}.")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {sorted(LEARNING_RATES)}, "
                             f"got {self.learning_rate!r}.")
        for name, low in (("alpha", 0.0), ("eta0", 0.0), ("epsilon", 0.0)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or v < low:
                raise ValueError(f"{name} must be a float >= {low}, got {v!r}.")
        if not (isinstance(self.l1_ratio, numbers.Real) and 0 <= self.l1_ratio <= 1):
            raise ValueError(f"l1_ratio must be in [0, 1], got {self.l1_ratio!r}.")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}.")
        if not isinstance(self.n_iter_no_change, numbers.Integral) or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be an int >= 1, got "
                             f"{self.n_iter_no_change!r}.")
        if self.tol is not None and not isinstance(self.tol, numbers.Real):
            raise ValueError(f"tol must be a float or None, got {self.tol!r}.")
        if self.learning_rate in ("constant", "invscaling", "adaptive") and self.eta0 <= 0:
            raise ValueError("eta0 must be > 0 with learning_rate="
                             f"{self.learning_rate!r}.")
        if self.alpha == 0 and self.learning_rate == "optimal":
            raise ValueError("alpha must be > 0 since learning_rate is 'optimal': alpha is "
                             "used to compute the optimal learning rate.")
        if getattr(self, "early_stopping", False):
            raise NotImplementedError("early_stopping is not implemented yet in dmlkit.")
        if getattr(self, "average", False):
            raise NotImplementedError("average is not implemented yet in dmlkit.")

    def _kernel_params(self):
        loss_id = self._losses[self.loss]
        optimal_init = 0.0
        if self.learning_rate == "optimal":
            typw = np.sqrt(1.0 / np.sqrt(self.alpha))
            initial_eta0 = typw / max(1.0, kernels.loss_gradient(loss_id, -typw, 1.0,
                                                                 self.epsilon))
            optimal_init = 1.0 / (initial_eta0 * self.alpha)
        return {
            "loss": loss_id, "penalty": PENALTIES[self.penalty], "alpha": float(self.alpha),
            "l1_ratio": float(self.l1_ratio), "epsilon": float(self.epsilon),
            "learning_rate": LEARNING_RATES[self.learning_rate], "eta": float(self.eta0),
            "power_t": float(self.power_t), "optimal_init": float(optimal_init),
            "t": 1.0, "fit_intercept": bool(self.fit_intercept),
        }

    # -- the epoch loop ---------------------------------------------------------------
    def _run_epochs(self, driver, classes, state, pos_w, neg_w, n_epochs, seed, stop_early):
        params = self._kernel_params()
        params["t"] = float(getattr(self, "t_", 1.0))
        # Only the tol stopping rule (and progress) reads the epoch's loss.
        params["want_loss"] = bool(stop_early and self.tol is not None) or bool(self.verbose)
        n = driver.blocks.n_samples
        best, no_improve, n_done = np.inf, 0, 0
        per_block = [(y, i) for i, y in enumerate(driver.y_parts)]
        bar = driver.progress(n_epochs, type(self).__name__)
        try:
            for epoch in range(n_epochs):
                shared = (classes, driver.shared(state, "model"), pos_w, neg_w, dict(params),
                          seed, self._epochs_seen + epoch, bool(self.shuffle))
                sums, total, sumloss = driver.map_reduce(_epoch_task, _combine_epochs, *shared,
                                                         step="epoch", per_block=per_block)
                check_finite_result(sums[0], sums[1], sumloss)
                state = tuple(a / total for a in sums)
                params["t"] += n
                n_done += 1
                objective = float(np.sum(sumloss)) / n + self._penalty_value(state[0])
                bar.update(1)
                if stop_early and self.tol is not None:
                    if objective > best - self.tol:
                        no_improve += 1
                    else:
                        no_improve = 0
                    best = min(best, objective)
                    if no_improve >= self.n_iter_no_change:
                        if self.learning_rate == "adaptive" and params["eta"] > 1e-6:
                            params["eta"] /= 5
                            no_improve = 0
                        else:
                            break
        finally:
            bar.close()
        self.t_ = params["t"]
        self._epochs_seen += n_done
        return state, n_done

    def _penalty_value(self, coef):
        l1 = {None: 0.0, "l2": 0.0, "l1": 1.0, "elasticnet": self.l1_ratio}[self.penalty]
        if self.penalty is None:
            return 0.0
        return self.alpha * ((1 - l1) * 0.5 * float((coef**2).sum()) + l1 * float(
            np.abs(coef).sum()))

    def _fit_common(self, X, y, sample_weight, coef_init, intercept_init, incremental,
                    classes_arg=None):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        if not is_dask_collection(y):
            y = column_or_1d(y, warn=True)  # a column vector: DataConversionWarning, ravel
        first = not (incremental and hasattr(self, "coef_"))
        if first or not incremental:
            self._check_params()
        blocks = to_row_blocks(X, estimator=self, reset=first, sample_weight=sample_weight,
                               y=y, finite_check="caller")
        classes = self._resolve_classes(blocks, classes_arg, first)
        n_models = 1 if classes is None or len(classes) == 2 else len(classes)
        d = blocks.n_features
        warm = (not incremental and self.warm_start and hasattr(self, "coef_")
                and self.coef_.shape[1] == d)
        if not first or warm:
            coef = np.array(self.coef_, dtype=np.float64).reshape(n_models, d)
            intercept = np.array(self.intercept_, dtype=np.float64).reshape(n_models)
        else:
            coef = np.zeros((n_models, d))
            intercept = np.zeros(n_models)
        if coef_init is not None:
            coef = np.asarray(coef_init, dtype=np.float64).reshape(n_models, d)
        if intercept_init is not None:
            intercept = np.asarray(intercept_init, dtype=np.float64).reshape(n_models)
        if not incremental or first:
            self.t_ = 1.0
            self._epochs_seen = 0
            self._l1_state = (np.zeros(n_models), np.zeros((n_models, d)))
        pos_w, neg_w = self._class_weights(blocks, classes)
        rs = check_random_state(self.random_state)
        if not hasattr(self, "_seed") or not incremental:
            self._seed = int(rs.randint(np.iinfo(np.int32).max))
        driver = Driver("sgd", blocks, cache=self.cache if not incremental else False,
                        verbose=self.verbose)
        n_epochs = 1 if incremental else self.max_iter
        state = (coef, intercept) + tuple(self._l1_state)
        state, n_done = self._run_epochs(driver, classes, state, pos_w, neg_w, n_epochs,
                                         self._seed, stop_early=not incremental)
        coef, intercept = state[0], state[1]
        self._l1_state = (state[2], state[3])
        if not incremental and n_done == self.max_iter and self.tol is not None \
                and self.max_iter > 1:
            warnings.warn("Maximum number of iteration reached before convergence. Consider "
                          "increasing max_iter to improve the fit.", ConvergenceWarning,
                          stacklevel=3)
        self.coef_ = coef
        self.intercept_ = intercept
        self.n_iter_ = n_done if not incremental else getattr(self, "n_iter_", 0) + 1
        return self

    def _decision(self, X):
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False)
        coef = np.atleast_2d(self.coef_)
        intercept = np.atleast_1d(self.intercept_)
        out = blocks.X.map_blocks(_decision_block, coef, intercept, dtype=np.float64,
                                  chunks=(blocks.X.chunks[0], (coef.shape[0],)),
                                  meta=np.empty((0, 0)), name="dmlkit-sgd-decision")
        return out if blocks.lazy else out.compute()


class SGDClassifier(ClassifierMixin, _BaseSGD):
    """Linear classifiers with SGD training, out of core on Dask (as scikit-learn's).

    Not yet: ``average``, ``early_stopping`` (raise NotImplementedError), sparse input.
    """

    _losses = CLASSIFICATION_LOSSES

    def __init__(self, loss="hinge", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, random_state=None, learning_rate="optimal",
                 eta0=0.01, power_t=0.5, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, class_weight=None, warm_start=False, average=False,
                 cache="auto"):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.average = average
        self.cache = cache

    def _resolve_classes(self, blocks, classes_arg, first):
        """``classes_`` on the first call; every label of y must be one of them.

        One pass over y gives its labels and their counts (kept for
        ``class_weight='balanced'``), so y never has to come to the client whole.
        """
        labels, counts = _label_counts(blocks)
        if first:
            classes = np.unique(np.asarray(classes_arg)) if classes_arg is not None else labels
            check_classification_targets(classes)
            if len(classes) < 2:
                raise ValueError("The number of classes has to be greater than one; got "
                                 f"{len(classes)} class.")
            self.classes_ = classes
        elif classes_arg is not None and not np.array_equal(np.unique(np.asarray(classes_arg)),
                                                            self.classes_):
            raise ValueError(f"`classes={classes_arg!r}` is not the same as on the first call "
                             f"to partial_fit ({self.classes_!r}).")
        unseen = np.setdiff1d(labels, self.classes_)
        if len(unseen):
            raise ValueError(f"y contains labels {unseen.tolist()} not in classes "
                             f"{self.classes_.tolist()}.")
        self._label_counts = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        return self.classes_

    def _class_weights(self, blocks, classes):
        n_models = 1 if len(classes) == 2 else len(classes)
        cw = self.class_weight
        if cw is None:
            expanded = np.ones(len(classes))
        elif cw == "balanced":
            if isinstance(self, SGDClassifier) and getattr(self, "_partial", False):
                raise ValueError("class_weight 'balanced' is not supported for partial_fit: "
                                 "pass a dict of class weights instead.")
            # n_samples / (n_classes * count), as scikit-learn, from the counts of the
            # labels pass (classes absent from y get weight 1, as compute_class_weight's
            # callers see no such rows anyway).
            counts = np.array([self._label_counts.get(c, 0) for c in classes], dtype=float)
            expanded = np.where(counts > 0, counts.sum() / (len(classes) * np.maximum(
                counts, 1)), 1.0)
        elif isinstance(cw, dict):
            expanded = np.array([float(cw.get(c, 1.0)) for c in classes])
        else:
            raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}.")
        if n_models == 1:
            return np.array([expanded[1]]), np.array([expanded[0]])
        return expanded.astype(np.float64), np.ones(n_models)

    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with ``max_iter`` epochs (fewer when ``tol`` stops it)."""
        with keep_state_on_error(self):
            self._partial = False
            for attr in ("coef_", "intercept_", "classes_"):
                if not self.warm_start and hasattr(self, attr):
                    delattr(self, attr)
            return self._fit_common(X, y, sample_weight, coef_init, intercept_init, False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y); ``classes`` is required on the first call."""
        with keep_state_on_error(self):
            self._partial = True
            if not hasattr(self, "coef_"):
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                self._check_params()
            return self._fit_common(X, y, sample_weight, None, None, True, classes)

    def decision_function(self, X):
        d = self._decision(X)
        return d[:, 0] if d.shape[1] == 1 else d

    def predict(self, X):
        d = self.decision_function(X)
        if d.ndim == 1:
            idx = (d > 0).astype(np.intp)
        else:
            idx = d.argmax(axis=1)
        if isinstance(idx, da.Array):
            return idx.map_blocks(lambda i, c: c[i], self.classes_, dtype=self.classes_.dtype)
        return self.classes_[idx]

    def _check_proba(self):
        if self.loss not in PROBA_LOSSES:
            raise AttributeError(f"probability estimates are not available for "
                                 f"loss={self.loss!r}")
        return True

    @available_if(_check_proba)
    def predict_proba(self, X):
        """Class probabilities (``log_loss``, ``modified_huber``), as scikit-learn's."""
        d = self.decision_function(X)
        lazy = isinstance(d, da.Array)
        f = _proba_log if self.loss == "log_loss" else _proba_modified_huber
        if lazy:
            n_out = len(self.classes_)
            return d.map_blocks(f, dtype=np.float64, chunks=(d.chunks[0], (n_out,)),
                                new_axis=1 if d.ndim == 1 else None,
                                drop_axis=None if d.ndim == 1 else 1)
        return f(d)

    @available_if(_check_proba)
    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))


def _proba_log(d):
    p = 1.0 / (1.0 + np.exp(-d))
    if d.ndim == 1:
        return np.vstack([1 - p, p]).T
    return p / p.sum(axis=1, keepdims=True)


def _proba_modified_huber(d):
    p = (np.clip(d, -1, 1) + 1) / 2
    if d.ndim == 1:
        return np.vstack([1 - p, p]).T
    s = p.sum(axis=1, keepdims=True)
    out = np.where(s == 0, 1.0 / p.shape[1], p / np.where(s == 0, 1.0, s))
    return out


class SGDRegressor(RegressorMixin, _BaseSGD):
    """Linear regression with SGD training, out of core on Dask (as scikit-learn's).

    Not yet: ``average``, ``early_stopping`` (raise NotImplementedError), sparse input.
    """

    _losses = REGRESSION_LOSSES

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, random_state=None, learning_rate="invscaling",
                 eta0=0.01, power_t=0.25, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, average=False, cache="auto"):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.average = average
        self.cache = cache

    def _resolve_classes(self, blocks, classes_arg, first):
        return None

    def _class_weights(self, blocks, classes):
        return np.ones(1), np.ones(1)

    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        with keep_state_on_error(self):
            for attr in ("coef_", "intercept_"):
                if not self.warm_start and hasattr(self, attr):
                    delattr(self, attr)
            out = self._fit_common(X, y, sample_weight, coef_init, intercept_init, False)
            self._flatten()
            return out

    def partial_fit(self, X, y, sample_weight=None):
        with keep_state_on_error(self):
            if not hasattr(self, "coef_"):
                self._check_params()
            out = self._fit_common(X, y, sample_weight, None, None, True)
            self._flatten()
            return out

    def _flatten(self):
        self.coef_ = np.asarray(self.coef_).reshape(-1)
        self.intercept_ = np.asarray(self.intercept_).reshape(-1)

    def predict(self, X):
        d = self._decision(X)
        return d[:, 0]

