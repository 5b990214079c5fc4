"""Fixed-order tree reduction of per-block partial results.

The tree's shape depends only on the number of parts and ``split_every``; each combine
sees its inputs in block order.  Floating-point sums therefore come out the same bits
whichever worker computed which part, and after any recompute.
"""

from __future__ import annotations

import dask


def tree_reduce(parts, combine, *, split_every=8, name="dmlkit-reduce"):
    """Reduce a list of Delayed ``parts`` with ``combine(*group)`` in a fixed tree."""
    if not parts:
        raise ValueError("tree_reduce needs at least one part")
    if split_every < 2:
        raise ValueError("split_every must be at least 2")
    level = 0
    parts = list(parts)
    fn = dask.delayed(combine, pure=False)
    while len(parts) > 1:
        parts = [fn(*parts[i:i + split_every], dask_key_name=f"{name}-{level}-{i // split_every}")
                 if len(parts) - i > 1 else parts[i]
                 for i in range(0, len(parts), split_every)]
        level += 1
    return parts[0]


def tree_reduce_local(parts, combine, *, split_every=8):
    """The same tree over concrete values (for results already on the driver)."""
    parts = list(parts)
    while len(parts) > 1:
        parts = [combine(*parts[i:i + split_every]) if len(parts) - i > 1 else parts[i]
                 for i in range(0, len(parts), split_every)]
    return parts[0]
