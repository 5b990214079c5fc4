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
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import check_finite_result, is_dask_collection, to_row_blocks
from dmlkit._core.dispatch import backend_of, get_kernels, to_numpy
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
XP_BATCH_SIZE = 256  # rows per step of the array-API (GPU) kernel unless batch_size says
SPARSE_INTERCEPT_DECAY = 0.01  # scikit-learn damps intercept updates on sparse data


# ----------------------------------------------------------------------------------
VALIDATION_STREAM = 0x7A11  # the random stream of the early-stopping split (not an epoch's)


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


def _split_rows(Y, seed, block, fraction, stratify):
    """(training rows, validation rows) of a block for early stopping.

    Drawn from (seed, block) alone, so every epoch (and a block recomputed after a
    worker loss) gets the same split; classifiers take ``fraction`` of each class.
    """
    n = Y.shape[0]
    if not fraction:
        return np.arange(n), np.arange(0)
    perm = np.random.default_rng([int(seed), VALIDATION_STREAM, int(block)]).permutation(n)
    if stratify:
        labels = (Y[:, 0] > 0).astype(np.intp) if Y.shape[1] == 1 else np.argmax(Y, axis=1)
        lab = labels[perm]
        val = np.concatenate([perm[lab == c][:int(round(fraction * np.sum(lab == c)))]
                              for c in np.unique(lab)])
    else:
        val = perm[:int(round(fraction * n))]
    mask = np.zeros(n, dtype=bool)
    mask[val] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _decision_values(x, coef, intercept):
    """x @ coef.T + intercept for a dense (NumPy or array-API) or scipy.sparse block."""
    if sp.issparse(x):
        return np.asarray(x @ coef.T) + intercept
    return to_numpy(x) @ coef.T + intercept


def _validation_stats(x, Y, sw, rows, model, regression):
    """Weighted sums that give the validation score of ``model`` over ``rows``."""
    if len(rows) == 0:
        return np.zeros(4 if regression else 2)
    d = _decision_values(x[rows], *model)
    y, w = Y[rows], sw[rows]
    if regression:
        r = y[:, 0] - d[:, 0]
        return np.array([w.sum(), (w * y[:, 0]).sum(), (w * y[:, 0] ** 2).sum(),
                         (w * r * r).sum()])
    if Y.shape[1] == 1:
        correct = (d[:, 0] > 0) == (y[:, 0] > 0)
    else:
        correct = np.argmax(d, axis=1) == np.argmax(y, axis=1)
    return np.array([(w * correct).sum(), w.sum()])


def _epoch_task(x, w, offset, y, block, classes, state, pos_w, neg_w, params, seed, epoch,
                run, n_threads=1):
    """One block's epoch: its local SGD pass and, with early stopping, the validation
    statistics of the incoming model.  Returns row-weighted sums for the driver's mix."""
    Y = _targets(y, classes)
    n = Y.shape[0]
    sw = np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    train, val = _split_rows(Y, seed, block, run["validation_fraction"], classes is not None)
    out = {"val": _validation_stats(x, Y, sw, val, state["score_model"], classes is None)
           if run["validation_fraction"] else np.zeros(0)}
    order = train
    if run["shuffle"]:
        order = train[np.random.default_rng([int(seed), int(epoch), int(block)]).permutation(
            len(train))]
    # q (the L1 penalty applied per feature) only exists with L1; it is not shipped else,
    # and the kernels never touch it then: an empty one saves a model-sized copy per task
    q0 = state["q"] if state["q"] is not None else np.zeros((state["coef"].shape[0], 0))
    t, average = _step_units(params, run)
    if run["backend"] == "xp":
        K = get_kernels("linear_model", "xp")
        extra = {"batch_size": run["batch_size"]}
        params = dict(params, t=t, average=average)
    else:
        K, extra = kernels, {}
        x = x if sp.issparse(x) else to_numpy(x)
    res = K.sgd_epoch_block(x, Y, sw, order.astype(np.int64), state["coef"], state["intercept"],
                            state["u"], q0, pos_w, neg_w, params, n_threads=n_threads,
                            want_loss=params["want_loss"], avg_coef=state["avg_coef"],
                            avg_intercept=state["avg_intercept"], **extra)
    W, b, u, q, sumloss, aw, ab = (None if v is None else np.asarray(to_numpy(v)) for v in res)
    nt = float(len(order))
    out.update(coef=W * nt, intercept=b * nt, u=u * nt, n=nt, loss=sumloss,
               q=q * nt if state["q"] is not None else None)
    if average > 0:
        # The block's running average covers k0 earlier steps and m of its own: its
        # share of the sum of all averaged iterates is aw (k0 + m) - avg0 k0 (see _mix).
        steps = nt if run["backend"] != "xp" else float(-(-len(order) // run["batch_size"]))
        k0 = max(0.0, t - average)
        m = max(0.0, min(steps, t + steps - average))
        out.update(avg_coef=aw * (k0 + m) - state["avg_coef"] * k0,
                   avg_intercept=ab * (k0 + m) - state["avg_intercept"] * k0, m=m)
    return out


def _step_units(params, run):
    """(t, average) in the kernel's steps: rows for numba, batches for the array-API
    kernel (whose schedule advances once per batch)."""
    t, average = float(params["t"]), int(params["average"])
    if run["backend"] != "xp":
        return t, average
    bs = run["batch_size"]
    return 1.0 + (t - 1.0) / bs, (-(-average // bs) if average else 0)


def _combine_epochs(*parts):
    """Sum the blocks' partial results, key by key (the fixed reduction tree's step)."""
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in parts[0].items()}
    for part in parts[1:]:
        for k, v in part.items():
            out[k] = None if v is None else out[k] + v
    return out


def _check_init(value, shape, what):
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"Provided {what} does not match dataset: expected shape {shape}, "
                         f"got {arr.shape}.")
    return arr.reshape(shape).copy()


def _block_label_counts(y):
    # hashing (pandas) instead of sorting: ~10x faster than np.unique on a block
    vc = pd.Series(np.asarray(to_numpy(y))).value_counts(sort=False, dropna=False)
    return vc.index.to_numpy(), vc.to_numpy()


def _label_counts(blocks):
    """Distinct labels of y (sorted) and their counts, in one pass (dask or in-memory y):
    each block counts its own labels, the client merges the small tables."""
    y = blocks.y
    if not blocks.lazy:
        return np.unique(y.compute(), return_counts=True)
    count = dask.delayed(_block_label_counts, pure=True)
    parts = dask.compute(*[count(b) for b in y.to_delayed().ravel()])
    labels, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=np.concatenate([p[1] for p in parts]))
    return labels, counts.astype(np.int64)




# ----------------------------------------------------------------------------------
class _BaseSGD(BaseEstimator):
    _losses: dict = {}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

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
        avg = self.average
        if avg is not None and not isinstance(avg, bool) and (
                not isinstance(avg, numbers.Integral) or avg < 0):
            raise ValueError(f"average must be a bool or an int >= 0, got {avg!r}.")
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise ValueError(f"early_stopping must be a bool, got {self.early_stopping!r}.")
        vf = self.validation_fraction
        if not (isinstance(vf, numbers.Real) and 0 < vf < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {vf!r}.")
        bs = self.batch_size
        if bs is not None and (not isinstance(bs, numbers.Integral) or bs < 1):
            raise ValueError(f"batch_size must be None or an int >= 1, got {bs!r}.")

    @property
    def _average(self):
        """``average`` as scikit-learn reads it: the step from which to average (0: off)."""
        return int(self.average) if self.average else 0

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
            "t": 1.0, "fit_intercept": bool(self.fit_intercept), "average": self._average,
            "intercept_decay": 1.0,
        }

    # -- the epoch loop ---------------------------------------------------------------
    def _public_model(self, state, t):
        """The model predictions use: the average once averaging has started (as
        scikit-learn: from ``average <= t_ - 1`` on), else the SGD iterate."""
        if self._average and self._average <= t - 1:
            return state["avg_coef"], state["avg_intercept"]
        return state["coef"], state["intercept"]

    def _mix(self, state, r, params, run):
        """The next global state from the reduced block sums (parameter mixing)."""
        total = r["n"]
        if total <= 0:
            raise ValueError("No training rows are left: validation_fraction leaves none.")
        new = {k: None if r[k] is None else r[k] / total
               for k in ("coef", "intercept", "u", "q")}
        t, average = _step_units(params, run)
        if average > 0:
            k0 = max(0.0, t - average)
            denom = k0 + r["m"]
            for k in ("avg_coef", "avg_intercept"):
                new[k] = (state[k] * k0 + r[k]) / denom if denom > 0 else state[k]
        else:
            new["avg_coef"] = new["avg_intercept"] = None
        return new

    def _validation_score(self, stats):
        if isinstance(self, RegressorMixin):
            sw, swy, swy2, ss_res = stats
            ss_tot = swy2 - swy * swy / sw if sw > 0 else 0.0
            return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
        return stats[0] / stats[1] if stats[1] > 0 else 0.0

    def _run_epochs(self, driver, backend, classes, state, pos_w, neg_w, n_epochs, seed,
                    fitting):
        """Run up to ``n_epochs`` epochs; returns (state, epochs kept).

        Early stopping is fused into the passes: epoch e's tasks also score the model
        they start from (the model after e epochs) on their validation rows, so no pass
        is spent on scoring alone.  When the rule stops the fit, the pass that found it
        is dropped and the scored model is kept.
        """
        params = self._kernel_params()
        params["t"] = float(getattr(self, "t_", 1.0))
        if driver.blocks.sparse:
            params["intercept_decay"] = SPARSE_INTERCEPT_DECAY  # as scikit-learn
        early = bool(fitting and self.early_stopping)
        tol_rule = bool(fitting and self.tol is not None and not early)
        params["want_loss"] = tol_rule or bool(self.verbose)
        run = {"validation_fraction": float(self.validation_fraction) if early else 0.0,
               "shuffle": bool(self.shuffle), "backend": backend,
               "batch_size": int(self.batch_size or XP_BATCH_SIZE)}
        tol = -np.inf if self.tol is None else float(self.tol)
        best = -np.inf if early else np.inf
        no_improve, n_done, scored = 0, 0, False
        per_block = [(y, i) for i, y in enumerate(driver.y_parts)]
        bar = driver.progress(n_epochs, type(self).__name__)
        try:
            while n_done < n_epochs:
                # the model early stopping scores (only then: it can be as big as coef)
                task_state = dict(state, score_model=self._public_model(state, params["t"])
                                  if early else None)
                shared = (classes, driver.shared(task_state, "model"), pos_w, neg_w,
                          dict(params), seed, self._epochs_seen + n_done, run)
                r = driver.map_reduce(_epoch_task, _combine_epochs, *shared, step="epoch",
                                      per_block=per_block)
                check_finite_result(r["coef"], r["intercept"], r["loss"])
                if early and scored:
                    # r["val"] scores `state`, the model after n_done epochs
                    score = self._validation_score(r["val"])
                    no_improve = no_improve + 1 if score < best + tol else 0
                    best = max(best, score)
                    if no_improve >= self.n_iter_no_change:
                        if self._stop_or_shrink_eta(params):
                            break
                        no_improve, scored = 0, False
                        continue  # redo this epoch with the smaller step
                state = self._mix(state, r, params, run)
                params["t"] += r["n"]
                n_done += 1
                scored = True
                bar.update(1)
                if tol_rule:
                    objective = float(np.sum(r["loss"])) / r["n"] + self._penalty_value(
                        state["coef"])
                    no_improve = no_improve + 1 if objective > best - tol else 0
                    best = min(best, objective)
                    if no_improve >= self.n_iter_no_change:
                        if self._stop_or_shrink_eta(params):
                            break
                        no_improve = 0
        finally:
            bar.close()
        self.t_ = params["t"]
        self._epochs_seen += n_done
        return state, n_done

    def _stop_or_shrink_eta(self, params):
        """``n_iter_no_change`` epochs without improvement: True stops the fit; with
        ``learning_rate='adaptive'`` (while eta > 1e-6) eta is divided by 5 instead."""
        if self.learning_rate == "adaptive" and params["eta"] > 1e-6:
            params["eta"] /= 5
            return False
        return True

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
                               y=y, finite_check="caller", accept_sparse=True)
        backend = backend_of(blocks.X._meta)  # one that cannot take these blocks says so now
        classes = self._resolve_classes(blocks, classes_arg, first)
        n_models = 1 if classes is None or len(classes) == 2 else len(classes)
        d = blocks.n_features
        warm = (not incremental and self.warm_start and hasattr(self, "coef_")
                and np.atleast_2d(self.coef_).shape[1] == d)
        if not first:
            state = dict(self._sgd_state)  # partial_fit continues the SGD iterate
        else:
            if warm:
                coef = np.array(self.coef_, dtype=np.float64).reshape(n_models, d)
                intercept = np.array(self.intercept_, dtype=np.float64).reshape(n_models)
            else:
                coef, intercept = np.zeros((n_models, d)), np.zeros(n_models)
            if coef_init is not None:
                coef = _check_init(coef_init, (n_models, d), "coef_init")
            if intercept_init is not None:
                intercept = _check_init(intercept_init, (n_models,), "intercept_init")
            avg = self._average > 0
            state = {"coef": coef, "intercept": intercept, "u": np.zeros(n_models),
                     "q": np.zeros((n_models, d)) if self.penalty in ("l1", "elasticnet")
                     else None,
                     "avg_coef": np.zeros((n_models, d)) if avg else None,
                     "avg_intercept": np.zeros(n_models) if avg else None}
            self.t_ = 1.0
            self._epochs_seen = 0
        pos_w, neg_w = self._class_weights(blocks, classes)
        rs = check_random_state(self.random_state)
        if not hasattr(self, "_seed") or not incremental:
            self._seed = int(rs.randint(np.iinfo(np.int32).max))
        if not incremental and self.early_stopping and not blocks.lazy and \
                int(round(self.validation_fraction * blocks.n_samples)) < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no "
                             f"validation rows out of {blocks.n_samples} samples; raise it "
                             "or turn early_stopping off.")
        driver = Driver("sgd", blocks, cache=self.cache if not incremental else False,
                        verbose=self.verbose)
        n_epochs = 1 if incremental else self.max_iter
        state, n_done = self._run_epochs(driver, backend, classes, state, pos_w, neg_w,
                                         n_epochs, self._seed, fitting=not incremental)
        self._sgd_state = state
        if not incremental and n_done == self.max_iter and self.tol is not None \
                and self.max_iter > 1:
            warnings.warn("Maximum number of iteration reached before convergence. Consider "
                          "increasing max_iter to improve the fit.", ConvergenceWarning,
                          stacklevel=3)
        self.coef_, self.intercept_ = (np.array(a) for a in self._public_model(state, self.t_))
        self.n_iter_ = n_done if not incremental else getattr(self, "n_iter_", 0) + 1
        return self

    def _decision(self, X):
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False, accept_sparse=True)
        coef = np.atleast_2d(self.coef_)
        intercept = np.atleast_1d(self.intercept_)
        out = blocks.X.map_blocks(_decision_values, coef, intercept, dtype=np.float64,
                                  chunks=(blocks.X.chunks[0], (coef.shape[0],)),
                                  meta=np.empty((0, 0)), name="dmlkit-sgd-decision")
        return out if blocks.lazy else out.compute()


class SGDClassifier(ClassifierMixin, _BaseSGD):
    """Linear classifiers with SGD training, out of core on Dask (as scikit-learn's).

    The model is scikit-learn's, trained by iterative parameter mixing: every epoch,
    each row block runs one local SGD pass from the current model and the driver
    averages the block models weighted by their rows.  With one block (and
    ``shuffle=False``) it is scikit-learn's SGD, update for update.

    Dense input (NumPy, pandas, dask arrays and dataframes) and sparse input (a
    scipy.sparse matrix, or a dask array of scipy.sparse blocks, e.g. text hashed with
    ``HashingVectorizer``) are both taken; sparse blocks train in time proportional to
    their non-zeros.  NumPy and scipy.sparse blocks run numba kernels (per-sample SGD);
    CuPy and other array-API blocks run a mini-batch kernel of ``batch_size`` rows per
    step (default 256).

    Parameters beyond scikit-learn's: ``batch_size`` (array-API kernel only) and
    ``cache`` ('auto', True, False: persist the blocks or stream them every epoch).
    ``early_stopping`` holds out ``validation_fraction`` of every block (of each class
    for classifiers), drawn from ``random_state``; its score is computed in the next
    epoch's pass, so it costs no extra pass over the data.
    """

    _losses = CLASSIFICATION_LOSSES

    def __init__(self, loss="hinge", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, random_state=None, learning_rate="optimal",
                 eta0=0.01, power_t=0.5, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, class_weight=None, warm_start=False, average=False,
                 batch_size=None, cache="auto"):
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
        self.batch_size = batch_size
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

    The model is scikit-learn's, trained by iterative parameter mixing: every epoch,
    each row block runs one local SGD pass from the current model and the driver
    averages the block models weighted by their rows.  With one block (and
    ``shuffle=False``) it is scikit-learn's SGD, update for update.

    Dense input (NumPy, pandas, dask arrays and dataframes) and sparse input (a
    scipy.sparse matrix, or a dask array of scipy.sparse blocks, e.g. text hashed with
    ``HashingVectorizer``) are both taken; sparse blocks train in time proportional to
    their non-zeros.  NumPy and scipy.sparse blocks run numba kernels (per-sample SGD);
    CuPy and other array-API blocks run a mini-batch kernel of ``batch_size`` rows per
    step (default 256).

    Parameters beyond scikit-learn's: ``batch_size`` (array-API kernel only) and
    ``cache`` ('auto', True, False: persist the blocks or stream them every epoch).
    ``early_stopping`` holds out ``validation_fraction`` of every block (of each class
    for classifiers), drawn from ``random_state``; its score is computed in the next
    epoch's pass, so it costs no extra pass over the data.
    """

    _losses = REGRESSION_LOSSES

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, random_state=None, learning_rate="invscaling",
                 eta0=0.01, power_t=0.25, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, average=False, batch_size=None,
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
        self.warm_start = warm_start
        self.average = average
        self.batch_size = batch_size
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

