"""Saving models: pickle and joblib, and dmlkit.persistence's versioned format."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import json
import math
import pathlib
import pickle
import shutil
import subprocess
import sys
import textwrap
import uuid
import warnings

import dask.array as da
import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LinearRegression as SkLinearRegression

import dmlkit
from dmlkit import persistence
from dmlkit.exceptions import DmlkitWarning
from dmlkit.persistence import FORMAT_VERSION, REGISTRY, load, read_manifest, save

DATA = pathlib.Path(__file__).parent / "data" / "persistence"
ALS_NAME = "dmlkit.recommendation.ALS"
ESTIMATOR_MODULES = ("dmlkit.cluster", "dmlkit.linear_model", "dmlkit.recommendation")

# small and fast; classes added to the registry later are fitted with their defaults
FAST_PARAMS = {
    "dmlkit.cluster.KMeans": {"n_clusters": 3},
    "dmlkit.linear_model.SGDClassifier": {"loss": "log_loss", "max_iter": 5, "tol": None,
                                          "average": True},
    "dmlkit.linear_model.SGDRegressor": {"max_iter": 5, "tol": None},
    ALS_NAME: {"factors": 4, "iterations": 3},
}


# ----------------------------------------------------------------------------------
# data, fitted estimators and what they output
# ----------------------------------------------------------------------------------
@functools.cache
def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y_cls = np.array(["ant", "bee", "cat"])[rng.integers(0, 3, 60)].astype(object)
    y_reg = np.exp(0.3 * X @ np.array([1.0, -0.5, 0.25]))  # > 0 (Poisson regressors)
    return X, y_cls, y_reg


@functools.cache
def _ratings():
    r = dmlkit.datasets.make_ratings(40, 25, 300, random_state=0).compute()
    r = r.reset_index(drop=True)
    r["user_id"] = "u" + r["user_id"].astype(str)  # string ids: stored without pickle
    r["item_id"] = "i" + r["item_id"].astype(str)
    return r


@functools.cache
def _fitted_cached(name):
    cls = persistence._resolve(name)
    params = dict(FAST_PARAMS.get(name, {}))
    if "random_state" in cls().get_params():
        params["random_state"] = 0
    est = cls(**params)
    X, y_cls, y_reg = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # persistence is tested here
        if name == ALS_NAME:
            est.fit(_ratings())
        elif is_classifier(est):
            est.fit(X, y_cls)
        elif is_regressor(est):
            est.fit(X, y_reg)
        else:
            est.fit(X)
    return est


def fitted(name):
    """A fitted estimator of the registered class ``name`` (a copy: tests may change it)."""
    return copy.deepcopy(_fitted_cached(name))


def outputs(est):
    """What the estimator computes: every prediction method it has, on fixed inputs."""
    if isinstance(est, dmlkit.ALS):
        r = _ratings()
        users = list(est.user_ids_[:6]) + ["nobody"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DmlkitWarning)  # "nobody" has no factors
            return {
                "predict": est.predict(r.iloc[:50]),
                "recommend": est.recommend(users, n=5),
                "recommend_all_items": est.recommend(users, n=5, filter_seen=False),
                "similar_items": est.similar_items(list(est.item_ids_[:4]), n=3),
                "similar_users": est.similar_users(list(est.user_ids_[:4]), n=3),
                "score": est.score(r),
            }
    X, y_cls, y_reg = _data()
    y = y_cls if is_classifier(est) else y_reg if is_regressor(est) else None
    out = {}
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        if hasattr(est, method):
            out[method] = getattr(est, method)(X)
    out["score"] = est.score(X, y) if y is not None else est.score(X)
    return out


def assert_same_outputs(a, b):
    oa, ob = outputs(a), outputs(b)
    assert oa.keys() == ob.keys()
    for key in oa:
        if isinstance(oa[key], pd.DataFrame):
            assert len(oa[key]) > 0, key
            pd.testing.assert_frame_equal(oa[key], ob[key], check_exact=True, obj=key)
        else:
            assert_array_equal(oa[key], ob[key], err_msg=key, strict=True)


def assert_same(a, b, what="value"):
    """a and b are the same value, of the same type, bit for bit."""
    assert type(a) is type(b), f"{what}: {type(a)} vs {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert_array_equal(a, b, err_msg=what)
    elif sp.issparse(a):
        assert a.format == b.format and a.shape == b.shape, what
        assert (a != b).nnz == 0, what
    elif isinstance(a, dict):
        assert list(a) == list(b), what
        assert [type(k) for k in a] == [type(k) for k in b], what
        for k in a:
            assert_same(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (va, vb) in enumerate(zip(a, b, strict=True)):
            assert_same(va, vb, f"{what}[{i}]")
    elif isinstance(a, np.random.RandomState):
        assert_same(a.get_state(), b.get_state(), what)
    elif isinstance(a, (float, np.floating)) and math.isnan(a):
        assert math.isnan(b), what
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def saved_state_names(est):
    spec = REGISTRY[persistence._registered_name(est)]
    return persistence._saved_attributes(est, spec)


def memory_url():
    return f"memory://dmlkit-test-{uuid.uuid4().hex}/model"


# ----------------------------------------------------------------------------------
# the registry covers every estimator
# ----------------------------------------------------------------------------------
def test_registry_holds_every_public_estimator():
    public = set()
    for module in ESTIMATOR_MODULES:
        mod = importlib.import_module(module)
        for attr in mod.__all__:
            obj = getattr(mod, attr)
            if isinstance(obj, type) and issubclass(obj, BaseEstimator):
                public.add(f"{module}.{attr}")
    assert {"dmlkit.cluster.KMeans", "dmlkit.linear_model.SGDClassifier",
            "dmlkit.linear_model.SGDRegressor", ALS_NAME} <= public
    missing = public - set(REGISTRY)
    assert not missing, f"add these classes to dmlkit.persistence.REGISTRY: {missing}"
    for name in REGISTRY:
        cls = persistence._resolve(name)
        assert name in public and cls.__name__ == name.rpartition(".")[2]


# ----------------------------------------------------------------------------------
# pickle and joblib
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REGISTRY))
def test_pickle_round_trip(name):
    est = fitted(name)
    back = pickle.loads(pickle.dumps(est, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is type(est)
    assert_same_outputs(est, back)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_joblib_round_trip(name, tmp_path):
    est = fitted(name)
    joblib.dump(est, tmp_path / "model.joblib", compress=3)
    back = joblib.load(tmp_path / "model.joblib")
    assert type(back) is type(est)
    assert_same_outputs(est, back)


# ----------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "memory"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_save_load_round_trip(name, where, tmp_path):
    est = fitted(name)
    path = tmp_path / "model" if where == "local" else memory_url()
    save(est, path)
    back = load(path)
    assert type(back) is type(est)
    assert_same(back.get_params(deep=False), est.get_params(deep=False), "params")
    names = saved_state_names(est)
    assert any(n.endswith("_") for n in names)
    for attr in names:
        assert_same(getattr(back, attr), getattr(est, attr), attr)
    assert_same_outputs(est, back)


def test_save_accepts_str_path_and_existing_empty_dir(tmp_path):
    est = fitted("dmlkit.cluster.KMeans")
    (tmp_path / "empty").mkdir()
    save(est, str(tmp_path / "empty"))
    assert_array_equal(load(str(tmp_path / "empty")).cluster_centers_, est.cluster_centers_)


def test_manifest_and_files(tmp_path):
    est = fitted("dmlkit.linear_model.SGDClassifier")
    save(est, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())  # standard JSON
    assert manifest["format"] == "dmlkit-model"
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert manifest["dmlkit_version"] == dmlkit.__version__
    assert manifest["estimator"] == "dmlkit.linear_model.SGDClassifier"
    assert manifest["params"]["loss"] == "log_loss"
    assert manifest["params"]["max_iter"] == 5 and manifest["params"]["tol"] is None
    assert manifest["attributes"]["n_features_in_"] == 3
    assert read_manifest(tmp_path / "m") == manifest
    files = {a["file"]: a for a in manifest["arrays"]}
    assert {"coef_.npy", "intercept_.npy", "classes_.npy"} <= set(files)
    assert {p.name for p in (tmp_path / "m").iterdir()} == set(files) | {"manifest.json"}
    for fname, entry in files.items():
        arr = np.load(tmp_path / "m" / fname, allow_pickle=False)
        assert arr.dtype.str == entry["dtype"] and list(arr.shape) == entry["shape"]
        assert hashlib.sha256((tmp_path / "m" / fname).read_bytes()).hexdigest() == \
            entry["sha256"]
    assert_array_equal(np.load(tmp_path / "m" / "coef_.npy"), est.coef_)
    # classes_ of Python strings (object dtype) are fixed-width unicode on disk
    classes = np.load(tmp_path / "m" / "classes_.npy", allow_pickle=False)
    assert classes.dtype.kind == "U" and classes.tolist() == ["ant", "bee", "cat"]
    assert load(tmp_path / "m").classes_.dtype == object


def test_als_ids_stored_without_pickle(tmp_path):
    als = fitted(ALS_NAME)
    assert als.user_ids_.dtype == object
    save(als, tmp_path / "als")
    for side in ("user", "item"):
        ids = np.load(tmp_path / "als" / f"{side}_ids_.npy", allow_pickle=False)
        assert ids.dtype.kind == "U"
        assert ids.tolist() == getattr(als, f"{side}_ids_").tolist()
    back = load(tmp_path / "als")
    # the id -> row maps are rebuilt, as fit builds them
    assert back._user_index.equals(als._user_index)
    assert back._item_index.dtype == als._item_index.dtype


def test_als_files_readable_without_dmlkit(tmp_path):
    als = fitted(ALS_NAME)
    save(als, tmp_path / "als")
    user = als.user_ids_[3]
    script = textwrap.dedent("""
        import sys
        sys.modules["dmlkit"] = None  # import dmlkit now raises ImportError
        import json
        import numpy as np
        try:
            import dmlkit  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("dmlkit could be imported")
        model, user = sys.argv[1], sys.argv[2]
        U = np.load(f"{model}/user_factors_.npy", allow_pickle=False)
        V = np.load(f"{model}/item_factors_.npy", allow_pickle=False)
        user_ids = np.load(f"{model}/user_ids_.npy", allow_pickle=False)
        item_ids = np.load(f"{model}/item_ids_.npy", allow_pickle=False)
        row = int(np.flatnonzero(user_ids == user)[0])
        scores = V @ U[row]
        top = np.argsort(-scores, kind="stable")[:5]
        print(json.dumps({"items": item_ids[top].tolist(),
                          "scores": scores[top].astype(float).tolist(),
                          "dmlkit_loaded": "dmlkit" in sys.modules
                          and sys.modules["dmlkit"] is not None}))
    """)
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "als"), str(user)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["dmlkit_loaded"] is False
    want = als.recommend([user], n=5, filter_seen=False)
    assert got["items"] == want["item_id"].tolist()
    np.testing.assert_allclose(got["scores"], want["score"].to_numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------------
# format stability: models saved by an earlier dmlkit
# ----------------------------------------------------------------------------------
def test_v1_fixture_kmeans():
    path = DATA / "v1" / "kmeans"
    assert read_manifest(path)["format_version"] == 1
    km = load(path)
    assert type(km) is dmlkit.KMeans
    assert km.get_params()["n_clusters"] == 2 and km.get_params()["init"] == "k-means++"
    assert_array_equal(km.cluster_centers_, [[0.0, 0.5], [10.0, 10.5]], strict=False)
    assert km.cluster_centers_.dtype == np.float64
    assert_array_equal(km.labels_, np.array([0, 0, 1, 1], dtype=np.int32), strict=True)
    assert km.inertia_ == 1.0 and km.n_iter_ == 2 and km.n_features_in_ == 2
    assert_array_equal(km.predict(np.array([[1.0, 1.0], [9.0, 9.0], [0.0, 0.4]])), [0, 1, 0])
    assert km.score(np.array([[0.0, 0.0], [10.0, 11.0]])) == -0.5


def test_v1_fixture_sgd_classifier():
    path = DATA / "v1" / "sgd_classifier"
    assert read_manifest(path)["format_version"] == 1
    clf = load(path)
    assert type(clf) is dmlkit.SGDClassifier
    assert clf.get_params()["loss"] == "log_loss" and clf.get_params()["shuffle"] is False
    assert clf.classes_.tolist() == ["no", "yes"]
    assert_array_equal(clf.coef_, [[9.017111289881534, 4.709820785712534]], strict=False)
    assert_array_equal(clf.intercept_, [-4.8313859703077116], strict=False)
    P = np.array([[-1.0, -1.0], [1.0, 1.0], [0.2, -0.1], [-0.1, 0.3]])
    assert clf.predict(P).tolist() == ["no", "yes", "no", "no"]
    np.testing.assert_allclose(
        clf.predict_proba(P)[:, 1],
        [8.714146872529181e-09, 0.9998630210226137, 0.02934224107642106,
         0.013123364337960325], rtol=1e-12)


# ----------------------------------------------------------------------------------
# load refuses what it cannot load safely
# ----------------------------------------------------------------------------------
def _copy_fixture(tmp_path, which="kmeans"):
    dst = tmp_path / which
    shutil.copytree(DATA / "v1" / which, dst)
    return dst


def _edit_manifest(path, edit):
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_refuses_newer_format(tmp_path):
    path = _copy_fixture(tmp_path)
    _edit_manifest(path, lambda m: m.update(format_version=FORMAT_VERSION + 1,
                                            dmlkit_version="99.0"))
    with pytest.raises(ValueError, match=rf"written by dmlkit 99\.0 with format version "
                                         rf"{FORMAT_VERSION + 1}; this dmlkit .* reads up to "
                                         rf"format version {FORMAT_VERSION}: upgrade dmlkit"):
        load(path)


@pytest.mark.parametrize("name", ["os.system", "dmlkit.persistence.ModelSpec",
                                  "sklearn.linear_model.LinearRegression", None])
def test_load_refuses_unknown_class(tmp_path, name):
    path = _copy_fixture(tmp_path)
    _edit_manifest(path, lambda m: m.update(estimator=name))
    with pytest.raises(ValueError, match=r"unknown class .*this dmlkit loads only: "
                                         r"dmlkit\.cluster\.KMeans"):
        load(path)


def test_load_refuses_missing_array(tmp_path):
    path = _copy_fixture(tmp_path)
    (path / "cluster_centers_.npy").unlink()
    with pytest.raises(ValueError, match=r"'cluster_centers_\.npy' listed in the manifest is "
                                         r"missing"):
        load(path)


def test_load_refuses_corrupt_array(tmp_path):
    path = _copy_fixture(tmp_path)
    f = path / "cluster_centers_.npy"
    f.write_bytes(f.read_bytes()[:-8])  # truncated
    with pytest.raises(ValueError, match=r"'cluster_centers_\.npy' is corrupt"):
        load(path)


def _replace_array(path, fname, arr, allow_pickle=False):
    """Put another .npy at ``fname`` with a manifest entry that matches its bytes."""
    with open(path / fname, "wb") as f:
        np.save(f, arr, allow_pickle=allow_pickle)
    digest = hashlib.sha256((path / fname).read_bytes()).hexdigest()

    def edit(m):
        for entry in m["arrays"]:
            if entry["file"] == fname:
                entry["sha256"] = digest
    _edit_manifest(path, edit)


def test_load_refuses_array_of_other_shape(tmp_path):
    path = _copy_fixture(tmp_path)
    _replace_array(path, "cluster_centers_.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"holds float64 \(3, 2\), not the manifest's "
                                         r"<f8 \[2, 2\]"):
        load(path)


UNPICKLED = []


def _record_unpickling():
    UNPICKLED.append(1)
    return "boom"


class _Trap:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_load_never_unpickles(tmp_path):
    path = _copy_fixture(tmp_path)
    trap = np.empty((2, 2), dtype=object)
    trap[...] = _Trap()
    _replace_array(path, "cluster_centers_.npy", trap, allow_pickle=True)
    _edit_manifest(path, lambda m: [e.update(dtype="|O") for e in m["arrays"]
                                    if e["file"] == "cluster_centers_.npy"])
    UNPICKLED.clear()
    with pytest.raises(ValueError, match=r"not a pickle-free \.npy file"):
        load(path)
    assert UNPICKLED == []
    # the trap is live: loading it with pickle allowed would run it
    np.load(path / "cluster_centers_.npy", allow_pickle=True)
    assert UNPICKLED


@pytest.mark.parametrize("setup, match", [
    ("missing", r"no dmlkit model at .*does not exist"),
    ("empty", r"is not a dmlkit model: it has no manifest\.json\.$"),
    ("no-manifest", r"it has no manifest\.json \(an interrupted save\?\)"),
    ("not-json", r"its manifest\.json is not valid JSON"),
    ("other-format", r"does not say format 'dmlkit-model'"),
    ("bad-version", r"format_version '1' is not a positive integer"),
    ("private-attribute", r"sets the attribute '_secret'"),
    ("dunder-attribute", r"sets the attribute '__class__'"),
    ("unknown-kind", r"value of kind 'pickle', unknown to dmlkit"),
    ("unlisted-file", r"refers to an array file '\.\./x\.npy'"),
    ("unknown-param", r"gives KMeans parameters \['bogus'\] that this dmlkit .* does not "
                      r"have"),
])
def test_load_refuses_what_is_not_a_model(tmp_path, setup, match):
    path = tmp_path / "x"
    if setup == "empty":
        path.mkdir()
    elif setup != "missing":
        path = _copy_fixture(tmp_path)
        m = path / "manifest.json"
        if setup == "no-manifest":
            m.unlink()
        elif setup == "not-json":
            m.write_text('{"format": "dmlkit-model", ')
        elif setup == "other-format":
            _edit_manifest(path, lambda d: d.update(format="something-else"))
        elif setup == "bad-version":
            _edit_manifest(path, lambda d: d.update(format_version="1"))
        elif setup == "private-attribute":
            _edit_manifest(path, lambda d: d["attributes"].update(_secret=1))
        elif setup == "dunder-attribute":
            _edit_manifest(path, lambda d: d["attributes"].update(__class__="x"))
        elif setup == "unknown-kind":
            _edit_manifest(path, lambda d: d["params"].update(
                init={"__dmlkit__": "pickle", "data": "gASVAAAA"}))
        elif setup == "unknown-param":
            _edit_manifest(path, lambda d: d["params"].update(bogus=1))
        elif setup == "unlisted-file":
            _edit_manifest(path, lambda d: d["attributes"].update(
                cluster_centers_={"__dmlkit__": "ndarray", "file": "../x.npy"}))
    with pytest.raises(ValueError, match=match):
        load(path)


# ----------------------------------------------------------------------------------
# save refuses what it cannot store
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REGISTRY))
def test_save_refuses_unfitted(name, tmp_path):
    est = persistence._resolve(name)()
    with pytest.raises(NotFittedError, match=rf"This {name.rpartition('.')[2]} instance is "
                                             r"not fitted yet: fit it before saving"):
        save(est, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_save_refuses_unregistered_class(tmp_path):
    class MyKMeans(dmlkit.KMeans):
        pass

    X, _, _ = _data()
    est = MyKMeans(n_clusters=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"cannot save a .*MyKMeans: only these classes"):
        save(est, tmp_path / "m")
    with pytest.raises(ValueError, match=r"cannot save a .*LinearRegression"):
        save(SkLinearRegression().fit(X, X[:, 0]), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_save_refuses_callable_param(tmp_path):
    est = fitted("dmlkit.cluster.KMeans")
    est.set_params(init=lambda X, k, random_state: X[:k])
    with pytest.raises(ValueError, match=r"Parameter 'init' of KMeans is a .*function.*"
                                         r"cannot store without pickle"):
        save(est, tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("attr, value, match", [
    ("coef_", "dask", r"Attribute 'coef_' of SGDClassifier is a lazy dask collection"),
    ("helper_", SkLinearRegression(), r"Attribute 'helper_' of SGDClassifier is a "
                                      r"sklearn\..*LinearRegression"),
    ("classes_", np.array([1, "a", 2], dtype=object),
     r"Attribute 'classes_' of SGDClassifier is an array of dtype object whose elements "
     r"are not all strings"),
    ("classes_", np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
     r"Attribute 'classes_' of SGDClassifier is a MaskedArray"),
])
def test_save_refuses_unrepresentable_attribute(tmp_path, attr, value, match):
    est = fitted("dmlkit.linear_model.SGDClassifier")
    setattr(est, attr, da.from_array(est.coef_) if isinstance(value, str) else value)
    with pytest.raises(ValueError, match=match):
        save(est, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_kmeans_of_dask_input_leaves_lazy_labels_out(tmp_path):
    X, _, _ = _data()
    km = dmlkit.KMeans(n_clusters=3, random_state=0).fit(da.from_array(X, chunks=20))
    assert isinstance(km.labels_, da.Array)
    with pytest.warns(DmlkitWarning, match=r"labels_ describe the training data .* not saved"):
        save(km, tmp_path / "m")
    assert read_manifest(tmp_path / "m")["not_saved"] == ["labels_"]
    back = load(tmp_path / "m")
    assert not hasattr(back, "labels_")
    assert_array_equal(back.cluster_centers_, km.cluster_centers_, strict=True)
    assert_array_equal(back.predict(X), km.predict(X))


# ----------------------------------------------------------------------------------
# values that are not plain JSON are kept losslessly
# ----------------------------------------------------------------------------------
def test_non_json_params_round_trip(tmp_path):
    X, _, y = _data()
    init = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    km = dmlkit.KMeans(n_clusters=2, init=init, random_state=np.random.RandomState(5)).fit(X)
    est = fitted("dmlkit.linear_model.SGDRegressor")
    est.set_params(random_state=np.random.RandomState(7), eta0=np.float32(0.5),
                   max_iter=np.int64(7), epsilon=float("inf"), checkpoint=tmp_path / "ck",
                   power_t=float("nan"))
    als = fitted(ALS_NAME)
    als.set_params(dtype=np.float32)
    for i, model in enumerate((km, est, als)):
        save(model, tmp_path / str(i))
        json.loads((tmp_path / str(i) / "manifest.json").read_text(),
                   parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
        back = load(tmp_path / str(i))
        assert_same(back.get_params(deep=False), model.get_params(deep=False), "params")
    back = load(tmp_path / "0")
    assert_array_equal(back.predict(X), km.predict(X))
    # the RandomState continues where the saved one was
    assert back.random_state.randint(1 << 30) == km.random_state.randint(1 << 30)


def test_class_weight_with_int_keys(tmp_path):
    X, _, _ = _data()
    y = (X[:, 0] > 0).astype(np.int64)
    clf = dmlkit.SGDClassifier(class_weight={0: 1.0, 1: 2.5}, max_iter=5, tol=None,
                               random_state=0).fit(X, y)
    save(clf, tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.class_weight == {0: 1.0, 1: 2.5}
    assert all(type(k) is int for k in back.class_weight)
    assert_same(back.classes_, clf.classes_, "classes_")
    assert_array_equal(back.predict(X), clf.predict(X), strict=True)


def test_sparse_coef_round_trip(tmp_path):
    est = fitted("dmlkit.linear_model.SGDClassifier").sparsify()
    save(est, tmp_path / "m")
    assert {"coef_.data.npy", "coef_.indices.npy", "coef_.indptr.npy"} <= {
        p.name for p in (tmp_path / "m").iterdir()}
    back = load(tmp_path / "m")
    assert sp.issparse(back.coef_) and back.coef_.format == "csr"
    assert_same(back.coef_, est.coef_, "coef_")
    assert_same_outputs(est, back)


def test_loaded_model_continues_training_like_the_original(tmp_path):
    X, y, _ = _data()
    clf = fitted("dmlkit.linear_model.SGDClassifier")
    save(clf, tmp_path / "c")
    back = load(tmp_path / "c")
    clf.partial_fit(X[:30], y[:30])
    back.partial_fit(X[:30], y[:30])
    assert_array_equal(back.coef_, clf.coef_, strict=True)
    km = fitted("dmlkit.cluster.KMeans")
    save(km, tmp_path / "k")
    kback = load(tmp_path / "k")
    km.partial_fit(X[:20])
    kback.partial_fit(X[:20])
    assert_array_equal(kback.cluster_centers_, km.cluster_centers_, strict=True)


def test_set_output_config_is_kept(tmp_path):
    km = fitted("dmlkit.cluster.KMeans").set_output(transform="pandas")
    save(km, tmp_path / "m")
    out = load(tmp_path / "m").transform(_data()[0])
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_frame_equal(out, km.transform(_data()[0]))


# ----------------------------------------------------------------------------------
# writing: existing paths and failed saves
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "memory"])
def test_overwrite(tmp_path, where):
    path = tmp_path / "m" if where == "local" else memory_url()
    km = fitted("dmlkit.cluster.KMeans")
    save(km, path)
    other = dmlkit.KMeans(n_clusters=2, random_state=0).fit(_data()[0])
    with pytest.raises(FileExistsError, match=r"is not empty: pass overwrite=True"):
        save(other, path)
    assert load(path).n_clusters == 3
    save(other, path, overwrite=True)
    back = load(path)
    assert back.n_clusters == 2
    assert_array_equal(back.cluster_centers_, other.cluster_centers_)


def test_overwrite_never_deletes_other_files(tmp_path):
    path = tmp_path / "mine"
    path.mkdir()
    (path / "notes.txt").write_text("keep me")
    km = fitted("dmlkit.cluster.KMeans")
    with pytest.raises(FileExistsError):
        save(km, path)
    with pytest.raises(ValueError, match=r"holds files that are not part of a dmlkit model "
                                         r"\(notes\.txt\)"):
        save(km, path, overwrite=True)
    assert (path / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"is a file"):
        save(km, tmp_path / "file", overwrite=True)
    assert (tmp_path / "file").read_text() == "x"


def _failing_np_save(monkeypatch, after):
    real, calls = np.save, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(persistence.np, "save", flaky)


def test_failed_save_is_never_loadable(tmp_path, monkeypatch):
    est = fitted("dmlkit.linear_model.SGDClassifier")
    with monkeypatch.context() as m:
        _failing_np_save(m, after=1)
        with pytest.raises(OSError, match="disk full"):
            save(est, tmp_path / "m")
    assert any((tmp_path / "m").iterdir())  # something was written...
    with pytest.raises(ValueError, match=r"no manifest\.json \(an interrupted save\?\)"):
        load(tmp_path / "m")  # ...but it is not taken for a model
    save(est, tmp_path / "m", overwrite=True)  # what was left is replaced
    assert_same_outputs(est, load(tmp_path / "m"))


def test_failed_overwrite_leaves_no_mix(tmp_path, monkeypatch):
    old = fitted("dmlkit.cluster.KMeans")
    save(old, tmp_path / "m")
    new = dmlkit.KMeans(n_clusters=2, random_state=0).fit(_data()[0])
    with monkeypatch.context() as m:
        _failing_np_save(m, after=1)
        with pytest.raises(OSError, match="disk full"):
            save(new, tmp_path / "m", overwrite=True)
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        load(tmp_path / "m")
