"""ALS with its factors kept on the cluster (``dmlkit.driver-state-bytes``).

With the threshold set to 0 a small fit takes the cluster path: the factors stay as row
blocks on the workers (``user_factors_`` / ``item_factors_`` are dask arrays over them),
and everything the client path computes here runs as tasks where the blocks are.  The
model is the same bits either way, and so is everything it serves.  Checkpoints are
written by the workers, and a checkpoint cuts the blocks' lineage to one read.
"""

import contextlib
import json
import re

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

import dmlkit
from dmlkit._core.checkpoint import CheckpointStore
from dmlkit.datasets import make_ratings
from dmlkit.exceptions import DmlkitWarning
from dmlkit.recommendation import ALS, _als

N_USERS, N_ITEMS = 600, 250
USERS = [5, 3, 599, 17, 300, 4]


@pytest.fixture(scope="module")
def ratings():
    return make_ratings(N_USERS, N_ITEMS, 9000, rank=4, noise=0.05, npartitions=3,
                        random_state=0)


@pytest.fixture(scope="module")
def implicit_ratings():
    return make_ratings(N_USERS, N_ITEMS, 9000, rank=4, implicit=True, npartitions=3,
                        random_state=1)


def als(**kw):
    return ALS(**{"factors": 6, "iterations": 3, "random_state": 0,
                  "calculate_training_loss": True, **kw})


_FITS = {}


def fit_both(data, **kw):
    """(client path, cluster path) fits of the same estimator on the same blocks (made
    once per module and parameters: the tests only read them)."""
    key = (id(data), repr(sorted(kw.items())))
    if key not in _FITS:
        _FITS[key] = _fit_both(data, **kw)
    return _FITS[key]


def _fit_both(data, routed=False, **kw):
    with dmlkit.config_context(local_fit_bytes=0, block_size="16KiB"):
        here = als(**kw).fit(data)
        with dmlkit.config_context(driver_state_bytes=0), _routed(routed):
            there = als(**kw).fit(data)
    return here, there


@contextlib.contextmanager
def _routed(routed):
    """Every side routed to the blocks that rate them (as a side larger than
    WHOLE_SIDE_BYTES is): ``"rows"`` only the rows each block rates, True also whole
    blocks of which it rates most rows (WHOLE_BLOCK_SHARE); or every side shipped whole
    (small sides)."""
    saved = _als.WHOLE_SIDE_BYTES, _als.WHOLE_BLOCK_SHARE
    _als.WHOLE_SIDE_BYTES = 0 if routed else saved[0]
    _als.WHOLE_BLOCK_SHARE = np.inf if routed == "rows" else saved[1]
    try:
        yield
    finally:
        _als.WHOLE_SIDE_BYTES, _als.WHOLE_BLOCK_SHARE = saved


def assert_same_factors(here, there):
    for side in ("user", "item"):
        F, G = getattr(here, f"{side}_factors_"), getattr(there, f"{side}_factors_")
        assert isinstance(F, np.ndarray) and isinstance(G, da.Array)
        G = G.compute()
        assert G.dtype == F.dtype and G.shape == F.shape
        assert G.tobytes() == F.tobytes(), side
    assert np.array(here.loss_curve_).tobytes() == np.array(there.loss_curve_).tobytes()


def same_frame(a, b):
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


_KINDS = {"explicit": {}, "implicit": {"implicit": True}, "nonnegative": {"nonnegative": True}}


@pytest.mark.parametrize(("routed", "kw"), [
    pytest.param(routed, kw, id=f"{name}-{kind}")
    for name, routed in (("whole", False), ("routed", True)) for kind, kw in _KINDS.items()
] + [pytest.param("rows", _KINDS[kind], id=f"routed-rows-{kind}")
     for kind in ("explicit", "implicit")])
def test_factors_on_the_cluster_are_the_client_paths_bits(ratings, implicit_ratings,
                                                          with_client, kw, routed):
    """Whole: each side's factors concatenated on a worker for the other side's solves;
    routed: each block gets only the rows it rates, and YᵀY is combined from the
    blocks' shares of a tree aligned on global rows."""
    data = implicit_ratings if kw.get("implicit") else ratings
    here, there = fit_both(data, routed=routed, **kw)
    assert not here._on_cluster() and there._on_cluster()
    # several blocks per side, each held by the workers (futures), none in the client
    blocks = there.user_factors_.to_delayed().ravel()
    assert len(blocks) > 1
    assert there._seen_indptr is None and len(there._seen_parts) == len(blocks)
    assert_same_factors(here, there)
    assert_same_ids(here, there)


def assert_same_ids(here, there):
    """The ids stay on the cluster too: dask arrays cut as the factors, with fit's ids."""
    for side in ("user", "item"):
        F, ids = getattr(there, f"{side}_factors_"), getattr(there, f"{side}_ids_")
        assert isinstance(ids, da.Array) and ids.chunks[0] == F.chunks[0]
        got, want = ids.compute(), getattr(here, f"{side}_ids_")
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def small_state(model, limit):
    """The names of the model's attributes (here, in the client) that hold an array of
    ``limit`` elements or more: state proportional to users, items or ratings."""
    big = []
    for name, value in vars(model).items():
        values = value.values() if isinstance(value, dict) else (
            value if isinstance(value, (list, tuple)) else [value])
        for v in values:
            if isinstance(v, (np.ndarray, pd.Index, pd.Series)) and np.size(v) >= limit:
                big.append(name)
    return big


@pytest.mark.parametrize("routed", [False, True], ids=["whole", "blockwise"])
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_serving_on_the_cluster_gives_the_same_answers(ratings, implicit_ratings,
                                                       with_client, implicit, routed):
    """Whole: rankings against a side sent whole to a worker (a small side); blockwise:
    each block of the ranked side scored where it is and the per-row lists merged (a
    side larger than WHOLE_SIDE_BYTES), never a whole side on one worker."""
    import copy

    data = implicit_ratings if implicit else ratings
    here, there = fit_both(data, **({"implicit": True} if implicit else {}))
    there = copy.copy(there)
    there.__dict__.pop("_serving", None)
    with _routed(routed):
        _same_answers(data, here, there)
    if routed:
        assert not {"user", "item", "user-unit", "item-unit"} & set(
            vars(there).get("_serving", {}))


def _same_answers(data, here, there):
    local = data.compute()
    cand = {"items": [1, 2, 3, 50, 60, 61, 200], "filter_items": [2]}
    for kw in [{}, cand, {"filter_items": [2, 7]}, {"filter_seen": False},
               {"ratings": local[local["user_id"].isin([5, 17])]}]:
        same_frame(here.recommend(USERS, n=5, **kw), there.recommend(USERS, n=5, **kw))
    for kw in [{}, {"users": USERS}, {"items": cand["items"]}, {"filter_items": [7]},
               {"users": [9, 8, 7], "filter_seen": False}]:
        got = there.recommend_all(n=4, **kw)
        assert isinstance(got, dd.DataFrame)
        same_frame(here.recommend_all(n=4, **kw).compute(), got.compute())
    np.testing.assert_array_equal(here.predict(local.head(200)), there.predict(local.head(200)))
    np.testing.assert_array_equal(here.predict(data).compute(), there.predict(data).compute())
    assert here.score(local) == there.score(local)
    assert here.score(data) == there.score(data)
    same_frame(here.similar_items([1, 2, 3], n=4), there.similar_items([1, 2, 3], n=4))
    same_frame(here.similar_users([1, 2, 3], n=4), there.similar_users([1, 2, 3], n=4))


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_pairs_fetch_only_their_rows(ratings, implicit_ratings, with_client, implicit):
    """predict, score and recommend's fold-in take the factor rows their pairs name from
    the blocks that hold them: no side is ever concatenated on a worker for them."""
    import copy

    data = implicit_ratings if implicit else ratings
    here, there = fit_both(data, **({"implicit": True} if implicit else {}))
    there = copy.copy(there)
    there.__dict__.pop("_serving", None)
    local = data.compute()
    np.testing.assert_array_equal(here.predict(data).compute(), there.predict(data).compute())
    assert here.score(data) == there.score(data)
    folded = local[local["user_id"].isin([5, 17])]
    there.partial_fit_items([5], local[local["item_id"] == 5])
    there.recommend([5, 17], n=3, ratings=folded, items=[1, 2, 3])
    assert not {"user", "item", "user-unit", "item-unit"} & set(vars(there).get("_serving", {}))


def test_string_ids_are_encoded_on_the_cluster(ratings, with_client):
    """Ids of another type (strings, sorted as strings) take the same path: counted,
    sorted and looked up on the cluster, with the client path's codes and answers."""
    named = ratings.assign(user_id=ratings["user_id"].map(lambda u: f"u{u:04d}",
                                                          meta=("user_id", object)))
    here, there = fit_both(named)
    assert_same_factors(here, there)
    assert_same_ids(here, there)
    asked = ["u0005", "u0300", "nobody"]
    with pytest.warns(DmlkitWarning, match="1 of the 3 users have no factors"):
        want = here.recommend(asked, n=3)
    with pytest.warns(DmlkitWarning, match="1 of the 3 users have no factors"):
        got = there.recommend(asked, n=3)
    same_frame(want, got)
    same_frame(here.similar_users(asked, n=2), there.similar_users(asked, n=2))


def test_cluster_model_needs_its_cluster(ratings, client):
    with client.as_current():
        _, there = fit_both(ratings)
    # the session's client is not the default one outside that block
    with pytest.raises(RuntimeError, match="use it with that cluster's Client active"):
        there.recommend([1], n=3)


@pytest.mark.parametrize("kw", [{}, {"implicit": True}, {"nonnegative": True}],
                         ids=["explicit", "implicit", "nonnegative"])
def test_partial_fit_on_the_cluster_gives_the_client_paths_bits(ratings, implicit_ratings,
                                                                with_client, kw):
    """partial_fit_users / partial_fit_items replace rows in the blocks that hold them
    (new ids: a block appended) and the pairs in the seen parts, as the client path
    does to its arrays."""
    import copy

    data = (implicit_ratings if kw.get("implicit") else ratings).compute()
    here, there = (copy.copy(m) for m in _fit_both(data, **kw))
    rng = np.random.default_rng(3)
    changed = data[data["user_id"].isin([3, 4, 400])].assign(
        rating=lambda d: rng.integers(1, 5, len(d)).astype(float))
    newbie = pd.DataFrame({"user_id": [N_USERS + 7] * 3, "item_id": [1, 2, 30],
                           "rating": [4.0, 1.0, 5.0]})
    users = pd.concat([changed, newbie])
    items = pd.DataFrame({"user_id": [1, 2, 3, 9], "item_id": [5, 5, N_ITEMS + 3, 5],
                          "rating": [2.0, 5.0, 3.0, 1.0]})
    for model in (here, there):
        model.partial_fit_users([3, 4, 400, N_USERS + 7], users)
        model.partial_fit_items([5, N_ITEMS + 3], items)
    assert there._on_cluster()
    assert_same_factors(here, there)
    assert_same_ids(here, there)
    asked = [3, 4, 400, N_USERS + 7, 1, 2, 9]
    same_frame(here.recommend(asked, n=6), there.recommend(asked, n=6))
    same_frame(here.recommend_all(n=3).compute(), there.recommend_all(n=3).compute())


class Interrupted(Exception):
    pass


def test_checkpoint_is_written_by_the_workers_and_resumes_bit_identical(
        implicit_ratings, with_client, tmp_path, monkeypatch):
    kw = {"implicit": True, "iterations": 4}
    with dmlkit.config_context(local_fit_bytes=0, block_size="16KiB"):
        ref = als(**kw).fit(implicit_ratings)
        real, done = CheckpointStore.save, []

        def save(store, *args, **kwargs):
            if len(done) == 2:
                raise Interrupted
            done.append(real(store, *args, **kwargs))

        with dmlkit.config_context(driver_state_bytes=0):
            with monkeypatch.context() as m:
                m.setattr(CheckpointStore, "save", save)
                with pytest.raises(Interrupted):
                    als(checkpoint=tmp_path, **kw).fit(implicit_ratings)
            manifest = json.loads((tmp_path / "manifest.json").read_text())
            assert manifest["step"] == 2
            names = manifest["files"]["blocks"]["user_factors"]
            assert len(names) > 1 and all((tmp_path / n).exists() for n in names)
            resumed = als(checkpoint=tmp_path, **kw).fit(implicit_ratings)
    assert resumed.resumed_from_iter_ == 2 and resumed._on_cluster()
    assert_same_factors(ref, resumed)


def _ancestors(dask_scheduler=None, keys=()):
    """Runs on the scheduler: every key the given keys' values were computed from."""
    seen, todo = set(), [dask_scheduler.tasks[k] for k in keys]
    while todo:
        ts = todo.pop()
        for dep in ts.dependencies:
            if dep.key not in seen:
                seen.add(dep.key)
                todo.append(dep)
    return sorted(str(k) for k in seen)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["no checkpoint", "checkpoint"])
def test_a_checkpoint_cuts_the_blocks_lineage(ratings, with_client, tmp_path, checkpoint):
    """Without a checkpoint a lost block is recomputed from the first iteration (its
    lineage reaches the starting factors); with one, from the last saved blocks."""
    kw = {"iterations": 4, "checkpoint_interval": 2}
    if checkpoint:
        kw["checkpoint"] = tmp_path
    with dmlkit.config_context(local_fit_bytes=0, driver_state_bytes=0, block_size="16KiB"):
        model = als(**kw).fit(ratings)
    keys = [f.key for f in model.user_factors_.dask.values() if hasattr(f, "key")]
    assert keys
    lineage = with_client.run_on_scheduler(_ancestors, keys=keys)
    reached_start = any("-init-" in k for k in lineage)
    assert reached_start is not checkpoint
    if checkpoint:  # two iterations back: the blocks read from the checkpoint of step 2
        assert any("-user_factors-" in k or "-item_factors-" in k for k in lineage)


@pytest.mark.parametrize("backend", ["numba", "xp"])
def test_gram_from_blocks_is_the_whole_matrix_gram_whatever_the_cuts(backend):
    """YᵀY combined from row blocks (each reducing its own chunks of the tree aligned on
    global rows, sharing the rows of chunks cut between blocks) is the whole matrix's
    bits: blocks smaller than a chunk, blocks across chunk edges, one block."""
    from dmlkit._core.dispatch import get_kernels

    K = get_kernels("recommendation", backend)
    n = 3 * K.GRAM_ROWS + 17
    Y = np.random.default_rng(0).standard_normal((n, 5)).astype(np.float32)
    whole = np.asarray(K.gram(Y))
    np.testing.assert_allclose(whole, Y.T.astype(np.float64) @ Y, rtol=1e-10)
    G = K.GRAM_ROWS
    for cuts in ([0, n], [0, 1, n], [0, G - 1, G + 1, 2 * G, 2 * G + 8, n],
                 [0, 100, 200, 300, n], [0, 3 * G, n]):
        parts = [_als._gram_piece(Y[a:b], a, n, backend)
                 for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        got = np.asarray(_als._gram_combine(n, backend, *parts))
        assert got.tobytes() == whole.tobytes(), cuts


def test_no_factor_block_comes_to_the_client(ratings, with_client, monkeypatch):
    """The structural half of the client-memory target (the measured half, peak RSS at
    1 GB of factors, is asv_bench/als_scale.py's): during a fit on the cluster path and
    recommend_all, the largest object the client receives from the cluster is smaller
    than a quarter of one factor block, and smaller than the ids of one block (the ids and
    their counts stay on the cluster too); the client path receives whole blocks."""
    import distributed
    from dask.sizeof import sizeof

    received = []

    def recording(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            values = out if isinstance(out, (list, tuple)) else [out]
            received.extend(sizeof(v) for v in values)
            return out
        return wrapper

    monkeypatch.setattr(distributed.Client, "gather",
                        recording(distributed.Client.gather))
    monkeypatch.setattr(distributed.Future, "result", recording(distributed.Future.result))

    def largest(settings, work):
        received.clear()
        with dmlkit.config_context(local_fit_bytes=0, block_size="64KiB", **settings):
            model = als(factors=64, iterations=2, calculate_training_loss=False).fit(ratings)
            work(model)
        return max(received), model

    def block_bytes(model):
        F = model.user_factors_
        return min(F.chunks[0]) * F.shape[1] * F.dtype.itemsize

    count = lambda m: len(m.recommend_all(n=3).map_partitions(len).compute())  # noqa: E731
    there, model = largest({"driver_state_bytes": 0}, count)
    assert model._on_cluster() and len(model.user_factors_.chunks[0]) >= 2
    block = block_bytes(model)
    assert there < block / 4
    # nothing proportional to users or items comes here: a block's ids alone are 8 bytes
    # a user (the cuts, a few numbers per block, are what the client gets and keeps)
    assert there < 8 * min(model.user_factors_.chunks[0])
    assert small_state(model, min(model.user_factors_.chunks[0])) == []
    here, model = largest({}, lambda m: None)  # the same blocks, gathered every half
    assert not model._on_cluster()
    assert here >= block


def test_bad_input_on_the_cluster_raises_as_here(ratings, with_client):
    """Unknown or empty candidate subsets and partial fits with nothing to solve are
    refused with the client path's messages (the ids are looked up on the cluster)."""
    here, there = fit_both(ratings)
    local = ratings.compute()
    for kw in [{"items": [1, 2, 1000, 2000]}, {"filter_items": ["x"]}, {"items": []},
               {"items": [1, 2], "filter_items": [2, 1]}]:
        for method, args in (("recommend", ([5],)), ("recommend_all", ())):
            with pytest.raises(ValueError) as want:
                getattr(here, method)(*args, **kw)
            with pytest.raises(ValueError, match=re.escape(str(want.value))):
                getattr(there, method)(*args, **kw)
    unseen = [N_USERS + 50]  # never seen, and no rating of a seen item in `ratings`
    for model in (here, there):
        with pytest.raises(ValueError, match=r"1 of the user_ids have no rating of an item "
                                             r"seen in fit"):
            model.partial_fit_users(unseen, local.head(10))


# ---------------------------------------------------------------- dmlkit.save / load
def _saved(model, path):
    dmlkit.save(model, path)
    manifest = json.loads((path / "manifest.json").read_text())
    files = {p.name: p.read_bytes() for p in path.glob("*.npy")}
    return manifest, files


@pytest.mark.parametrize("ids", ["int", "str"])
def test_a_cluster_model_saves_the_client_paths_files(ratings, with_client, tmp_path, ids):
    """A model held on the cluster is saved a row block at a time, to the same files
    (byte for byte) and manifest as the same model fitted here, plus each array's row
    blocks and their SHA-256; no more than one block is ever in the client."""
    import distributed
    from dask.sizeof import sizeof

    data = ratings
    if ids == "str":
        data = ratings.assign(user_id=ratings["user_id"].map(lambda u: f"u{u:04d}",
                                                             meta=("user_id", object)))
    here, there = fit_both(data)
    assert there._on_cluster() and len(there.user_factors_.chunks[0]) >= 3
    received = []
    gather = distributed.Client.gather

    def recording(self, *args, **kwargs):
        out = gather(self, *args, **kwargs)
        received.extend(sizeof(v) for v in (out if isinstance(out, (list, tuple)) else [out]))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distributed.Client, "gather", recording)
        m_there, f_there = _saved(there, tmp_path / "there")
        # a block comes in pieces of at most PIECE_BYTES: the same files from small ones
        from dmlkit import persistence

        mp.setattr(persistence, "PIECE_BYTES", 1000)
        received.clear()
        assert _saved(there, tmp_path / "pieces")[1] == f_there
        assert max(received) <= 2048
    m_here, f_here = _saved(here, tmp_path / "here")
    assert f_there == f_here
    assert m_there["attributes"] == m_here["attributes"]
    blocked = {a["file"]: a.pop("blocks") for a in m_there["arrays"] if "blocks" in a}
    assert m_there["arrays"] == m_here["arrays"]
    assert set(blocked) == {f"{a}.npy" for a in (
        "user_factors_", "item_factors_", "user_ids_", "item_ids_", "_seen_indptr",
        "_seen_indices")}
    assert blocked["user_factors_.npy"]["rows"] == list(there.user_factors_.chunks[0])
    # the client receives a block at a time: never more than the largest saved block
    sizes = {a["file"]: (np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"][1:])),
                         a["shape"][0]) for a in m_here["arrays"]}
    block = max(sizes[f][0] * max(b["rows"]) for f, b in blocked.items())
    whole = max(sizes[f][0] * sizes[f][1] for f in blocked)
    assert received and max(received) <= block + 1024 < whole


def test_a_saved_cluster_model_loads_here_or_on_the_cluster(ratings, with_client, tmp_path):
    """Under driver-state-bytes it loads into this process; over it, with a client,
    the workers read its blocks (each checked against its SHA-256) and it is held on
    the cluster as after a fit there: the same bits and answers either way."""
    here, there = fit_both(ratings)
    dmlkit.save(there, tmp_path / "m")
    small = dmlkit.load(tmp_path / "m")
    assert isinstance(small.user_factors_, np.ndarray)
    for side in ("user", "item"):
        for what in ("factors", "ids"):
            got, want = (getattr(m, f"{side}_{what}_") for m in (small, here))
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    np.testing.assert_array_equal(small._seen_indptr, here._seen_indptr)
    np.testing.assert_array_equal(small._seen_indices, here._seen_indices)
    with dmlkit.config_context(driver_state_bytes=0):
        big = dmlkit.load(tmp_path / "m")
    assert big._on_cluster() and big.user_factors_.chunks == there.user_factors_.chunks
    assert_same_factors(here, big)
    assert_same_ids(here, big)
    _same_answers(ratings, here, big)
    # a saved model of this process, or one in a store only this process sees, loads here
    dmlkit.save(here, tmp_path / "here")
    dmlkit.save(there, "memory://dmlkit-test-cluster-model")
    with dmlkit.config_context(driver_state_bytes=0):
        assert not dmlkit.load(tmp_path / "here")._on_cluster()
        assert not dmlkit.load("memory://dmlkit-test-cluster-model")._on_cluster()


def test_a_corrupt_block_fails_the_load_on_the_cluster(ratings, with_client, tmp_path):
    _, there = fit_both(ratings)
    dmlkit.save(there, tmp_path / "m")
    path = tmp_path / "m" / "item_factors_.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # the last block's data, not the header
    path.write_bytes(bytes(data))
    with dmlkit.config_context(driver_state_bytes=0), \
            pytest.raises(ValueError, match=r"item_factors_\.npy.* is corrupt: rows .* SHA-256"):
        dmlkit.load(tmp_path / "m")
    with pytest.raises(ValueError, match=r"item_factors_\.npy' is corrupt"):
        dmlkit.load(tmp_path / "m")  # read here: the whole file's SHA-256


def test_a_missing_block_file_fails_the_load_on_the_cluster(ratings, with_client, tmp_path):
    _, there = fit_both(ratings)
    dmlkit.save(there, tmp_path / "m")
    (tmp_path / "m" / "_seen_indices.npy").unlink()
    with dmlkit.config_context(driver_state_bytes=0), \
            pytest.raises(ValueError, match=r"'_seen_indices\.npy' listed in the manifest is "
                                            r"missing"):
        dmlkit.load(tmp_path / "m")
