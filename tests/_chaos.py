"""Chaos trials: fits on real ``dask scheduler`` / ``dask worker`` processes while workers
are SIGKILLed at random moments and new ones join; every fit must end with the fault-free
model, bit for bit.  Used by ``tests/test_chaos.py`` (a few trials) and
``tools/chaos.py --trials N`` (the README's figures).
"""

from __future__ import annotations

import signal
import time

import numpy as np

from tests import _families
from tests._cluster_procs import FitThread, _alive, _kill_group, running_cluster

N_WORKERS = 3


def _top_up(cluster, client):
    """Start workers until ``N_WORKERS`` are alive, and wait for them."""
    while len([p for p in cluster.workers if _alive(p)]) < N_WORKERS:
        cluster.add_worker()
    client.wait_for_workers(N_WORKERS, timeout=120)


def run_trials(family, trials, tmpdir, *, seed=0, log=print, running=None):
    """Run ``trials`` faulty fits of ``family``; returns the counts (a dict).

    Each trial starts the fit, waits a random fraction of a fault-free fit's time and
    SIGKILLs a random worker; in about half the trials a new worker joins at once (mid
    fit), in the others after the fit, so every trial starts with ``N_WORKERS``.
    ``running``: the ``(cluster, client)`` of a ``running_cluster`` to run on, which
    several calls can share (topped up to ``N_WORKERS`` first); without it, a fresh
    cluster in ``tmpdir``.
    """
    if running is None:
        with running_cluster(tmpdir, n_workers=N_WORKERS) as running:
            return run_trials(family, trials, tmpdir, seed=seed, log=log, running=running)
    rng = np.random.default_rng(seed)
    reference = _families.reference(family)  # no cluster: local threads
    out = {"family": family, "trials": 0, "kills": 0, "joined_mid_fit": 0, "identical": 0}
    cluster, client = running
    _top_up(cluster, client)
    _families.assert_same_model(_families.fit(family, client), reference)
    t0 = time.perf_counter()  # a warm fit (the first one compiles on the workers)
    _families.assert_same_model(_families.fit(family, client), reference)
    seconds = time.perf_counter() - t0
    for trial in range(trials):
        delay = float(rng.uniform(0.05, 0.8)) * seconds
        join_now = bool(rng.random() < 0.5)
        args = _families.data(family)
        fit = FitThread(_families.estimator(family), args[0], client,
                        y=args[1] if len(args) > 1 else None)
        fit.start()
        time.sleep(delay)
        alive = [p for p in cluster.workers if _alive(p)]
        victim = alive[int(rng.integers(len(alive)))]
        killed = fit.is_alive()
        if killed:
            _kill_group(victim, signal.SIGKILL)
            out["kills"] += 1
            if join_now:
                cluster.add_worker()
                out["joined_mid_fit"] += 1
        fit.join(timeout=300)
        assert not fit.is_alive(), f"{family} trial {trial}: the fit did not finish"
        if fit.error is not None:
            raise fit.error
        out["trials"] += 1
        same = all(np.array_equal(a, b) for a, b in zip(
            _families.model(fit.est).values(), _families.model(reference).values(),
            strict=True))
        out["identical"] += same
        log(f"{family} trial {trial}: {'killed a worker' if killed else 'no kill (fit done)'}"
            f" after {delay:.2f}s{', a worker joined mid-fit' if killed and join_now else ''}"
            f"; {'identical' if same else 'DIFFERENT'} model ({fit.seconds:.2f}s)")
        _top_up(cluster, client)
    return out
