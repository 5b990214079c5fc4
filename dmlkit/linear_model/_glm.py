"""Full-batch linear models solved to the optimum: LogisticRegression, LinearRegression,
Ridge and PoissonRegressor.

Every iteration is a pass over the row blocks through the core's fit loop: each block
returns its loss and gradient (``_glm_kernels_cpu`` / ``_glm_kernels_xp``), the fixed
tree sums them, and a quasi-Newton solver in the driver (``_qn``: L-BFGS, or OWL-QN
when the penalty has an L1 part) takes the step.  The solver's state is the fit loop's
state, so a checkpointed fit resumes bit for bit.  Least squares with few features is
solved exactly from the reduced Gram matrix in one pass (as Spark MLlib's "normal"
solver).

The objectives are scikit-learn's.  With ``S`` the sum of the row weights (class
weights folded in), the solver minimises ``(1/S) sum_i s_i loss_i + l2/2 ||W||^2 +
l1 ||W||_1`` (the intercept is not penalised):

- LogisticRegression: ``l2 = (1 - l1_ratio) / (C S)``, ``l1 = l1_ratio / (C S)``
  (scikit-learn's ``C sum s loss + penalty`` divided by ``C S``);
- Ridge: half squared error with ``l2 = alpha / S`` (``||y - Xw||^2_s + alpha ||w||^2``
  divided by ``2 S``); LinearRegression: ``alpha = 0``;
- PoissonRegressor: half Poisson deviance with a log link and ``l2 = alpha``.
"""

from __future__ import annotations

import dataclasses
import warnings
from numbers import Integral, Real

import dask.array as da
import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import d2_tweedie_score
from sklearn.utils import column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import check_finite_result, is_dask_collection, to_row_blocks
from dmlkit._core.client import compute, placed
from dmlkit._core.dispatch import backend_of, get_kernels, to_numpy
from dmlkit._core.loop import CHECKPOINT_CONSTRAINTS, FitLoop, Step
from dmlkit._core.params import Interval, StrOptions, validate_params
from dmlkit.base import keep_state_on_error
from dmlkit.exceptions import ConvergenceWarning
from dmlkit.linear_model._base import label_counts, linear_decision
from dmlkit.linear_model._glm_kernels_cpu import LOSS_IDS
from dmlkit.linear_model._qn import QuasiNewton

GRAM_MAX_FEATURES = 2048  # 'auto' least squares: exact from X'X up to this many features
LBFGS_MEMORY = 10


# -- block tasks ----------------------------------------------------------------------
def _targets_weights(y, w, spec):
    """A block's targets (n, 1) float64 and row weights (n,) float64, class weights
    folded in; checks y (NaN, Poisson's range) as the pass reads it."""
    y = np.asarray(to_numpy(y))
    codes = None
    if spec["classes"] is not None:  # y holds class codes already (_encode_labels)
        Y = y
        if spec["class_weight"] is not None:
            codes = y.astype(np.intp)
    else:
        Y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(Y).all():
            raise ValueError("Input y contains NaN or infinity.")
        if spec["loss"] == "poisson" and (Y < 0).any():
            raise ValueError("Some value(s) of y are out of the valid range of the loss "
                             "'HalfPoissonLoss': PoissonRegressor needs y >= 0.")
    sw = np.ones(Y.shape[0]) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    if spec["class_weight"] is not None:
        sw = sw * spec["class_weight"][codes]
    return Y.reshape(Y.shape[0], -1), sw


def _encode_labels(y, classes):
    """A block's labels as their codes in ``classes`` (float64: the kernels' targets;
    for two classes, 0/1 is the binomial loss's y)."""
    return np.searchsorted(classes, np.asarray(to_numpy(y))).astype(np.float64)


def _loss_grad_task(x, w, offset, y, spec, W, b, n_threads=1):
    Y, sw = _targets_weights(y, w, spec)
    K = get_kernels("glm", spec["backend"])
    loss, gW, gb = K.loss_grad_block(x, Y, sw, W, b, LOSS_IDS[spec["loss"]],
                                     n_threads=n_threads)
    return {"loss": np.float64(to_numpy(loss)), "gW": to_numpy(gW), "gb": to_numpy(gb),
            "S": np.float64(sw.sum()), "Sy": np.float64(sw @ Y[:, 0])}


def _gram_task(x, w, offset, y, spec, n_threads=1):
    Y, sw = _targets_weights(y, w, spec)
    K = get_kernels("glm", spec["backend"])
    keys = ("G", "B", "sx", "sy", "S", "syy")
    return dict(zip(keys, (np.asarray(to_numpy(v), dtype=np.float64)
                           for v in K.gram_block(x, Y, sw, n_threads=n_threads)), strict=True))


def _sum_parts(*parts):
    """Sum dicts of arrays key by key, in the order given (the fixed tree's combine)."""
    out = dict(parts[0])
    for part in parts[1:]:
        for k, v in part.items():
            out[k] = out[k] + v
    return out


# -- the family -----------------------------------------------------------------------
class _GLM(BaseEstimator):
    """What the full-batch linear models share: the fit through the fit loop, the
    solvers, the fitted attributes.  A subclass says its loss, its targets and its
    penalty (``_setup``)."""

    _loss = "squared_error"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # a subclass returns (spec, n_models, fingerprint items) and may set classes_
    def _setup(self, blocks, backend):
        spec = {"loss": self._loss, "classes": None, "class_weight": None,
                "backend": backend}
        return blocks, spec, 1, {}

    def _penalty(self, S):
        """(l2, l1) strengths of the normalised objective for row-weight sum S."""
        return 0.0, 0.0

    def _solver(self, n_features):
        return "lbfgs"

    def _max_iter(self):
        return self.max_iter

    def _start(self, n_models, d):
        """The starting (W, b): the last fit's model with ``warm_start``, else zeros."""
        W, b = np.zeros((n_models, d)), np.zeros(n_models)
        if getattr(self, "warm_start", False) and hasattr(self, "coef_"):
            coef = np.asarray(self.coef_, dtype=np.float64).reshape(-1)
            if coef.size == n_models * d:
                W = coef.reshape(n_models, d).copy()
                if self.fit_intercept:
                    b = np.asarray(self.intercept_, dtype=np.float64).reshape(n_models).copy()
        return W, b

    def _fit(self, X, y, sample_weight):
        validate_params(self._parameter_constraints, self.get_params(deep=False),
                        type(self).__name__)
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        if not is_dask_collection(y):
            y = column_or_1d(y, warn=True)  # a column vector: DataConversionWarning, ravel
        blocks = to_row_blocks(X, estimator=self, sample_weight=sample_weight, y=y,
                               finite_check="caller", accept_sparse=True)
        backend = backend_of(blocks.X._meta)
        blocks, spec, n_models, fingerprint = self._setup(blocks, backend)
        d = blocks.n_features
        W0, b0 = self._start(n_models, d)
        fingerprint["starting model"] = np.concatenate([W0.ravel(), b0])
        loop = FitLoop(self, "glm", blocks, cache=self.cache, fingerprint=fingerprint)
        solver = self._solver(d)
        if solver == "cholesky":
            state = self._fit_gram(loop, spec)
        else:
            state = self._fit_qn(loop, spec, W0, b0)
        loop.finish(state)
        self.n_passes_ = int(state["passes"])
        self.converged_ = bool(state["converged"])
        self.objective_ = float(state["objective"])
        self.solver_ = solver
        W, b = state["W"], state["b"]
        self._set_model(W, b, blocks.dtype, state["n_iter"])
        if solver != "cholesky" and not self.converged_ and state["n_iter"] >= self._max_iter():
            warnings.warn(f"{type(self).__name__} ({solver}) did not converge in "
                          f"max_iter={self._max_iter()} iterations: increase max_iter, or scale "
                          "the data.", ConvergenceWarning, stacklevel=3)
        return self

    # -- quasi-Newton ---------------------------------------------------------------
    def _fit_qn(self, loop, spec, W0, b0):
        driver = loop.driver
        K, d = W0.shape
        intercept = bool(self.fit_intercept)

        def unpack(theta):
            W = theta[:K * d].reshape(K, d)
            b = theta[K * d:] if intercept else np.zeros(K)
            return W, b

        def evaluate(theta, state):
            W, b = unpack(theta)
            r = driver.map_reduce(_loss_grad_task, _sum_parts, spec, W, b, step="loss",
                                  with_y=True)
            check_finite_result(r["loss"], r["gW"], r["gb"])
            state["passes"] += 1
            S = float(r["S"])
            if not S > 0:
                raise ValueError("The sample weights sum to zero: there is nothing to fit.")
            state["S"] = S
            l2 = self._penalty(S)[0]
            f = float(r["loss"]) / S + 0.5 * l2 * float(np.dot(W.ravel(), W.ravel()))
            gW = r["gW"] / S + l2 * W
            g = np.concatenate([gW.ravel(), r["gb"] / S]) if intercept else gW.ravel()
            return f, g, r

        restored = loop.restore()
        if restored is not None:
            state, it, done = restored
        else:
            state = {"passes": 0, "S": 0.0}
            theta = np.concatenate([W0.ravel(), b0]) if intercept else W0.ravel()
            f, g, r = evaluate(theta, state)
            if self._loss == "poisson" and intercept and not np.any(theta):
                # start at the intercept of the weighted mean of y, as scikit-learn
                mean = float(r["Sy"]) / float(r["S"])
                if not mean > 0:
                    raise ValueError("Some value(s) of y are out of the valid range of the "
                                     "loss 'HalfPoissonLoss': y sums to zero.")
                theta = theta.copy()
                theta[K * d:] = np.log(mean)
                f, g, _ = evaluate(theta, state)
            state["qn"] = None
            state["start"] = (theta, f, g)
            it, done = 0, False
        qn = self._quasi_newton(state["S"], K, d)
        if state["qn"] is None:
            state["qn"] = qn.start(*state.pop("start"))
            state["status"] = None

        def step(state, it):
            def ev(theta):
                f, g, _ = evaluate(theta, state)
                return f, g

            qstate, status = qn.step(state["qn"], ev)
            moved = qstate is not state["qn"]  # False: the start already met tol
            state = dict(state, qn=qstate, status=status)
            F = qn.objective(qstate["w"], qstate["f"])
            metrics = {"objective": F, "gradient": qn.gradient_max(qstate),
                       "passes": state["passes"]}
            return state, Step(counted=moved, converged=status is not None,
                               metrics=metrics)

        state, n_iter, converged = loop.iterate(step, state, max_iter=self._max_iter(),
                                                start=it, done=done)
        qstate = state["qn"]
        W, b = unpack(qstate["w"])
        if state.get("status") == "line search":
            warnings.warn(f"{type(self).__name__}: the line search found no step that lowers "
                          "the objective (largest gradient component "
                          f"{qn.gradient_max(qstate):.3g}); the model is the best point found.",
                          ConvergenceWarning, stacklevel=4)
        return dict(state, W=W, b=b, n_iter=n_iter,
                    converged=state.get("status") in ("gradient", "objective"),
                    objective=qn.objective(qstate["w"], qstate["f"]))

    def _quasi_newton(self, S, K, d):
        l2, l1 = self._penalty(S)
        l1w = None
        if l1 > 0:
            l1w = np.concatenate([np.full(K * d, l1), np.zeros(K if self.fit_intercept else 0)])
        return QuasiNewton(l1w, m=LBFGS_MEMORY, tol=self.tol)

    # -- exact least squares ----------------------------------------------------------
    def _fit_gram(self, loop, spec):
        driver = loop.driver

        def step(state, it):
            r = driver.map_reduce(_gram_task, _sum_parts, spec, step="gram", with_y=True)
            check_finite_result(r["G"], r["B"], r["sx"])
            W, b, obj = self._solve_gram(r)
            return ({"W": W, "b": b, "objective": obj, "passes": 1, "converged": True,
                     "n_iter": 1}, Step(converged=True, metrics={"objective": obj}))

        restored = loop.restore()
        state, it, done = restored if restored is not None else ({}, 0, False)
        state, _, _ = loop.iterate(step, state, max_iter=1, start=it, done=done)
        return state

    def _solve_gram(self, r):
        S = float(r["S"])
        if not S > 0:
            raise ValueError("The sample weights sum to zero: there is nothing to fit.")
        G, B, sx, sy, syy = r["G"], r["B"], r["sx"], r["sy"], r["syy"]
        if self.fit_intercept:  # centre with the weighted means
            xm, ym = sx / S, sy / S
            G = G - S * np.outer(xm, xm)
            B = B - S * np.outer(xm, ym)
            syy = syy - S * ym * ym
        l2 = self._penalty(S)[0] * S  # alpha of ||y - Xw||^2_s + alpha ||w||^2
        if l2 > 0:
            coef = scipy.linalg.solve(G + l2 * np.eye(G.shape[0]), B, assume_a="pos")
        else:
            # the minimum-norm solution, as scikit-learn's lstsq: directions of X'X whose
            # eigenvalue is rounding noise (under d * eps of the largest) are left out
            lam, V = scipy.linalg.eigh(G)
            keep = lam > G.shape[0] * np.finfo(float).eps * max(lam.max(initial=0.0), 0.0)
            coef = V[:, keep] @ ((V[:, keep].T @ B) / lam[keep][:, None])
        b = (ym - xm @ coef) if self.fit_intercept else np.zeros(B.shape[1])
        # the objective from the statistics: (1/S)(1/2 ||r||^2_s) + l2/(2S)||w||^2
        rss = syy - 2 * np.einsum("ft,ft->t", coef, B) + np.einsum("ft,fg,gt->t", coef, G, coef)
        obj = float((0.5 * rss.sum() + 0.5 * l2 * np.sum(coef * coef)) / S)
        return coef.T, b, obj

    # -- attributes -----------------------------------------------------------------
    def _set_model(self, W, b, dtype, n_iter):
        self.coef_ = np.asarray(W, dtype=dtype)
        self.intercept_ = np.asarray(b, dtype=dtype) if self.fit_intercept else \
            np.zeros(len(b), dtype=dtype)
        self.n_iter_ = int(n_iter)

    def _decision(self, X):
        check_is_fitted(self)
        return linear_decision(self, X, np.atleast_2d(self.coef_), self.intercept_,
                               "dmlkit-glm-decision")


# -- regressors -----------------------------------------------------------------------
class _GLMRegressor(RegressorMixin, _GLM):
    def _set_model(self, W, b, dtype, n_iter):
        super()._set_model(W, b, dtype, n_iter)
        self.coef_ = self.coef_.reshape(-1)
        self.intercept_ = self.intercept_.reshape(-1)[0]

    @placed
    def predict(self, X):
        """Predicted targets, ``X @ coef_ + intercept_`` (dask in, dask out)."""
        d = self._decision(X)
        return d[:, 0]


_DMLKIT_DOC = """
    Other Parameters
    ----------------
    cache : {'auto', True, False}, default='auto'
        Persist the input blocks on the cluster (keeping lineage) or stream them from
        their source every pass.
    checkpoint : str, path or None, default=None
        A folder (local path or fsspec URL) where ``fit`` saves the solver's state
        every ``checkpoint_interval`` iterations; a fit whose checkpoint is there
        resumes from it bit for bit (see the user guide's "Checkpoints and resume").
    checkpoint_interval : int, default=1
        Iterations between checkpoint saves.
    verbose : int, default=0
        A progress bar with the objective, the largest gradient component and the
        passes so far.

    Attributes
    ----------
    coef_ : ndarray
        The coefficients: shape (n_features,) for a regressor, (1, n_features) for a
        binary and (n_classes, n_features) for a multinomial classifier.
    intercept_ : float or ndarray
        The intercept (0 when ``fit_intercept=False``).
    n_iter_ : int, or ndarray of shape (1,) for LogisticRegression
        Solver iterations (1 for an exact least-squares solve).
    n_passes_ : int
        Passes over the data, line-search trials included (not the classifier's pass
        that finds its labels).
    converged_ : bool
        Whether the solver stopped on ``tol`` or on a relative decrease of the
        objective below 64 machine epsilons (as scikit-learn's lbfgs), not on
        ``max_iter`` or a failed line search.
    objective_ : float
        The final normalised objective, ``(1/S) sum s loss + l2/2 ||W||^2 + l1 ||W||_1``
        with ``S`` the sum of the row weights.
    solver_ : str
        The solver that ran: 'lbfgs', 'owlqn' or 'cholesky'.
    resumed_from_iter_ : int
        Iterations the last fit resumed from a checkpoint; 0 for a fresh start.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of str
        Column names of a dataframe X, when it had them.
"""

_LSQ_CONSTRAINTS = {
    "fit_intercept": ["boolean"],
    "copy_X": ["boolean"],
    "max_iter": [Interval(Integral, 1, None, closed="left"), None],
    "tol": [Interval(Real, 0, None, closed="left")],
    "solver": [StrOptions({"auto", "cholesky", "lbfgs"})],
    "cache": [StrOptions({"auto"}), "boolean"],
    "verbose": ["verbose"],
    **CHECKPOINT_CONSTRAINTS,
}


class Ridge(_GLMRegressor):
    """Linear least squares with an L2 penalty, ``||y - Xw - b||^2_s + alpha ||w||^2``
    (scikit-learn's Ridge), out of core on Dask.

    Parameters
    ----------
    alpha : float, default=1.0
        The L2 penalty.
    fit_intercept : bool, default=True
    copy_X : bool, default=True
        Accepted for scikit-learn's API; dmlkit never modifies X.
    max_iter : int or None, default=None
        Iterations of the L-BFGS solver (None: 1000).
    tol : float, default=1e-4
        L-BFGS stops when the largest gradient component of the normalised objective is
        at most ``tol``.
    solver : {'auto', 'cholesky', 'lbfgs'}, default='auto'
        'cholesky': exact, from ``X'X`` reduced over the blocks in one pass (features up
        to a few thousand); 'lbfgs': a pass per iteration, for many (e.g. hashed sparse)
        features; 'auto': 'cholesky' up to 2048 features.
""" + _DMLKIT_DOC

    _parameter_constraints = {"alpha": [Interval(Real, 0, None, closed="left")],
                              **_LSQ_CONSTRAINTS}

    def __init__(self, alpha=1.0, *, fit_intercept=True, copy_X=True, max_iter=None, tol=1e-4,
                 solver="auto", cache="auto", checkpoint=None, checkpoint_interval=1,
                 verbose=0):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.verbose = verbose

    def _check_params(self):
        pass

    def _alpha(self):
        return float(self.alpha)

    def _penalty(self, S):
        return self._alpha() / S, 0.0

    def _solver(self, n_features):
        if self.solver == "auto":
            return "cholesky" if n_features <= GRAM_MAX_FEATURES else "lbfgs"
        return self.solver

    def _max_iter(self):
        return 1000 if self.max_iter is None else self.max_iter

    @placed
    def fit(self, X, y, sample_weight=None):
        """Fit the model (one pass for the exact solver, one per iteration else)."""
        with keep_state_on_error(self):
            return self._fit(X, y, sample_weight)


class LinearRegression(Ridge):
    """Ordinary least squares (scikit-learn's LinearRegression), out of core on Dask:
    exact from ``X'X`` in one pass for up to a few thousand features (the minimum-norm
    solution when ``X'X`` is singular, as scikit-learn's), L-BFGS beyond.

    Parameters
    ----------
    fit_intercept : bool, default=True
    copy_X : bool, default=True
        Accepted for scikit-learn's API; dmlkit never modifies X.
    tol : float, default=1e-6
        L-BFGS's stopping tolerance (unused by the exact solver).
    n_jobs : None
        Accepted for scikit-learn's API; dask gives the parallelism.
    solver : {'auto', 'cholesky', 'lbfgs'}, default='auto'
        As Ridge's ('cholesky' here is the exact least-squares solve).
    max_iter : int or None, default=None
        Iterations of the L-BFGS solver (None: 1000).
""" + _DMLKIT_DOC

    _parameter_constraints = {**_LSQ_CONSTRAINTS, "n_jobs": [None, Integral]}

    def __init__(self, *, fit_intercept=True, copy_X=True, tol=1e-6, n_jobs=None,
                 solver="auto", max_iter=None, cache="auto", checkpoint=None,
                 checkpoint_interval=1, verbose=0):
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.tol = tol
        self.n_jobs = n_jobs
        self.solver = solver
        self.max_iter = max_iter
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.verbose = verbose

    def _alpha(self):
        return 0.0


class PoissonRegressor(_GLMRegressor):
    """Generalised linear model with a Poisson distribution and log link
    (scikit-learn's PoissonRegressor), out of core on Dask; L-BFGS in the driver, one
    pass over the data per evaluation.

    Parameters
    ----------
    alpha : float, default=1.0
        L2 penalty of the mean half deviance: ``1/(2S) sum s dev + alpha/2 ||w||^2``.
    fit_intercept : bool, default=True
    solver : {'lbfgs'}, default='lbfgs'
    max_iter : int, default=100
    tol : float, default=1e-4
        Stop when the largest gradient component is at most ``tol``.
    warm_start : bool, default=False
        Start from the last fit's ``coef_`` and ``intercept_``.
""" + _DMLKIT_DOC

    _loss = "poisson"
    _parameter_constraints = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions({"lbfgs"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "cache": [StrOptions({"auto"}), "boolean"],
        "verbose": ["verbose"],
        **CHECKPOINT_CONSTRAINTS,
    }

    def __init__(self, *, alpha=1.0, fit_intercept=True, solver="lbfgs", max_iter=100,
                 tol=1e-4, warm_start=False, cache="auto", checkpoint=None,
                 checkpoint_interval=1, verbose=0):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    def _check_params(self):
        pass

    def _penalty(self, S):
        return float(self.alpha), 0.0

    def _solver(self, n_features):
        return "lbfgs"

    @placed
    def fit(self, X, y, sample_weight=None):
        """Fit the model: L-BFGS, one pass over the data per evaluation."""
        with keep_state_on_error(self):
            return self._fit(X, y, sample_weight)

    @placed
    def predict(self, X):
        """The expected counts, ``exp(X @ coef_ + intercept_)``."""
        return np.exp(self._decision(X)[:, 0])

    @placed
    def score(self, X, y, sample_weight=None):
        """D^2, the fraction of the Poisson deviance explained (scikit-learn's score)."""
        pred = self.predict(X)
        values = compute(pred, y, sample_weight)
        return d2_tweedie_score(values[1], values[0], sample_weight=values[2], power=1)


# -- the classifier -------------------------------------------------------------------
class LogisticRegression(ClassifierMixin, _GLM):
    """Logistic regression solved to the optimum (scikit-learn's LogisticRegression),
    out of core on Dask: binary, or multinomial (softmax) for three classes or more.

    L-BFGS for the smooth penalties ('l2', None), OWL-QN for 'l1' and 'elasticnet';
    each solver iteration is a pass over the data (a line search's extra trials are
    passes too, counted in ``n_passes_``).

    Parameters
    ----------
    penalty : {'l2', 'l1', 'elasticnet', None}, default='l2'
        ``C = np.inf`` also means no penalty, as in scikit-learn 1.8+.
    C : float, default=1.0
        Inverse of the regularisation strength.
    l1_ratio : float or None, default=None
        The elastic-net mixing (0: L2, 1: L1); only with ``penalty='elasticnet'``, where
        it is required.
    fit_intercept : bool, default=True
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes, multiplying the sample weights.
    max_iter : int, default=100
    tol : float, default=1e-4
        Stop when the largest component of the (pseudo-)gradient of the normalised
        objective is at most ``tol``, as scikit-learn's lbfgs.
    solver : {'auto', 'lbfgs', 'owlqn'}, default='auto'
        'auto': OWL-QN when the penalty has an L1 part, else L-BFGS.
    warm_start : bool, default=False
        Start from the last fit's ``coef_`` and ``intercept_``.
    n_jobs : None
        Accepted for scikit-learn's API; dask gives the parallelism.
""" + _DMLKIT_DOC + """    classes_ : ndarray of shape (n_classes,)
        The class labels.
"""

    _parameter_constraints = {
        "penalty": [StrOptions({"l1", "l2", "elasticnet"}), None],
        "C": [Interval(Real, 0, None, closed="right")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both"), None],
        "fit_intercept": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "solver": [StrOptions({"auto", "lbfgs", "owlqn"})],
        "warm_start": ["boolean"],
        "n_jobs": [None, Integral],
        "cache": [StrOptions({"auto"}), "boolean"],
        "verbose": ["verbose"],
        **CHECKPOINT_CONSTRAINTS,
    }

    def __init__(self, penalty="l2", *, C=1.0, l1_ratio=None, fit_intercept=True,
                 class_weight=None, max_iter=100, tol=1e-4, solver="auto", warm_start=False,
                 n_jobs=None, cache="auto", checkpoint=None, checkpoint_interval=1,
                 verbose=0):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.verbose = verbose

    def _mix(self):
        """(share of L2, share of L1) of the penalty; None: no penalty."""
        if self.penalty is None or self.C == np.inf:
            return None
        return {"l2": (1.0, 0.0), "l1": (0.0, 1.0)}.get(
            self.penalty, (1.0 - (self.l1_ratio or 0.0), self.l1_ratio or 0.0))

    def _check_params(self):
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise ValueError("l1_ratio must be specified when penalty is elasticnet.")
        if self.l1_ratio is not None and self.penalty != "elasticnet":
            raise ValueError(f"l1_ratio={self.l1_ratio!r} is only used with "
                             f"penalty='elasticnet' (penalty={self.penalty!r}): set "
                             "penalty='elasticnet', or leave l1_ratio=None.")
        mix = self._mix()
        if self.solver == "lbfgs" and mix is not None and mix[1] > 0:
            raise ValueError(f"solver='lbfgs' needs a smooth penalty ('l2' or None); "
                             f"penalty={self.penalty!r} has an L1 part: use solver='owlqn' "
                             "or 'auto'.")

    def _penalty(self, S):
        mix = self._mix()
        if mix is None:
            return 0.0, 0.0
        return mix[0] / (self.C * S), mix[1] / (self.C * S)

    def _solver(self, n_features):
        mix = self._mix()
        return "owlqn" if mix is not None and mix[1] > 0 else "lbfgs"

    def _setup(self, blocks, backend):
        labels, counts = label_counts(blocks)
        check_classification_targets(labels)
        if len(labels) < 2:
            raise ValueError("This solver needs samples of at least 2 classes in the data, "
                             f"but the data contains only one class: {labels.tolist()[0]!r}")
        self.classes_ = labels
        cw = self.class_weight
        weights = None
        if isinstance(cw, str):  # 'balanced': n_samples / (n_classes * count)
            weights = counts.sum() / (len(labels) * counts.astype(np.float64))
        elif cw is not None:
            unknown = [c for c in cw if c not in set(labels.tolist())]
            if unknown:
                raise ValueError(f"The classes, {unknown}, are not in class, "
                                 f"{labels.tolist()}")
            weights = np.array([float(cw.get(c, 1.0)) for c in labels.tolist()])
        loss = "binomial" if len(labels) == 2 else "multinomial"
        self._loss = loss
        spec = {"loss": loss, "classes": labels, "class_weight": weights, "backend": backend}
        fingerprint = {"classes": labels, "class weights": weights}
        # every pass reads the labels' codes, encoded once per block (kept with the
        # blocks when they are cached, recomputed with them when streamed)
        codes = blocks.y.map_blocks(_encode_labels, labels, dtype=np.float64,
                                    meta=np.empty((0,), np.float64))
        blocks = dataclasses.replace(blocks, y=codes)
        return blocks, spec, 1 if len(labels) == 2 else len(labels), fingerprint

    def _set_model(self, W, b, dtype, n_iter):
        super()._set_model(W, b, dtype, n_iter)
        self.n_iter_ = np.array([int(n_iter)], dtype=np.int32)

    @placed
    def fit(self, X, y, sample_weight=None):
        """Fit the model to the optimum of scikit-learn's objective (within ``tol``)."""
        with keep_state_on_error(self):
            if not self.warm_start:
                self.__dict__.pop("classes_", None)
            return self._fit(X, y, sample_weight)

    @placed
    def decision_function(self, X):
        """``X @ coef_.T + intercept_``: shape (n,) for a binary model, (n, n_classes)
        for a multinomial one (dask in, dask out)."""
        d = self._decision(X)
        return d[:, 0] if d.shape[1] == 1 else d

    @placed
    def predict(self, X):
        """The most probable class of every row."""
        d = self.decision_function(X)
        idx = (d > 0).astype(np.intp) if d.ndim == 1 else d.argmax(axis=1)
        if isinstance(idx, da.Array):
            return idx.map_blocks(_take, self.classes_, dtype=self.classes_.dtype)
        return self.classes_[idx]

    @placed
    def predict_proba(self, X):
        """Class probabilities: the logistic (binary) or the softmax (multinomial) of
        the decision values."""
        d = self.decision_function(X)
        if isinstance(d, da.Array):
            return d.map_blocks(_proba, dtype=d.dtype, chunks=(d.chunks[0], (len(self.classes_),)),
                                new_axis=1 if d.ndim == 1 else None)
        return _proba(d)

    @placed
    def predict_log_proba(self, X):
        """The logarithm of :meth:`predict_proba`."""
        p = self.predict_proba(X)
        return da.log(p) if isinstance(p, da.Array) else np.log(p)


def _take(i, classes):
    return classes[i]


def _proba(d):
    """Class probabilities from decision values: the logistic of a binary model's, the
    softmax of a multinomial model's."""
    if d.ndim == 1:
        p = np.empty((d.shape[0], 2), dtype=d.dtype)
        p[:, 1] = np.where(d >= 0, 1 / (1 + np.exp(-np.abs(d))),
                           np.exp(-np.abs(d)) / (1 + np.exp(-np.abs(d))))
        p[:, 0] = 1 - p[:, 1]
        return p
    e = np.exp(d - d.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
