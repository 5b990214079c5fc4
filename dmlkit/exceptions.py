"""Warnings and errors raised by dmlkit."""

from sklearn.exceptions import ConvergenceWarning as _SkConvergenceWarning


class DmlkitWarning(UserWarning):
    """Base class of the warnings dmlkit emits (the test suite turns them into errors)."""


class ConvergenceWarning(DmlkitWarning, _SkConvergenceWarning):
    """A fit stopped before its convergence criterion was met (also a scikit-learn
    ``ConvergenceWarning``, so filters written for scikit-learn apply)."""


class ClusterError(RuntimeError):
    """The cluster cannot run dmlkit's tasks: no workers, or workers that cannot import
    dmlkit or run other versions of dmlkit, dask, distributed, numba or NumPy."""


class InvalidParameterError(ValueError, TypeError):
    """A parameter has an invalid type or value (a ValueError and a TypeError, as
    scikit-learn's, whose message it repeats)."""
