"""Linear models trained with SGD: :class:`SGDClassifier`, :class:`SGDRegressor`."""

from dmlkit.linear_model._sgd import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]
