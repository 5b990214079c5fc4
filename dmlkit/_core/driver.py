"""The iteration driver: one graph per pass, computed on the active client or locally.

A pass is ``kernel(block_i, state)`` for every row block followed by a fixed-order tree
reduction.  The model state enters the graph as one key that every block task depends
on, so a distributed scheduler ships it once per worker and it has lineage.  The driver
keeps the reduced state between passes, so iteration i's graph never contains iteration
i-1's: a worker lost late in a fit costs one pass's tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from dmlkit._config import get_config
from dmlkit._core.blocks import RowBlocks, estimate_nbytes
from dmlkit._core.client import (
    compute,
    get_client_or_none,
    local_scheduler,
    memory_per_thread,
    scheduler_loss,
    solve_here,
    total_memory,
    total_threads,
    wait_for,
)
from dmlkit._core.reduce import tree_reduce, tree_reduce_local

logger = logging.getLogger("dmlkit")

CACHE_CHOICES = ("auto", True, False)
INLINE_STATE_BYTES = 256 * 1024


def check_cache_param(cache):
    if cache not in CACHE_CHOICES or not isinstance(cache, (str, bool)):
        raise ValueError(f"cache must be 'auto', True or False, got {cache!r}.")


class Driver:
    """Runs the passes of one fit.

    Parameters
    ----------
    family : str
        Task-key prefix (``dmlkit-<family>-<step>``), shown on the dashboard.
    blocks : RowBlocks or None
        The normalised input.  None for a fit whose data is laid out otherwise (ALS's
        user and item blocks): the driver then runs and persists the graphs it is given.
    cache : 'auto', True or False
        Persist the blocks (keeping lineage) or stream them from their source each pass.
    local : bool or None
        Run here on dask's threaded scheduler, not on the active cluster (inside a
        task: in the task's own thread).  None: decided from the blocks' size by
        :func:`~dmlkit._core.client.solve_here` (lazy blocks are then fetched here once).
    """

    def __init__(self, family: str, blocks: RowBlocks | None = None, *, cache="auto",
                 verbose=0, local=None):
        check_cache_param(cache)
        self.family = family
        if local is None:
            local = blocks is not None and solve_here(lambda: _blocks_nbytes(blocks))
            if local:
                logger.info("dmlkit-%s: %d rows, solved in this process (local-fit-bytes)",
                            family, blocks.n_samples)
                if blocks.lazy:
                    blocks = _fetched(blocks)
        self.client = None if local else get_client_or_none()
        # without a client: dask's default (threads, or a test's choice); local: threads
        # here even where a distributed client is the default; inside a task: that
        # task's thread (see dmlkit._core.client)
        self._scheduler = local_scheduler() or ("threads" if local else None)
        self.retries = int(get_config("retries"))
        self.verbose = verbose
        # what a fit can do after losing the scheduler (set by the fit loop)
        self.lost_note = ("Fit again once the cluster is back; with checkpoint= a fit "
                          "resumes from its last checkpoint instead of starting over.")
        self.blocks = blocks
        self._token = uuid.uuid4().hex[:8]
        self._pass = 0
        self._nthreads = None  # the cluster's threads per worker, asked once
        self._held = None  # the last pass's futures (see _submitted)
        self._futures = None  # the persisted blocks' futures (see _submitted)
        self.threads_per_task = 1
        if blocks is None:
            self.cached = cache is not False
            return
        self.cached = self._should_cache(cache)
        X, w, y = blocks.X, blocks.sample_weight, blocks.y
        if self.cached:
            X, w, y = self._persist(X, w, y)
            logger.info("dmlkit-%s: persisted %d blocks (%.1f MiB)", family,
                        len(X.chunks[0]), X.nbytes / 2**20)
        else:
            logger.info("dmlkit-%s: streaming %d blocks from their source every pass",
                        family, len(X.chunks[0]))
        # Keep the persisted collections: their futures hold the blocks on the cluster.
        self.X = X
        self.sample_weight = w
        self.y = y
        self.x_parts = list(X.to_delayed().ravel())
        self.w_parts = list(w.to_delayed().ravel()) if w is not None else [None] * len(self.x_parts)
        self.y_parts = list(y.to_delayed().ravel()) if y is not None else [None] * len(self.x_parts)
        self.offsets = blocks.row_offsets
        n_blocks = len(self.x_parts)
        # Threads each block task may use inside its kernel (numba prange).
        self.threads_per_task = max(1, total_threads(self.client) // max(1, n_blocks))
        # One in-memory block and no cluster: passes call the task directly.  A dask
        # graph per pass costs ~1.5 ms, 100x a small SGD epoch (a search's many fits).
        self._direct = None
        if self.client is None and not blocks.lazy and n_blocks == 1:
            self._direct = dict(zip(
                ("x", "w", "y"),
                dask.compute(self.x_parts[0], self.w_parts[0], self.y_parts[0],
                             scheduler="sync"), strict=True))

    # -- caching -------------------------------------------------------------------
    def _should_cache(self, cache) -> bool:
        if cache is True or cache is False:
            return cache
        if not self.blocks.lazy:
            return True  # the data already is in this process's memory
        return self.fits_in_memory(_blocks_nbytes(self.blocks))

    def fits_in_memory(self, nbytes) -> bool:
        """Whether ``nbytes`` of persisted data stays under ``cache-fraction`` of the
        cluster's (or this machine's) memory: what ``cache='auto'`` decides on."""
        return nbytes <= float(get_config("cache-fraction")) * total_memory(self.client)

    def total_threads(self) -> int:
        return total_threads(self.client)

    def block_bytes(self, build_factor) -> float:
        """Bytes per block a family that builds its own blocks aims at: the
        ``block-size`` setting, or less on workers whose memory per thread is under
        ``build_factor`` times it (building a block takes that many times its bytes at
        its peak, and a worker also holds its imports and other blocks)."""
        size = dask.utils.parse_bytes(get_config("block-size"))
        return min(size, memory_per_thread(self.client) / build_factor)

    def _persist(self, *arrays):
        """Persist the non-None arrays together; returns them in the same positions.  On
        a cluster, block i of every array is then held where block i of the first is
        (see :meth:`_colocate`)."""
        present = [a for a in arrays if a is not None]
        if self.client is not None:
            with self._guard():
                done = self.client.persist(present)
                if len(done) > 1:
                    done = self._colocate(done)
            done = iter(done)
        else:
            done = iter(dask.persist(*present, scheduler=self._scheduler))
        return tuple(None if a is None else next(done) for a in arrays)

    def _colocate(self, arrays):
        """Persisted row-blocked arrays with block i of each on the worker that holds
        block i of the first.

        The scheduler places the blocks of X, y and the weights independently, so a
        block task would fetch its targets from another worker in every pass (a
        transfer on the pass's critical path).  A block held elsewhere gets a copy made
        where its X block is (a preference, not a restriction: after a loss it can be
        recomputed anywhere), whose lineage is the original block's.
        """
        from distributed import wait

        client = self.client
        keyed = [_block_futures(a) for a in arrays]
        wait([f for fs in keyed for f in fs])
        where = client.who_has([f for fs in keyed for f in fs])
        home = [where.get(f.key, ()) for f in keyed[0]]
        out = [arrays[0]]
        for a, fs in zip(arrays[1:], keyed[1:], strict=True):
            moves = {}  # worker -> block indices to copy there
            for i, f in enumerate(fs):
                if home[i] and not set(home[i]) & set(where.get(f.key, ())):
                    moves.setdefault(home[i][0], []).append(i)
            if not moves:
                out.append(a)
                continue
            fs = list(fs)
            copy = dask.delayed(_same, pure=False)
            for worker, idx in moves.items():
                moved = client.compute([copy(fs[i]) for i in idx], workers=[worker],
                                       allow_other_workers=True)
                for i, m in zip(idx, moved, strict=True):
                    fs[i] = m
            name = f"dmlkit-colocated-{uuid.uuid4().hex}"
            tail = (0,) * (a.ndim - 1)
            dsk = {(name, i) + tail: f for i, f in enumerate(fs)}
            # persisted: its blocks are keys the cluster holds, not aliases of the
            # copies that every pass would compute again
            out.append(client.persist(da.Array(dsk, name, a.chunks, dtype=a.dtype,
                                               meta=a._meta)))
        wait([f for b in out[1:] for f in _block_futures(b)])
        return out

    # -- graph building ------------------------------------------------------------
    def key(self, step: str) -> str:
        self._pass += 1
        return f"dmlkit-{self.family}-{step}-{self._token}-{self._pass}"

    def shared(self, value, step="state"):
        """Model state every block task of a pass needs.

        Large state enters the graph as one key, which the scheduler ships once per worker.
        Small state (under ``INLINE_STATE_BYTES``) travels inside each task's arguments:
        it still has lineage (the task holds it), and the pass does not wait for one
        worker to hold the key and another to fetch it (~10 ms of a ~30 ms pass on a
        2-worker LocalCluster, measured with KMeans on 4000 x 32).
        """
        if _state_nbytes(value) < INLINE_STATE_BYTES:
            return value
        return dask.delayed(value, name=self.key(step), pure=False)

    def map_blocks(self, fn, *shared, step, per_block=None, blocks=None, with_y=False,
                   with_index=False):
        """``fn(x_block, w_block, offset, [y_block], [block index], *per_block_i, *shared,
        n_threads=...)`` per block: every task gets its block's rows, weights (or None)
        and the global index of its first row; ``with_y`` adds the block's targets and
        ``with_index`` its index (per-block random streams are keyed by it).

        ``blocks`` restricts the pass to those block indices.
        """
        key = self.key(step)
        func = dask.delayed(fn, pure=False)
        out = []
        idx = range(len(self.x_parts)) if blocks is None else blocks
        for i in idx:
            extra = self._block_args(i, with_y, with_index)
            if per_block is not None:
                extra += tuple(per_block[i])
            out.append(func(self.x_parts[i], self.w_parts[i], int(self.offsets[i]), *extra,
                            *shared, n_threads=self.threads_per_task,
                            dask_key_name=f"{key}-{i}"))
        return out

    def _block_args(self, i, with_y, with_index):
        return (((self.y_parts[i],) if with_y else ()) + ((i,) if with_index else ()))

    def reduce(self, parts, combine, step, split_every=8):
        return tree_reduce(parts, combine, split_every=split_every, name=self.key(step + "-reduce"))

    def map_reduce(self, fn, combine, *shared, step, per_block=None, local_reduce=True,
                   with_y=False, with_index=False):
        """Map ``fn`` over all blocks (as :meth:`map_blocks`), reduce in the fixed tree,
        compute; returns the value.

        With ``local_reduce`` (for small partial results) the block results come back to
        the client and the same fixed tree is applied there: the same bits as the tree on
        the workers, without the transfers between workers.
        """
        if self._direct is not None:
            # the one block's result is the tree's result (no combine), as below
            extra = self._block_args(0, with_y, with_index)
            if per_block is not None:
                extra += tuple(per_block[0])
            return fn(self._direct["x"], self._direct["w"], int(self.offsets[0]),
                      *[self._value(a) for a in extra], *[self._value(a) for a in shared],
                      n_threads=self.threads_per_task)
        if local_reduce:
            groups = self._groups()
            if groups is not None:
                return tree_reduce_local(self._grouped(fn, groups, shared, step, per_block,
                                                       with_y, with_index), combine)
        parts = self.map_blocks(fn, *shared, step=step, per_block=per_block, with_y=with_y,
                                with_index=with_index)
        if local_reduce:
            return tree_reduce_local(self.compute(*parts), combine)
        return self.compute(self.reduce(parts, combine, step))[0]

    def _groups(self):
        """The tasks of a pass over blocks persisted on a cluster (lists of block
        indices, in block order); None without a cluster or persisted blocks.

        Each task costs the scheduler and the workers a round of messages, so a pass
        over more blocks than the cluster has threads is one task per worker thread,
        over the blocks there (measured on a 2-worker LocalCluster, 8 blocks: a
        logistic-regression pass from 106 to about 90 ms); otherwise a task per block.
        Where a block is lost (being recomputed), it is a group of its own.
        """
        if self.client is None or not self.cached or self._direct is not None:
            return None
        n = len(self.x_parts)
        with self._guard():
            if self._nthreads is None:
                self._nthreads = self.client.nthreads()
            if n <= sum(self._nthreads.values()):
                return [[i] for i in range(n)]
            futures = _block_futures(self.X)
            where = self.client.who_has(futures)
        by_worker, alone = {}, []
        for i, f in enumerate(futures):
            held = where.get(f.key, ())
            if held:
                by_worker.setdefault(held[0], []).append(i)
            else:
                alone.append([i])
        groups = []
        for worker, idx in by_worker.items():
            t = max(1, min(int(self._nthreads.get(worker, 1)), len(idx)))
            cuts = np.linspace(0, len(idx), t + 1).round().astype(int)
            groups += [idx[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        return groups + alone

    def _grouped(self, fn, groups, shared, step, per_block, with_y, with_index):
        """:meth:`map_blocks`'s block results (in block order) from one task per group
        of blocks: the same calls, the same values.

        With state small enough to travel inline (no Delayed argument), the tasks are
        submitted on the blocks' futures: building and converting a Delayed graph cost
        the client 3-5 ms a pass, while the workers waited."""
        key = self.key(step)
        lazy = [a for a in shared if isinstance(a, Delayed)]
        if per_block is not None:
            lazy += [a for i in range(len(per_block)) for a in per_block[i]
                     if isinstance(a, Delayed)]
        if not lazy:
            return self._submitted(fn, groups, shared, key, per_block, with_y, with_index)
        task = dask.delayed(_run_blocks, pure=False)
        parts = (self.x_parts, self.w_parts, self.y_parts)
        tasks = [task(fn, self._calls(idx, parts, per_block, with_y, with_index), shared,
                      self.threads_per_task, dask_key_name=f"{key}-g{j}")
                 for j, idx in enumerate(groups)]
        return _ungroup(groups, self.compute(*tasks), len(self.x_parts))

    def _calls(self, idx, parts, per_block, with_y, with_index):
        """The (x, w, offset, extra args) of blocks ``idx``, from ``parts``: the blocks'
        (X, weights, y) as Delayed or as futures."""
        x, w, y = parts
        calls = []
        for i in idx:
            extra = ((y[i],) if with_y else ()) + ((i,) if with_index else ())
            if per_block is not None:
                extra += tuple(per_block[i])
            calls.append((x[i], w[i], int(self.offsets[i]), extra))
        return calls

    def _submitted(self, fn, groups, shared, key, per_block, with_y, with_index):
        if self._futures is None:
            self._futures = tuple(_block_futures(a) if a is not None else
                                  [None] * len(self.x_parts)
                                  for a in (self.X, self.sample_weight, self.y))
        client = self.client
        with self._guard():
            futures = [client.submit(_run_blocks, fn,
                                     self._calls(idx, self._futures, per_block, with_y,
                                                 with_index),
                                     shared, self.threads_per_task, key=f"{key}-g{j}",
                                     pure=False, retries=self.retries)
                       for j, idx in enumerate(groups)]
            # the last pass's (small) results are released after this pass is sent:
            # distributed batches a client's messages at most every 10 ms, and a release
            # sent as the last pass ended would hold this one back
            self._held = futures
            results = client.gather(futures)
        return _ungroup(groups, results, len(self.x_parts))

    def _value(self, a):
        """A task argument's value on the direct path: the block's y or weights for
        their Delayed, shared state computed here, anything else as it is."""
        if not isinstance(a, Delayed):
            return a
        if a is self.y_parts[0]:
            return self._direct["y"]
        if a is self.w_parts[0]:
            return self._direct["w"]
        return dask.compute(a, scheduler="sync")[0]

    # -- execution -----------------------------------------------------------------
    def compute(self, *objs):
        """Compute Delayed objects (a tuple of results), with retries on a cluster."""
        if self.client is not None:
            with self._guard():
                futures = self.client.compute(list(objs), retries=self.retries)
                return tuple(self.client.gather(futures))
        return dask.compute(*objs, scheduler=self._scheduler)

    def _guard(self):
        return scheduler_loss(self.client, self.lost_note)

    def submit(self, *objs):
        """Start computing Delayed objects: futures on a cluster (collect them with
        :meth:`gather`, or pass them to further tasks), the values without one."""
        if self.client is not None:
            with self._guard():
                return self.client.compute(list(objs), retries=self.retries)
        return list(dask.compute(*objs, scheduler=self._scheduler))

    def gather(self, handles):
        """The values of :meth:`submit`'s handles, in order."""
        if self.client is not None:
            with self._guard():
                return list(self.client.gather(handles))
        return list(handles)

    def wait(self, handles):
        """Block until :meth:`submit`'s handles are computed (a task's error is raised
        here): state kept on the cluster is done before a step ends."""
        if self.client is None:
            return
        with self._guard():
            wait_for(self.client, handles)

    def persist(self, objs):
        """Persist a list of Delayed (intermediate state with lineage)."""
        if self.client is not None:
            with self._guard():
                return list(self.client.persist(list(objs), retries=self.retries))
        return list(dask.persist(*objs, scheduler=self._scheduler))

    def block_state(self, update):
        """Per-block state of this fit's passes (see :class:`BlockState`)."""
        return BlockState(self, update)

    def progress(self, total, desc):
        """A tqdm.auto progress bar when ``verbose`` (works in notebooks), else a no-op."""
        if self.verbose:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=desc, leave=True)
        return _NoProgress()


class BlockState:
    """State a fit keeps per row block between passes (k-means||: each row's distance to
    its nearest chosen centre), owned by the driver.

    ``update(x, state, *args, n_threads=) -> state`` changes a block's state (``state``
    is None at first); ``read(x, w, offset, block, state, *args, n_threads=)`` computes a
    block's result from it.  With cached input the states live beside their blocks on
    the cluster, persisted with lineage (a lost worker's states are recomputed from the
    previous ones).  With streamed input nothing per row outlives a pass, so an
    out-of-core fit keeps bounded memory: every pass replays the updates so far, in
    order, from None, which gives the same bits.
    """

    def __init__(self, driver, update):
        self.driver = driver
        self.update = update
        self.keep = bool(driver.cached)
        self.states = [None] * len(driver.x_parts)
        self.log = []  # every update's arguments, in order (streamed input)

    def map(self, read, *args, step, update=None, record=True):
        """One pass over every block: apply ``update`` (a tuple of the update's
        arguments, or None) to the state, then ``read(..., *args)``; returns the block
        results (Delayed).  ``record=False``: the updated state is not kept (a last
        pass)."""
        d = self.driver
        if not self.keep:
            log = self.log + [update] if update is not None else self.log
            if record:
                self.log = log
            return d.map_blocks(_replay_then_read, self.update, d.shared(list(log), step + "-log"),
                                read, *args, step=step, with_index=True)
        shared = None if update is None else d.shared(update, step + "-update")
        outs = d.map_blocks(_update_then_read, self.update, shared, read, *args, step=step,
                            with_index=True, per_block=[(s,) for s in self.states])
        if update is not None and record:
            outs = d.persist(outs)
            self.states = [dask.delayed(_first)(o) for o in outs]
        return [dask.delayed(_second)(o) for o in outs]


def _run_blocks(fn, calls, shared, n_threads):
    """A group's block results: ``fn`` on each block in turn, as its own task would."""
    return [fn(x, w, offset, *extra, *shared, n_threads=n_threads)
            for x, w, offset, extra in calls]


def _ungroup(groups, results, n):
    """The block results in block order, from the groups' lists of results."""
    parts = [None] * n
    for idx, found in zip(groups, results, strict=True):
        for i, r in zip(idx, found, strict=True):
            parts[i] = r
    return parts


def _same(block):
    return block


def _block_futures(arr):
    """The futures of a persisted dask array's blocks, in block order (a block's key, or
    the future its graph holds for it: an array built over futures)."""
    from distributed import Future, futures_of

    graph = arr.__dask_graph__()
    by_key = {f.key: f for f in futures_of(arr)}
    out = []
    for k in dask.core.flatten(arr.__dask_keys__()):
        v = graph.get(k)
        out.append(v if isinstance(v, Future) else by_key[k])
    return out


def _update_then_read(x, w, offset, block, state, update, update_args, read, *args,
                      n_threads=1):
    if update_args is not None:
        state = update(x, state, *update_args, n_threads=n_threads)
    return state, read(x, w, offset, block, state, *args, n_threads=n_threads)


def _replay_then_read(x, w, offset, block, update, log, read, *args, n_threads=1):
    state = None
    for update_args in log:
        state = update(x, state, *update_args, n_threads=n_threads)
    return read(x, w, offset, block, state, *args, n_threads=n_threads)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _blocks_nbytes(blocks: RowBlocks) -> float:
    nbytes = estimate_nbytes(blocks.X)
    for extra in (blocks.sample_weight, blocks.y):
        if extra is not None:
            nbytes += extra.nbytes
    return nbytes


def _fetched(blocks: RowBlocks) -> RowBlocks:
    """Lazy row blocks computed (on the cluster) into this process, the same layout."""
    arrays = [a for a in (blocks.X, blocks.sample_weight, blocks.y) if a is not None]
    parts = [list(a.to_delayed().ravel()) for a in arrays]
    values = iter(compute(*[p for ps in parts for p in ps]))
    out = []
    for a, ps in zip(arrays, parts, strict=True):
        name = f"dmlkit-fetched-{uuid.uuid4().hex}"
        tail = (0,) * (a.ndim - 1)
        dsk = {(name, i) + tail: next(values) for i in range(len(ps))}
        out.append(da.Array(dsk, name, a.chunks, dtype=a.dtype, meta=a._meta))
    out = iter(out)
    X = next(out)
    w = next(out) if blocks.sample_weight is not None else None
    y = next(out) if blocks.y is not None else None
    return dataclasses.replace(blocks, X=X, sample_weight=w, y=y)


def _state_nbytes(value) -> int:
    """Bytes of model state: arrays, numbers and None, also nested in dicts, lists and
    tuples (SGD's state is a dict of small arrays).  Anything else counts as large, so
    it travels as one key."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return 8
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(_state_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_state_nbytes(v) for v in value)
    return INLINE_STATE_BYTES


class _NoProgress:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass
