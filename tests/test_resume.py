"""A fit survives the loss of its scheduler or of its client process: fitted again with
the same ``checkpoint``, it resumes from the last saved iteration and ends with the
model of a fit that never failed, bit for bit.

Real processes on 127.0.0.1 (``dask scheduler``, ``dask worker --no-nanny``, and for the
client a child ``python``), SIGKILLed once the checkpoint holds two iterations.  The
fault-free model is fitted on local threads (once per family, shared with the chaos
tests: ``_families.reference``): the same bits as on any cluster.  The client-loss tests
kill no part of their cluster, so they share one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from dmlkit.exceptions import ClusterError
from tests import _families
from tests._cluster_procs import REPO, _kill_group, as_fresh, proc_env, running_cluster

distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KILL_AT = 2  # iterations in the checkpoint when the process is killed


def _when_saved(path, action, until=lambda: True, timeout=240):
    """Call ``action`` once the checkpoint at ``path`` holds KILL_AT iterations (in a
    thread); ``until()`` false means the fit is gone, and nothing is done."""
    done = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and until():
            if _families.checkpoint_step(path) >= KILL_AT:
                action()
                done.set()
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, done


def _resume_and_check(family, client, path, saved):
    est = _families.fit(family, client, checkpoint=path)
    assert est.resumed_from_iter_ == saved
    _families.assert_same_model(est, _families.reference(family))


@pytest.mark.parametrize("family", _families.FAMILIES + (_families.CLUSTER_STATE,))
def test_scheduler_killed_mid_fit_then_resumed(tmp_path, family):
    path = str(tmp_path / "checkpoint")
    with running_cluster(tmp_path / "first", n_workers=2) as (cluster, client):
        watcher, killed = _when_saved(path, lambda: _kill_group(cluster.scheduler))
        with pytest.raises(ClusterError, match="Lost the connection to the scheduler") as err:
            _families.fit(family, client, checkpoint=path)
        watcher.join()
        assert killed.is_set(), "the fit failed before the scheduler was killed"
    saved = _families.checkpoint_step(path)
    assert KILL_AT <= saved < _families.max_iter(family)
    # the error says where the fit can resume from
    assert f"holds iteration {saved}: fit again with the same checkpoint" in str(err.value)
    with running_cluster(tmp_path / "second", n_workers=2) as (cluster, client):
        _resume_and_check(family, client, path, saved)


@pytest.fixture(scope="module")
def _client_loss_cluster(tmp_path_factory):
    """The cluster of the client-loss tests: only their client processes are killed, so
    they share it (``as_fresh`` checks that each starts with nothing left on it)."""
    with running_cluster(tmp_path_factory.mktemp("client-loss"), n_workers=2) as running:
        yield running


@pytest.mark.parametrize("family", _families.FAMILIES)
def test_client_process_killed_mid_fit_then_resumed(tmp_path, family, _client_loss_cluster):
    path = str(tmp_path / "checkpoint")
    child = None
    cluster, client = as_fresh(*_client_loss_cluster, n_workers=2)
    try:
        env = proc_env()
        env["DASK_DMLKIT__LOCAL_FIT_BYTES"] = "0"  # on the cluster, however small
        log = open(tmp_path / "child.log", "wb")
        child = subprocess.Popen([sys.executable, "-m", "tests._families", family,
                                  cluster.address, path], cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        watcher, killed = _when_saved(path, lambda: _kill_group(child),
                                      until=lambda: child.poll() is None)
        watcher.join()
        log.close()
        assert killed.is_set(), ("the child fit ended before it was killed:\n"
                                 + (tmp_path / "child.log").read_text()[-3000:])
        assert child.returncode == -signal.SIGKILL
        saved = _families.checkpoint_step(path)
        assert KILL_AT <= saved < _families.max_iter(family)
        _resume_and_check(family, client, path, saved)
    finally:
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
