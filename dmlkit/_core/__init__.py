"""Plumbing shared by every estimator family: input, execution, reduction, dispatch."""
