"""Clustering: :class:`KMeans`."""

from dmlkit.cluster._kmeans import KMeans

__all__ = ["KMeans"]
