"""KMeans on row blocks: k-means||/k-means++/random init, fused Lloyd iterations."""

from __future__ import annotations

import logging
import numbers
import time
import warnings

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import check_finite_result, is_dask_collection, to_row_blocks
from dmlkit._core.dispatch import backend_of, get_kernels, to_numpy
from dmlkit._core.driver import Driver, check_cache_param
from dmlkit._core.stats import column_stats
from dmlkit.base import keep_state_on_error
from dmlkit.cluster import _init
from dmlkit.exceptions import ConvergenceWarning

logger = logging.getLogger("dmlkit")

INITS = {
    "k-means||": _init.init_kmeans_parallel,
    "k-means++": _init.init_kmeans_plusplus,
    "random": _init.init_random,
}


# ----------------------------------------------------------------------------------
# block tasks (module level: they pickle to workers by reference)
# ----------------------------------------------------------------------------------
@np.errstate(invalid="ignore", over="ignore")  # non-finite sums are checked by the fit
def _lloyd_task(x, w, offset, centers, backend, exact_inertia, n_threads=1):
    K = get_kernels("cluster", backend)
    sums, counts, inertia = K.assign_partial_sums_block(x, w, centers, n_threads=n_threads,
                                                        exact_inertia=exact_inertia)
    return to_numpy(sums), to_numpy(counts), float(to_numpy(inertia))


def _combine_lloyd(*parts):
    sums = parts[0][0].copy()
    counts = parts[0][1].copy()
    inertia = parts[0][2]
    for s, c, i in parts[1:]:
        sums += s
        counts += c
        inertia += i
    return sums, counts, inertia


def _labels_task(x, centers, backend, n_threads=1):
    K = get_kernels("cluster", backend)
    labels, _ = K.labels_sqdist_block(x, centers, n_threads=n_threads)
    return labels


def _inertia_task(x, w, offset, centers, backend, n_threads=1):
    K = get_kernels("cluster", backend)
    _, d2 = K.labels_sqdist_block(x, centers, n_threads=n_threads)
    d2 = to_numpy(d2)
    return float(d2.sum() if w is None else np.dot(np.asarray(to_numpy(w), np.float64), d2))


def _labels_inertia_task(x, w, offset, centers, backend, n_threads=1):
    K = get_kernels("cluster", backend)
    labels, d2 = K.labels_sqdist_block(x, centers, n_threads=n_threads)
    d2 = to_numpy(d2)
    inertia = float(d2.sum() if w is None else np.dot(np.asarray(to_numpy(w), np.float64), d2))
    return to_numpy(labels), inertia


def _farthest_task(x, w, offset, centers, m, backend, n_threads=1):
    """The m rows farthest from their centre: (sqdist, global index, row, label, weight)."""
    K = get_kernels("cluster", backend)
    labels, d2 = K.labels_sqdist_block(x, centers, n_threads=n_threads)
    labels, d2 = to_numpy(labels), to_numpy(d2)
    idx = np.arange(d2.shape[0])
    order = np.lexsort((idx, -d2))[:m]
    wv = np.ones(len(order)) if w is None else np.asarray(to_numpy(w), np.float64)[order]
    rows = to_numpy(x[order, ...]) if len(order) else np.zeros((0, x.shape[1]), x.dtype)
    return d2[order], order + offset, rows, labels[order], wv


def _distances_task(x, centers, backend, n_threads=1):
    K = get_kernels("cluster", backend)
    d2 = K.sqdist_block(x, centers, n_threads=n_threads)
    try:
        from array_api_compat import array_namespace

        xp = array_namespace(d2)
        return xp.astype(xp.sqrt(d2), x.dtype)
    except TypeError:
        return np.sqrt(d2).astype(x.dtype)


# ----------------------------------------------------------------------------------
class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means clustering of data larger than memory, on a Dask cluster or local threads.

    Parameters follow :class:`sklearn.cluster.KMeans` where they apply.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {'k-means||', 'k-means++', 'random'} or array of shape (n_clusters, n_features)
        ``'k-means||'`` (default) is the scalable k-means++ of Bahmani et al. (2012), as in
        Spark MLlib and dask-ml: ``init_max_iter`` passes over the data.  ``'k-means++'``
        needs ``n_clusters`` passes.  Both draw rows with probability proportional to
        ``sample_weight * D^2`` with per-block random streams, so the result does not
        depend on which worker ran which block.
    n_init : 'auto' or int, default='auto'
        Number of initialisations; the run with the lowest inertia wins.  ``'auto'`` is 1
        except for ``init='random'`` (10), as scikit-learn.
    max_iter : int, default=300
        Maximum Lloyd iterations of a run.
    tol : float, default=1e-4
        Relative tolerance on the squared shift of the centres between iterations, scaled
        by the mean variance of the features (as scikit-learn).
    verbose : int, default=0
        A progress bar (``tqdm.auto``, works in notebooks) and INFO logs on ``dmlkit``.
    random_state : int, RandomState instance or None
        Same data, same blocks and same seed give the same centres, bit for bit.
    oversampling_factor : float, default=2.0
        k-means||: candidates drawn per round, as a multiple of ``n_clusters``.
    init_max_iter : int or None, default=None
        k-means||: sampling rounds (None: 5, enough per Bahmani et al.).
    cache : {'auto', True, False}, default='auto'
        Persist the input blocks on the cluster (keeping lineage) or stream them from
        their source on every pass.  ``'auto'`` persists when the data takes under
        ``dmlkit.cache-fraction`` of the cluster's memory.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features), dtype of X
    labels_ : ndarray, or dask array for dask input
    inertia_ : float
    n_iter_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str (dataframe input with string column names)
    """

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, oversampling_factor=2.0, init_max_iter=None,
                 cache="auto"):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.cache = cache

    # -- parameter checks ----------------------------------------------------------
    def _check_params(self):
        def _int(name, low, allow_none=False):
            v = getattr(self, name)
            if allow_none and v is None:
                return
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}.")

        _int("n_clusters", 1)
        _int("max_iter", 1)
        _int("init_max_iter", 1, allow_none=True)
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}.")
        if not (isinstance(self.oversampling_factor, numbers.Real)
                and self.oversampling_factor > 0):
            raise ValueError(f"oversampling_factor must be > 0, got {self.oversampling_factor!r}.")
        if self.n_init != "auto":
            _int("n_init", 1)
        check_cache_param(self.cache)
        if isinstance(self.init, str):
            if self.init not in INITS:
                raise ValueError(f"init must be one of {sorted(INITS)} or an array of shape "
                                 f"(n_clusters, n_features), got {self.init!r}.")
        elif callable(self.init):
            raise TypeError("A callable init is not supported; pass 'k-means||', 'k-means++', "
                            "'random' or an array of centres.")

    def _resolved_n_init(self):
        if isinstance(self.init, str) and self.init == "random":
            default = 10
        else:
            default = 1
        n_init = default if self.n_init == "auto" else self.n_init
        if not isinstance(self.init, str) and n_init != 1:
            warnings.warn("Explicit initial centres passed: performing only one init "
                          f"instead of n_init={n_init}.", RuntimeWarning, stacklevel=3)
            n_init = 1
        return n_init

    def _check_init_array(self, n_features, dtype):
        init = to_numpy(self.init.compute() if is_dask_collection(self.init) else self.init)
        init = np.asarray(init, dtype=dtype)
        if init.ndim != 2 or init.shape != (self.n_clusters, n_features):
            raise ValueError(f"The shape of the initial centers {init.shape} does not match "
                             f"(n_clusters, n_features) = ({self.n_clusters}, {n_features}).")
        if not np.isfinite(init).all():
            raise ValueError("Input init contains NaN or infinity.")
        return np.ascontiguousarray(init)

    # -- fit -------------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering of X (numpy, pandas, dask array or dask dataframe)."""
        with keep_state_on_error(self):
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight):
        self._check_params()
        # NaN/inf in lazy X is found in the first pass's reduced sums (no extra pass).
        blocks = to_row_blocks(X, estimator=self, reset=True, sample_weight=sample_weight,
                               finite_check="caller")
        n, k = blocks.n_samples, self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        n_init = self._resolved_n_init()
        init_array = None
        if not isinstance(self.init, str):
            init_array = self._check_init_array(blocks.n_features, blocks.dtype)
        rs = check_random_state(self.random_state)
        backend = backend_of(blocks.X._meta)
        t0 = time.perf_counter()
        driver = Driver("kmeans", blocks, cache=self.cache, verbose=self.verbose)
        tol = self._tolerance(driver)
        seeds = rs.randint(np.iinfo(np.int32).max, size=n_init)
        best = None
        for run, seed in enumerate(seeds):
            if init_array is not None:
                centers = init_array
            else:
                centers = self._init_centers(driver, int(seed), backend)
            centers, n_iter, counts = self._lloyd(driver, centers, tol, backend, run, n_init)
            inertia, labels = self._final_pass(driver, centers, backend, blocks.lazy)
            if best is None or inertia < best[2]:
                best = (centers, n_iter, inertia, labels, counts)
        centers, n_iter, inertia, labels, self._counts = best
        self.cluster_centers_ = centers
        self.n_iter_ = int(n_iter)
        self.inertia_ = float(inertia)
        self.labels_ = labels if labels is not None else self._predict_blocks(blocks, backend)
        self._fit_seconds = time.perf_counter() - t0
        distinct = np.unique(centers, axis=0).shape[0]
        if distinct < k:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than "
                          f"n_clusters ({k}). Possibly due to duplicate points in X.",
                          ConvergenceWarning, stacklevel=2)
        logger.info("dmlkit-kmeans: %d iterations, inertia %.6g, %.2fs", self.n_iter_,
                    self.inertia_, self._fit_seconds)
        return self

    def _tolerance(self, driver):
        if self.tol == 0:
            return 0.0
        _, mean, var = column_stats(driver)
        check_finite_result(mean, var)
        return float(np.mean(var) * self.tol)

    def _init_centers(self, driver, seed, backend):
        k = self.n_clusters
        if self.init == "k-means||":
            rounds = 5 if self.init_max_iter is None else self.init_max_iter
            centers = _init.init_kmeans_parallel(
                driver, k, seed, backend, oversampling_factor=self.oversampling_factor,
                rounds=rounds, random_state=np.random.RandomState(seed))
        else:
            centers = INITS[self.init](driver, k, seed, backend)
        if centers.shape[0] < k:  # fewer candidates than clusters: top up with random rows
            extra = _init.init_random(driver, k, seed + 1, backend)
            centers = np.concatenate([centers, extra])[:k]
        return np.ascontiguousarray(centers, dtype=driver.X.dtype)

    def _lloyd(self, driver, centers, tol, backend, run, n_init):
        dtype = driver.X.dtype
        bar = driver.progress(self.max_iter, f"KMeans run {run + 1}/{n_init}" if n_init > 1
                              else "KMeans")
        n_iter = 0
        counts = np.zeros(self.n_clusters)
        try:
            for it in range(self.max_iter):
                state = driver.shared(centers, "centers")
                # The exact inertia costs as much as the assignment: only for progress.
                sums, counts, inertia = driver.map_reduce(_lloyd_task, _combine_lloyd, state,
                                                          backend, bool(self.verbose),
                                                          step="lloyd")
                check_finite_result(sums, counts)
                empty = np.flatnonzero(counts == 0)
                if len(empty):
                    sums, counts = self._relocate_empty(driver, centers, sums, counts, empty,
                                                        backend)
                new = centers.astype(np.float64, copy=True)
                nz = counts > 0
                new[nz] = sums[nz] / counts[nz, None]
                new = new.astype(dtype)
                shift = float(((new.astype(np.float64) - centers) ** 2).sum())
                centers = new
                n_iter = it + 1
                bar.update(1)
                if self.verbose:
                    bar.set_postfix(inertia=f"{inertia:.4g}", shift=f"{shift:.3g}")
                logger.debug("dmlkit-kmeans iter %d inertia %.6g shift %.3g", n_iter, inertia,
                             shift)
                if shift <= tol:
                    break
            else:
                if tol > 0:
                    logger.info("dmlkit-kmeans: max_iter=%d reached before tol", self.max_iter)
        finally:
            bar.close()
        return centers, n_iter, counts

    def _relocate_empty(self, driver, centers, sums, counts, empty, backend):
        """Move empty clusters to the rows farthest from their centre (as scikit-learn)."""
        m = len(empty)
        parts = driver.map_blocks(_farthest_task, driver.shared(centers, "centers"), m, backend,
                                  step="relocate")
        found = driver.compute(*parts)
        d2 = np.concatenate([f[0] for f in found])
        gidx = np.concatenate([f[1] for f in found])
        rows = np.concatenate([f[2] for f in found])
        labels = np.concatenate([f[3] for f in found])
        wv = np.concatenate([f[4] for f in found])
        order = np.lexsort((gidx, -d2))[:m]
        sums, counts = sums.copy(), counts.copy()
        for new_id, j in zip(empty, order, strict=False):
            old_id = labels[j]
            x = rows[j].astype(np.float64)
            sums[old_id] -= x * wv[j]
            counts[old_id] -= wv[j]
            sums[new_id] = x * wv[j]
            counts[new_id] = wv[j]
        return sums, counts

    def _final_pass(self, driver, centers, backend, lazy):
        """Inertia of the final centres (and labels for in-memory input) in one pass."""
        state = driver.shared(centers, "centers")
        if lazy:
            return driver.map_reduce(_inertia_task, _sum_floats, state, backend,
                                     step="inertia"), None
        parts = driver.compute(*driver.map_blocks(_labels_inertia_task, state, backend,
                                                  step="labels"))
        labels = np.concatenate([p[0] for p in parts]).astype(np.int32)
        inertia = float(np.sum([p[1] for p in parts]))
        return inertia, labels

    # -- partial_fit -------------------------------------------------------------------
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one batch (mini-batch k-means, learning rate 1/count).

        The first call initialises the centres from the batch with ``init``.
        """
        with keep_state_on_error(self):
            return self._partial_fit(X, sample_weight)

    def _partial_fit(self, X, sample_weight):
        first = not hasattr(self, "cluster_centers_")
        if first:
            self._check_params()
        blocks = to_row_blocks(X, estimator=self, reset=first, sample_weight=sample_weight)
        backend = backend_of(blocks.X._meta)
        driver = Driver("kmeans", blocks, cache=False, verbose=0)
        if first:
            if blocks.n_samples < self.n_clusters:
                raise ValueError(f"n_samples={blocks.n_samples} should be >= "
                                 f"n_clusters={self.n_clusters}.")
            rs = check_random_state(self.random_state)
            if isinstance(self.init, str):
                centers = self._init_centers(driver, int(rs.randint(np.iinfo(np.int32).max)),
                                             backend)
            else:
                centers = self._check_init_array(blocks.n_features, blocks.dtype)
            self._counts = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_iter_ = 0
        else:
            centers = np.ascontiguousarray(self.cluster_centers_, dtype=blocks.dtype)
        sums, counts, inertia = driver.map_reduce(
            _lloyd_task, _combine_lloyd, driver.shared(centers, "centers"), backend, True,
            step="minibatch")
        total = self._counts + counts
        new = centers.astype(np.float64)
        nz = counts > 0
        new[nz] = (new[nz] * self._counts[nz, None] + sums[nz]) / total[nz, None]
        self._counts = total
        self.cluster_centers_ = new.astype(blocks.dtype)
        self.inertia_ = float(inertia)
        self.n_steps_ = getattr(self, "n_steps_", 0) + 1
        self.n_iter_ = self.n_steps_
        return self

    # -- predict / transform ------------------------------------------------------------
    def _predict_blocks(self, blocks, backend):
        centers = self.cluster_centers_.astype(blocks.dtype)
        labels = blocks.X.map_blocks(_labels_task, centers, backend, drop_axis=1,
                                     dtype=np.int32, name="dmlkit-kmeans-predict",
                                     meta=np.empty((0,), dtype=np.int32))
        return labels if blocks.lazy else labels.compute()

    def predict(self, X):
        """Index of the nearest centre for each row (dask array for dask input)."""
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False)
        return self._predict_blocks(blocks, backend_of(blocks.X._meta))

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distance from each row to each centre, shape (n_samples, n_clusters)."""
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False)
        centers = self.cluster_centers_.astype(blocks.dtype)
        backend = backend_of(blocks.X._meta)
        out = blocks.X.map_blocks(_distances_task, centers, backend,
                                  chunks=(blocks.X.chunks[0], (self.n_clusters,)),
                                  dtype=blocks.dtype, name="dmlkit-kmeans-transform",
                                  meta=blocks.X._meta)
        return out if blocks.lazy else out.compute()

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X on the fitted centres (higher is better)."""
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False, sample_weight=sample_weight)
        backend = backend_of(blocks.X._meta)
        driver = Driver("kmeans", blocks, cache=False)
        centers = self.cluster_centers_.astype(blocks.dtype)
        return -driver.map_reduce(_inertia_task, _sum_floats, driver.shared(centers, "centers"),
                                  backend, step="score")

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _sum_floats(*parts):
    total = 0.0
    for p in parts:
        total += p
    return total


__all__ = ["KMeans"]
