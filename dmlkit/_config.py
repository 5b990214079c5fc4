"""dmlkit's settings, kept in dask's config under the ``dmlkit`` namespace.

They can be set like any dask setting: ``dask.config.set({"dmlkit.block-size": "64MiB"})``,
the ``DASK_DMLKIT__BLOCK_SIZE`` environment variable, a YAML file, or
:func:`config_context`.

- ``block-size``: target bytes per row block when dmlkit chunks in-memory input.
- ``retries``: how many times a failing task is retried on a distributed cluster.
- ``backend``: ``"auto"`` (the block's array type picks the kernel: numba for NumPy,
  array-API code for anything else), ``"numba"`` or ``"xp"`` (array-API kernels
  everywhere, e.g. to check them on NumPy).
- ``cache-fraction``: ``cache="auto"`` persists the input when it takes less than this
  fraction of the cluster's (or, without a cluster, this machine's) memory.
- ``local-fit-bytes``: a fit whose blocked data (X, y and weights; ALS: its blocked
  ratings) take at most this many bytes runs in the client process on dask's threaded
  scheduler even when a cluster is active (lazy input is computed on the cluster and
  fetched once): its scheduling would cost more than its work (MovieLens 100k ALS:
  ~45 ms of scheduling per iteration on a 2-worker LocalCluster, 7-20 ms of work).  The
  model is the same bits either way.  ``0`` sends every fit to the cluster.
- ``driver-state-bytes``: model state larger than this stays on the cluster, as row
  blocks the workers hold, instead of in the client process (ALS's factor matrices:
  they are then never gathered here, and ``user_factors_`` / ``item_factors_`` are dask
  arrays over those blocks).  The model is the same bits either way.
- ``wait-for-workers``: how long a fit waits for a cluster without workers to get one
  (logged at WARNING), before it raises :class:`~dmlkit.exceptions.ClusterError`.
- ``check-workers``: before a fit first uses a worker, check that it imports dmlkit with
  the same dmlkit, dask, distributed, numba and NumPy versions as this process.
"""

from __future__ import annotations

import contextlib

import dask

DEFAULTS = {
    "dmlkit": {
        "block-size": "128MiB",
        "retries": 3,
        "backend": "auto",
        "cache-fraction": 0.5,
        "local-fit-bytes": "8MiB",
        "driver-state-bytes": "256MiB",
        "wait-for-workers": "60s",
        "check-workers": True,
    }
}
dask.config.update_defaults(DEFAULTS)

_BACKENDS = ("auto", "numba", "xp")


def get_config(name: str):
    """Return the dmlkit setting ``name`` (e.g. ``"block-size"``)."""
    return dask.config.get(f"dmlkit.{name}")


@contextlib.contextmanager
def config_context(**settings):
    """Temporarily change dmlkit settings: ``config_context(block_size="8MiB", backend="xp")``."""
    unknown = sorted(set(k.replace("_", "-") for k in settings) - set(DEFAULTS["dmlkit"]))
    if unknown:
        known = sorted(DEFAULTS["dmlkit"])
        raise ValueError(f"Unknown dmlkit setting(s) {unknown}; known: {known}")
    if "backend" in settings and settings["backend"] not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {settings['backend']!r}")
    with dask.config.set({f"dmlkit.{k.replace('_', '-')}": v for k, v in settings.items()}):
        yield
