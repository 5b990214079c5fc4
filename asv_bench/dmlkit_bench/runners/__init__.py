"""One runner per compared system, per family (see :mod:`.base` for the interface).

- :mod:`.kmeans`: dmlkit (threads, LocalCluster), scikit-learn, dask-ml.
- :mod:`.sgd`: dmlkit (threads, LocalCluster), scikit-learn, dask-ml (Incremental,
  LogisticRegression).
- :mod:`.als`: dmlkit (threads, LocalCluster), implicit, Spark MLlib.

A new family adds a module here: a settings class, one :class:`Runner` subclass per
system (``estimator(n_iter, **params)`` and where its input lives) and a ``SYSTEMS``
table.
"""

from .base import Runner, make_runner

__all__ = ["Runner", "make_runner"]
