"""dmlkit: out-of-core, fault-tolerant machine learning on Dask with scikit-learn's API."""

# first: sets OMP_WAIT_POLICY before any OpenMP runtime in this process starts
from dmlkit._core import numba_utils  # noqa: F401, I001
from dmlkit import datasets, exceptions, feature_extraction, metrics, persistence
from dmlkit._config import config_context, get_config
from dmlkit.cluster import KMeans
from dmlkit.linear_model import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from dmlkit.persistence import load, save
from dmlkit.recommendation import ALS

__version__ = "0.1.0.dev0"
__all__ = ["ALS", "KMeans", "LinearRegression", "LogisticRegression", "PoissonRegressor", "Ridge",
           "SGDClassifier", "SGDRegressor", "config_context", "datasets", "exceptions",
           "feature_extraction", "get_config", "load", "metrics", "persistence", "save",
           "__version__"]
