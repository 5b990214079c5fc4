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


def dyadic_merge(nodes, n_leaves, add):
    """Merge nodes of the fixed binary tree over ``n_leaves`` leaves as far as they go.

    ``nodes`` is a dict ``{(level, j): value}``: node ``(L, j)`` is the sum of leaves
    ``j * 2**L`` to ``(j + 1) * 2**L - 1``, defined as ``add((L-1, 2j), (L-1, 2j+1))``,
    or ``(L-1, 2j)`` alone when ``(L-1, 2j+1)`` starts at or past the last leaf.  Nodes of
    one sibling pair merge into their parent, level by level; a node whose sibling is
    missing stays.  Returns the merged dict: the root ``(top, 0)`` alone once the nodes
    cover every leaf.

    The tree is aligned on the leaves' global indices, so merging is associative in
    the strict sense: any split of the leaves into ranges (a block merges its own
    chunks, a combiner the blocks' nodes) gives the root the same bits as merging all
    leaves at once, whatever the number and sizes of the blocks.
    """
    nodes = dict(nodes)
    top = max(0, int(n_leaves - 1).bit_length())
    for level in range(top):
        span = 1 << level
        for key in sorted(k for k in nodes if k[0] == level):
            j = key[1]
            if j % 2 or key not in nodes:
                continue  # a right child waits for its left sibling
            right = (level, j + 1)
            if right in nodes:
                nodes[(level + 1, j // 2)] = add(nodes.pop(key), nodes.pop(right))
            elif (j + 1) * span >= n_leaves:
                nodes[(level + 1, j // 2)] = nodes.pop(key)
    return nodes


def dyadic_sum(leaves, add, first=0, n_leaves=None):
    """:func:`dyadic_merge` of consecutive leaves (leaf ``first + i`` is ``leaves[i]``)."""
    n_leaves = first + len(leaves) if n_leaves is None else n_leaves
    return dyadic_merge({(0, first + i): v for i, v in enumerate(leaves)}, n_leaves, add)
