"""Chaos: workers SIGKILLed at random moments of a fit, sometimes with a new worker
joining mid-fit; every trial ends with the fault-free model, bit for bit (real
``dask scheduler`` / ``dask worker`` processes, see ``tests/_chaos.py``).
``tools/chaos.py --trials N`` runs more trials; its figures are in the README."""

from __future__ import annotations

import pytest

from tests import _families
from tests._chaos import run_trials

pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TRIALS = 2


@pytest.mark.parametrize("family", _families.FAMILIES)
def test_chaos_trials_end_with_the_fault_free_model(tmp_path, family):
    out = run_trials(family, TRIALS, tmp_path, seed=1)
    assert out["trials"] == TRIALS
    assert out["kills"] >= 1, out  # the kills land mid-fit (at most 80% of its time)
    assert out["identical"] == out["trials"], out
