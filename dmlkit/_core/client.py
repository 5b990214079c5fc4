"""Where a fit's work runs, by one rule, and the check of the cluster it runs on.

The rule (every family goes through it, via :func:`get_client_or_none`, :func:`compute`
and :func:`placed`):

- Outside any dask task: on the active ``distributed.Client`` when there is one
  (``default_client()``), else on dask's local scheduler (threads).
- Inside a dask task (``client.submit``, joblib's dask backend, dask-ml's and
  scikit-learn's searches run ``fit`` / ``score`` there) with in-memory input: solved
  right here, in this task's thread, on dask's synchronous scheduler with one thread
  per kernel.  The worker's threads are the search's parallelism, and nothing waits on
  a thread it holds.
- Inside a dask task with dask input: the task secedes from the worker's thread pool
  (``distributed.worker_client``) and the fit runs on the cluster, then rejoins.  A
  blocked task thread never waits for tasks that need that thread.

Before a fit uses a cluster, :func:`check_cluster` makes sure it has workers (a bounded,
logged wait) and that every worker imports dmlkit with the same versions of dmlkit,
dask, distributed, numba and NumPy as this process: a misconfigured cluster is a clear
:class:`~dmlkit.exceptions.ClusterError`, never a silent hang.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time

import dask

from dmlkit._config import get_config

logger = logging.getLogger("dmlkit")

_UNSET = object()
_placement = threading.local()  # .client: the client (or None) a placed call runs on

VERSION_PACKAGES = ("dmlkit", "dask", "distributed", "numba", "numpy")


def in_task() -> bool:
    """Whether this thread is running a dask task on a distributed worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _placed_client():
    return getattr(_placement, "client", _UNSET)


def solving_in_task() -> bool:
    """Inside a task, solving here (in-memory input) rather than on the cluster."""
    return _placed_client() is None or (_placed_client() is _UNSET and in_task())


def get_client_or_none(check: bool = True):
    """The client this call's work runs on, or None for dask's local scheduler.

    Inside a task it is None (solve here) unless :func:`placed` entered the cluster
    for dask input.  ``check`` runs :func:`check_cluster` on a client found here.
    """
    placed_client = _placed_client()
    if placed_client is not _UNSET:
        return placed_client
    if in_task():
        return None
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        client = default_client()
    except ValueError:
        return None
    if check:
        check_cluster(client)
    return client


def solve_here(nbytes) -> bool:
    """Whether a fit whose blocked data takes ``nbytes`` runs in this process although a
    cluster is active (``dmlkit.local-fit-bytes``): its scheduling would cost more than
    its work.  The model is the same bits either way.  ``nbytes`` may be a callable,
    called only when there is a cluster (a lazy sparse size costs a block)."""
    if get_client_or_none(check=False) is None:
        return False  # already local
    if callable(nbytes):
        nbytes = nbytes()
    return nbytes <= dask.utils.parse_bytes(get_config("local-fit-bytes"))


def local_scheduler():
    """dask's scheduler for work done in this process: synchronous inside a task (the
    task's own thread), else dask's default (threads, or the user's choice)."""
    return "sync" if solving_in_task() else None


def compute(*objs, retries=None):
    """Compute dask collections / Delayed objects where :func:`get_client_or_none` says.

    Every computation of a fit, predict or score goes through here (or the driver,
    which does the same), never through a bare ``.compute()``, whose default scheduler
    inside a task would be the cluster, waiting on the thread it holds.
    """
    client = get_client_or_none()
    if client is not None:
        with scheduler_loss(client):
            return tuple(client.gather(client.compute(list(objs), retries=retries)))
    return dask.compute(*objs, scheduler=local_scheduler())


def wait_for(client, futures):
    """Block until ``futures`` are computed; a task's error is raised here."""
    from distributed import wait

    futures = list(futures)
    wait(futures)
    for f in futures:
        if f.status == "error":
            f.result()  # raises the task's exception


@contextlib.contextmanager
def scheduler_loss(client, note=""):
    """Turn the loss of the scheduler (it died, or the network to it failed) during the
    body into a :class:`~dmlkit.exceptions.ClusterError` that says so, and ``note`` (a
    string, or a callable giving it then: what a fit can do about it, e.g. resume from
    its checkpoint).  distributed itself
    reports such a loss as a cancelled future or a closed comm."""
    try:
        yield
    except Exception as e:
        if client is None or getattr(client, "status", "running") == "running":
            raise
        from dmlkit.exceptions import ClusterError

        note = note() if callable(note) else note
        raise ClusterError(
            f"Lost the connection to the scheduler at {_scheduler_address(client)} "
            f"(client status {client.status!r}: {type(e).__name__}: {e}). "
            + (note or "The work in progress is lost.")) from e


@contextlib.contextmanager
def placement(*inputs):
    """Run the body by the rule above, given the call's arguments ``inputs``.

    Nested placed calls (``fit_predict`` calling ``fit``) keep the outer placement.
    """
    if _placed_client() is not _UNSET or not in_task():
        yield
        return
    if not any(dask.is_dask_collection(a) for a in inputs):
        _placement.client = None
        try:
            yield
        finally:
            del _placement.client
        return
    from distributed import worker_client

    with worker_client() as client:  # secedes now, rejoins the pool at exit
        _placement.client = client
        try:
            check_cluster(client)
            yield
        finally:
            del _placement.client


def placed(method):
    """Decorator for estimator methods that take data: run them under :func:`placement`."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        # a model that keeps its state on the cluster counts as dask input itself
        held = getattr(self, "_held_on_cluster", None)
        with placement(*args, *kwargs.values(), *(held() if held is not None else ())):
            return method(self, *args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------------
# threads and memory
# ----------------------------------------------------------------------------------
def local_threads() -> int:
    """Threads available to the code running here: the worker's ``nthreads`` in a block
    task on a dask worker, 1 for a fit solved inside a task, otherwise this process's
    usable CPUs."""
    if _placed_client() is None:
        return 1
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def total_threads(client) -> int:
    """Threads of the whole cluster (or of this process's work without one)."""
    if client is None:
        return 1 if solving_in_task() else local_threads()
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def memory_per_thread(client) -> int:
    """The smallest worker's memory limit per thread in bytes (what one task may use at
    most), or this machine's available memory per local thread without a cluster."""
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        per = [int(w.get("memory_limit") or 0) // max(1, int(w.get("nthreads", 1)))
               for w in workers]
        if per and all(per):
            return min(per)
    import psutil

    return int(psutil.virtual_memory().available) // total_threads(client)


def total_memory(client) -> int:
    """Memory of the whole cluster in bytes (workers' limits), or this machine's available."""
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        if limits and all(limits):
            return sum(limits)
    import psutil

    return int(psutil.virtual_memory().available)


# ----------------------------------------------------------------------------------
# the pre-flight check of a cluster
# ----------------------------------------------------------------------------------
_verified: dict[str, set] = {}  # client id -> worker addresses already checked
_verify_lock = threading.Lock()


def _versions() -> dict:
    """Versions of the packages dmlkit's tasks need, as this process imports them.

    Runs on every worker (pickled by reference: a worker that cannot import dmlkit
    fails to load it, and says why)."""
    import dask as _dask
    import distributed
    import numba
    import numpy

    import dmlkit

    return {"dmlkit": dmlkit.__version__, "dask": _dask.__version__,
            "distributed": distributed.__version__, "numba": numba.__version__,
            "numpy": numpy.__version__}


def _scheduler_address(client) -> str:
    try:
        return str(client.scheduler.address)
    except AttributeError:  # pragma: no cover
        return "the scheduler"


def _wait_for_workers(client, timeout: float):
    addr = _scheduler_address(client)
    logger.warning("dmlkit: the cluster at %s has no workers yet; waiting up to %.0f s "
                   "(setting dmlkit.wait-for-workers)", addr, timeout)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as e:
        from dmlkit.exceptions import ClusterError

        raise ClusterError(
            f"The cluster at {addr} has no workers (waited {timeout:g} s, setting "
            "dmlkit.wait-for-workers). Start workers with `dask worker "
            f"{addr}`, or scale the cluster up, before fitting.") from e


def _run_with_timeout(fn, timeout):
    """``fn()`` in a daemon thread; raises TimeoutError when it takes over ``timeout``."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True, name="dmlkit-check-cluster")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_cluster(client):
    """Pre-flight check of ``client``'s cluster (once per worker; a new worker is
    checked when it first shows up).

    Raises :class:`~dmlkit.exceptions.ClusterError` naming every worker that cannot
    import dmlkit or runs other versions of dmlkit, dask, distributed, numba or NumPy
    than this process, and when no worker joins within ``dmlkit.wait-for-workers``.
    """
    if not get_config("check-workers"):
        return
    from dmlkit.exceptions import ClusterError

    timeout = dask.utils.parse_timedelta(get_config("wait-for-workers"), default="s")
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        _wait_for_workers(client, timeout)
        workers = set(client.scheduler_info(n_workers=-1)["workers"])
    with _verify_lock:
        todo = sorted(workers - _verified.get(client.id, set()))
    if not todo:
        return
    t0 = time.perf_counter()
    try:
        answers = _run_with_timeout(
            lambda: client.run(_versions, workers=todo, on_error="return"),
            max(timeout, 10.0))
    except TimeoutError:
        raise ClusterError(
            f"Workers {todo} of the cluster at {_scheduler_address(client)} did not answer "
            f"dmlkit's version check within {max(timeout, 10.0):g} s.") from None
    mine = _versions()
    problems = []
    for addr in todo:
        got = answers.get(addr)
        if got is None:
            continue  # left the cluster meanwhile
        if isinstance(got, OSError):
            # unreachable (distributed's CommClosedError is an OSError): a worker that
            # just died and that the scheduler has not removed yet.  Not verified: if it
            # comes back, it is checked then.
            logger.info("dmlkit: worker %s did not answer the version check (%s: %s); "
                        "skipped", addr, type(got).__name__, got)
            answers.pop(addr)
            continue
        if isinstance(got, BaseException):
            problems.append(f"  {addr}: cannot import dmlkit ({type(got).__name__}: {got})")
            continue
        diff = [f"{p} {got.get(p)} (here {mine[p]})" for p in VERSION_PACKAGES
                if got.get(p) != mine[p]]
        if diff:
            problems.append(f"  {addr}: " + ", ".join(diff))
    if problems:
        raise ClusterError(
            f"The cluster at {_scheduler_address(client)} cannot run dmlkit's tasks:\n"
            + "\n".join(problems)
            + "\nEvery worker needs dmlkit and the same versions of "
            + ", ".join(VERSION_PACKAGES) + " as the client (install the same environment "
            "on the workers, e.g. the same `pip install`).")
    with _verify_lock:
        _verified.setdefault(client.id, set()).update(a for a in todo if a in answers)
    logger.debug("dmlkit: checked workers %s in %.3f s", todo, time.perf_counter() - t0)
