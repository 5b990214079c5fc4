"""Declarative parameter constraints, checked by one function with scikit-learn's wording.

Each estimator declares a table ``{parameter: [constraint, ...]}`` (as scikit-learn's
``_parameter_constraints``) and :func:`validate_params` checks it.  This is a small
equivalent of scikit-learn's private ``sklearn.utils._param_validation`` (dmlkit does not
import another project's private modules): the same constraint kinds that dmlkit's
estimators use, and the same message,
``The 'n_clusters' parameter of KMeans must be an int in the range [1, inf). Got 0
instead.``, raised as :class:`~dmlkit.exceptions.InvalidParameterError` (a ``ValueError``
and a ``TypeError``, as scikit-learn's).
"""

from __future__ import annotations

import math
import operator
from numbers import Integral, Real

import numpy as np

from dmlkit.exceptions import InvalidParameterError

__all__ = ["Interval", "InvalidParameterError", "Predicate", "StrOptions", "validate_params"]


def _type_name(t):
    if t is Real:
        return "float"
    if t is Integral:
        return "int"
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


class Interval:
    """Numbers of ``type`` (``Integral`` or ``Real``) between ``left`` and ``right``
    (None: unbounded); ``closed`` in {'left', 'right', 'both', 'neither'}."""

    def __init__(self, type, left, right, *, closed):
        self.type, self.left, self.right, self.closed = type, left, right, closed

    def is_satisfied_by(self, val):
        # True is not a count nor a rate (ALS(factors=True) is a mistake, not 1 factor)
        if not isinstance(val, self.type) or isinstance(val, (bool, np.bool_)):
            return False
        if not isinstance(val, Integral) and math.isnan(val):
            return False
        lo_cmp = operator.lt if self.closed in ("left", "both") else operator.le
        hi_cmp = operator.gt if self.closed in ("right", "both") else operator.ge
        lo = -np.inf if self.left is None else self.left
        hi = np.inf if self.right is None else self.right
        return not (lo_cmp(val, lo) or hi_cmp(val, hi))

    def __str__(self):
        kind = "an int" if self.type is Integral else "a float"
        lb = "[" if self.closed in ("left", "both") else "("
        rb = "]" if self.closed in ("right", "both") else ")"
        left = "-inf" if self.left is None else self.left
        right = "inf" if self.right is None else self.right
        if self.type is not Integral:
            left = left if self.left is None else float(left)
            right = right if self.right is None else float(right)
        return f"{kind} in the range {lb}{left}, {right}{rb}"


class StrOptions:
    """One of a set of strings (listed in the given order in messages)."""

    def __init__(self, options):
        self.options = tuple(options)

    def is_satisfied_by(self, val):
        return isinstance(val, str) and val in self.options

    def __str__(self):
        return f"a str among {{{', '.join(repr(o) for o in self.options)}}}"


class _Predicate:
    def __init__(self, fn, text):
        self.fn, self.text = fn, text

    def is_satisfied_by(self, val):
        return self.fn(val)

    def __str__(self):
        return self.text


Predicate = _Predicate  # Predicate(fn, "text for the message"): any other constraint


def _is_float_dtype(v) -> bool:
    try:
        return np.dtype(v).name in ("float32", "float64")
    except TypeError:
        return False


def is_arraylike_not_scalar(x) -> bool:
    """An array-like (list, tuple, array, dataframe...) that is not a scalar or a str."""
    array_like = hasattr(x, "__len__") or hasattr(x, "shape") or hasattr(x, "__array__")
    return array_like and not isinstance(x, str) and not np.isscalar(x)


_BOOL = "an instance of 'bool' or an instance of 'numpy.bool'"
_NAMED = {
    "array-like": _Predicate(is_arraylike_not_scalar, "an array-like"),
    "boolean": _Predicate(lambda v: isinstance(v, (bool, np.bool_)), _BOOL),
    "float-dtype": _Predicate(_is_float_dtype, "'float32' or 'float64' (a NumPy dtype)"),
    "verbose": _Predicate(
        lambda v: isinstance(v, (bool, np.bool_)) or (isinstance(v, Integral) and v >= 0),
        "an int in the range [0, inf), " + _BOOL),
    "random_state": _Predicate(
        lambda v: v is None or isinstance(v, np.random.RandomState)
        or (isinstance(v, Integral) and 0 <= v <= 2**32 - 1),
        "an int in the range [0, 4294967295], an instance of 'numpy.random.mtrand."
        "RandomState' or None"),
}


def _make(constraint):
    if isinstance(constraint, str):
        return _NAMED[constraint]
    if constraint is callable:
        return _Predicate(callable, "a callable")
    if constraint is None:
        return _Predicate(lambda v: v is None, "None")
    if isinstance(constraint, type):
        return _Predicate(lambda v: isinstance(v, constraint),
                          f"an instance of {_type_name(constraint)!r}")
    return constraint


def validate_params(constraints: dict, params: dict, caller_name: str) -> None:
    """Raise :class:`InvalidParameterError` for the first parameter of ``params`` that
    satisfies none of its constraints (parameters without constraints are not checked)."""
    for name, value in params.items():
        if name not in constraints:
            continue
        made = [_make(c) for c in constraints[name]]
        if any(c.is_satisfied_by(value) for c in made):
            continue
        if len(made) == 1:
            text = str(made[0])
        else:
            text = f"{', '.join(str(c) for c in made[:-1])} or {made[-1]}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller_name} must be {text}. Got {value!r} instead.")
