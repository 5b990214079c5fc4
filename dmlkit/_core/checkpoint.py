"""Checkpoints of a fit's driver state at a path or any fsspec URL.

A checkpoint is a folder::

    <url>/manifest.json          the commit record: fingerprint, step, the files below
    <url>/state-<step>.pkl        the driver state of that step (small: models, counters)
    <url>/<name>-<step>-<i>.npy   state kept as row blocks (ALS factors), one file each

Writes are atomic: the files of step s are written first under names no earlier
manifest refers to, then ``manifest.json`` is replaced in one operation (a rename on
local disks, one object PUT on object stores) and only then are step s-1's files
removed.  A process killed at any moment, or a write that fails, leaves the previous
manifest and every file it names in place.

The fingerprint names the fit: the estimator's class, its parameters (except the
verbosity and the checkpoint settings), and the data's shape, dtype, block layout and a
cheap content fingerprint.  A checkpoint whose fingerprint differs is never resumed and
never overwritten: :class:`CheckpointStore` raises a ValueError naming what differs.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import uuid

import numpy as np

logger = logging.getLogger("dmlkit")

FORMAT = 1
MANIFEST = "manifest.json"


class BlockList(list):
    """A list of arrays (row blocks) the store writes one file per block.

    A block may also be a ``distributed.Future`` of an array: state kept on the cluster
    (ALS factors too big for the driver).  The store then has the workers write those
    blocks, so they never pass through this process (see :meth:`CheckpointStore.save`).
    """


class StoredBlock:
    """One block file of a committed checkpoint, read where it is needed (on a worker,
    for state kept on the cluster): :meth:`CheckpointStore.load` with
    ``read_blocks=False`` gives these instead of arrays."""

    def __init__(self, fs, path):
        self.fs, self.path = fs, path

    @property
    def shared(self) -> bool:
        """Whether other processes (the workers) can read it: not an in-memory store."""
        return not _process_local(self.fs)

    def read(self):
        with self.fs.open(self.path, "rb") as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)

    def __repr__(self):
        return f"StoredBlock({self.path!r})"


def read_block(block):
    """A block's array: a :class:`StoredBlock` is read (a task, where it runs)."""
    return block.read() if isinstance(block, StoredBlock) else block


def is_future(value) -> bool:
    """Whether ``value`` is a ``distributed.Future`` (state held on the cluster)."""
    try:
        from distributed import Future
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(value, Future)


def _process_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "memory" in protocol


def _write_npy(fs, path, block):
    """Write one block as ``.npy`` (a task on the worker holding it)."""
    with fs.open(path, "wb") as f:
        f.write(_npy_bytes(block))
    return path


class CheckpointStore:
    """The checkpoint of one fit at ``url`` (a local path or an fsspec URL).

    Opening it checks, before any work, that the location can be read and written;
    :meth:`bind` then checks that a checkpoint already there is one of this fit.
    """

    def __init__(self, url):
        import fsspec

        self.url = str(url)
        self.fingerprint = None
        try:
            self.fs, self.path = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as e:
            raise ValueError(f"checkpoint={self.url!r} is not a usable location: {e}") from e
        self.path = self.path.rstrip("/") or "/"
        self.manifest = self._read_manifest()
        self._check_writable()

    def bind(self, fingerprint: dict):
        """This fit's fingerprint: a checkpoint there of another fit is a ValueError."""
        self.fingerprint = _jsonable(fingerprint)
        if self.manifest is not None:
            self._check_fingerprint(self.manifest.get("fingerprint", {}))

    # -- reading -------------------------------------------------------------------
    def _join(self, name):
        return f"{self.path}/{name}"

    def _read_manifest(self):
        target = self._join(MANIFEST)
        try:
            if not self.fs.exists(target):
                if self.fs.exists(self.path) and not self.fs.isdir(self.path):
                    raise ValueError(f"checkpoint={self.url!r} is a file, not a folder")
                return None
            with self.fs.open(target, "rb") as f:
                manifest = json.loads(f.read().decode())
        except ValueError:
            raise
        except OSError as e:
            raise ValueError(f"checkpoint={self.url!r} cannot be read: {e}") from e
        if manifest.get("format") != FORMAT:
            raise ValueError(f"checkpoint={self.url!r} holds a checkpoint of format "
                             f"{manifest.get('format')!r}, this dmlkit reads format {FORMAT}; "
                             "remove it or give another path")
        return manifest

    def _check_fingerprint(self, saved: dict):
        """Raise a ValueError naming every item of the fingerprint that differs."""
        ours = self.fingerprint
        diffs = []
        for key in list(ours) + [k for k in saved if k not in ours]:
            a, b = saved.get(key, "<absent>"), ours.get(key, "<absent>")
            if a != b:
                diffs.append(f"{key}: checkpoint has {_short(a)}, this fit has {_short(b)}")
        if diffs:
            raise ValueError(
                f"checkpoint={self.url!r} holds a checkpoint of a different fit, so it is "
                "neither resumed nor overwritten. What differs:\n  " + "\n  ".join(diffs)
                + "\nGive another checkpoint path, or remove this one to start afresh.")

    def _check_writable(self):
        probe = self._join(f".write-test-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            with self.fs.open(probe, "wb") as f:
                f.write(b"dmlkit")
            self.fs.rm(probe)
        except (OSError, NotImplementedError) as e:
            raise ValueError(f"checkpoint={self.url!r} cannot be written: {e}") from e

    @property
    def finished(self) -> bool:
        return bool(self.manifest and self.manifest.get("finished"))

    @property
    def step(self) -> int:
        """The step of the committed checkpoint (0 when there is none)."""
        return 0 if self.manifest is None else int(self.manifest["step"])

    def load(self, read_blocks=True):
        """The committed state (a dict; BlockList values come back as lists of arrays,
        or of :class:`StoredBlock` without ``read_blocks``), or None when there is no
        checkpoint yet."""
        if self.manifest is None:
            return None
        files = self.manifest["files"]
        try:
            with self.fs.open(self._join(files["state"]), "rb") as f:
                state = pickle.loads(f.read())
            for name, names in files["blocks"].items():
                state[name] = BlockList(self._read_array(n) if read_blocks else
                                        self.stored(n) for n in names)
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"checkpoint={self.url!r} of step {self.step} cannot be read: "
                             f"{e}") from e
        return state

    def stored(self, name):
        """The block file ``name`` of this checkpoint, to be read where it is needed."""
        return StoredBlock(self.fs, self._join(name))

    def _read_array(self, name):
        with self.fs.open(self._join(name), "rb") as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)

    # -- writing -------------------------------------------------------------------
    def _write(self, name, data: bytes):
        with self.fs.open(self._join(name), "wb") as f:
            f.write(data)

    def save(self, step: int, state: dict, *, finished=False):
        """Commit ``state`` as the checkpoint of ``step`` (atomically, see the module)."""
        if self.fingerprint is None:
            raise RuntimeError("CheckpointStore.bind must be called before save")
        tag = f"{step}-{uuid.uuid4().hex[:8]}"
        small = {k: v for k, v in state.items() if not isinstance(v, BlockList)}
        files = {"state": f"state-{tag}.pkl", "blocks": {}}
        tmp = f".{MANIFEST}.{tag}.tmp"
        written = []  # names of this save's files, each listed before it is written

        def write(name, data):
            written.append(name)
            self._write(name, data)

        try:
            write(files["state"], pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL))
            for name, blocks in state.items():
                if not isinstance(blocks, BlockList):
                    continue
                names = files["blocks"][name] = []
                remote = []
                for i, block in enumerate(blocks):
                    names.append(f"{name}-{tag}-{i}.npy")
                    if is_future(block):
                        remote.append((names[-1], block))
                        written.append(names[-1])
                        continue
                    write(names[-1], _npy_bytes(block))
                self._write_remote(remote)
            manifest = {"format": FORMAT, "step": int(step), "finished": bool(finished),
                        "fingerprint": self.fingerprint, "files": files}
            write(tmp, json.dumps(manifest, indent=1).encode())
            self.fs.mv(self._join(tmp), self._join(MANIFEST))  # the commit
        except (OSError, NotImplementedError) as e:
            self._remove(written)
            kept = (f"the checkpoint of step {self.step} is intact" if self.manifest
                    else "no earlier checkpoint exists")
            raise OSError(f"writing the checkpoint of step {step} to {self.url!r} failed "
                          f"({e}); {kept}") from e
        old, self.manifest = self.manifest, manifest
        if old is not None:
            self._remove(_file_list(old["files"]))
        logger.debug("dmlkit: checkpoint of step %d committed to %s", step, self.url)

    def _write_remote(self, blocks):
        """Write blocks held on the cluster (``(name, future)`` pairs): each by the worker
        that holds it, or, for a store only this process sees (``memory://``), fetched
        here one at a time.  A location the workers write to but this process does not
        see (a local path on a cluster of other machines) is an OSError naming it."""
        if not blocks:
            return
        if _process_local(self.fs):
            for name, future in blocks:
                self._write(name, _npy_bytes(future.result()))
            return
        client = blocks[0][1].client
        tasks = [client.submit(_write_npy, self.fs, self._join(name), future, pure=False,
                               key=f"dmlkit-checkpoint-write-{uuid.uuid4().hex}")
                 for name, future in blocks]
        client.gather(tasks)
        missing = [name for name, _ in blocks if not self.fs.exists(self._join(name))]
        if missing:
            raise OSError(f"the workers wrote {len(missing)} block file(s) (e.g. "
                          f"{missing[0]!r}) this process does not see at {self.url!r}: a "
                          "checkpoint of state kept on the cluster must be a location the "
                          "workers and this process share (a shared file system, or an "
                          "object store URL such as s3://)")

    def _remove(self, names):
        for name in names:
            try:
                self.fs.rm(self._join(name))
            except (OSError, FileNotFoundError):
                pass  # a leftover file is harmless: no manifest refers to it


def _npy_bytes(block):
    buf = io.BytesIO()
    np.save(buf, np.asarray(block), allow_pickle=False)
    return buf.getvalue()


def _file_list(files):
    return [files["state"]] + [n for names in files["blocks"].values() for n in names]


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _short(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
