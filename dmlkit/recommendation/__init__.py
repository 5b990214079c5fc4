"""Recommendation: ALS matrix factorisation (explicit ALS-WR and implicit HKV)."""

from dmlkit.recommendation._als import ALS

__all__ = ["ALS"]
