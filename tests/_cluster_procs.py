"""Real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1 for the slow tests.

:class:`ProcCluster` starts one scheduler and N single-threaded workers as separate OS
processes, each the leader of its own process group (``start_new_session=True``), so a
test can SIGKILL one worker for real (``--no-nanny``: nothing restarts it).  ``close()``
SIGKILLs every group that is still alive.  Where util-linux ``setpriv`` exists, each child
also runs with ``--pdeathsig KILL`` so it dies with the pytest process even if the
finaliser never runs (e.g. a hard timeout); workers also have ``--death-timeout``.

This module is pickled *by value* (cloudpickle) when its functions are sent to the
scheduler or the workers, so those processes need not import ``tests``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np

cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DASK = str(VENV_BIN / "dask")
HOST = "127.0.0.1"

_SETPRIV = shutil.which("setpriv")
# No preexec_fn (unsafe with threads): setpriv sets PR_SET_PDEATHSIG, then execs dask.
_DIE_WITH_PARENT = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def proc_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["NUMBA_NUM_THREADS"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # Never reach beyond the loopback interface.
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def _kill_group(proc: subprocess.Popen, sig=signal.SIGKILL):
    """Signal the process group led by ``proc`` (its own session), then reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
        pass


class ProcCluster:
    """One ``dask scheduler`` and ``n_workers`` ``dask worker --no-nanny`` processes."""

    def __init__(self, tmpdir, n_workers=3, memory_limit="2GiB", start_timeout=120):
        self.tmpdir = Path(tmpdir)
        self.n_workers = n_workers
        self.memory_limit = memory_limit
        self.start_timeout = start_timeout
        self.scheduler_file = self.tmpdir / "scheduler.json"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.address: str | None = None
        self._logs = []

    # -- processes -------------------------------------------------------------------
    def _popen(self, args, name):
        log = open(self.tmpdir / f"{name}.log", "wb")
        self._logs.append(log)
        return subprocess.Popen(_DIE_WITH_PARENT + args, stdout=log, stderr=subprocess.STDOUT,
                                env=proc_env(), cwd=self.tmpdir, start_new_session=True)

    def start(self):
        self.scheduler = self._popen(
            [DASK, "scheduler", "--host", HOST, "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.scheduler_file)], "scheduler")
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not _alive(self.scheduler):
                raise RuntimeError("dask scheduler exited:\n" + self.log("scheduler"))
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
                break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("dask scheduler did not start:\n" + self.log("scheduler"))
            time.sleep(0.1)
        assert self.address.startswith(f"tcp://{HOST}:"), self.address
        for _ in range(self.n_workers):
            self.add_worker()
        return self

    def add_worker(self, extra_args=()):
        """Start one more worker; ``extra_args`` go to ``dask worker`` (e.g. a preload)."""
        i = len(self.workers)
        wdir = self.tmpdir / f"worker-{i}"
        wdir.mkdir()
        proc = self._popen(
            [DASK, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--no-nanny",
             "--no-dashboard", "--host", HOST, "--memory-limit", str(self.memory_limit),
             "--local-directory", str(wdir), "--death-timeout", "60", "--name", f"w{i}",
             *extra_args],
            f"worker-{i}")
        self.workers.append(proc)
        return proc

    def log(self, name):
        try:
            return (self.tmpdir / f"{name}.log").read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def worker_pids(self, client):
        """{worker address: pid of its process} (the worker *is* the process: no nanny)."""
        return client.run(os.getpid)

    def process_of(self, client, address):
        pid = self.worker_pids(client)[address]
        for proc in self.workers:
            if proc.pid == pid:
                return proc
        raise LookupError(f"no worker process with pid {pid} for {address}")

    def kill_worker(self, proc: subprocess.Popen):
        """SIGKILL a worker process (its whole group) and reap it."""
        _kill_group(proc, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL, proc.returncode

    def alive_pids(self):
        procs = ([self.scheduler] if self.scheduler else []) + self.workers
        return [p.pid for p in procs if _alive(p)]

    def close(self):
        for proc in self.workers + ([self.scheduler] if self.scheduler else []):
            if _alive(proc):
                _kill_group(proc, signal.SIGKILL)
            else:
                # The leader is gone: make sure nothing else is left in its group.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for log in self._logs:
            log.close()
        self._logs.clear()


@contextlib.contextmanager
def running_cluster(path, n_workers=3, memory_limit="2GiB"):
    """A fresh :class:`ProcCluster` in ``path`` and a Client on it (not the default
    client: tests make it current around the fits that should run on it); always torn
    down, even when a test killed its scheduler, and nothing may be left running."""
    Path(path).mkdir(parents=True, exist_ok=True)
    cluster = ProcCluster(path, n_workers=n_workers, memory_limit=memory_limit)
    client = None
    try:
        cluster.start()
        import distributed

        client = distributed.Client(cluster.address, timeout=60, set_as_default=False)
        client.wait_for_workers(n_workers, timeout=120)
        yield cluster, client
    finally:
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - the cluster is killed next anyway
                pass
        cluster.close()
        assert cluster.alive_pids() == [], "cluster processes left behind"


def _n_tasks(dask_scheduler=None):
    return len(dask_scheduler.tasks)


def as_fresh(cluster, client, n_workers, timeout=60):
    """Ready a cluster that several tests share for the next one, as a fresh cluster
    would be: ``n_workers`` live workers (new processes replace those killed before) and
    no task left on the scheduler by earlier fits (or by a client killed mid-fit).
    Returns ``(cluster, client)``."""
    while len([p for p in cluster.workers if _alive(p)]) < n_workers:
        cluster.add_worker()
    client.wait_for_workers(n_workers, timeout=120)
    # An earlier fit's futures can wait in a reference cycle (a checkpointed fit's
    # persisted blocks do) until the cyclic collector runs: run it now.
    gc.collect()
    deadline = time.monotonic() + timeout
    while client.run_on_scheduler(_n_tasks) and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    left = client.run_on_scheduler(_n_tasks)
    assert left == 0, f"{left} tasks left on the scheduler by an earlier test"
    workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == n_workers, sorted(workers)
    return cluster, client


# -- data -----------------------------------------------------------------------------
BLOB_SEED = 1234


def _blob_centres(n_features, n_centres=16, seed=BLOB_SEED):
    # 16 overlapping blobs for 8 clusters: Lloyd moves for many iterations (all 30 of
    # the tests' max_iter with tol=0), so a kill "after a few iterations" is mid-fit.
    rng = np.random.default_rng([seed, 999_999])
    return rng.uniform(-3, 3, size=(n_centres, n_features))


def _blob_block(block_info=None, n_features=16, seed=BLOB_SEED):
    """Rows of one block, drawn from a stream keyed by the block index only."""
    info = block_info[None]
    i = info["chunk-location"][0]
    n = info["chunk-shape"][0]
    centres = _blob_centres(n_features, seed=seed)
    rng = np.random.default_rng([seed, i])
    labels = rng.integers(0, len(centres), size=n)
    return centres[labels] + rng.standard_normal((n, n_features))


def blobs(n_samples=300_000, n_features=16, n_blocks=8, seed=BLOB_SEED):
    """Overlapping Gaussian blobs as a dask array generated inside the graph (lineage is cheap)."""
    import dask.array as da

    base, rem = divmod(n_samples, n_blocks)
    rows = tuple(base + (1 if i < rem else 0) for i in range(n_blocks))
    chunks = (rows, (n_features,))
    return da.map_blocks(_blob_block, n_features=n_features, seed=seed, chunks=chunks,
                         dtype=np.float64, meta=np.empty((0, n_features), np.float64),
                         name=f"dmlkit-test-blobs-{n_samples}-{n_features}-{n_blocks}-{seed}")


def _labels_block(block):
    """Binary labels computed from a blobs block (so they have lineage too)."""
    return (block[:, 0] + 0.5 * block[:, 1] - block[:, 2] > 0).astype(np.int64)


def labelled_blobs(n_samples=200_000, n_features=16, n_blocks=8, seed=BLOB_SEED):
    """``blobs`` and binary labels derived from them, both generated inside the graph."""
    X = blobs(n_samples=n_samples, n_features=n_features, n_blocks=n_blocks, seed=seed)
    y = X.map_blocks(_labels_block, drop_axis=1, dtype=np.int64,
                     meta=np.empty((0,), np.int64))
    return X, y


def _slow_partition(df, seconds):
    time.sleep(seconds)  # a slow source (remote storage): the shuffle takes a while
    return df


def slow_ratings(n_users=6000, n_items=800, n_ratings=240_000, npartitions=12, seconds=0.15,
                 seed=7):
    """``dmlkit.datasets.make_ratings`` read through a slow source, generated in the graph."""
    from dmlkit.datasets import make_ratings

    df = make_ratings(n_users, n_items, n_ratings, rank=8, noise=0.3,
                      npartitions=npartitions, random_state=seed)
    return df.map_partitions(_slow_partition, seconds, meta=df._meta)


# -- watching the scheduler -------------------------------------------------------------
def _dmlkit_tasks(dask_scheduler=None):
    """Runs on the scheduler: {key: state} of dmlkit's tasks, and what each worker holds.

    ``held``: how many keys a worker has in memory; ``held_init``: how many of them are
    k-means init state; ``unique``: the keys no other worker has (lost if it dies, to
    be recomputed); ``unique_init``: those that are k-means init state.
    """
    tasks = {k: ts.state for k, ts in dask_scheduler.tasks.items()
             if isinstance(k, str) and k.startswith("dmlkit-")}
    held, held_init, unique, unique_init = {}, {}, {}, {}
    for addr, ws in dask_scheduler.workers.items():
        only = [ts.key for ts in ws.has_what if len(ts.who_has) == 1]
        held[addr] = len(ws.has_what)
        held_init[addr] = sum(1 for ts in ws.has_what if isinstance(ts.key, str)
                              and ts.key.startswith("dmlkit-kmeans-init"))
        unique[addr] = [str(k) for k in only]
        unique_init[addr] = [k for k in only
                             if isinstance(k, str) and k.startswith("dmlkit-kmeans-init")]
    return {"tasks": tasks, "held": held, "held_init": held_init, "unique": unique,
            "unique_init": unique_init}


_PASS_RE = re.compile(r"^dmlkit-(?:kmeans|sgd|als|glm)-(?P<step>[a-z-]+?)-(?P<token>[0-9a-f]{8})-"
                      r"(?P<pass>\d+)"
                      r"(?:-(?P<rest>.*))?$")


def parse_key(key):
    """'dmlkit-<family>-<step>-<token>-<pass>-<block>' -> (step, token, pass) or None."""
    m = _PASS_RE.match(key)
    if m is None:
        return None
    return m["step"], m["token"], int(m["pass"])


def passes_seen(keys, step):
    """Distinct pass numbers of ``step`` (e.g. 'lloyd', 'init') among ``keys``."""
    out = set()
    for k in keys:
        p = parse_key(k)
        if p is not None and p[0] == step:
            out.add(p[2])
    return out


class FitThread(threading.Thread):
    """``est.fit(X)`` in a background thread with ``client`` as the current client
    (contextvars do not follow a new thread); keeps the exception, if any."""

    def __init__(self, est, X, client, y=None):
        super().__init__(daemon=True, name="dmlkit-fit")
        self.est, self.X, self.client, self.y = est, X, client, y
        self.error: BaseException | None = None
        self.seconds = None

    def run(self):
        t0 = time.perf_counter()
        try:
            with self.client.as_current():
                if self.y is None:
                    self.est.fit(self.X)
                else:
                    self.est.fit(self.X, self.y)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.seconds = time.perf_counter() - t0

    def finish_after_kill(self, proc: subprocess.Popen, client, n_left: int):
        """Wait for the fit and check it succeeded although ``proc`` (a worker) was
        SIGKILLed, and that ``n_left`` workers remain (none came back)."""
        self.join(timeout=240)
        assert not self.is_alive(), "the fit did not finish after the worker was killed"
        if self.error is not None:
            raise self.error
        assert proc.poll() == -9
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == n_left


def wait_for_passes(client, fit: FitThread, step, n_passes, timeout=120, poll=0.005):
    """Poll the scheduler until ``n_passes`` distinct passes of ``step`` have appeared.

    Returns the last snapshot (see :func:`_dmlkit_tasks`).  Raises if the fit ended
    (or the timeout passed) first: then no kill could have happened mid-fit.
    """
    deadline = time.monotonic() + timeout
    seen = set()
    while True:
        snap = client.run_on_scheduler(_dmlkit_tasks)
        seen |= passes_seen(snap["tasks"], step)
        if len(seen) >= n_passes:
            snap["seen"] = sorted(seen)
            return snap
        if not fit.is_alive():
            raise AssertionError(f"the fit ended before {n_passes} '{step}' passes were seen "
                                 f"(saw {sorted(seen)}; error={fit.error!r})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {n_passes} '{step}' passes within {timeout}s")
        time.sleep(poll)
