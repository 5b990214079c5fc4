"""Warnings and errors raised by dmlkit."""


class DmlkitWarning(UserWarning):
    """Base class of the warnings dmlkit emits (the test suite turns them into errors)."""


class ConvergenceWarning(DmlkitWarning):
    """A fit stopped before its convergence criterion was met."""
