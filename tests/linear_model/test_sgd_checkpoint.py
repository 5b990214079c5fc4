"""SGD checkpoints: a fit interrupted after some epochs and fitted again with the same
``checkpoint`` resumes there and ends bit-identical to a fit never interrupted; a
checkpoint of another fit (parameters, data, y, starting model) is refused untouched.

Small in-memory or dask data on local threads: the interruption is a save that raises.
"""

from __future__ import annotations

import uuid
import warnings

import dask.array as da
import numpy as np
import pytest

from dmlkit import SGDClassifier, SGDRegressor
from dmlkit._core import checkpoint as ckpt
from dmlkit.exceptions import ConvergenceWarning
from dmlkit.linear_model import _sgd

N, D = 150, 5
MODEL = ("coef_", "intercept_", "n_iter_", "t_")


class Interrupted(Exception):
    """The failure a patched save raises (a fit's crash between two epochs)."""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    score = X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.standard_normal(N)
    return {"X": X, "binary": (score > 0).astype(int),
            "multiclass": np.digitize(score, [-0.6, 0.6]),
            "regression": X @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)}


class Saves(list):
    """Every committed save as (step, finished); with ``fail_after = k`` the k-th save
    raises Interrupted once it is committed."""

    fail_after = None


@pytest.fixture
def saves(monkeypatch):
    record = Saves()
    save = ckpt.CheckpointStore.save

    def recording_save(self, step, state, *, finished=False):
        save(self, step, state, finished=finished)
        record.append((step, finished))
        if len(record) == record.fail_after:
            raise Interrupted(f"after the save of epoch {step}")

    monkeypatch.setattr(ckpt.CheckpointStore, "save", recording_save)
    return record


def _assert_same_model(a, b):
    for name in MODEL:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert np.asarray(a.coef_).dtype == np.asarray(b.coef_).dtype


def _files(path):
    """The checkpoint folder's file names and its manifest's bytes."""
    return sorted(p.name for p in path.iterdir()), (path / "manifest.json").read_bytes()


CASES = {
    "binary-early-stopping": (
        lambda **kw: SGDClassifier(early_stopping=True, n_iter_no_change=3, random_state=0,
                                   **kw), "binary"),
    "multiclass-early-stopping": (
        lambda **kw: SGDClassifier(early_stopping=True, n_iter_no_change=3,
                                   learning_rate="adaptive", eta0=0.05, random_state=1, **kw),
        "multiclass"),
    "binary-tol": (lambda **kw: SGDClassifier(random_state=2, **kw), "binary"),
    "multiclass-tol": (lambda **kw: SGDClassifier(random_state=2, **kw), "multiclass"),
    "regressor-average": (lambda **kw: SGDRegressor(average=True, random_state=3, **kw),
                          "regression"),
}


@pytest.mark.parametrize("when", ["early", "late"])
@pytest.mark.parametrize("dask_input", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("case", list(CASES))
def test_interrupted_fit_resumes_bit_identical(tmp_path, data, saves, case, dask_input,
                                               when):
    make, target = CASES[case]
    X, y = data["X"], data[target]
    if dask_input:  # three blocks
        X, y = da.from_array(X, chunks=(50, D)), da.from_array(y, chunks=50)
    ref = make().fit(X, y)
    assert ref.resumed_from_iter_ == 0
    assert ref.n_iter_ > 3, "the fit must outlast the interruption"
    # late: some one-vs-rest models have stopped, others count epochs without progress
    k = 2 if when == "early" else ref.n_iter_ - 1
    saves.fail_after = k
    with pytest.raises(Interrupted):
        make(checkpoint=str(tmp_path)).fit(X, y)
    assert saves == [(i, False) for i in range(1, k + 1)]
    saves.fail_after = None
    resumed = make(checkpoint=str(tmp_path)).fit(X, y)
    assert resumed.resumed_from_iter_ == k
    _assert_same_model(resumed, ref)
    assert saves[-1] == (ref.n_iter_, True)  # the finished fit's checkpoint


def test_finished_checkpoint_gives_the_same_model_without_a_pass(tmp_path, data,
                                                                  monkeypatch):
    # a fit stopped by max_iter: the refit warns as the fit did
    X, y = data["X"], data["multiclass"]
    make = CASES["multiclass-tol"][0]
    with pytest.warns(ConvergenceWarning, match="Maximum number of iteration"):
        first = make(max_iter=4, checkpoint=str(tmp_path)).fit(X, y)
    assert first.n_iter_ == 4 and first.resumed_from_iter_ == 0

    def no_pass(*args, **kwargs):
        raise AssertionError("a finished fit ran an epoch")

    monkeypatch.setattr(_sgd, "_epoch_task", no_pass)
    with pytest.warns(ConvergenceWarning, match="Maximum number of iteration"):
        again = make(max_iter=4, checkpoint=str(tmp_path)).fit(X, y)
    assert again.resumed_from_iter_ == 4
    _assert_same_model(again, first)


def test_checkpoint_interval_saves_every_k_epochs(tmp_path, data, saves):
    X, y = data["X"], data["regression"]
    m = SGDRegressor(max_iter=10, tol=None, random_state=0, checkpoint=str(tmp_path),
                     checkpoint_interval=3).fit(X, y)
    assert m.n_iter_ == 10
    # every third epoch, the last one, then the finished mark
    assert [s for s, finished in saves if not finished] == [3, 6, 9, 10]
    assert saves[-1] == (10, True)


@pytest.mark.parametrize("change, what", [
    (dict(kw=dict(alpha=0.01)), "parameter alpha: checkpoint has 0.0001, this fit has 0.01"),
    (dict(X=lambda X: X + 1.0), "data content"),
    (dict(y=lambda y: y[::-1].copy()), "y content"),
])
def test_a_different_fit_is_refused_and_nothing_overwritten(tmp_path, data, saves, change,
                                                           what):
    X, y = data["X"], data["binary"]
    saves.fail_after = 2
    with pytest.raises(Interrupted):
        SGDClassifier(random_state=0, checkpoint=str(tmp_path)).fit(X, y)
    before = _files(tmp_path)
    X2 = change.get("X", lambda X: X)(X)
    y2 = change.get("y", lambda y: y)(y)
    est = SGDClassifier(random_state=0, checkpoint=str(tmp_path), **change.get("kw", {}))
    with pytest.raises(ValueError, match="a different fit") as err:
        est.fit(X2, y2)
    assert what in str(err.value)
    assert _files(tmp_path) == before
    assert len(saves) == 2


def test_warm_start_or_coef_init_is_not_a_resume_of_a_cold_fit(tmp_path, data):
    X, y = data["X"], data["binary"]
    cold = SGDClassifier(warm_start=True, random_state=0, checkpoint=str(tmp_path)).fit(X, y)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="starting model") as err:
        cold.fit(X, y)  # a warm start from the fitted model
    assert "parameter" not in str(err.value)  # only the start differs
    fresh = SGDClassifier(warm_start=True, random_state=0, checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="starting model"):
        fresh.fit(X, y, coef_init=np.ones((1, D)))
    assert _files(tmp_path) == before


def test_memory_url_resumes(data, saves):
    fsspec = pytest.importorskip("fsspec")
    path = f"/dmlkit-test-sgd-{uuid.uuid4().hex}"
    url = f"memory://{path}"
    X, y = data["X"], data["multiclass"]
    make = CASES["multiclass-early-stopping"][0]
    try:
        ref = make().fit(X, y)
        saves.fail_after = 3
        with pytest.raises(Interrupted):
            make(checkpoint=url).fit(X, y)
        saves.fail_after = None
        resumed = make(checkpoint=url).fit(X, y)
        assert resumed.resumed_from_iter_ == 3
        _assert_same_model(resumed, ref)
    finally:
        fsspec.filesystem("memory").rm(path, recursive=True)


def test_partial_fit_does_not_checkpoint(tmp_path, data):
    path = tmp_path / "checkpoint"
    X, y = data["X"], data["binary"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = SGDClassifier(random_state=0, checkpoint=str(path)).partial_fit(X, y,
                                                                           classes=[0, 1])
    assert m.n_iter_ == 1
    assert not path.exists()


@pytest.mark.parametrize("Est", [SGDClassifier, SGDRegressor])
def test_checkpoint_parameters_are_checked(Est, data):
    with pytest.raises(ValueError, match="checkpoint_interval"):
        Est(checkpoint_interval=0).fit(data["X"], data["binary"])
    with pytest.raises(ValueError, match="checkpoint"):
        Est(checkpoint=3).fit(data["X"], data["binary"])
