"""Helpers every dmlkit estimator shares."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def keep_state_on_error(estimator):
    """A fit that raises leaves the estimator exactly as it was (nothing half-written).

    Lazy input is validated inside the fit's passes, after scikit-learn-style
    validation has already reset attributes such as ``n_features_in_``.
    """
    saved = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise
