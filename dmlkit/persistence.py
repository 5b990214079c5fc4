"""Saving fitted estimators in a versioned, pickle-free format.

:func:`save` writes a fitted dmlkit estimator to a directory (a local path or an
fsspec URL); :func:`load` reads it back, in this dmlkit or a newer one.  The
directory holds::

    <path>/manifest.json       format name and version, the dmlkit version that wrote
                               it, the estimator class, its parameters and fitted
                               attributes as JSON, and the list of array files
    <path>/<attribute>.npy     one NumPy file per array (``allow_pickle=False``)

An array attribute ``name`` is stored in ``name.npy`` (so ALS's ``user_factors_.npy``,
``item_factors_.npy``, ``user_ids_.npy`` and ``item_ids_.npy`` can be read with NumPy
alone); arrays inside other values get dotted names (``_sgd_state.coef.npy``), a
scipy.sparse matrix its CSR arrays (``coef_.data.npy``, ``coef_.indices.npy``,
``coef_.indptr.npy``), array parameters ``params.<name>.npy``.

What is saved: the parameters (``get_params(deep=False)``), every fitted attribute
(a public attribute whose name ends in ``_``, scikit-learn's convention) and, per
class, the private attributes listed in :data:`REGISTRY`.  Values are encoded
losslessly as JSON (None, bool, int, float including NaN and infinities, str, and
tagged lists, tuples, dicts with keys of any of these types, NumPy scalars, dtypes
and scalar types, ``pathlib`` paths and ``numpy.random.RandomState`` instances) or as
``.npy`` files (NumPy arrays of any non-object dtype; object arrays of ``str``, stored
as fixed-width unicode and given back as object arrays; scipy.sparse matrices).
Anything else (a dask collection, a callable, a nested estimator, an object array of
other values) is refused with a ``ValueError`` naming the parameter or attribute,
except the ``blocked`` attributes of a model held on a cluster (ALS factors over
``dmlkit.driver-state-bytes``): those are written a row block at a time to the same
``.npy`` bytes, and loaded back onto the cluster by its workers (:class:`ModelSpec`).

Safe loading: :func:`load` never unpickles (``np.load(..., allow_pickle=False)`` and
JSON only), constructs only a class of :data:`REGISTRY`, sets only the attributes the
save rules allow, and builds values only of the types listed above.

Writes are ordered so that a failed save is never taken for a model: the arrays are
written first, ``manifest.json`` last (to a temporary name, then renamed), and
overwriting removes the old ``manifest.json`` before anything else.

Adding an estimator class is one line in :data:`REGISTRY`: its public name and a
:class:`ModelSpec` listing the private attributes it needs to predict (none for
classes whose state is plain ``coef_``/``intercept_``-style attributes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import math
import pathlib
import posixpath
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import dask
import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

FORMAT_NAME = "dmlkit-model"
FORMAT_VERSION = 1  # the newest format version this dmlkit writes and reads
MANIFEST = "manifest.json"
_MANIFEST_TMP = MANIFEST + ".tmp"
_TAG = "__dmlkit__"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What :func:`save` keeps of one estimator class beyond its public fitted state.

    private
        Private attributes that predicting (or continuing a fit) needs, saved when
        present.
    derived
        Attributes rebuilt on load from the saved ones (``name -> function(estimator)``)
        instead of being stored (e.g. a ``pandas.Index`` of saved ids).
    lazy_skip
        Fitted attributes that describe the training data rather than the model (e.g.
        ``KMeans.labels_``): left out, with a warning, when they are dask collections
        (computing them would mean another pass over the training data).
    blocked
        Attributes that may be dask arrays over row blocks held by a cluster (a model
        larger than the ``dmlkit.driver-state-bytes`` setting).  They are written one
        row block at a time, in pieces of at most PIECE_BYTES, never whole here;
        the file is the ``.npy`` the array would give (the same bytes), and the
        manifest lists its row blocks with a SHA-256 each.
    export
        ``export(estimator) -> dict``: values saved under these attribute names in place
        of the estimator's own (a model held on a cluster gives the arrays its
        in-process form would have, as dask arrays).
    adopt
        ``adopt(estimator, stored)``: called by :func:`load` instead of reading the
        ``blocked`` attributes when they are larger than ``dmlkit.driver-state-bytes``,
        a distributed client is active and its workers can read the files: ``stored``
        maps those attribute names to :class:`SavedArray` s, whose row blocks the
        workers read.
    """

    private: tuple[str, ...] = ()
    derived: Mapping[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    lazy_skip: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    export: Callable[[Any], dict] | None = None
    adopt: Callable[[Any, dict], None] | None = None


def _index_of(attr):
    def rebuild(estimator):
        import pandas as pd

        return pd.Index(getattr(estimator, attr))

    return rebuild


_SGD = ModelSpec(private=("_sgd_state", "_epochs_seen", "_seed", "_standard_coef",
                          "_standard_intercept", "_average_coef", "_average_intercept"))

#: The classes :func:`load` may construct, by public name, and their save rules.
REGISTRY: dict[str, ModelSpec] = {
    "dmlkit.cluster.KMeans": ModelSpec(private=("_counts", "_n_init", "_algorithm", "_tol"),
                                       lazy_skip=("labels_",)),
    "dmlkit.linear_model.SGDClassifier": _SGD,
    "dmlkit.linear_model.SGDRegressor": _SGD,
    "dmlkit.linear_model.LogisticRegression": ModelSpec(),
    "dmlkit.linear_model.LinearRegression": ModelSpec(),
    "dmlkit.linear_model.Ridge": ModelSpec(),
    "dmlkit.linear_model.PoissonRegressor": ModelSpec(),
    "dmlkit.recommendation.ALS": ModelSpec(
        private=("_seen_indptr", "_seen_indices"),
        derived={"_user_index": _index_of("user_ids_"), "_item_index": _index_of("item_ids_")},
        blocked=("user_factors_", "item_factors_", "user_ids_", "item_ids_", "_seen_indptr",
                 "_seen_indices"),
        export=lambda est: est._saved_state(),
        adopt=lambda est, stored: est._adopt_saved(stored)),
}

# private attributes of scikit-learn's mixins, saved for every class when present
_COMMON_PRIVATE = ("_sklearn_output_config",)

_ARRAY_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.npy")
_ATTR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BUILTIN_TYPES = {"bool": bool, "int": int, "float": float, "complex": complex, "str": str}


# ----------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------
def _resolve(name):
    """The class registered as ``name`` (only names of REGISTRY are ever imported)."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _registered_name(estimator):
    cls = type(estimator)
    for name in REGISTRY:
        if name.rpartition(".")[2] == cls.__name__ and _resolve(name) is cls:
            return name
    raise ValueError(
        f"dmlkit.persistence.save cannot save a {cls.__module__}.{cls.__qualname__}: only "
        f"these classes can be saved and loaded: {', '.join(REGISTRY)}. Use pickle or "
        "joblib for other objects.")


def _saved_attributes(estimator, spec):
    state = vars(estimator)
    public = [k for k in state if k.endswith("_") and not k.startswith("_")]
    return public + [k for k in _COMMON_PRIVATE + spec.private if k in state]


# ----------------------------------------------------------------------------------
# encoding (save)
# ----------------------------------------------------------------------------------
class _Encoder:
    """Values -> JSON trees, collecting the arrays to write as ``.npy`` files."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray | _Streamed] = {}

    def _file_name(self, base):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".") or "array"
        name, i = f"{stem}.npy", 1
        while name in self.arrays:
            name, i = f"{stem}.{i}.npy", i + 1
        return name

    def array(self, arr, base, where):
        if type(arr) is not np.ndarray:
            raise ValueError(f"{where} is a {type(arr).__name__}, an ndarray subclass that "
                             "cannot be saved without losing what it adds to the array.")
        node = {_TAG: "ndarray"}
        if arr.dtype.hasobject:
            if arr.dtype != object or not all(
                    isinstance(v, str) and not v.endswith("\0") for v in arr.flat):
                raise ValueError(
                    f"{where} is an array of dtype {arr.dtype} whose elements are not all "
                    "strings (e.g. ids of mixed types): it cannot be saved without pickle. "
                    "Convert it to a numeric or string array, or use pickle or joblib.")
            arr = arr.astype(str) if arr.size else np.zeros(arr.shape, dtype="<U1")
            node["object"] = "str"
        name = self._file_name(base)
        self.arrays[name] = arr
        node["file"] = name
        return node

    def streamed(self, arr, base, where):
        """A dask array over row blocks (a ``blocked`` attribute), written one block at
        a time."""
        node = {_TAG: "ndarray"}
        width = None
        if arr.dtype.hasobject:
            from dmlkit._core.client import compute

            found = compute(*[dask.delayed(_str_width, pure=True)(b)
                              for b in arr.to_delayed().ravel()])
            if arr.dtype != object or not all(ok for ok, _ in found):
                raise ValueError(
                    f"{where} is an array of dtype {arr.dtype} whose elements are not all "
                    "strings (e.g. ids of mixed types): it cannot be saved without pickle. "
                    "Convert it to a numeric or string array, or use pickle or joblib.")
            width = max((w for _, w in found), default=1)
            node["object"] = "str"
        name = self._file_name(base)
        self.arrays[name] = _Streamed(arr, width)
        node["file"] = name
        return node

    def encode(self, value, base, where):
        if value is None or type(value) in (bool, int, str):
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {_TAG: "float", "value": repr(value)}
        if isinstance(value, np.generic):
            if value.dtype.kind in "biufU":
                return {_TAG: "scalar", "dtype": value.dtype.str,
                        "value": self.encode(value.item(), base, where)}
            return {_TAG: "scalar", "array": self.array(np.asarray(value), base, where)}
        if isinstance(value, np.ndarray):
            return self.array(value, base, where)
        if sp.issparse(value):
            csr = value.tocsr()
            return {_TAG: "sparse", "format": value.format, "shape": list(value.shape),
                    "container": "matrix" if sp.isspmatrix(value) else "array",
                    **{k: self.array(getattr(csr, k), f"{base}.{k}", where)
                       for k in ("data", "indices", "indptr")}}
        if type(value) is list:
            return [self.encode(v, f"{base}.{i}", where) for i, v in enumerate(value)]
        if type(value) is tuple:
            return {_TAG: "tuple",
                    "items": [self.encode(v, f"{base}.{i}", where) for i, v in enumerate(value)]}
        if type(value) is dict:
            items = []
            for i, (k, v) in enumerate(value.items()):
                if isinstance(k, (list, dict, np.ndarray)):
                    raise ValueError(f"{where} is a dict with a key of type "
                                     f"{type(k).__name__}, which cannot be saved.")
                sub = f"{base}.{k}" if isinstance(k, str) and _ATTR_NAME.fullmatch(k) \
                    else f"{base}.{i}"
                items.append([self.encode(k, sub, where), self.encode(v, sub, where)])
            return {_TAG: "dict", "items": items}
        if isinstance(value, np.random.RandomState):
            return {_TAG: "random_state",
                    "state": self.encode(value.get_state(legacy=True), base, where)}
        if isinstance(value, np.dtype):
            if value.fields is not None or value.hasobject:
                raise ValueError(f"{where} is the dtype {value}, which cannot be saved.")
            return {_TAG: "dtype", "dtype": value.str}
        if isinstance(value, type) and issubclass(value, np.generic) and value is not np.object_:
            return {_TAG: "dtype_type", "dtype": np.dtype(value).str}
        if isinstance(value, type) and _BUILTIN_TYPES.get(value.__name__) is value:
            return {_TAG: "builtin_type", "name": value.__name__}
        if isinstance(value, pathlib.PurePath):
            return {_TAG: "path", "value": str(value)}
        if _is_dask_collection(value):
            raise ValueError(f"{where} is a lazy dask collection ({type(value).__name__}): "
                             "compute it (or delete it) before saving.")
        raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, "
                         "which dmlkit.persistence cannot store without pickle (it saves "
                         "numbers, strings, lists, tuples, dicts, NumPy arrays and scalars, "
                         "scipy.sparse matrices, dtypes, paths and RandomState instances). "
                         "Use pickle or joblib to save this estimator.")


def _is_dask_array(value):
    import dask.array as da

    return isinstance(value, da.Array)


def _is_dask_collection(value):
    try:
        from dask import is_dask_collection
    except ImportError:  # pragma: no cover - dask is a dependency
        return False
    return is_dask_collection(value)


class _HashingWriter:
    """A file wrapper that hashes what goes through it (np.save writes in chunks)."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.f.write(data)


PIECE_BYTES = 16 * 2**20  # what a blocked array's save brings here at a time


class _Streamed:
    """A dask array to write to one ``.npy`` file a row block at a time (``blocked``)."""

    def __init__(self, arr, width=None):
        self.arr = arr.rechunk({i: -1 for i in range(1, arr.ndim)}) if arr.ndim > 1 else arr
        self.width = width  # object arrays of str: stored as this fixed-width unicode
        self.dtype = np.dtype(f"<U{max(1, width)}") if width is not None else arr.dtype
        self.shape = tuple(int(n) for n in arr.shape)

    def write(self, f):
        """Write the ``.npy`` bytes ``np.save`` would for the whole array; returns the
        row counts and SHA-256 of the blocks (of their data bytes).  A block comes here
        in pieces of at most PIECE_BYTES, each cut from it where it is."""
        from dmlkit._core.client import compute

        header = np.lib.format.header_data_from_array_1_0(np.empty(0, self.dtype))
        header["shape"] = self.shape
        np.lib.format.write_array_header_1_0(f, header)
        row_bytes = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize)
        step = max(1, PIECE_BYTES // row_bytes)
        rows, hashes = [], []
        for b, n in enumerate(self.arr.chunks[0]):
            sha = hashlib.sha256()
            block = self.arr.blocks[b]
            for start in range(0, n, step):
                value = np.asarray(compute(block[start:start + step])[0])
                if self.width is not None:
                    value = value.astype(self.dtype)
                data = memoryview(np.ascontiguousarray(value, dtype=self.dtype)).cast("B")
                f.write(data)  # the array's own bytes: no copy
                sha.update(data)
            rows.append(int(n))
            hashes.append(sha.hexdigest())
        return {"rows": rows, "sha256": hashes}


def _str_width(block):
    """(whether every element is a str without a trailing NUL, the longest's length)."""
    ok = all(isinstance(v, str) and not v.endswith("\0") for v in block.flat)
    return ok, max((len(v) for v in block.flat), default=0) if ok else 0


class SavedArray:
    """An array of a saved model that the workers read by row blocks (see
    ``ModelSpec.adopt``): its file, dtype, shape, the row blocks it was saved in and
    their SHA-256 each."""

    def __init__(self, fs, path, dtype, shape, offset, rows, hashes, as_object):
        self.fs, self.path = fs, path
        self.dtype, self.shape, self.offset = np.dtype(dtype), tuple(shape), int(offset)
        self.rows = [int(r) for r in rows]
        self.hashes = list(hashes)
        self.as_object = as_object  # str ids, stored as fixed-width unicode
        self.cuts = np.r_[0, np.cumsum(self.rows, dtype=np.int64)]

    @property
    def row_bytes(self):
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read(self, start, stop, check=None):
        """Rows ``start:stop`` (a task, where it runs); ``check``: the SHA-256 they must
        have (a whole saved block)."""
        n = self.row_bytes * (stop - start)
        with self.fs.open(self.path, "rb") as f:
            f.seek(self.offset + self.row_bytes * start)
            data = f.read(n)
        if len(data) != n:
            raise ValueError(f"{self.path!r} is shorter than its manifest says (a truncated "
                             "copy of the model?).")
        if check is not None and hashlib.sha256(data).hexdigest() != check:
            raise ValueError(f"{self.path!r} is corrupt: rows {start}:{stop} do not have the "
                             "SHA-256 the manifest gives them.")
        arr = np.frombuffer(data, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])
        arr = arr.copy()  # writable, and not a view of the read buffer
        return arr.astype(object) if self.as_object else arr

    def block(self, b):
        """Row block ``b`` as saved, checked against its SHA-256 (a task)."""
        return self.read(int(self.cuts[b]), int(self.cuts[b + 1]), self.hashes[b])

    def whole(self):
        """The whole array, every block checked (a task)."""
        parts = [self.block(b) for b in range(len(self.rows))]
        if not parts:
            return np.zeros(self.shape, object if self.as_object else self.dtype)
        return np.concatenate(parts)

    def __repr__(self):
        return f"SavedArray({self.path!r}, {self.dtype}, {self.shape}, {len(self.rows)} blocks)"


# ----------------------------------------------------------------------------------
# decoding (load)
# ----------------------------------------------------------------------------------
class _Decoder:
    def __init__(self, fs, root, manifest, where):
        self.fs, self.root, self.where = fs, root, where
        self.dmlkit_version = manifest.get("dmlkit_version", "?")
        arrays = manifest.get("arrays")
        if not isinstance(arrays, list) or not all(isinstance(a, dict) for a in arrays):
            raise self.corrupt("its 'arrays' list is missing or malformed")
        self.listed = {a.get("file"): a for a in arrays}

    def corrupt(self, what):
        return ValueError(f"{self.where} is not a valid dmlkit model: {what}.")

    def read_array(self, name):
        entry = self.listed.get(name)
        if not isinstance(name, str) or not _ARRAY_FILE.fullmatch(name) or entry is None:
            raise self.corrupt(f"the manifest refers to an array file {name!r} that its "
                               "'arrays' list does not hold")
        path = posixpath.join(self.root, name)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise ValueError(f"{self.where}: the array file {name!r} listed in the manifest "
                             "is missing (an incomplete copy of the model?).") from None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ValueError(f"{self.where}: the array file {name!r} is corrupt (its SHA-256 "
                             "does not match the manifest's).")
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
            raise ValueError(f"{self.where}: the array file {name!r} is corrupt or not a "
                             f"pickle-free .npy file: {e}") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.str != entry.get("dtype") \
                or list(arr.shape) != entry.get("shape"):
            raise ValueError(f"{self.where}: the array file {name!r} holds "
                             f"{getattr(arr, 'dtype', '?')} {getattr(arr, 'shape', '?')}, not "
                             f"the manifest's {entry.get('dtype')} {entry.get('shape')}.")
        return arr

    def saved_array(self, node, entry):
        """A :class:`SavedArray` of an array node whose file lists its row blocks (its
        header is read and checked here; the rows where they are needed)."""
        name = node["file"]
        if not isinstance(name, str) or not _ARRAY_FILE.fullmatch(name) \
                or self.listed.get(name) is not entry:
            raise self.corrupt(f"the manifest refers to an array file {name!r} that its "
                               "'arrays' list does not hold")
        path = posixpath.join(self.root, name)
        try:
            with self.fs.open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f)
                offset = f.tell()
        except FileNotFoundError:
            raise ValueError(f"{self.where}: the array file {name!r} listed in the manifest "
                             "is missing (an incomplete copy of the model?).") from None
        except ValueError as e:
            raise ValueError(f"{self.where}: the array file {name!r} is corrupt or not a "
                             f"pickle-free .npy file: {e}") from None
        blocks = entry["blocks"]
        rows, hashes = blocks.get("rows"), blocks.get("sha256")
        if fortran or dtype.str != entry.get("dtype") or list(shape) != entry.get("shape") \
                or not isinstance(rows, list) or not isinstance(hashes, list) \
                or len(rows) != len(hashes) or not shape or sum(rows) != shape[0]:
            raise ValueError(f"{self.where}: the array file {name!r} or its row blocks do "
                             "not match the manifest.")
        return SavedArray(self.fs, path, dtype, shape, offset, rows, hashes,
                          node.get("object") == "str")

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict) or not isinstance(node.get(_TAG), str):
            raise self.corrupt(f"a value of the manifest is not in the format: {node!r:.80}")
        kind = node[_TAG]
        try:
            return self._decode_tagged(kind, node)
        except (KeyError, TypeError) as e:
            raise self.corrupt(f"a {kind!r} value of the manifest is malformed ({e!r})") from None

    def _decode_tagged(self, kind, node):
        if kind == "ndarray":
            arr = self.read_array(node["file"])
            return arr.astype(object) if node.get("object") == "str" else arr
        if kind == "float":
            if node["value"] not in ("nan", "inf", "-inf"):
                raise TypeError(node["value"])
            return float(node["value"])
        if kind == "scalar":
            if "array" in node:
                return self.decode(node["array"])[()]
            dtype = np.dtype(node["dtype"])
            if dtype.kind not in "biufU":
                raise TypeError(f"inline scalar of dtype {dtype}")
            return dtype.type(self.decode(node["value"]))
        if kind == "sparse":
            data, indices, indptr = (self.decode(node[k]) for k in ("data", "indices", "indptr"))
            cls = sp.csr_matrix if node["container"] == "matrix" else sp.csr_array
            return cls((data, indices, indptr), shape=tuple(node["shape"])).asformat(
                node["format"])
        if kind == "tuple":
            return tuple(self.decode(v) for v in node["items"])
        if kind == "dict":
            return {self.decode(k): self.decode(v) for k, v in node["items"]}
        if kind == "random_state":
            rs = np.random.RandomState()
            rs.set_state(self.decode(node["state"]))
            return rs
        if kind == "dtype":
            return np.dtype(node["dtype"])
        if kind == "dtype_type":
            return np.dtype(node["dtype"]).type
        if kind == "builtin_type":
            return _BUILTIN_TYPES[node["name"]]
        if kind == "path":
            return pathlib.Path(node["value"])
        raise self.corrupt(f"it holds a value of kind {kind!r}, unknown to dmlkit "
                           f"{_dmlkit_version()} (written by dmlkit {self.dmlkit_version})")


# ----------------------------------------------------------------------------------
# storage
# ----------------------------------------------------------------------------------
def _dmlkit_version():
    import dmlkit

    return dmlkit.__version__


def _open(path, storage_options):
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    except (ValueError, ImportError) as e:
        raise ValueError(f"{str(path)!r} is not a usable location: {e}") from e
    return fs, root.rstrip("/") or "/"


def _ours(name):
    return name in (MANIFEST, _MANIFEST_TMP) or _ARRAY_FILE.fullmatch(name) is not None


def _prepare_target(fs, root, path, overwrite):
    """An empty directory at ``root``; with ``overwrite``, an earlier save there removed."""
    if fs.exists(root):
        if not fs.isdir(root):
            raise ValueError(f"{str(path)!r} is a file: a dmlkit model is saved as a "
                             "directory. Choose another path.")
        entries = fs.ls(root, detail=True)
        if entries:
            if not overwrite:
                raise FileExistsError(f"{str(path)!r} is not empty: pass overwrite=True to "
                                      "replace the model saved there, or choose another path.")
            names = {posixpath.basename(e["name"].rstrip("/")): e for e in entries}
            foreign = sorted(n for n, e in names.items()
                             if e.get("type") == "directory" or not _ours(n))
            if foreign:
                raise ValueError(
                    f"{str(path)!r} holds files that are not part of a dmlkit model "
                    f"({', '.join(foreign[:5])}): overwrite=True only replaces a saved "
                    "model. Choose another path.")
            # the manifest first: a save that fails from here on leaves no loadable model
            for name in sorted(names, key=lambda n: n != MANIFEST):
                fs.rm_file(posixpath.join(root, name))
    fs.makedirs(root, exist_ok=True)


# ----------------------------------------------------------------------------------
# the API
# ----------------------------------------------------------------------------------
def save(estimator, path, *, overwrite=False, storage_options=None):
    """Save a fitted dmlkit estimator to the directory ``path``.

    Parameters
    ----------
    estimator : fitted estimator of a class in :data:`REGISTRY`
    path : str or path-like
        A local directory or an fsspec URL (``s3://``, ``gs://``, ``memory://``...).  It
        must not exist, or be an empty directory.
    overwrite : bool, default=False
        Replace a model saved earlier at ``path`` (only a directory holding a dmlkit
        model, or what an interrupted save left, is replaced; other files are never
        deleted).
    storage_options : dict, optional
        Passed to fsspec (credentials, endpoints...).

    Raises
    ------
    NotFittedError
        The estimator is not fitted.
    ValueError
        The class is not one :func:`load` can construct, or a parameter or attribute
        holds a value that cannot be stored without pickle (the message names it).
    FileExistsError
        ``path`` is not empty and ``overwrite`` is False.
    """
    name = _registered_name(estimator)
    spec = REGISTRY[name]
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet: fit it before "
            "saving it with dmlkit.persistence.save.") from None
    cls_name = type(estimator).__name__
    # everything is encoded before anything is written: a refusal writes nothing
    enc = _Encoder()
    params = {k: enc.encode(v, f"params.{k}", f"Parameter {k!r} of {cls_name}")
              for k, v in estimator.get_params(deep=False).items()}
    attributes, skipped = {}, []
    values = {attr: vars(estimator)[attr] for attr in _saved_attributes(estimator, spec)}
    if spec.export is not None:
        values.update(spec.export(estimator))
    for attr, value in values.items():
        if attr in spec.lazy_skip and _is_dask_collection(value):
            skipped.append(attr)
            continue
        where = f"Attribute {attr!r} of {cls_name}"
        if attr in spec.blocked and _is_dask_array(value):
            attributes[attr] = enc.streamed(value, attr, where)
        else:
            attributes[attr] = enc.encode(value, attr, where)
    if skipped:
        from dmlkit.exceptions import DmlkitWarning

        warnings.warn(f"{cls_name}'s {', '.join(skipped)} describe the training data and are "
                      "lazy dask arrays: they are not saved (compute them, or recompute them "
                      "with the loaded model, e.g. predict(X)).", DmlkitWarning, stacklevel=2)

    fs, root = _open(path, storage_options)
    _prepare_target(fs, root, path, overwrite)
    listed = []
    for fname, arr in enc.arrays.items():
        blocks = None
        with fs.open(posixpath.join(root, fname), "wb") as f:
            out = _HashingWriter(f)
            if isinstance(arr, _Streamed):
                blocks = arr.write(out)
            else:
                np.save(out, arr, allow_pickle=False)
        entry = {"file": fname, "dtype": arr.dtype.str, "shape": list(arr.shape),
                 "sha256": out.sha.hexdigest()}
        if blocks is not None:
            entry["blocks"] = blocks
        listed.append(entry)
    import sklearn

    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dmlkit_version": _dmlkit_version(),
        "estimator": name,
        "params": params,
        "attributes": attributes,
        "not_saved": skipped,
        "arrays": listed,
        "versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__},
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    tmp = posixpath.join(root, _MANIFEST_TMP)
    with fs.open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    fs.mv(tmp, posixpath.join(root, MANIFEST))


def read_manifest(path, *, storage_options=None):
    """The manifest of the model saved at ``path``, checked (format, version, class)."""
    fs, root = _open(path, storage_options)
    return _read_manifest(fs, root, path)


def _read_manifest(fs, root, path):
    where = f"{str(path)!r}"
    if not fs.exists(root):
        raise ValueError(f"There is no dmlkit model at {where}: the path does not exist.")
    try:
        text = fs.cat_file(posixpath.join(root, MANIFEST))
    except (FileNotFoundError, IsADirectoryError):
        hint = " (an interrupted save?)" if fs.isdir(root) and fs.ls(root) else ""
        raise ValueError(f"{where} is not a dmlkit model: it has no {MANIFEST}{hint}.") \
            from None
    try:
        manifest = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where} is not a dmlkit model: its {MANIFEST} is not valid JSON "
                         f"({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{where} is not a dmlkit model: its {MANIFEST} does not say "
                         f"format {FORMAT_NAME!r}.")
    version, writer = manifest.get("format_version"), manifest.get("dmlkit_version", "?")
    if type(version) is not int or version < 1:
        raise ValueError(f"{where} is not a valid dmlkit model: format_version {version!r} "
                         "is not a positive integer.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by dmlkit {writer} with format version {version}; this "
            f"dmlkit ({_dmlkit_version()}) reads up to format version {FORMAT_VERSION}: "
            "upgrade dmlkit to load it.")
    name = manifest.get("estimator")
    if name not in REGISTRY:
        raise ValueError(
            f"{where} holds an estimator of unknown class {name!r} (written by dmlkit "
            f"{writer}); this dmlkit loads only: {', '.join(REGISTRY)}.")
    for key in ("params", "attributes"):
        if not isinstance(manifest.get(key), dict):
            raise ValueError(f"{where} is not a valid dmlkit model: its {MANIFEST} has no "
                             f"{key!r} mapping.")
    return manifest


def load(path, *, storage_options=None):
    """Load an estimator saved with :func:`save` (by this dmlkit or an older one).

    Nothing is unpickled: the arrays are read with ``allow_pickle=False`` and only a
    class of :data:`REGISTRY` is constructed.

    Raises
    ------
    ValueError
        ``path`` holds no dmlkit model (no ``manifest.json``: nothing saved there, or an
        interrupted save), a model of a newer format version (upgrade dmlkit), of an
        unknown class, or a missing or corrupt array file; the message names which.
    """
    fs, root = _open(path, storage_options)
    manifest = _read_manifest(fs, root, path)
    where = f"{str(path)!r}"
    name, writer = manifest["estimator"], manifest.get("dmlkit_version", "?")
    spec = REGISTRY[name]
    cls = _resolve(name)
    dec = _Decoder(fs, root, manifest, where)
    params = {k: dec.decode(v) for k, v in manifest["params"].items()}
    known = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{where} gives {cls.__name__} parameters {unknown} that this "
                         f"dmlkit ({_dmlkit_version()}) does not have (written by dmlkit "
                         f"{writer}).")
    estimator = cls(**params)
    allowed_private = set(_COMMON_PRIVATE + spec.private + spec.blocked)
    for attr in manifest["attributes"]:
        public = attr.endswith("_") and not attr.startswith("_")
        if not _ATTR_NAME.fullmatch(attr) or not (public or attr in allowed_private):
            raise ValueError(f"{where} is not a valid dmlkit model: it sets the attribute "
                             f"{attr!r}, which {cls.__name__}'s saved state does not have.")
    stored = _stored_for_cluster(spec, manifest, dec)
    for attr, node in manifest["attributes"].items():
        if attr not in stored:
            setattr(estimator, attr, dec.decode(node))
    if stored:
        spec.adopt(estimator, stored)
        return estimator
    for attr, rebuild in spec.derived.items():
        try:
            setattr(estimator, attr, rebuild(estimator))
        except AttributeError:  # what it is built from was not saved
            pass
    return estimator


def _stored_for_cluster(spec, manifest, dec) -> dict:
    """The ``blocked`` attributes as :class:`SavedArray` s, when the model stays on the
    cluster (see ``ModelSpec.adopt``); else an empty dict."""
    from dask.utils import parse_bytes

    from dmlkit._config import get_config
    from dmlkit._core.checkpoint import _process_local
    from dmlkit._core.client import get_client_or_none

    if spec.adopt is None or _process_local(dec.fs):
        return {}
    attrs = manifest["attributes"]
    nodes = {a: attrs.get(a) for a in spec.blocked}
    if not all(isinstance(n, dict) and n.get(_TAG) == "ndarray" for n in nodes.values()):
        return {}
    entries = {a: dec.listed.get(n.get("file")) for a, n in nodes.items()}
    if not all(isinstance(e, dict) and isinstance(e.get("blocks"), dict)
               for e in entries.values()):
        return {}  # saved from a model held in its process: read here
    nbytes = sum(np.dtype(e["dtype"]).itemsize * math.prod(e["shape"])
                 for e in entries.values())
    if nbytes <= parse_bytes(get_config("driver-state-bytes")) \
            or get_client_or_none() is None:
        return {}
    return {a: dec.saved_array(nodes[a], e) for a, e in entries.items()}


__all__ = ["FORMAT_VERSION", "REGISTRY", "ModelSpec", "SavedArray", "load", "read_manifest",
           "save"]
