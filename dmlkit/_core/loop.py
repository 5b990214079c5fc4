"""The fit loop every family's ``fit`` runs through.

A family supplies its state (a dict of arrays and numbers: everything its next
iteration needs) and a step, ``step(state, it) -> (state, Step)``: one iteration's
passes and update.  :class:`FitLoop` owns the rest:

- where the fit runs (:class:`~dmlkit._core.driver.Driver`: local threads, the active
  cluster, or this process for a fit small enough that scheduling would cost more than
  its work, ``dmlkit.local-fit-bytes``);
- the iterations: counting, stopping at ``max_iter`` or when the step converges;
- the progress bar and the ``dmlkit`` logger's per-iteration and resume messages;
- checkpoints: ``checkpoint=`` / ``checkpoint_interval`` of the estimator.  The state
  is saved every ``checkpoint_interval`` iterations and when a run ends, atomically,
  under a fingerprint of the fit (:func:`fit_fingerprint`).  A fit whose checkpoint
  exists resumes from it and ends bit-identical to an uninterrupted fit, because the
  state holds everything the next iteration reads and every pass is deterministic.

What a finished fit leaves: its checkpoint is kept, marked finished.  Fitting the same
estimator on the same data with that checkpoint again returns the same model without
iterating (only the closing passes, such as KMeans's labels, run again); a different
fit there raises a ValueError and leaves it untouched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import weakref
from numbers import Integral

import dask
import numpy as np
from dask.base import tokenize

from dmlkit._core.blocks import RowBlocks
from dmlkit._core.checkpoint import BlockList, CheckpointStore, StoredBlock, is_future, read_block
from dmlkit._core.dispatch import to_numpy
from dmlkit._core.driver import Driver
from dmlkit._core.params import Interval

logger = logging.getLogger("dmlkit")

# every iterative estimator's checkpoint parameters (merged into its constraints table)
CHECKPOINT_CONSTRAINTS = {
    "checkpoint": [str, os.PathLike, None],
    "checkpoint_interval": [Interval(Integral, 1, None, closed="left")],
}
# parameters that do not change the model: a resumed fit may differ in them
NOT_IN_FINGERPRINT = ("verbose", "checkpoint", "checkpoint_interval")
SAMPLE_ROWS = 64  # rows per block hashed into the content fingerprint of in-memory data


@dataclasses.dataclass
class Step:
    """What one call of a family's step did.

    counted : whether it was an iteration (False: a pass redone, as SGD's early stopping
        does when it drops a pass for every model).
    converged : the fit (or this run of it) is done.
    metrics : numbers for the progress bar and the debug log (``inertia=...``).
    """

    counted: bool = True
    converged: bool = False
    metrics: dict = dataclasses.field(default_factory=dict)


def fit_fingerprint(estimator, blocks: RowBlocks | None = None, *, compute=None,
                    **extra) -> dict:
    """What makes two fits the same fit: a flat dict, compared item by item.

    The estimator's class and parameters (but not verbosity or the checkpoint
    settings); for row blocks, the data's shape, dtype, block layout and a content
    fingerprint that costs no pass over the data: a hash of up to SAMPLE_ROWS evenly
    spaced rows of every block of in-memory data, and of the first and last blocks of
    lazy data (only the sampled rows travel; ``compute`` computes them where the fit
    runs).  A dask collection's name cannot serve: ``read_parquet`` names the same
    files differently in every process.  ``extra`` adds family items (ALS: its id
    counts; SGD: the starting model of a warm start).
    """
    cls = type(estimator)
    fp = {"estimator": f"{cls.__module__}.{cls.__qualname__}"}
    for name, value in sorted(estimator.get_params(deep=False).items()):
        if name not in NOT_IN_FINGERPRINT:
            fp[f"parameter {name}"] = _param_token(value)
    if blocks is not None:
        X = blocks.X
        fp["data shape"] = [int(s) for s in X.shape]
        fp["data dtype"] = str(X.dtype)
        fp["data sparse"] = bool(blocks.sparse)
        rows = [int(c) for c in X.chunks[0]]
        fp["block layout"] = (f"{len(rows)} blocks of rows {rows}" if len(rows) <= 16 else
                              f"{len(rows)} blocks, layout {tokenize(rows)}")
        fp.update(_content_hashes(blocks, compute))
    for key, value in extra.items():
        fp[key] = _param_token(value)
    return fp


def _param_token(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return f"{type(value).__name__} {tokenize(value)}"


def _sample_rows(block):
    """Up to SAMPLE_ROWS evenly spaced rows of a block (dense, on the host) and its
    number of rows."""
    n = block.shape[0]
    idx = np.unique(np.linspace(0, max(0, n - 1), min(n, SAMPLE_ROWS)).astype(np.int64))
    rows = block[idx]
    if hasattr(rows, "toarray"):
        rows = rows.toarray()
    return np.ascontiguousarray(to_numpy(rows)), n


def _content_hashes(blocks: RowBlocks, compute=None) -> dict:
    """``{"<what> content": hash}`` of X, y and sample_weight, sampled in one
    computation (lazy inputs read from one source are read once)."""
    named = [(what, arr) for what, arr in (("data", blocks.X), ("y", blocks.y),
                                           ("sample_weight", blocks.sample_weight))
             if arr is not None]
    tasks = []
    for _, arr in named:
        parts = list(arr.to_delayed().ravel())
        if blocks.lazy:
            parts = parts[:1] + parts[1:][-1:]
        tasks.append([dask.delayed(_sample_rows, pure=True)(p) for p in parts])
    flat = [t for ts in tasks for t in ts]
    if blocks.lazy and compute is not None:
        values = iter(compute(*flat))
    else:  # in-memory blocks: views, sampled right here
        values = iter(dask.compute(*flat, scheduler="sync"))
    out = {}
    for (what, _), ts in zip(named, tasks, strict=True):
        h = hashlib.blake2b(digest_size=16)
        for _ in ts:
            rows, n = next(values)
            h.update(rows.tobytes())
            h.update(str(n).encode())
        out[f"{what} content"] = ("sampled rows of the first and last blocks " if blocks.lazy
                                  else "sampled rows of every block ") + h.hexdigest()
    return out


class FitLoop:
    """Runs one fit: placement, iterations, progress, logging and checkpoints.

    Parameters
    ----------
    estimator : the estimator being fitted (its ``checkpoint``, ``checkpoint_interval``
        and ``verbose`` are read).
    family : task-key prefix and logger tag (``kmeans``, ``sgd``, ``als``).
    blocks : RowBlocks or None
        The normalised input; None for a family that lays out its data otherwise (ALS):
        it then calls :meth:`bind` with its own fingerprint once it knows its data.
    cache, local : passed to :class:`~dmlkit._core.driver.Driver` (``local=None``: the
        core decides from the data's size, see ``dmlkit.local-fit-bytes``).
    fingerprint : extra fingerprint items (see :func:`fit_fingerprint`).
    """

    def __init__(self, estimator, family, blocks=None, *, cache="auto", local=None,
                 fingerprint=None, driver=True):
        self.estimator = estimator
        self.family = family
        self.verbose = getattr(estimator, "verbose", 0)
        url = getattr(estimator, "checkpoint", None)
        self.interval = int(getattr(estimator, "checkpoint_interval", 1) or 1)
        self.store = None
        self.steps = 0  # iterations done in this fit (all runs), resumed ones included
        self.resumed_from = 0
        self._saved = None
        self._bar = None
        if url is not None:
            self.store = CheckpointStore(url)  # the location is checked before any work
        self.driver = None
        if driver:
            self.start_driver(blocks, cache=cache, local=local)
        if self.store is not None and (blocks is not None or fingerprint is not None):
            # lazy rows are sampled from the driver's blocks: persisted ones are not read
            # from their source again
            d = self.driver
            if d is not None and blocks is not None and blocks.lazy:
                blocks = dataclasses.replace(blocks, X=d.X, y=d.y, sample_weight=d.sample_weight)
            self.bind(fit_fingerprint(estimator, blocks, compute=d and d.compute,
                                      **(fingerprint or {})))

    def start_driver(self, blocks=None, *, cache="auto", local=None):
        """Build the fit's :class:`~dmlkit._core.driver.Driver` (``__init__`` does, unless
        given ``driver=False``: a family that knows where it runs only after a first look
        at its data, as ALS, calls this then)."""
        self.driver = Driver(self.family, blocks, cache=cache, verbose=self.verbose,
                             local=local)
        if self.store is not None:
            # through a weak reference: the loop holds the driver, and a cycle back would
            # keep the driver's persisted blocks on the cluster until Python's cyclic
            # garbage collector runs
            note = weakref.WeakMethod(self._resume_note)
            self.driver.lost_note = lambda: note()() if note() is not None else ""
        return self.driver

    def _guard(self):
        """The driver's translation of a lost scheduler (see its ``_guard``)."""
        return self.driver._guard() if self.driver is not None else contextlib.nullcontext()

    def _resume_note(self):
        """The driver's advice after losing the scheduler, read when it happens."""
        done = (f"holds iteration {self.store.step}" if self.store.manifest is not None
                else "holds no iteration yet")
        return (f"The checkpoint at {self.store.url!r} {done}: fit again with the same "
                "checkpoint once the cluster is back, and the fit resumes from there.")

    # -- checkpoints ---------------------------------------------------------------
    def bind(self, fingerprint: dict, read_blocks=True):
        """Compare the checkpoint there (if any) with this fit's fingerprint and load it
        (without ``read_blocks``, state kept as row blocks is left in the store, as
        :class:`~dmlkit._core.checkpoint.StoredBlock` s: see :meth:`on_cluster`)."""
        if self.store is None:
            return
        self.store.bind(fingerprint)
        self._saved = self.store.load(read_blocks=read_blocks)
        if self._saved is not None:
            self.steps = self.resumed_from = self.store.step
            logger.info("dmlkit-%s: resuming from the checkpoint of iteration %d at %s%s",
                        self.family, self.steps, self.store.url,
                        " (a finished fit)" if self.store.finished else "")

    def restore(self):
        """The saved ``(state, it, done)`` to resume from, or None for a fresh start."""
        saved, self._saved = self._saved, None
        if saved is None:
            return None
        state = dict(saved["state"], **{k: saved[k] for k in saved.get("blocks", ())})
        return state, int(saved["it"]), bool(saved["done"])

    def save(self, state, it=0, done=False):
        """Checkpoint ``state`` now (a family calls it where a run's state is new, e.g.
        after an initialisation); :meth:`iterate` saves on its own."""
        if self.store is not None:
            with self._guard():  # state kept on the cluster is written by the workers
                self.store.save(self.steps, _record(state, it, done))

    def on_cluster(self, blocks, name):
        """Row blocks (arrays, or a checkpoint's :class:`StoredBlock` s) as futures on
        the driver's cluster: a stored block is read by a worker (its lineage is that
        read), an array is shipped in its task."""
        d = self.driver
        key = d.key(name)
        read = dask.delayed(read_block, pure=False)
        tasks = []
        for i, block in enumerate(blocks):
            if isinstance(block, StoredBlock) and not block.shared:
                block = block.read()  # a store only this process sees
            tasks.append(read(block, dask_key_name=f"{key}-{i}"))
        return BlockList(d.submit(*tasks))

    def _reroot(self, state):
        """State kept on the cluster as row blocks, once saved, is read back from the
        checkpoint: the blocks' lineage becomes one read, so a worker lost later costs
        the iterations since this checkpoint, not the whole fit (Spark's
        ``checkpointInterval``).  A store only this process sees keeps the lineage."""
        files = self.store.manifest["files"]["blocks"]
        out = dict(state)
        for name, blocks in state.items():
            if not (isinstance(blocks, BlockList) and blocks and is_future(blocks[0])):
                continue
            stored = [self.store.stored(n) for n in files[name]]
            if stored[0].shared:
                out[name] = self.on_cluster(stored, name)
        return out

    # -- iterations ----------------------------------------------------------------
    def iterate(self, step, state, *, max_iter, start=0, done=False, desc=None):
        """Run ``step(state, it)`` for ``it = start, start + 1, ...`` until it converges
        or ``max_iter`` iterations are done; returns ``(state, n_iter, converged)``."""
        desc = desc or type(self.estimator).__name__
        it, converged = start, done
        if done or start >= max_iter:
            return state, it, done
        bar = self._bar = self.driver.progress(max_iter, desc)
        if start:
            bar.update(start)
        try:
            while it < max_iter:
                state, info = step(state, it)
                if not info.counted:
                    if info.converged:
                        converged = True
                        break
                    continue
                it += 1
                self.steps += 1
                converged = bool(info.converged)
                bar.update(1)
                if info.metrics:
                    if self.verbose:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in info.metrics.items()})
                    if logger.isEnabledFor(logging.DEBUG):
                        logger.debug("dmlkit-%s iteration %d %s", self.family, it, " ".join(
                            f"{k} {v:.6g}" for k, v in info.metrics.items()))
                last = converged or it >= max_iter
                if self.store is not None and (last or self.steps % self.interval == 0):
                    self.save(state, it, done=last)
                    if not last:
                        state = self._reroot(state)
                if converged:
                    _complete_bar(bar, it)
                    break
        finally:
            bar.close()
            self._bar = None
        return state, it, converged

    def say(self, message):
        """A scikit-learn-style verbose message on stdout (through the bar: it stays whole)."""
        if not self.verbose:
            return
        write = getattr(self._bar, "write", None)
        if write is not None:
            import sys

            write(message, file=sys.stdout)
        else:
            print(message)

    def finish(self, state=None):
        """Record where the fit resumed (``resumed_from_iter_``); with ``state``, mark
        the checkpoint finished with it."""
        self.estimator.resumed_from_iter_ = int(self.resumed_from)
        if self.store is not None and state is not None:
            with self._guard():
                self.store.save(self.steps, _record(state, 0, True), finished=True)


def _record(state, it, done):
    """What a checkpoint stores: the state's BlockLists at the top level (the store
    writes those one file per block), the rest of it, where the loop was."""
    blocks = {k: v for k, v in state.items() if isinstance(v, BlockList)}
    if set(blocks) & {"state", "it", "done", "blocks"}:
        raise ValueError(f"state keys {sorted(blocks)} clash with the checkpoint record's")
    rest = {k: v for k, v in state.items() if k not in blocks}
    return {**blocks, "state": rest, "it": int(it), "done": bool(done),
            "blocks": list(blocks)}


def _complete_bar(bar, n):
    """A converged run's progress bar ends complete: its total becomes the iterations run."""
    if not hasattr(bar, "total"):
        return  # no bar (verbose=0)
    bar.total = n
    children = getattr(getattr(bar, "container", None), "children", None)
    if children is not None and len(children) > 1:  # tqdm.notebook's widget
        children[1].max = n
    bar.refresh()
