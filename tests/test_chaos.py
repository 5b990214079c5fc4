"""Chaos: workers SIGKILLed at random moments of a fit, sometimes with a new worker
joining mid-fit; every trial ends with the fault-free model, bit for bit (real
``dask scheduler`` / ``dask worker`` processes, see ``tests/_chaos.py``).
``tools/chaos.py --trials N`` runs more trials; its figures are in the README.

The families' trials share one cluster: every trial ends with ``N_WORKERS`` workers
again (new processes replace the killed ones), and each family starts with a fit that
compiles its kernels on them."""

from __future__ import annotations

import pytest

from tests import _families
from tests._chaos import N_WORKERS, run_trials
from tests._cluster_procs import running_cluster

pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TRIALS = 2


@pytest.fixture(scope="module")
def chaos_cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("chaos"), n_workers=N_WORKERS) as running:
        yield running


@pytest.mark.parametrize("family", _families.FAMILIES)
def test_chaos_trials_end_with_the_fault_free_model(tmp_path, family, chaos_cluster):
    out = run_trials(family, TRIALS, tmp_path, seed=1, running=chaos_cluster)
    assert out["trials"] == TRIALS
    assert out["kills"] >= 1, out  # the kills land mid-fit (at most 80% of its time)
    assert out["identical"] == out["trials"], out
