"""A pytest plugin for ``tools/sklearn_parity.py`` runs: ``-p tests._parity_shard`` with
``DMLKIT_PARITY_SHARD=i/n`` in the environment keeps the collected tests whose index is
``i`` modulo ``n`` (the rest are deselected before the harness selects and counts).

The ``n`` shards of one test file are a partition of it: run at once in ``n`` processes,
their counts add up to the counts of one run (``tests/test_sklearn_parity.py``).
"""

from __future__ import annotations

import os

import pytest

ENV = "DMLKIT_PARITY_SHARD"


def shard_of(value):
    """``"i/n"`` -> ``(i, n)``."""
    i, n = (int(part) for part in value.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"{ENV}={value!r}: shard i/n needs 0 <= i < n")
    return i, n


@pytest.hookimpl(tryfirst=True)  # before the harness's own selection (trylast)
def pytest_collection_modifyitems(session, config, items):
    value = os.environ.get(ENV)
    if not value:
        return
    i, n = shard_of(value)
    keep = [it for k, it in enumerate(items) if k % n == i]
    dropped = [it for k, it in enumerate(items) if k % n != i]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
