"""Linear models: trained with SGD (:class:`SGDClassifier`, :class:`SGDRegressor`) and
solved to the optimum over full passes (:class:`LogisticRegression`, :class:`Ridge`,
:class:`LinearRegression`, :class:`PoissonRegressor`)."""

from dmlkit.linear_model._glm import LinearRegression, LogisticRegression, PoissonRegressor, Ridge
from dmlkit.linear_model._sgd import SGDClassifier, SGDRegressor

__all__ = ["LinearRegression", "LogisticRegression", "PoissonRegressor", "Ridge",
           "SGDClassifier", "SGDRegressor"]
