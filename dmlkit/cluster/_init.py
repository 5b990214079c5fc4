"""Distributed initialisation of k-means centres.

All three samplers share one pass: every block updates its rows' distance to the
nearest chosen centre (the per-block *state*, 16 bytes a row: persisted with lineage
between rounds when the input blocks are cached; rebuilt in every pass from the centres
chosen so far, in the same order and so to the same bits, when the input is streamed,
because state that grows with the data would break an out-of-core fit's bounded memory)
and proposes its best rows under Efraimidis-Spirakis weighted-sampling keys
``log(u) / mass`` with ``u`` from a stream seeded by (seed, round, block index).  The
driver keeps the globally best keys.  This draws rows without replacement with
probability proportional to ``mass`` (``w`` for the first centre, ``w * D^2`` after),
exactly, in one pass per round, and the same rows whichever worker ran which block.

- ``'k-means||'`` (Bahmani et al. 2012, as Spark MLlib and dask-ml): a first centre by
  weight, then ``init_max_iter`` rounds each adding ``oversampling_factor * k``
  candidates drawn by ``w * D^2``; the candidates are weighted by the weight of the rows
  nearest to them (in the same pass that adds the last round's distances) and reduced
  to k centres on the driver by weighted k-means++ and Lloyd (scikit-learn's).
- ``'k-means++'`` (Arthur & Vassilvitskii 2007) with scikit-learn's greedy local trials:
  for each centre, ``2 + log(k)`` candidates drawn by ``w * D^2`` and one more pass that
  keeps the candidate lowering the potential most: 2k passes.
- ``'random'``: k distinct rows drawn by weight, in one pass.

CSR blocks work the same: the kernels take them, and the drawn rows travel (to the
driver and back to the blocks as the next round's centres) as CSR rows, a few hundred
bytes each, made dense only inside a task and in the centres returned.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp

from dmlkit._core.dispatch import get_kernels, to_numpy

LOCAL_N_INIT = 10
TIER_POS, TIER_ZERO_DIST = 2, 1  # rows with w*D^2 > 0 first, then rows on a centre


def _rows_numpy(x, idx):
    """Rows ``idx`` of a block on the host: a NumPy array, or CSR for a CSR block."""
    if sp.issparse(x):
        return x[np.asarray(idx, dtype=np.int64)].tocsr()
    return to_numpy(x[idx, ...]) if len(idx) else np.zeros((0, x.shape[1]), dtype=x.dtype)


def dense(rows):
    """Rows (NumPy or scipy.sparse) as a C-contiguous NumPy array."""
    return np.ascontiguousarray(rows.toarray() if sp.issparse(rows) else rows)


def vstack(parts):
    """Stack row groups: CSR if any is sparse, else NumPy."""
    if any(sp.issparse(p) for p in parts):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.concatenate(parts)


def _update_state(x, state, new_centers, base, backend, n_threads=1):
    """Min squared distance to the chosen centres and the index of that centre."""
    n = x.shape[0]
    if state is None:
        dist = np.full(n, np.inf)
        owner = np.full(n, -1, dtype=np.int64)
    else:
        dist, owner = state[0], state[1]
    if new_centers is not None and new_centers.shape[0]:
        K = get_kernels("cluster", backend)
        lab, d2 = K.labels_sqdist_block(x, dense(new_centers), n_threads=n_threads)
        lab, d2 = to_numpy(lab), to_numpy(d2)
        if not np.isfinite(d2).all():
            # A NaN/inf row (or a centre drawn from one) makes its distances non-finite:
            # the fit's NaN/inf check, folded into this pass.
            raise ValueError("Input X contains NaN or infinity.")
        better = d2 < dist  # ties keep the earlier centre
        dist = np.where(better, d2, dist)
        owner = np.where(better, lab.astype(np.int64) + base, owner)
    return dist, owner


def _sample_keys(n, w, dist, offset, seed, step, block, m):
    """Top-m rows of one block under weighted-sampling keys: (tier, key, global index)."""
    rng = np.random.default_rng([int(seed), int(step), int(block)])
    u = 1.0 - rng.random(n)  # in (0, 1]
    wv = np.ones(n) if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    mass = wv if dist is None else wv * dist
    with np.errstate(divide="ignore", invalid="ignore"):
        logu = np.log(u)
        key = np.where(mass > 0, logu / mass, -np.inf)
        key_w = np.where(wv > 0, logu / wv, -np.inf)
    tier = np.where(mass > 0, TIER_POS, np.where(wv > 0, TIER_ZERO_DIST, 0))
    key = np.where(tier == TIER_POS, key, key_w)
    keep = _top_m(tier, key, m)
    return tier[keep], key[keep], keep + offset, keep


def _top_m(tier, key, m):
    """Indices of the best m rows, ordered by tier desc, key desc, index asc.

    Selects with argpartition (linear) and sorts only the survivors; every row tied
    with the m-th best is kept for the sort, so the choice never depends on the
    partition's internal order.
    """
    picked = []
    for t in (TIER_POS, TIER_ZERO_DIST):
        need = m - sum(len(p) for p in picked)
        if need <= 0:
            break
        idx = np.flatnonzero(tier == t)
        if len(idx) > need:
            k = key[idx]
            cut = np.partition(k, len(k) - need)[len(k) - need]
            idx = idx[k >= cut]
        picked.append(idx)
    if not picked:
        return np.zeros(0, dtype=np.int64)
    keep = np.concatenate(picked)
    order = np.lexsort((keep, -key[keep], -tier[keep]))[:m]
    return keep[order]


def _sample_read(x, w, offset, block, state, seed, step, m, n_threads=1):
    """A block's best m proposals under this round's keys."""
    dist = None if np.isinf(state[0]).all() else state[0]
    tier, key, gidx, local = _sample_keys(x.shape[0], w, dist, offset, seed, step, block, m)
    return tier, key, gidx, _rows_numpy(x, local)


def _weights_read(x, w, offset, block, state, n_cand, n_threads=1):
    """Final k-means|| pass: owners of all rows -> weight of each candidate."""
    wv = None if w is None else np.asarray(to_numpy(w), dtype=np.float64)
    return np.bincount(state[1], weights=wv, minlength=n_cand).astype(np.float64)


def _potentials_read(x, w, offset, block, state, trials, backend, n_threads=1):
    """Potential sum(w * min(D^2, d^2(x, t))) of the block for every trial centre t."""
    dist = state[0]
    K = get_kernels("cluster", backend)
    d2 = to_numpy(K.sqdist_block(x, dense(trials), n_threads=n_threads))
    new = np.minimum(dist[:, None], d2)
    if w is None:
        return new.sum(axis=0)
    return np.asarray(to_numpy(w), dtype=np.float64) @ new


def _sum_arrays(*parts):
    out = parts[0].copy()
    for p in parts[1:]:
        out += p
    return out


def _merge_samples(samples, m):
    """Best m proposals over all blocks: order tier desc, key desc, index asc."""
    tier = np.concatenate([s[0] for s in samples])
    key = np.concatenate([s[1] for s in samples])
    gidx = np.concatenate([s[2] for s in samples])
    rows = vstack([s[3] for s in samples])
    order = np.lexsort((gidx, -key, -tier))[:m]
    return rows[order], gidx[order]


class _Sampler:
    """Runs init rounds on a driver; each row's distance to its nearest chosen centre
    is the driver's per-block state (persisted with cached input, replayed when
    streamed: :class:`~dmlkit._core.driver.BlockState`)."""

    def __init__(self, driver, seed, backend):
        self.driver = driver
        self.seed = seed
        self.backend = backend
        self.state = driver.block_state(_update_state)
        self.step = 0

    def round(self, new_centers, base, m):
        d = self.driver
        centers = d.shared(new_centers, "init-centers") if new_centers is not None else None
        parts = self.state.map(_sample_read, self.seed, self.step, m, step="init",
                               update=(centers, base, self.backend))
        samples = d.compute(*parts)
        self.step += 1
        return _merge_samples(samples, m)

    def candidate_weights(self, new_centers, base, n_cand):
        d = self.driver
        parts = self.state.map(_weights_read, n_cand, step="init-weights", record=False,
                               update=(d.shared(new_centers, "init-centers"), base,
                                       self.backend))
        return d.compute(d.reduce(parts, _sum_arrays, "init-weights"))[0]

    def potentials(self, trials):
        d = self.driver
        parts = self.state.map(_potentials_read, d.shared(trials, "init-trials"),
                               self.backend, step="init-trials")
        return d.compute(d.reduce(parts, _sum_arrays, "init-trials"))[0]


def init_random(driver, k, seed, backend):
    rows, _ = _Sampler(driver, seed, backend).round(None, 0, k)
    return dense(rows)


def init_kmeans_plusplus(driver, k, seed, backend):
    s = _Sampler(driver, seed, backend)
    rows, _ = s.round(None, 0, 1)
    centers = [rows]
    n_trials = 2 + int(np.log(k))
    for j in range(1, k):
        trials, _ = s.round(centers[-1], j - 1, n_trials)
        if trials.shape[0] > 1:
            best = int(np.argmin(s.potentials(trials)))  # first on ties
            trials = trials[best:best + 1]
        centers.append(trials)
    return dense(vstack(centers))


def init_kmeans_parallel(driver, k, seed, backend, *, oversampling_factor=2.0, rounds=5,
                         random_state=None):
    ell = max(1, int(math.ceil(oversampling_factor * k)))
    s = _Sampler(driver, seed, backend)
    first, _ = s.round(None, 0, 1)
    cands = [first]
    base, new = 0, first
    for _ in range(rounds):
        rows, _ = s.round(new, base, ell)
        base += new.shape[0]
        new = rows
        cands.append(rows)
    n_cand = base + new.shape[0]
    weights = s.candidate_weights(new, base, n_cand)
    C = vstack(cands)
    return reduce_candidates(C, weights, k, random_state)


def reduce_candidates(C, weights, k, random_state):
    """k centres from weighted candidates: weighted k-means++ then Lloyd (scikit-learn's).

    CSR candidates (from CSR blocks) stay sparse for scikit-learn's fit; the centres
    come back dense.
    """
    from sklearn.cluster import KMeans as _SkKMeans

    keep = weights > 0
    if keep.sum() >= k:
        C, weights = C[np.flatnonzero(keep)], weights[keep]
    if C.shape[0] <= k:
        return dense(C[:k])
    # The candidates are few (about oversampling_factor * k * rounds): several local
    # k-means++ starts cost little and make the init much less seed-dependent.
    km = _SkKMeans(n_clusters=k, init="k-means++", n_init=LOCAL_N_INIT, max_iter=100,
                   random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate candidates: handled by the caller
        km.fit(C.astype(np.float64), sample_weight=weights)
    return np.ascontiguousarray(km.cluster_centers_.astype(C.dtype))
