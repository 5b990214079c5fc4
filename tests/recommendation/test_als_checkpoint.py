"""ALS checkpoints (the core fit loop): a fit interrupted after any iteration and
resumed from its checkpoint by a fresh estimator ends bit-identical to an uninterrupted
fit (factors, loss curve, recommendations with the seen items filtered), explicit and
implicit, in this process and on a cluster; the factors are written one file per block;
a finished checkpoint refits to the same model without iterating; a checkpoint of
another fit (parameters, ratings) is refused, naming what differs, and left as it is."""

import json

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import dmlkit
from dmlkit._core.checkpoint import CheckpointStore
from dmlkit.datasets import make_ratings
from dmlkit.recommendation import ALS

ITERATIONS = 4


@pytest.fixture(autouse=True)
def _threads():
    # the threaded scheduler unless a test sets up a client of its own
    with dask.config.set(scheduler="threads"):
        yield


def _ratings(implicit):
    df = make_ratings(120, 60, 1500, rank=3, noise=0.05, implicit=implicit, random_state=0)
    return df.compute().reset_index(drop=True)


@pytest.fixture(scope="module")
def ratings():
    return _ratings(False)


@pytest.fixture(scope="module")
def implicit_ratings():
    return _ratings(True)


def als(checkpoint=None, **kw):
    kw = {"factors": 4, "regularization": 0.05, "iterations": ITERATIONS, "random_state": 0,
          "calculate_training_loss": True, "checkpoint": checkpoint, **kw}
    return ALS(**kw)


class Interrupted(Exception):
    pass


def interrupted_fit(monkeypatch, model, data, saves):
    """Fit ``model`` with ``CheckpointStore.save`` raising after ``saves`` saves."""
    real, done = CheckpointStore.save, []

    def save(store, *args, **kwargs):
        if len(done) == saves:
            raise Interrupted
        done.append(real(store, *args, **kwargs))

    with monkeypatch.context() as m:
        m.setattr(CheckpointStore, "save", save)
        with pytest.raises(Interrupted):
            model.fit(data)


def assert_same_model(a, b):
    for name in ("user_factors_", "item_factors_", "user_ids_", "item_ids_"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name
    assert np.array(a.loss_curve_).tobytes() == np.array(b.loss_curve_).tobytes()
    users = a.user_ids_
    pd.testing.assert_frame_equal(a.recommend(users, n=5, filter_seen=True),
                                  b.recommend(users, n=5, filter_seen=True))


def folder(path):
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("saves, interval, from_iter", [(1, 1, 1), (3, 1, 3), (1, 3, 3),
                                                      (ITERATIONS, 1, ITERATIONS)])
def test_resumed_fit_is_bit_identical(ratings, implicit_ratings, monkeypatch, tmp_path,
                                      implicit, saves, interval, from_iter):
    # (ITERATIONS, 1): every iteration saved, the save that marks the fit finished failed
    data = implicit_ratings if implicit else ratings
    kw = {"implicit": implicit, "checkpoint_interval": interval}
    if implicit:
        kw.update(alpha=2.0, dtype="float64")
    ref = als(**kw).fit(data)
    assert ref.resumed_from_iter_ == 0 and len(ref.loss_curve_) == ITERATIONS
    path = tmp_path / "ckpt"
    interrupted_fit(monkeypatch, als(path, **kw), data, saves)
    resumed = als(path, **kw).fit(data)
    assert resumed.resumed_from_iter_ == from_iter
    assert_same_model(ref, resumed)


def test_factors_are_written_one_file_per_block(ratings, tmp_path):
    with dmlkit.config_context(block_size="4KiB"):  # several blocks per side
        model = als(tmp_path).fit(ratings)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    blocks = manifest["files"]["blocks"]
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == sorted(
        n for names in blocks.values() for n in names)
    for side, factors in (("user", model.user_factors_), ("item", model.item_factors_)):
        names = blocks[f"{side}_factors"]
        assert len(names) > 1
        parts = [np.load(tmp_path / n) for n in names]
        assert np.concatenate(parts).tobytes() == factors.tobytes()


def test_resumes_in_the_blocks_it_started_with(ratings, tmp_path, monkeypatch):
    """The blocks follow the cluster's threads (here: the block size), and the loss
    sums over blocks: a fit resumed on another cluster keeps the blocks it started with,
    and so its loss curve's bits too."""
    with dmlkit.config_context(block_size="4KiB"):
        ref = als().fit(ratings)
        interrupted_fit(monkeypatch, als(tmp_path), ratings, 2)
    assert als().fit(ratings).loss_curve_ != ref.loss_curve_
    resumed = als(tmp_path).fit(ratings)
    assert resumed.resumed_from_iter_ == 2
    assert_same_model(ref, resumed)


def test_finished_checkpoint_refits_the_same_model_without_iterating(ratings, tmp_path,
                                                                     monkeypatch):
    ref = als(tmp_path).fit(ratings)
    assert json.loads((tmp_path / "manifest.json").read_text())["finished"]

    def no_iteration(*args, **kwargs):
        raise AssertionError("a finished fit iterated")

    monkeypatch.setattr(ALS, "_iteration", no_iteration)
    again = als(tmp_path).fit(ratings)  # the seen items come from a pass of their own
    assert again.resumed_from_iter_ == ITERATIONS
    assert_same_model(ref, again)


def test_checkpoint_of_another_fit_is_refused_and_kept(ratings, tmp_path):
    als(tmp_path).fit(ratings)
    before = folder(tmp_path)
    fewer = ratings.iloc[:-10]
    rescored = ratings.assign(rating=ratings["rating"].where(ratings.index != 7, 1.25))
    for model, data, what in [
            (als(tmp_path, regularization=0.1), ratings, "parameter regularization"),
            (als(tmp_path), fewer, "ratings: checkpoint has 1500, this fit has 1490"),
            (als(tmp_path), fewer, "ids and their rating counts"),
            (als(tmp_path), rescored, "ratings sum")]:
        with pytest.raises(ValueError, match=what) as info:
            model.fit(data)
        assert "different fit" in str(info.value)
        assert not hasattr(model, "user_factors_")
        assert folder(tmp_path) == before
    # what does not change the model may differ
    assert als(tmp_path, verbose=1, checkpoint_interval=2).fit(ratings).resumed_from_iter_ \
        == ITERATIONS


@pytest.mark.parametrize("order", ["users", "items"])
def test_resume_in_either_solve_order_is_bit_identical(ratings, monkeypatch, tmp_path, order):
    ref = als(solve_order=order).fit(ratings)
    interrupted_fit(monkeypatch, als(tmp_path, solve_order=order), ratings, 2)
    resumed = als(tmp_path, solve_order=order).fit(ratings)
    assert resumed.resumed_from_iter_ == 2 and resumed.solve_order_ == order
    assert_same_model(ref, resumed)


def test_checkpoint_of_another_solve_order_is_refused(ratings, tmp_path):
    """The side solved first is in the fingerprint: a checkpoint of the other order, or
    one written before the order was recorded (users first, always), is not resumed."""
    als(tmp_path, solve_order="users").fit(ratings)
    before = folder(tmp_path)
    with pytest.raises(ValueError, match="side solved first: checkpoint has 'user', this fit "
                                         "has 'item'"):
        als(tmp_path).fit(ratings)  # 'auto' picks the items here (120 users x 60 items)
    assert folder(tmp_path) == before
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("side solved first", "parameter solve_order"):
        del manifest["fingerprint"][key]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="side solved first: checkpoint has '<absent>'"):
        als(tmp_path, solve_order="users").fit(ratings)


def test_checkpoint_location_is_checked_before_any_pass(ratings, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(ALS, "_scan", lambda *a: pytest.fail("scanned the ratings"))
    with pytest.raises(ValueError, match="is a file, not a folder"):
        als(tmp_path / "file").fit(ratings)


def test_dask_frame_on_a_cluster_resumes_bit_identical(ratings, with_client, tmp_path,
                                                       monkeypatch):
    def frame():
        return dd.from_pandas(ratings, npartitions=3, sort=False)

    ref = als().fit(frame())
    interrupted_fit(monkeypatch, als(tmp_path), frame(), 2)
    resumed = als(tmp_path).fit(frame())
    assert resumed.resumed_from_iter_ == 2
    assert_same_model(ref, resumed)
    assert_same_model(ref, als().fit(ratings))  # and a pandas frame
