"""SGD losses, penalties and learning-rate schedules: name -> id registries.

The ids select branches in the numba kernels; the parameter constraints are built
from the registry keys (as scikit-learn's ``loss_functions``).
"""

from __future__ import annotations

from dmlkit._core.params import StrOptions

DEFAULT_EPSILON = 0.1

CLASSIFICATION_LOSSES = {
    "hinge": 0,
    "log_loss": 1,
    "modified_huber": 2,
    "squared_hinge": 3,
    "perceptron": 4,
}
REGRESSION_LOSSES = {
    "squared_error": 5,
    "huber": 6,
    "epsilon_insensitive": 7,
    "squared_epsilon_insensitive": 8,
}
# SGDClassifier takes the regression losses too (on +-1 targets), as scikit-learn's
CLASSIFIER_LOSSES = {**CLASSIFICATION_LOSSES, **REGRESSION_LOSSES}
PENALTIES = {None: 0, "l2": 1, "l1": 2, "elasticnet": 3}
LEARNING_RATES = {"constant": 0, "optimal": 1, "invscaling": 2, "adaptive": 3}

PROBA_LOSSES = ("log_loss", "modified_huber")

# scikit-learn's ``loss_functions`` table (name -> (loss, default parameter...)), with
# the kernel's loss id in place of scikit-learn's Cython loss class
_LOSS_ARGS = {"hinge": (1.0,), "squared_hinge": (1.0,), "perceptron": (0.0,),
              "huber": (DEFAULT_EPSILON,), "epsilon_insensitive": (DEFAULT_EPSILON,),
              "squared_epsilon_insensitive": (DEFAULT_EPSILON,)}


def loss_functions(losses):
    return {name: (loss_id, *_LOSS_ARGS.get(name, ())) for name, loss_id in losses.items()}


def parameter_constraints(losses, classifier):
    """The constraints table of an SGD estimator (scikit-learn's, plus dmlkit's own
    ``batch_size``, ``cache`` and the checkpoint parameters every iterative estimator
    takes); 'pa1'/'pa2' are not offered (no kernel has them)."""
    from numbers import Integral, Real

    from dmlkit._core.loop import CHECKPOINT_CONSTRAINTS
    from dmlkit._core.params import Interval

    table = {
        "loss": [StrOptions(losses)],
        "penalty": [StrOptions(("l2", "l1", "elasticnet")), None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both"), None],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "shuffle": ["boolean"],
        "verbose": ["verbose"],
        "epsilon": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "learning_rate": [StrOptions(LEARNING_RATES)],
        "eta0": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, None, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "average": [Interval(Integral, 0, None, closed="neither"), "boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [StrOptions(("auto",)), "boolean"],
        **CHECKPOINT_CONSTRAINTS,
    }
    if classifier:
        table["n_jobs"] = [Integral, None]
        table["class_weight"] = [StrOptions(("balanced",)), dict, None]
    return table
