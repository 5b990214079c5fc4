"""SGDClassifier and SGDRegressor by iterative parameter mixing over row blocks.

Each epoch, every block runs one local SGD pass (scikit-learn's update rule, see
``_kernels_cpu``) starting from the current global model, visiting its rows in an order
drawn from (seed, epoch, block index); the driver averages the block models weighted
by their rows.  All one-vs-rest classes train in the same pass; each converges on its
own (its ``tol`` rule or validation score, its adaptive step), as scikit-learn's
separate binary fits do, and is no longer trained once it has.

``fit`` runs its epochs through the core's fit loop (``dmlkit._core.loop``): the loop's
state holds everything the next epoch reads, so a checkpoint of it resumes the fit bit
for bit.
"""

from __future__ import annotations

import functools
import warnings

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import is_dask_collection, to_row_blocks
from dmlkit._core.client import placed
from dmlkit._core.dispatch import backend_of, get_kernels, to_numpy
from dmlkit._core.driver import Driver
from dmlkit._core.loop import FitLoop, Step
from dmlkit._core.params import validate_params
from dmlkit.base import keep_state_on_error
from dmlkit.exceptions import ConvergenceWarning
from dmlkit.linear_model._base import decision_values, label_counts, linear_decision
from dmlkit.linear_model._loss import (
    CLASSIFIER_LOSSES,
    DEFAULT_EPSILON,
    LEARNING_RATES,
    PENALTIES,
    PROBA_LOSSES,
    REGRESSION_LOSSES,
    loss_functions,
    parameter_constraints,
)

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


def _split_random_state(split_state, seed, block):
    """The RandomState a block's validation split draws from.

    Block 0 draws from ``random_state``'s own stream, as scikit-learn's split does, so a
    one-block fit holds out the rows scikit-learn holds out; block b > 0 from a stream
    keyed by (seed, b).  Either way every epoch, and a block recomputed after a worker
    loss, gets the same split.
    """
    if block == 0:
        rs = np.random.RandomState()
        rs.set_state(split_state)
        return rs
    seq = np.random.SeedSequence([int(seed), VALIDATION_STREAM, int(block)])
    return np.random.RandomState(np.random.MT19937(seq))


def _split_rows(Y, split_state, seed, block, fraction, stratify, n_blocks):
    """(training rows, validation rows) of a block for early stopping.

    scikit-learn's split, applied to each block: ``StratifiedShuffleSplit`` for
    classifiers (``fraction`` of each class), ``ShuffleSplit`` for regressors.  One
    block too small for it raises, as scikit-learn does; in a fit of several blocks, a
    block the stratified split cannot divide (a class with one row in it) is split
    without stratifying, and one too small to divide at all trains on all its rows (the
    fit says so if no validation row is left overall).
    """
    n = Y.shape[0]
    if not fraction:
        return np.arange(n), np.arange(0)
    rng = _split_random_state(split_state, seed, block)
    labels = None
    if stratify:
        labels = (Y[:, 0] > 0).astype(np.intp) if Y.shape[1] == 1 else np.argmax(Y, axis=1)
    state = rng.get_state()
    for cv in ((StratifiedShuffleSplit, ShuffleSplit) if stratify else (ShuffleSplit,)):
        rng.set_state(state)
        try:
            train, val = next(cv(test_size=fraction, random_state=rng).split(
                np.zeros((n, 1)), labels))
        except ValueError as e:  # too few rows (of a class) in this block to split
            if n_blocks == 1:
                raise ValueError(f"early_stopping cannot hold out validation_fraction="
                                 f"{fraction!r} of {n} samples: {e}") from None
            continue
        return np.sort(train), np.sort(val)
    return np.arange(n), np.arange(0)


def _block_is_finite(block):
    block = block.data if sp.issparse(block) else to_numpy(block)
    return bool(np.isfinite(block).all())


def _validation_stats(x, Y, sw, rows, model, regression):
    """Weighted sums that give the validation score of ``model`` over ``rows``, after
    the number of rows and their total weight: the R^2 sums of a regressor, the
    weighted hits of each one-vs-rest model of a classifier (scikit-learn scores each
    binary model on its own)."""
    M = Y.shape[1]
    if len(rows) == 0:
        return np.zeros(5 if regression else 2 + M)
    d = decision_values(x[rows], *model)
    y, w = Y[rows], sw[rows]
    head = np.array([float(len(rows)), w.sum()])
    if regression:
        r = y[:, 0] - d[:, 0]
        return np.concatenate([head, [(w * y[:, 0]).sum(), (w * y[:, 0] ** 2).sum(),
                                      (w * r * r).sum()]])
    return np.concatenate([head, w @ ((d > 0) == (y > 0))])


def _epoch_task(x, w, offset, y, block, classes, state, pos_w, neg_w, params, seed, epoch,
                run, n_threads=1):
    """One block's epoch: its local SGD pass and, with early stopping, the validation
    statistics of the incoming model.  Returns row-weighted sums for the driver's mix."""
    Y = _targets(y, classes)
    n = Y.shape[0]
    sw = np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    train, val = _split_rows(Y, run["split_state"], seed, block, run["validation_fraction"],
                             classes is not None, run["n_blocks"])
    out = {"val": _validation_stats(x, Y, sw, val, state["score_model"], classes is None)
           if run["validation_fraction"] else np.zeros(0)}
    order = train
    if run["shuffle"]:
        order = train[np.random.default_rng([int(seed), int(epoch), int(block)]).permutation(
            len(train))]
    # models that have converged are not trained (their rows come back as zeros: the
    # driver keeps their state)
    active = state["active"]
    M = Y.shape[1]
    part = {k: state[k] for k in ("coef", "intercept", "u", "q", "avg_coef", "avg_intercept")}
    if not active.all():
        part = {k: None if v is None else v[active] for k, v in part.items()}
        Y, pos_w, neg_w = Y[:, active], pos_w[active], neg_w[active]
        params = dict(params, eta=np.asarray(params["eta"])[active])
    # q (the L1 penalty applied per feature) only exists with L1; it is not shipped else,
    # and the kernels never touch it then: an empty one saves a model-sized copy per task
    q0 = part["q"] if part["q"] is not None else np.zeros((part["coef"].shape[0], 0))
    t, average = _step_units(params, run)
    K = get_kernels("linear_model", run["backend"])
    res = K.sgd_epoch_block(x, Y, sw, order.astype(np.int64), part["coef"], part["intercept"],
                            part["u"], q0, pos_w, neg_w, dict(params, t=t, average=average),
                            n_threads=n_threads, want_loss=params["want_loss"],
                            avg_coef=part["avg_coef"], avg_intercept=part["avg_intercept"],
                            batch_size=run["batch_size"])
    W, b, u, q, sumloss, aw, ab = (None if v is None else _all_models(to_numpy(v), active, M)
                                   for v in res)
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


def _all_models(values, active, M):
    """A kernel output for the active models, as rows of all M models (zeros elsewhere)."""
    values = np.asarray(values)
    if values.shape[0] == M:
        return values
    out = np.zeros((M,) + values.shape[1:], dtype=values.dtype)
    out[active] = values
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


# ----------------------------------------------------------------------------------
class _BaseSGD(BaseEstimator):
    _losses: dict = {}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_params(self, for_partial_fit=False):
        """scikit-learn's validation: the constraints table, then the rules that tie
        parameters together (its ``_more_validate_params``, with its messages)."""
        validate_params(self._parameter_constraints, self.get_params(deep=False),
                        type(self).__name__)
        if self.early_stopping and for_partial_fit:
            raise ValueError("early_stopping should be False with partial_fit")
        if self.learning_rate == "optimal" and self.alpha == 0:
            raise ValueError("alpha must be > 0 since learning_rate is 'optimal'. alpha is "
                             "used to compute the optimal learning rate.")
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise ValueError("l1_ratio must be set when penalty is 'elasticnet'")

    @property
    def _average(self):
        """``average`` as scikit-learn reads it: the step from which to average (0: off)."""
        return int(self.average) if self.average else 0

    def _kernel_params(self, backend):
        loss_id = self._losses[self.loss]
        optimal_init = 0.0
        if self.learning_rate == "optimal":
            typw = np.sqrt(1.0 / np.sqrt(self.alpha))
            K = get_kernels("linear_model", backend)
            initial_eta0 = typw / max(1.0, K.loss_gradient(loss_id, -typw, 1.0, self.epsilon))
            optimal_init = 1.0 / (initial_eta0 * self.alpha)
        return {
            "loss": loss_id, "penalty": PENALTIES[self.penalty], "alpha": float(self.alpha),
            # l1_ratio=None is only allowed where it is not read (penalty != elasticnet)
            "l1_ratio": float(self.l1_ratio or 0.0), "epsilon": float(self.epsilon),
            "learning_rate": LEARNING_RATES[self.learning_rate], "eta": float(self.eta0),
            "power_t": float(self.power_t), "optimal_init": float(optimal_init),
            "t": 1.0, "fit_intercept": bool(self.fit_intercept), "average": self._average,
            "intercept_decay": 1.0,
        }

    # -- the epoch loop ---------------------------------------------------------------
    def _public_model(self, model, t):
        """The model predictions use: the average once averaging has started (as
        scikit-learn: from ``average <= t_ - 1`` on), else the SGD iterate."""
        if self._average and self._average <= t - 1:
            return model["avg_coef"], model["avg_intercept"]
        return model["coef"], model["intercept"]

    def _mix(self, model, r, params, run, keep):
        """The next global model from the reduced block sums (parameter mixing); the
        models not in ``keep`` (converged, or their pass dropped) keep their state."""
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
                new[k] = (model[k] * k0 + r[k]) / denom if denom > 0 else model[k]
        else:
            new["avg_coef"] = new["avg_intercept"] = None
        if not keep.all():
            for k, v in new.items():
                if v is not None:
                    v[~keep] = model[k][~keep]
        return new

    def _validation_scores(self, stats):
        """Each model's validation score: R^2 (regressor), accuracy (each one-vs-rest
        model of a classifier on its own binary task, as scikit-learn)."""
        if isinstance(self, RegressorMixin):
            _, sw, swy, swy2, ss_res = stats
            ss_tot = swy2 - swy * swy / sw if sw > 0 else 0.0
            return np.array([1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0])
        return stats[2:] / stats[1] if stats[1] > 0 else np.zeros(len(stats) - 2)

    def _check_split(self, r, n_samples):
        """scikit-learn's errors for a validation split that leaves nothing to score
        (known after the first pass, which also counts the validation rows)."""
        n_val, w_val = r["val"][0], r["val"][1]
        if n_val == 0 or r["n"] == 0:
            raise ValueError(
                f"Splitting {n_samples} samples into a train set and a validation set with "
                f"validation_fraction={self.validation_fraction!r} led to an empty set "
                f"({int(r['n'])} and {int(n_val)} samples). Please either change "
                "validation_fraction, increase number of samples, or disable early_stopping.")
        if w_val <= 0:
            raise ValueError("The sample weights for validation set are all zero, consider "
                             "using a different random state.")

    def _check_finite_pass(self, driver, r, epoch):
        """A pass whose model is not finite: NaN/inf in the input (lazy input is only
        checked now, on this failure path) or, as scikit-learn says, an overflow."""
        if all(np.isfinite(np.asarray(r[k], dtype=np.float64)).all()
               for k in ("coef", "intercept", "loss")):
            return
        blocks = driver.blocks
        if blocks.lazy:
            check = dask.delayed(_block_is_finite, pure=True)
            parts = [check(b) for b in blocks.X.to_delayed().ravel()]
            if blocks.sample_weight is not None:
                parts += [check(b) for b in blocks.sample_weight.to_delayed().ravel()]
            if not all(driver.compute(*parts)):
                raise ValueError("Input X contains NaN or infinity.")
        raise ValueError(f"Floating-point under-/overflow occurred at epoch #{epoch}. "
                         "Scaling input data with StandardScaler or MinMaxScaler might help.")

    def _loop_state(self, model, split_state, early):
        """The epoch loop's state before its first epoch.

        It holds everything the next epoch reads, so a checkpoint of it is a complete
        resume point: the mixed model (``_sgd_state``), the step count ``t`` (as
        scikit-learn's ``t_``), the shuffle stream of the next pass (``epoch``: the
        epochs this SGD iterate has run), the seed and early stopping's split stream,
        and per one-vs-rest model: its step (``learning_rate='adaptive'`` divides it),
        whether it still trains, its best objective or validation score, its epochs
        without improvement, and whether the model its next pass starts from is new
        (early stopping scores only those).
        """
        M = model["coef"].shape[0]
        return {"model": model, "t": float(self.t_), "epoch": int(self._epochs_seen),
                "seed": self._seed, "split_state": split_state,
                "eta": np.full(M, float(self.eta0)), "active": np.ones(M, dtype=bool),
                "best": np.full(M, -np.inf if early else np.inf),
                "no_improve": np.zeros(M, dtype=np.int64), "scored": np.zeros(M, dtype=bool)}

    def _epoch_setup(self, driver, backend, classes, pos_w, neg_w, fitting):
        """What every epoch of a call reads and none changes: the kernel's parameters,
        the convergence rule in force (``fit`` only) and the tasks' fixed arguments."""
        params = self._kernel_params(backend)
        if driver.blocks.sparse:
            params["intercept_decay"] = SPARSE_INTERCEPT_DECAY  # as scikit-learn
        early = bool(fitting and self.early_stopping)
        tol_rule = bool(fitting and self.tol is not None and not early)
        params["want_loss"] = tol_rule or bool(self.verbose)
        run = {"validation_fraction": float(self.validation_fraction) if early else 0.0,
               "n_blocks": driver.blocks.n_blocks,
               "shuffle": bool(self.shuffle), "backend": backend,
               # rows per kernel step: the numba kernel steps on every row
               "batch_size": int(self.batch_size or XP_BATCH_SIZE) if backend == "xp" else 1}
        return {"params": params, "run": run, "early": early, "tol_rule": tol_rule,
                "tol": -np.inf if self.tol is None else float(self.tol), "classes": classes,
                "pos_w": pos_w, "neg_w": neg_w}

    def _run_epochs(self, loop, setup, state):
        """``fit``'s epochs through the core's fit loop (which resumes a checkpoint, stops
        at ``max_iter``, shows progress and saves checkpoints); returns the last state."""
        state, it, done = loop.restore() or (state, 0, False)
        state, _, _ = loop.iterate(functools.partial(self._epoch, loop.driver, setup), state,
                                   max_iter=self.max_iter, start=it, done=done)
        loop.finish(state)
        return state

    def _epoch(self, driver, setup, state, it):
        """One epoch, the step of the fit loop: every block's local pass from the mixed
        model, the mix, then each model's convergence rule; returns ``(state, Step)``.

        Each one-vs-rest model converges on its own, as scikit-learn's separate binary
        fits do: its own ``tol`` rule (or validation score), its own plateau count, its
        own step for ``learning_rate='adaptive'``; a converged model is no longer
        trained, and the fit ends when every model has converged (``n_iter_``: the most
        epochs any model ran).

        Early stopping is fused into the passes: epoch e's tasks also score the models
        they start from (the models after e epochs) on their validation rows, so no pass
        is spent on scoring alone.  A model the rule stops keeps the scored model (the
        pass that found it is dropped for it); a pass dropped for every model is not
        counted.
        """
        model, tol, early = state["model"], setup["tol"], setup["early"]
        run = dict(setup["run"], split_state=state["split_state"])
        # the step returns a new state: the one it was given may be a checkpoint's
        eta, active, best, no_improve, scored = (
            state[k].copy() for k in ("eta", "active", "best", "no_improve", "scored"))
        params = dict(setup["params"], eta=eta.copy(), t=state["t"])
        # the model early stopping scores (only then: it can be as big as coef)
        task_state = dict(model, active=active.copy(), score_model=self._public_model(
            model, state["t"]) if early else None)
        shared = (setup["classes"], driver.shared(task_state, "model"), setup["pos_w"],
                  setup["neg_w"], params, state["seed"], state["epoch"], run)
        r = driver.map_reduce(_epoch_task, _combine_epochs, *shared, step="epoch",
                              with_y=True, with_index=True)
        self._check_finite_pass(driver, r, it + 1)
        keep = active.copy()  # the models whose pass is kept
        metrics = {}
        if early:
            if it == 0 and not scored.any():
                self._check_split(r, driver.blocks.n_samples)
            # r["val"] scores the models the pass started from
            score = self._validation_scores(r["val"])
            metrics["score"] = float(score[active].mean())
            for m in np.flatnonzero(active & scored):
                no_improve[m] = no_improve[m] + 1 if score[m] < best[m] + tol else 0
                best[m] = max(best[m], score[m])
                if no_improve[m] >= self.n_iter_no_change:
                    keep[m] = False  # the scored model stays
                    active[m] = self._shrink_eta(eta, m)
                    no_improve[m], scored[m] = 0, False
            if not keep.any():  # every model's pass dropped: redo it (or end)
                state = dict(state, eta=eta, active=active, best=best, no_improve=no_improve,
                             scored=scored)
                return state, Step(counted=False, converged=not active.any())
        model = self._mix(model, r, params, run, keep)
        scored |= keep
        if setup["tol_rule"]:
            objective = r["loss"] / r["n"] + self._penalty_values(model["coef"])
            for m in np.flatnonzero(keep):
                no_improve[m] = no_improve[m] + 1 if objective[m] > best[m] - tol else 0
                best[m] = min(best[m], objective[m])
                if no_improve[m] >= self.n_iter_no_change:
                    active[m] = self._shrink_eta(eta, m)
                    no_improve[m] = 0
        if params["want_loss"]:  # the mean loss of a training row, over the models trained
            metrics["loss"] = float(r["loss"][keep].mean() / r["n"])
        state = dict(state, model=model, t=state["t"] + r["n"], epoch=state["epoch"] + 1,
                     eta=eta, active=active, best=best, no_improve=no_improve, scored=scored)
        return state, Step(converged=not active.any(), metrics=metrics)

    def _shrink_eta(self, eta, m):
        """Model m made no progress for ``n_iter_no_change`` epochs: with
        ``learning_rate='adaptive'`` (while its eta > 1e-6) its eta is divided by 5 and
        it goes on (True), else it has converged (False)."""
        if self.learning_rate == "adaptive" and eta[m] > 1e-6:
            eta[m] /= 5
            return True
        return False

    def _penalty_values(self, coef):
        """Each model's penalty term of the objective (scikit-learn's tol rule)."""
        if self.penalty is None:
            return np.zeros(coef.shape[0])
        l1 = {"l2": 0.0, "l1": 1.0, "elasticnet": self.l1_ratio}[self.penalty]
        return self.alpha * ((1 - l1) * 0.5 * (coef**2).sum(axis=1) + l1 * np.abs(coef).sum(
            axis=1))

    def _fit_common(self, X, y, sample_weight, coef_init, intercept_init, incremental,
                    classes_arg=None):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        if not is_dask_collection(y):
            y = column_or_1d(y, warn=True)  # a column vector: DataConversionWarning, ravel
        first = not (incremental and hasattr(self, "coef_"))
        self._check_params(for_partial_fit=incremental and first)
        early = not incremental and self.early_stopping
        if early and sample_weight is not None and not is_dask_collection(sample_weight) \
                and not (np.asarray(sample_weight) > 0).any():
            # as scikit-learn, which lets all-zero weights through to this message
            raise ValueError("The sample weights for validation set are all zero, consider "
                             "using a different random state.")
        blocks = to_row_blocks(X, estimator=self, reset=first, sample_weight=sample_weight,
                               y=y, finite_check="caller", accept_sparse=True)
        backend = backend_of(blocks.X._meta)  # one that cannot take these blocks says so now
        classes = self._resolve_classes(blocks, classes_arg, first)
        n_models = 1 if classes is None or len(classes) == 2 else len(classes)
        d = blocks.n_features
        warm = (not incremental and self.warm_start and hasattr(self, "coef_")
                and _dense(self.coef_).reshape(-1).size == n_models * d)
        if not first:
            model = dict(self._sgd_state)  # partial_fit continues the SGD iterate
        else:
            if warm:
                coef = _dense(self.coef_).astype(np.float64).reshape(n_models, d)
                intercept = np.array(self.intercept_, dtype=np.float64).reshape(n_models)
            else:
                coef, intercept = np.zeros((n_models, d)), np.zeros(n_models)
            if coef_init is not None:
                coef = _check_init(coef_init, (n_models, d), "coef_init")
            if intercept_init is not None:
                intercept = _check_init(intercept_init, (n_models,), "intercept_init")
            avg = self._average > 0
            model = {"coef": coef, "intercept": intercept, "u": np.zeros(n_models),
                     "q": np.zeros((n_models, d)) if self.penalty in ("l1", "elasticnet")
                     else None,
                     "avg_coef": np.zeros((n_models, d)) if avg else None,
                     "avg_intercept": np.zeros(n_models) if avg else None}
            self.t_ = 1.0
            self._epochs_seen = 0
        pos_w, neg_w = self._class_weights(blocks, classes)
        rs = check_random_state(self.random_state)
        # the stream scikit-learn's split draws from: random_state as it is now
        split_state = rs.get_state(legacy=False) if early else None
        if not hasattr(self, "_seed") or not incremental:
            self._seed = int(rs.randint(np.iinfo(np.int32).max))
        state = self._loop_state(model, split_state, early)
        if incremental:
            # one epoch and no checkpoint: the fit loop's step, run once
            driver = Driver("sgd", blocks, cache=False, verbose=self.verbose)
            setup = self._epoch_setup(driver, backend, classes, pos_w, neg_w, fitting=False)
            state, _ = self._epoch(driver, setup, state, 0)
            self.n_iter_ = getattr(self, "n_iter_", 0) + 1
        else:
            # what the data makes of the fit beyond its parameters: a checkpoint of a
            # fit from another start, or with other classes, is not resumed
            fingerprint = {"starting model": {k: model[k] for k in ("coef", "intercept")}}
            if classes is not None:
                fingerprint.update({"classes": classes, "class weights": [pos_w, neg_w]})
            loop = FitLoop(self, "sgd", blocks, cache=self.cache, fingerprint=fingerprint)
            setup = self._epoch_setup(loop.driver, backend, classes, pos_w, neg_w,
                                      fitting=True)
            state = self._run_epochs(loop, setup, state)
            self.n_iter_ = state["epoch"]
        self._sgd_state, self.t_ = state["model"], state["t"]
        self._epochs_seen, self._seed = state["epoch"], state["seed"]
        self._set_model(state["model"], blocks.dtype)
        if not incremental and self.n_iter_ == self.max_iter and self.tol is not None:
            warnings.warn("Maximum number of iteration reached before convergence. Consider "
                          "increasing max_iter to improve the fit.", ConvergenceWarning,
                          stacklevel=3)
        if not incremental and self.power_t < 0:
            warnings.warn("Negative values for `power_t` are deprecated in version 1.8 and "
                          "will raise an error in 1.10. Use values in the range [0.0, inf) "
                          "instead.", FutureWarning, stacklevel=3)
        return self

    def _set_model(self, model, dtype):
        """The fitted attributes from the mixed model, in the input's dtype (the model
        itself stays float64, where the blocks' models are mixed).

        With ``average``, scikit-learn's ``_standard_coef`` / ``_standard_intercept`` (the
        SGD iterate) and ``_average_coef`` / ``_average_intercept`` (the average) are set
        beside ``coef_`` / ``intercept_`` (whichever of the two predictions use).
        """
        def cast(a):
            return np.array(a, dtype=dtype)

        self.coef_, self.intercept_ = (cast(a) for a in self._public_model(model, self.t_))
        names = ("_standard_coef", "_standard_intercept", "_average_coef",
                 "_average_intercept")
        if self._average > 0:
            values = (model["coef"], model["intercept"], model["avg_coef"],
                      model["avg_intercept"])
            for name, value in zip(names, values, strict=True):
                setattr(self, name, cast(value))
        else:
            for name in names:
                self.__dict__.pop(name, None)

    def _decision(self, X):
        check_is_fitted(self)
        return linear_decision(self, X, _dense(self.coef_), self.intercept_,
                               "dmlkit-sgd-decision")

    def densify(self):
        """Convert a sparse ``coef_`` (see :meth:`sparsify`) back to a NumPy array."""
        check_is_fitted(self, msg="Estimator, %(name)s, must be fitted before densifying.")
        if sp.issparse(self.coef_):
            self.coef_ = self.coef_.toarray()
        return self

    def sparsify(self):
        """Store ``coef_`` as a scipy.sparse matrix, as scikit-learn's ``sparsify``: worth
        it when most coefficients are zero (L1).  Predictions stay the same."""
        check_is_fitted(self, msg="Estimator, %(name)s, must be fitted before sparsifying.")
        self.coef_ = sp.csr_matrix(self.coef_)
        return self


def _dense(coef):
    return coef.toarray() if sp.issparse(coef) else np.asarray(coef)


# the docstring part both estimators share (appended to each class docstring)
_DMLKIT_PARAMETERS_DOC = """
    The parameters and attributes are scikit-learn's; those below are dmlkit's own.

    Other Parameters
    ----------------
    batch_size : int or None, default=None
        Rows per step of the array-API kernel (None: 256); the numba kernels step on
        every row, as scikit-learn.
    cache : {'auto', True, False}, default='auto'
        Persist the input blocks on the cluster (keeping lineage) or stream them from
        their source every epoch.  ``'auto'`` persists when the data takes under
        ``dmlkit.cache-fraction`` of the cluster's memory.
    checkpoint : str, path or None, default=None
        A folder (local path or fsspec URL: ``s3://``, ``gs://``, ``memory://``...)
        where ``fit`` saves its state every ``checkpoint_interval`` epochs.  A fit
        whose checkpoint is there resumes from it, bit-identical to an uninterrupted
        fit; a checkpoint of another fit there (other parameters, data, classes, or
        starting model: ``coef_init``, ``intercept_init``, a warm start) is a
        ValueError (see "Checkpoints and resume" in the user guide).  ``partial_fit`` does
        not checkpoint.
    checkpoint_interval : int, default=1
        Epochs between checkpoint saves.  A save writes the model (with its average
        and L1 state): a model of many features and classes may want a longer one.

    Attributes
    ----------
    resumed_from_iter_ : int
        Epochs the last ``fit`` resumed from a checkpoint; 0 for a fresh start.
"""


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

    ``early_stopping`` holds out ``validation_fraction`` of every block (of each class),
    split as scikit-learn splits (one block: the same rows); its score is computed in
    the next epoch's pass, so it costs no extra pass over the data.  ``n_jobs`` is
    taken for scikit-learn's API and not used: the parallelism comes from dask (one
    task per block, and threads over the one-vs-rest models when there are fewer blocks
    than threads).
    """

    _losses = CLASSIFIER_LOSSES
    loss_functions = loss_functions(CLASSIFIER_LOSSES)
    _parameter_constraints = parameter_constraints(CLASSIFIER_LOSSES, classifier=True)

    def __init__(self, loss="hinge", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, n_jobs=None, random_state=None,
                 learning_rate="optimal", eta0=0.01, power_t=0.5, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=5, class_weight=None,
                 warm_start=False, average=False, batch_size=None, cache="auto",
                 checkpoint=None, checkpoint_interval=1):
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
        self.n_jobs = n_jobs
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
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval

    def _resolve_classes(self, blocks, classes_arg, first):
        """``classes_`` on the first call; every label of y must be one of them.

        One pass over y gives its labels and their counts (kept for
        ``class_weight='balanced'``), so y never has to come to the client whole.
        """
        labels, counts = label_counts(blocks)
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
        if isinstance(cw, str):  # 'balanced'
            # n_samples / (n_classes * count), as scikit-learn, from the counts of the
            # labels pass (classes absent from y get weight 1, as compute_class_weight's
            # callers see no such rows anyway).
            counts = np.array([self._label_counts.get(c, 0) for c in classes], dtype=float)
            expanded = np.where(counts > 0, counts.sum() / (len(classes) * np.maximum(
                counts, 1)), 1.0)
        else:
            # None or a dict: scikit-learn's own expansion (and its error for a dict
            # naming a class that is not one of classes_); y is not read for these
            expanded = compute_class_weight(cw, classes=classes, y=classes)
        if n_models == 1:
            return np.array([expanded[1]]), np.array([expanded[0]])
        return expanded.astype(np.float64), np.ones(n_models)

    @placed
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with ``max_iter`` epochs (fewer when ``tol`` stops it), from the
        checkpoint at ``checkpoint`` when one of this fit is there."""
        with keep_state_on_error(self):
            for attr in ("coef_", "intercept_", "classes_"):
                if not self.warm_start and hasattr(self, attr):
                    delattr(self, attr)
            return self._fit_common(X, y, sample_weight, coef_init, intercept_init, False)

    @placed
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y); ``classes`` is required on the first call.  Not
        checkpointed: ``checkpoint`` applies to ``fit``."""
        with keep_state_on_error(self):
            if not hasattr(self, "coef_"):
                self._check_params(for_partial_fit=True)
                if self.class_weight == "balanced":
                    raise ValueError(
                        "class_weight 'balanced' is not supported for partial_fit. In order "
                        "to use 'balanced' weights, use compute_class_weight('balanced', "
                        "classes=classes, y=y). In place of y you can use a large enough "
                        "sample of the full training set target to properly estimate the "
                        "class frequency distributions. Pass the resulting weights as the "
                        "class_weight parameter.")
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
            return self._fit_common(X, y, sample_weight, None, None, True, classes)

    @placed
    def decision_function(self, X):
        """Signed distance to the hyperplane, ``X @ coef_.T + intercept_``: shape (n_samples,)
        for two classes, else (n_samples, n_classes).  A dask array for dask input."""
        d = self._decision(X)
        return d[:, 0] if d.shape[1] == 1 else d

    @placed
    def predict(self, X):
        """The class of every row (from ``classes_``).  A dask array for dask input."""
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
    @placed
    def predict_proba(self, X):
        """Class probabilities (``log_loss``, ``modified_huber``), as scikit-learn's."""
        d = self.decision_function(X)
        lazy = isinstance(d, da.Array)
        f = _proba_log if self.loss == "log_loss" else _proba_modified_huber
        if lazy:
            n_out = len(self.classes_)
            return d.map_blocks(f, dtype=d.dtype, chunks=(d.chunks[0], (n_out,)),
                                new_axis=1 if d.ndim == 1 else None,
                                drop_axis=None if d.ndim == 1 else 1)
        return f(d)

    @available_if(_check_proba)
    @placed
    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba` (``log_loss``, ``modified_huber``)."""
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

    ``early_stopping`` holds out ``validation_fraction`` of every block, split as
    scikit-learn splits (one block: the same rows); its score is computed in the next
    epoch's pass, so it costs no extra pass over the data.
    """

    _losses = REGRESSION_LOSSES
    loss_functions = loss_functions(REGRESSION_LOSSES)
    _parameter_constraints = parameter_constraints(REGRESSION_LOSSES, classifier=False)

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=0.0001, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=1e-3, shuffle=True, verbose=0,
                 epsilon=DEFAULT_EPSILON, random_state=None, learning_rate="invscaling",
                 eta0=0.01, power_t=0.25, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, average=False, batch_size=None,
                 cache="auto", checkpoint=None, checkpoint_interval=1):
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
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval

    def _resolve_classes(self, blocks, classes_arg, first):
        return None

    def _class_weights(self, blocks, classes):
        return np.ones(1), np.ones(1)

    @placed
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with ``max_iter`` epochs (fewer when ``tol`` stops it), from the
        checkpoint at ``checkpoint`` when one of this fit is there."""
        with keep_state_on_error(self):
            for attr in ("coef_", "intercept_"):
                if not self.warm_start and hasattr(self, attr):
                    delattr(self, attr)
            out = self._fit_common(X, y, sample_weight, coef_init, intercept_init, False)
            self._flatten()
            return out

    @placed
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y).  Not checkpointed: ``checkpoint`` applies to ``fit``."""
        with keep_state_on_error(self):
            out = self._fit_common(X, y, sample_weight, None, None, True)
            self._flatten()
            return out

    def _flatten(self):
        # one model: scikit-learn's regressor keeps its coefficients 1-D
        for name in ("coef_", "intercept_", "_standard_coef", "_standard_intercept",
                     "_average_coef", "_average_intercept"):
            if name in self.__dict__:
                setattr(self, name, np.asarray(getattr(self, name)).reshape(-1))

    @placed
    def predict(self, X):
        """The predicted target of every row.  A dask array for dask input."""
        d = self._decision(X)
        return d[:, 0]


for _estimator in (SGDClassifier, SGDRegressor):
    _estimator.__doc__ += _DMLKIT_PARAMETERS_DOC
del _estimator
