"""Finding the cluster a fit runs on, and how many threads a task may use."""

from __future__ import annotations

import os


def get_client_or_none():
    """The active ``distributed.Client``, or None when work runs on dask's local scheduler."""
    try:
        from distributed import default_client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    try:
        return default_client()
    except ValueError:
        return None


def local_threads() -> int:
    """Threads available to the code running here: the worker's ``nthreads`` on a dask
    worker, otherwise this process's usable CPUs."""
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
    """Threads of the whole cluster (or of this machine without one)."""
    if client is None:
        return local_threads()
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def total_memory(client) -> int:
    """Memory of the whole cluster in bytes (workers' limits), or this machine's available."""
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        if limits and all(limits):
            return sum(limits)
    import psutil

    return int(psutil.virtual_memory().available)
