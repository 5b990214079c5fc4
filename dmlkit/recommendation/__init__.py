"""Recommendation: matrix factorisation by alternating least squares (ALS)."""
