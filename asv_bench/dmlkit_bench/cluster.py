"""The Dask cluster the compared systems share: ``LocalCluster(n_workers=2,
threads_per_worker=1)`` by default, and a Client that is *not* the global default.

Work runs on it inside :meth:`DaskCluster.as_current` only, so systems that must not see
a client (dmlkit on threads, scikit-learn, implicit) share the process with it.  The
worker processes import this package (and the functions that tasks name) like any other
installed package: ``pip install -e asv_bench`` (``make bench``) puts it in the venv.
"""

from __future__ import annotations

import contextlib
import logging


class DaskCluster:
    """A ``LocalCluster`` (worker processes unless ``processes=False``) and its Client.

    :meth:`persist_once` keeps a persisted collection per key, so that two systems on the
    same cluster (dmlkit and dask-ml) use the same blocks, held once.
    """

    def __init__(self, processes=True, n_workers=2, threads_per_worker=1):
        from distributed import Client, LocalCluster

        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.processes = processes
        # worker processes listen on the loopback only; in-process workers use inproc://
        host = {"host": "127.0.0.1"} if processes else {}
        self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                    processes=processes, **host,
                                    dashboard_address=None,
                                    # no dashboard; its bare HTTP server on a free port
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                    silence_logs=logging.WARNING)
        self.client = Client(self.cluster, set_as_default=False)
        self.client.wait_for_workers(n_workers, timeout=120)
        self._persisted = {}

    def __repr__(self):
        kind = "processes" if self.processes else "threads"
        return (f"LocalCluster(n_workers={self.n_workers}, "
                f"threads_per_worker={self.threads_per_worker}, {kind})")

    @property
    def total_threads(self) -> int:
        return self.n_workers * self.threads_per_worker

    def as_current(self):
        return self.client.as_current()

    def persist(self, *collections):
        """The collections persisted on the cluster, in memory before this returns: one
        collection for one, a list for several."""
        out = self.persist_all(collections)
        return out[0] if len(out) == 1 else out

    def persist_all(self, collections) -> list:
        from distributed import wait

        if not collections:
            return []
        out = self.client.persist(list(collections))
        with self.as_current():
            wait(out, timeout=600)
        return list(out)

    def persist_once(self, key, make):
        """``make()`` (a tuple of collections, None entries allowed) persisted the first
        time ``key`` is asked for; the same persisted tuple after that."""
        if key not in self._persisted:
            parts = make()
            kept = iter(self.persist_all([p for p in parts if p is not None]))
            self._persisted[key] = tuple(None if p is None else next(kept) for p in parts)
        return self._persisted[key]

    def forget(self, key=None):
        """Drop the persisted collections of ``key`` (of every key if None)."""
        if key is None:
            self._persisted.clear()
        else:
            self._persisted.pop(key, None)

    def placement(self, X):
        """{worker address: number of X's blocks it holds}."""
        from distributed import futures_of

        who = self.client.who_has(futures_of(X))
        out = {}
        for workers in who.values():
            for w in workers:
                out[w] = out.get(w, 0) + 1
        return out

    def run(self, fn, *args):
        """``fn(*args)`` on every worker (JIT warm-ups)."""
        return self.client.run(fn, *args)

    def close(self):
        self._persisted.clear()
        with contextlib.suppress(Exception):
            self.client.close()
        with contextlib.suppress(Exception):
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
