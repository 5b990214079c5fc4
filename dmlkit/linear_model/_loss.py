"""SGD losses, penalties and learning-rate schedules: name -> id registries.

The ids select branches in the numba kernels; the parameter constraints are built
from the registry keys (as scikit-learn's ``loss_functions``).
"""

from __future__ import annotations

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
PENALTIES = {None: 0, "l2": 1, "l1": 2, "elasticnet": 3}
LEARNING_RATES = {"constant": 0, "optimal": 1, "invscaling": 2, "adaptive": 3}

PROBA_LOSSES = ("log_loss", "modified_huber")
