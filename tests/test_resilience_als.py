"""ALS: a worker SIGKILLed during the shuffle, or mid-iteration, does not change the
factors (real ``dask scheduler`` / ``dask worker`` processes on 127.0.0.1).

The ratings are generated inside the graph behind a slow source, so the blocks a dead
worker held come back from lineage; the shuffle sorts every block, so they come back as
the same bytes, and the factors are compared bit for bit with a fault-free fit.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests._cluster_procs import FitThread, parse_key, slow_ratings, wait_for_passes
from tests.test_resilience import proc_cluster  # noqa: F401 - the shared fixture

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def _on_the_cluster():
    # 240k ratings would be solved in the client process by default (local-fit-bytes)
    import dmlkit

    with dmlkit.config_context(local_fit_bytes=0):
        yield


def _als(**kw):
    from dmlkit import ALS

    return ALS(**{**dict(factors=8, iterations=8, regularization=0.05, random_state=0), **kw})


def _reference(client, ratings, **kw):
    with client.as_current():
        ref = _als(**kw).fit(ratings)
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(_shuffle_state)["shuffle"]:  # its blocks are released
        assert time.monotonic() < deadline, "the reference fit's blocks were not released"
        time.sleep(0.01)
    return ref


def _finish(fit, proc, client, ref):
    fit.finish_after_kill(proc, client, n_left=2)
    for name in ("user_factors_", "item_factors_", "user_ids_", "item_ids_"):
        got = getattr(fit.est, name)
        if not isinstance(got, np.ndarray):  # kept on the cluster: the blocks gathered
            got = client.compute(got).result()
        np.testing.assert_array_equal(got, getattr(ref, name))


def _shuffle_state(dask_scheduler=None):
    """Runs on the scheduler: states of the shuffle's tasks, and how many keys only one
    worker holds.  (The first half-iteration is submitted as soon as the shuffle is: its
    tasks wait for the blocks.)"""
    shuffle = {k: ts.state for k, ts in dask_scheduler.tasks.items()
               if isinstance(k, str) and k.startswith("dmlkit-als-shuffle-")}
    unique = {addr: sum(1 for ts in ws.has_what if len(ts.who_has) == 1)
              for addr, ws in dask_scheduler.workers.items()}
    return {"shuffle": shuffle, "unique": unique}


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_worker_killed_during_shuffle_same_factors(proc_cluster, implicit):  # noqa: F811
    cluster, client = proc_cluster
    ratings = slow_ratings()
    ref = _reference(client, ratings, implicit=implicit)

    fit = FitThread(_als(implicit=implicit), ratings, client)
    fit.start()
    try:
        deadline = time.monotonic() + 120
        running, done = set(), set()
        while True:  # some source partitions are split, not every block is built yet
            snap = client.run_on_scheduler(_shuffle_state)
            splits = {k: s for k, s in snap["shuffle"].items() if "-split-" in k}
            running |= {k for k, s in splits.items() if s == "processing"}
            done |= {k for k in running if splits.get(k) in ("memory", "released")}
            builds = [s for k, s in snap["shuffle"].items() if "-split-" not in k]
            if len(done) >= 3:
                break
            assert fit.is_alive(), f"the fit ended before the shuffle was seen: {fit.error!r}"
            assert time.monotonic() < deadline, "the shuffle was not seen in time"
            time.sleep(0.005)
        victim = max(snap["unique"], key=lambda a: (snap["unique"][a], a))
        assert snap["unique"][victim] > 0, "the victim held nothing of the shuffle"
        proc = cluster.process_of(client, victim)
        cluster.kill_worker(proc)
        assert builds.count("memory") < len(builds), "every block was built before the kill"
    finally:
        fit.join(timeout=240)
    _finish(fit, proc, client, ref)


@pytest.mark.parametrize("where", ["client", "cluster"])
def test_worker_killed_mid_iteration_same_factors(proc_cluster, where):  # noqa: F811
    """``where`` the factors are kept between half-iterations: on the cluster, the
    victim holds factor blocks only it had, rebuilt from their lineage."""
    cluster, client = proc_cluster
    ratings = slow_ratings()
    ref = _reference(client, ratings, implicit=True, calculate_training_loss=True)

    import dmlkit

    # dask's config is global: the fit's thread reads it
    with dmlkit.config_context(driver_state_bytes=0 if where == "cluster" else "1GiB"):
        fit = FitThread(_als(implicit=True, calculate_training_loss=True), ratings, client)
        fit.start()
        try:
            snap = wait_for_passes(client, fit, "items", 4)
            victim = max(snap["held"], key=lambda a: (len(snap["unique"][a]), a))
            assert snap["unique"][victim], "the victim held no block only it had"
            proc = cluster.process_of(client, victim)
            assert fit.is_alive(), "the fit ended before the kill"
            cluster.kill_worker(proc)
        finally:
            fit.join(timeout=240)
    assert isinstance(fit.est.user_factors_, np.ndarray) is (where == "client")
    _finish(fit, proc, client, ref)
    assert fit.est.loss_curve_ == ref.loss_curve_
    assert parse_key("dmlkit-als-items-0123abcd-7-3") == ("items", "0123abcd", 7)
