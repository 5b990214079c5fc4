"""Checkpoints through the core fit loop (KMeans here; SGD and ALS have their own files):
resume is bit-identical, writes are atomic, a different fit is refused and nothing is
overwritten, an unusable location is an error before any work."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import dask.array as da
import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import dmlkit
from dmlkit import KMeans
from dmlkit._core import checkpoint as ckpt
from dmlkit.exceptions import InvalidParameterError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _data(n=6000, d=6, seed=0):
    # overlapping blobs: Lloyd runs all max_iter iterations with tol=0
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2, 2, size=(12, d))
    return centres[rng.integers(0, 12, n)] + rng.standard_normal((n, d))


KW = dict(n_clusters=5, random_state=0, tol=0, max_iter=15)


def _same(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_


class Stop(Exception):
    pass


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(k)``: the k-th checkpoint commit succeeds, then the fit is
    interrupted (the driving process raises)."""
    saves = []

    def arm(k):
        orig = ckpt.CheckpointStore.save

        def save(self, step, state, **kw):
            orig(self, step, state, **kw)
            saves.append(step)
            if len(saves) == k:
                raise Stop(f"interrupted after the save of step {step}")

        monkeypatch.setattr(ckpt.CheckpointStore, "save", save)
        return saves

    return arm


def _files(path):
    return {name: open(os.path.join(path, name), "rb").read() for name in os.listdir(path)}


def test_interrupted_fit_resumes_bit_identical(tmp_path, stop_after, caplog):
    X = _data()
    ref = KMeans(**KW).fit(X)
    assert ref.n_iter_ == KW["max_iter"]
    saves = stop_after(6)  # after init (step 0) and 5 iterations
    with pytest.raises(Stop):
        KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    assert saves == [0, 1, 2, 3, 4, 5]
    with caplog.at_level(logging.INFO, logger="dmlkit"):
        km = KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    assert km.resumed_from_iter_ == 5
    assert "resuming from the checkpoint of iteration 5" in caplog.text
    _same(km, ref)
    assert ref.resumed_from_iter_ == 0
    # a finished checkpoint is kept; refitting the same fit gives the same model at once
    again = KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    assert again.resumed_from_iter_ == KW["max_iter"]
    _same(again, ref)


def test_resume_with_several_runs_and_lazy_input(tmp_path, stop_after):
    X = da.from_array(_data(seed=3), chunks=1500)
    kw = dict(KW, init="random", n_init=3, max_iter=8)
    ref = KMeans(**kw).fit(X)
    stop_after(14)  # in the second run
    with pytest.raises(Stop):
        KMeans(**kw, checkpoint=str(tmp_path)).fit(X)
    km = KMeans(**kw, checkpoint=str(tmp_path)).fit(X)
    assert 8 < km.resumed_from_iter_ < 16
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_.compute())
    assert km.inertia_ == ref.inertia_


def test_checkpoint_interval(tmp_path, stop_after):
    saves = stop_after(10**6)
    KMeans(**KW, checkpoint=str(tmp_path), checkpoint_interval=4).fit(_data())
    # after init, every 4th iteration, the end of the run, and the finished fit
    assert saves == [0, 4, 8, 12, 15, 15]


def test_memory_url(stop_after):
    url = "memory://dmlkit-test-checkpoint"
    try:
        X = _data()
        stop_after(3)
        with pytest.raises(Stop):
            KMeans(**KW, checkpoint=url).fit(X)
        km = KMeans(**KW, checkpoint=url).fit(X)
        assert km.resumed_from_iter_ == 2
        _same(km, KMeans(**KW).fit(X))
    finally:
        fsspec.filesystem("memory").rm("/dmlkit-test-checkpoint", recursive=True)


@pytest.mark.parametrize("change,what", [
    (dict(kw=dict(n_clusters=4)), "parameter n_clusters: checkpoint has 5, this fit has 4"),
    (dict(kw=dict(init="k-means++")), "parameter init"),
    (dict(X=lambda X: X[:-10]), "data shape"),
    (dict(X=lambda X: X[::-1].copy()), "data content"),
    (dict(X=lambda X: X.astype(np.float32)), "data dtype"),
    (dict(X=lambda X: da.from_array(X, chunks=2000)), "block layout"),
    (dict(cls=lambda: dmlkit.SGDRegressor), "estimator"),
])
def test_a_different_fit_is_refused_and_nothing_overwritten(tmp_path, stop_after, change,
                                                           what):
    X = _data()
    stop_after(3)
    with pytest.raises(Stop):
        KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    before = _files(tmp_path)
    X2 = change.get("X", lambda X: X)(X)
    if "cls" in change:
        est = change["cls"]()(checkpoint=str(tmp_path))
        with pytest.raises(ValueError, match="a different fit") as err:
            est.fit(X2, X2[:, 0] if hasattr(X2, "shape") else None)
    else:
        with pytest.raises(ValueError, match="a different fit") as err:
            KMeans(**{**KW, **change.get("kw", {})}, checkpoint=str(tmp_path)).fit(X2)
    assert what in str(err.value)
    assert _files(tmp_path) == before


def test_verbose_and_interval_do_not_make_another_fit(tmp_path, stop_after, capsys):
    X = _data()
    stop_after(3)
    with pytest.raises(Stop):
        KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    km = KMeans(**KW, checkpoint=str(tmp_path), verbose=1, checkpoint_interval=2).fit(X)
    assert km.resumed_from_iter_ == 2
    _same(km, KMeans(**KW).fit(X))


def test_io_error_during_a_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    X = _data()
    orig = ckpt.CheckpointStore._write
    calls = []

    def flaky(self, name, data):
        calls.append(name)
        if len(calls) == 7:  # a state file of a later save: half written, then it fails
            orig(self, name, data[:len(data) // 2])
            raise OSError(28, "No space left on device")
        orig(self, name, data)

    monkeypatch.setattr(ckpt.CheckpointStore, "_write", flaky)
    with pytest.raises(OSError, match="checkpoint of step 2 is intact"):
        KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    monkeypatch.setattr(ckpt.CheckpointStore, "_write", orig)
    # the failed save's files are gone; the committed checkpoint is whole
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 2 and names[0] == "manifest.json" and names[1].startswith("state-2-")
    km = KMeans(**KW, checkpoint=str(tmp_path)).fit(X)
    assert km.resumed_from_iter_ == 2
    _same(km, KMeans(**KW).fit(X))


def test_process_killed_while_writing_leaves_the_previous_checkpoint(tmp_path):
    """SIGKILL in the middle of writing a state file (half of it on disk)."""
    path = tmp_path / "checkpoint"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from dmlkit._core import checkpoint as ckpt
        from tests.core.test_checkpoint import KMeans, KW, _data
        orig = ckpt.CheckpointStore._write
        calls = []
        def dying(self, name, data):
            calls.append(name)
            if len(calls) == 9:
                with self.fs.open(self._join(name), "wb") as f:
                    f.write(data[:len(data) // 2])
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            orig(self, name, data)
        ckpt.CheckpointStore._write = dying
        KMeans(**KW, checkpoint={str(path)!r}).fit(_data())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    partial = [n for n in os.listdir(path) if n.startswith("state-")]
    assert len(partial) == 2  # the committed one and the half-written one
    km = KMeans(**KW, checkpoint=str(path)).fit(_data())
    assert km.resumed_from_iter_ == 3
    _same(km, KMeans(**KW).fit(_data()))
    assert len([n for n in os.listdir(path) if n.startswith("state-")]) == 1 + 1  # + orphan


class ReadOnlyFS(MemoryFileSystem):
    protocol = "dmlkit-readonly"
    root_marker = "/"

    def makedirs(self, path, exist_ok=False):
        raise PermissionError(13, "Read-only file system", path)

    def _open(self, path, mode="rb", **kw):
        if "r" not in mode:
            raise PermissionError(13, "Read-only file system", path)
        return super()._open(path, mode=mode, **kw)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a fit builds its driver (the start of any work)."""
    from dmlkit._core import loop

    def refuse(*args, **kwargs):
        raise AssertionError("work started before the checkpoint location was checked")

    monkeypatch.setattr(loop, "Driver", refuse)


def test_read_only_location_is_an_error_before_any_work(no_work):
    fsspec.register_implementation("dmlkit-readonly", ReadOnlyFS, clobber=True)
    with pytest.raises(ValueError, match="cannot be written: .*Read-only file system"):
        KMeans(**KW, checkpoint="dmlkit-readonly://somewhere").fit(_data())


@pytest.mark.parametrize("where", ["under-a-file", "unknown-protocol"])
def test_unusable_location_is_an_error_before_any_work(tmp_path, no_work, where):
    (tmp_path / "file").write_text("not a folder")
    url = {"under-a-file": str(tmp_path / "file" / "checkpoint"),
           "unknown-protocol": "nosuchprotocol://bucket/checkpoint"}[where]
    with pytest.raises(ValueError, match="checkpoint=") as err:
        KMeans(**KW, checkpoint=url).fit(_data())
    assert url in str(err.value)
    with pytest.raises(ValueError, match="is a file, not a folder"):
        KMeans(**KW, checkpoint=str(tmp_path / "file")).fit(_data())


@pytest.mark.parametrize("params,text", [
    (dict(checkpoint=3), "The 'checkpoint' parameter of KMeans must be an instance of "
                         "'str', an instance of 'os.PathLike' or None. Got 3 instead."),
    (dict(checkpoint_interval=0), "The 'checkpoint_interval' parameter of KMeans must be "
                                  "an int in the range [1, inf). Got 0 instead."),
])
def test_checkpoint_parameters_are_validated(params, text):
    with pytest.raises(InvalidParameterError) as err:
        KMeans(**KW, **params).fit(_data())
    assert str(err.value) == text


def test_pathlike_checkpoint(tmp_path):
    km = KMeans(**KW, checkpoint=tmp_path / "ck").fit(_data())
    assert (tmp_path / "ck" / "manifest.json").exists() and km.resumed_from_iter_ == 0


def test_small_fit_is_solved_here_with_the_same_bits(with_client):
    """The core's local-fit-bytes rule, for every family: a fit this small runs in this
    process, with the bits the cluster gives."""
    from distributed import get_task_stream

    X = da.from_array(_data(), chunks=1500)
    with dmlkit.config_context(local_fit_bytes=0), get_task_stream() as ts:
        on_cluster = KMeans(**KW).fit(X)
    assert any("dmlkit-kmeans-lloyd" in str(t["key"]) for t in ts.data)
    with dmlkit.config_context(local_fit_bytes="8MiB"), get_task_stream() as ts:
        here = KMeans(**KW).fit(X)
    assert not any("dmlkit-kmeans" in str(t["key"]) for t in ts.data)
    assert ts.data  # the blocks were computed on the cluster and fetched once
    np.testing.assert_array_equal(here.cluster_centers_, on_cluster.cluster_centers_)
    np.testing.assert_array_equal(here.labels_.compute(), on_cluster.labels_.compute())


def test_parquet_columns_resume_in_a_new_process(tmp_path):
    """dask names the same parquet files differently in every process: the fingerprint
    of lazy data samples rows instead, so a new process resumes, and other files are
    another fit."""
    import dask.dataframe as dd
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.standard_normal((8000, 4)), columns=list("abcd"))
    df["label"] = (df.a + df.b > 0).astype(int)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        df.iloc[i * 2000:(i + 1) * 2000].to_parquet(data / f"part{i}.parquet")
    path = tmp_path / "checkpoint"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {REPO!r})
        import dask.dataframe as dd
        import dmlkit
        from dmlkit._core import checkpoint as ckpt
        orig, saves = ckpt.CheckpointStore.save, []
        def save(self, *args, **kwargs):
            orig(self, *args, **kwargs)
            saves.append(1)
            if len(saves) == 4:
                raise SystemExit(3)
        ckpt.CheckpointStore.save = save
        df = dd.read_parquet({str(data)!r})
        dmlkit.SGDClassifier(max_iter=10, tol=None, random_state=0,
                             checkpoint={str(path)!r}).fit(df[["a", "b", "c"]], df["label"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()[-2000:]

    def fit(folder, checkpoint=None):
        d = dd.read_parquet(folder)
        return dmlkit.SGDClassifier(max_iter=10, tol=None, random_state=0,
                                    checkpoint=checkpoint).fit(d[["a", "b", "c"]], d["label"])

    resumed = fit(data, str(path))
    assert resumed.resumed_from_iter_ == 4
    ref = fit(data)
    np.testing.assert_array_equal(resumed.coef_, ref.coef_)
    assert resumed.intercept_ == ref.intercept_
    other = tmp_path / "other"
    other.mkdir()
    df2 = df.copy()
    df2["a"] += 1
    for i in range(4):
        df2.iloc[i * 2000:(i + 1) * 2000].to_parquet(other / f"part{i}.parquet")
    with pytest.raises(ValueError, match="data content: checkpoint has 'sampled rows"):
        fit(other, str(path))


def test_a_checkpointed_fit_leaves_nothing_on_the_cluster_once_dropped(tmp_path,
                                                                       with_client):
    """The fit loop reaches its driver's 'lost scheduler' note through a weak reference:
    a cycle there kept the persisted input blocks on the cluster until Python's cyclic
    garbage collector happened to run."""
    import gc
    import time

    X = da.random.RandomState(0).random_sample((40_000, 8), chunks=5_000)
    gc.disable()
    try:
        with dmlkit.config_context(local_fit_bytes=0):
            est = KMeans(3, random_state=0, max_iter=3, checkpoint=tmp_path).fit(X)
        held = lambda: [k for k in with_client.who_has() if X.name in str(k)]  # noqa: E731
        assert est.n_iter_ == 3
        del est
        deadline = time.monotonic() + 10
        while held():
            assert time.monotonic() < deadline, f"still on the cluster: {held()[:3]}"
            time.sleep(0.05)
    finally:
        gc.enable()
