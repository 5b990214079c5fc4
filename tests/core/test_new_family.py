"""What a new family costs: an iterative estimator written on the core in ~40 lines
(its constraints table, its block task, its step) gets validation with scikit-learn's
wording, placement, progress, logging, checkpoints and bit-identical resume for free."""

from __future__ import annotations

import functools
from numbers import Integral, Real

import dask.array as da
import numpy as np
import pytest
from sklearn.base import BaseEstimator

from dmlkit._core import checkpoint as ckpt
from dmlkit._core.blocks import to_row_blocks
from dmlkit._core.loop import CHECKPOINT_CONSTRAINTS, FitLoop, Step
from dmlkit._core.params import Interval, validate_params
from dmlkit.exceptions import InvalidParameterError


# -- the whole family ---------------------------------------------------------------
def _gram_times(x, w, offset, v, n_threads=1):
    return x.T @ (x @ v)


def _sum(*parts):
    return functools.reduce(np.add, parts)


class PowerIteration(BaseEstimator):
    """The top right singular vector of X, by power iteration over row blocks."""

    _parameter_constraints = {
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        **CHECKPOINT_CONSTRAINTS,
    }

    def __init__(self, max_iter=100, tol=1e-12, random_state=None, verbose=0,
                 checkpoint=None, checkpoint_interval=1):
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state
        self.verbose, self.checkpoint = verbose, checkpoint
        self.checkpoint_interval = checkpoint_interval

    def fit(self, X, y=None):
        validate_params(self._parameter_constraints, self.get_params(), "PowerIteration")
        blocks = to_row_blocks(X, estimator=self)
        loop = FitLoop(self, "power", blocks)
        v0 = np.random.default_rng(self.random_state).standard_normal(blocks.n_features)
        state, it, done = loop.restore() or ({"v": v0 / np.linalg.norm(v0)}, 0, False)
        state, self.n_iter_, _ = loop.iterate(functools.partial(self._step, loop), state,
                                              max_iter=self.max_iter, start=it, done=done)
        loop.finish(state)
        self.component_ = state["v"]
        return self

    def _step(self, loop, state, it):
        w = loop.driver.map_reduce(_gram_times, _sum, state["v"], step="power")
        v = w / np.linalg.norm(w)
        shift = float(np.abs(v - state["v"]).max())
        return {"v": v}, Step(converged=shift <= self.tol, metrics={"shift": shift})
# -- end of the family --------------------------------------------------------------


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4000, 12)) @ np.diag(np.linspace(1, 1.3, 12))


def test_the_family_is_correct():
    X = _data()
    est = PowerIteration(random_state=0, max_iter=2000).fit(X)
    top = np.linalg.svd(X, full_matrices=False)[2][0]
    assert abs(abs(est.component_ @ top) - 1) < 1e-8
    assert est.n_iter_ < 2000 and est.resumed_from_iter_ == 0


def test_the_family_gets_validation_checkpoints_and_resume(tmp_path, monkeypatch):
    X = da.from_array(_data(), chunks=1000)
    kw = dict(random_state=0, max_iter=30, tol=0)
    ref = PowerIteration(**kw).fit(X)
    orig, saves = ckpt.CheckpointStore.save, []

    def save(self, *args, **kwargs):
        orig(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.CheckpointStore, "save", save)
    with pytest.raises(KeyboardInterrupt):
        PowerIteration(**kw, checkpoint=str(tmp_path)).fit(X)
    monkeypatch.undo()
    est = PowerIteration(**kw, checkpoint=str(tmp_path)).fit(X)
    assert est.resumed_from_iter_ == 7
    np.testing.assert_array_equal(est.component_, ref.component_)
    with pytest.raises(ValueError, match="parameter random_state: checkpoint has 0"):
        PowerIteration(**{**kw, "random_state": 1}, checkpoint=str(tmp_path)).fit(X)
    with pytest.raises(InvalidParameterError, match="The 'max_iter' parameter of "
                                                    "PowerIteration must be an int"):
        PowerIteration(max_iter=0).fit(X)
