"""KMeans on row blocks: k-means||/k-means++/random init, fused Lloyd iterations."""

from __future__ import annotations

import functools
import logging
import time
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn import get_config as _sk_get_config
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted

from dmlkit._core.blocks import check_finite_result, is_dask_collection, to_row_blocks
from dmlkit._core.client import compute, placed
from dmlkit._core.dispatch import backend_of, get_kernels, to_numpy
from dmlkit._core.driver import Driver
from dmlkit._core.loop import CHECKPOINT_CONSTRAINTS, FitLoop, Step
from dmlkit._core.params import Interval, StrOptions, is_arraylike_not_scalar, validate_params
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
    rows = _init.dense(_init._rows_numpy(x, order))
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

    Parameters follow :class:`sklearn.cluster.KMeans` where they apply.  X may be dense
    (NumPy, pandas, dask arrays and dataframes) or sparse (a ``scipy.sparse`` matrix in
    any format, or a dask array of scipy.sparse blocks, e.g. text hashed with
    ``HashingVectorizer``): sparse blocks run CSR kernels whose cost is proportional to
    the non-zeros, and the centres stay dense.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {'k-means||', 'k-means++', 'random'}, callable or array of shape \
(n_clusters, n_features), default='k-means||'
        ``'k-means||'`` (default) is the scalable k-means++ of Bahmani et al. (2012), as in
        Spark MLlib and dask-ml: ``init_max_iter`` passes over the data.  ``'k-means++'``
        needs ``n_clusters`` passes.  Both draw rows with probability proportional to
        ``sample_weight * D^2`` with per-block random streams, so the result does not
        depend on which worker ran which block.

        A callable is called as scikit-learn does, ``init(X, n_clusters,
        random_state=RandomState)``, and must return ``(n_clusters, n_features)``
        centres.  In-memory input (NumPy, pandas, scipy.sparse) gives it X as validated:
        a float NumPy array or a CSR matrix (not mean-centred, unlike scikit-learn's
        internal copy for dense X).  Dask input gives it the normalised dask array (float,
        row blocks, CSR blocks for sparse input): it should work lazily (e.g. sample
        rows), and a dask result is computed.  ``sample_weight`` is not passed to it (as
        scikit-learn).
    n_init : 'auto' or int, default='auto'
        Number of initialisations; the run with the lowest inertia wins.  ``'auto'`` is 1
        for 'k-means||', 'k-means++' and an array, 10 for 'random' and a callable, as
        scikit-learn (1.4+); the number used is recorded in ``_n_init`` (as scikit-learn).
    max_iter : int, default=300
        Maximum Lloyd iterations of a run.
    tol : float, default=1e-4
        Relative tolerance on the squared shift of the centres between iterations, scaled
        by the mean variance of the features (as scikit-learn; for sparse X the variance
        counts the implicit zeros).  A run also stops when its centres stop moving.
    verbose : int, default=0
        A progress bar (``tqdm.auto`` on stderr, works in notebooks), scikit-learn's
        messages on stdout ("Initialization complete", "Iteration i, inertia x.",
        "Converged at iteration i: ...") and INFO logs on ``dmlkit``.
    random_state : int, RandomState instance or None
        Same data, same blocks and same seed give the same centres, bit for bit.
    copy_x : bool, default=True
        Accepted for scikit-learn compatibility; dmlkit never modifies X (it does not
        centre the data in place as scikit-learn does with ``copy_x=False``).
    algorithm : {'lloyd', 'elkan'}, default='lloyd'
        Accepted for scikit-learn compatibility.  Both run dmlkit's fused Lloyd kernel
        (one pass over the blocks per iteration, which suits distributed data better than
        Elkan's per-row bounds), so ``'elkan'`` gives exactly the result of ``'lloyd'``.
    oversampling_factor : float, default=2.0
        k-means||: candidates drawn per round, as a multiple of ``n_clusters``.
    init_max_iter : int or None, default=None
        k-means||: sampling rounds (None: 5, enough per Bahmani et al.).
    cache : {'auto', True, False}, default='auto'
        Persist the input blocks on the cluster (keeping lineage) or stream them from
        their source on every pass.  ``'auto'`` persists when the data takes under
        ``dmlkit.cache-fraction`` of the cluster's memory.
    checkpoint : str, path or None, default=None
        A folder (local path or fsspec URL: ``s3://``, ``gs://``, ``memory://``...)
        where the fit saves its state every ``checkpoint_interval`` iterations.  A fit
        whose checkpoint is there resumes from it, bit-identical to an uninterrupted
        fit; a checkpoint of another fit there is a ValueError (see
        "Checkpoints and resume" in the user guide).
    checkpoint_interval : int, default=1
        Lloyd iterations between checkpoint saves (the centres are small).

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features), dtype of X
    labels_ : ndarray, or dask array for dask input
    inertia_ : float
    n_iter_ : int
    resumed_from_iter_ : int
        Iterations (of all runs) the fit resumed from a checkpoint; 0 for a fresh start.
    n_features_in_ : int
    feature_names_in_ : ndarray of str (dataframe input with string column names)

    Notes
    -----
    ``transform`` / ``fit_transform`` of dask input under ``set_output(transform=
    "pandas")`` (or the global ``transform_output``) give a lazy dask DataFrame with the
    columns of ``get_feature_names_out()``; ``"polars"`` raises a ValueError for dask
    input (there is no lazy polars container to return).  NumPy and pandas input get
    scikit-learn's containers.
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions(("k-means||", "k-means++", "random")), callable, "array-like"],
        "n_init": [StrOptions(("auto",)), Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "copy_x": ["boolean"],
        "algorithm": [StrOptions(("lloyd", "elkan"))],
        "oversampling_factor": [Interval(Real, 0, None, closed="neither")],
        "init_max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "cache": [StrOptions(("auto",)), "boolean"],
        **CHECKPOINT_CONSTRAINTS,
    }

    def __init__(self, n_clusters=8, *, init="k-means||", n_init="auto", max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, copy_x=True, algorithm="lloyd",
                 oversampling_factor=2.0, init_max_iter=None, cache="auto", checkpoint=None,
                 checkpoint_interval=1):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval

    # -- parameter checks ----------------------------------------------------------
    def _check_params(self):
        validate_params(self._parameter_constraints, self.get_params(deep=False),
                        type(self).__name__)

    def _resolved_n_init(self):
        """scikit-learn's n_init='auto' (1.4+): 10 for 'random' and a callable, else 1."""
        if self.n_init == "auto":
            n_init = 10 if (callable(self.init) or (isinstance(self.init, str)
                                                    and self.init == "random")) else 1
        else:
            n_init = self.n_init
        if is_arraylike_not_scalar(self.init) and n_init != 1:
            warnings.warn("Explicit initial center position passed: performing only one init "
                          f"in {type(self).__name__} instead of n_init={n_init}.",
                          RuntimeWarning, stacklevel=3)
            n_init = 1
        return int(n_init)

    def _resolved_algorithm(self):
        if self.algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using "
                          "'lloyd' instead.", RuntimeWarning, stacklevel=3)
            return "lloyd"
        return self.algorithm

    def _check_centers(self, centers, n_features, dtype):
        """Initial centres as a C-contiguous array of X's dtype, with scikit-learn's checks
        and messages."""
        if is_dask_collection(centers):
            (centers,) = compute(centers)
        if sp.issparse(centers):
            centers = centers.toarray()
        centers = check_array(to_numpy(centers) if not isinstance(centers, (list, tuple))
                              else centers, dtype=dtype, copy=True, order="C",
                              input_name="init")
        if centers.shape[0] != self.n_clusters:
            raise ValueError(f"The shape of the initial centers {centers.shape} does not match "
                             f"the number of clusters {self.n_clusters}.")
        if centers.shape[1] != n_features:
            raise ValueError(f"The shape of the initial centers {centers.shape} does not match "
                             f"the number of features of the data {n_features}.")
        return centers

    def _check_init_array(self, n_features, dtype):
        return self._check_centers(self.init, n_features, dtype)

    def _callable_init(self, blocks, driver, seed):
        """Call a callable ``init`` as scikit-learn does (see the class docstring)."""
        rs = np.random.RandomState(seed)
        if blocks.lazy:
            centers = self.init(blocks.X, self.n_clusters, random_state=rs)
            if is_dask_collection(centers):
                centers = driver.compute(centers)[0]
        else:
            if not hasattr(self, "_callable_X"):  # the validated in-memory X, once per fit
                (self._callable_X,) = compute(blocks.X)
            centers = self.init(self._callable_X, self.n_clusters, random_state=rs)
        return self._check_centers(centers, blocks.n_features, blocks.dtype)

    # -- fit -------------------------------------------------------------------------
    @placed
    def fit(self, X, y=None, sample_weight=None):
        """Compute k-means clustering of X (numpy, pandas, scipy.sparse, dask array or
        dask dataframe)."""
        with keep_state_on_error(self):
            try:
                return self._fit(X, sample_weight)
            finally:
                self.__dict__.pop("_callable_X", None)

    def _fit(self, X, sample_weight):
        self._check_params()
        # NaN/inf in lazy X is found in the first pass's reduced sums (no extra pass).
        blocks = to_row_blocks(X, estimator=self, reset=True, sample_weight=sample_weight,
                               finite_check="caller", accept_sparse=True)
        n, k = blocks.n_samples, self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        n_init = self._resolved_n_init()
        algorithm = self._resolved_algorithm()
        init_array = None
        if is_arraylike_not_scalar(self.init):
            init_array = self._check_init_array(blocks.n_features, blocks.dtype)
        rs = check_random_state(self.random_state)
        backend = backend_of(blocks.X._meta)
        t0 = time.perf_counter()
        loop = FitLoop(self, "kmeans", blocks, cache=self.cache)
        driver = loop.driver
        # the state of the fit: the run in progress, its centres, the best finished run,
        # and the runs' seeds (random_state=None resumes with the seeds it started with)
        state, it, done = loop.restore() or (
            {"run": 0, "tol": self._tolerance(driver), "centers": None, "counts": None,
             "best": None, "seeds": rs.randint(np.iinfo(np.int32).max, size=n_init)},
            0, False)
        tol, seeds, labels = state["tol"], state["seeds"], None
        step = functools.partial(self._lloyd_step, loop, tol, backend)
        while state["run"] < n_init:
            run = state["run"]
            if state["centers"] is None:  # a run starts
                seed = int(seeds[run])
                if init_array is not None:
                    centers = init_array
                elif callable(self.init):
                    centers = self._callable_init(blocks, driver, seed)
                else:
                    centers = self._init_centers(driver, seed, backend)
                loop.say("Initialization complete")
                state = dict(state, centers=centers, counts=np.zeros(k))
                loop.save(state)
                it, done = 0, False
            state, n_iter, converged = loop.iterate(
                step, state, max_iter=self.max_iter, start=it, done=done,
                desc=f"KMeans run {run + 1}/{n_init}" if n_init > 1 else "KMeans")
            if not converged and tol > 0:
                logger.info("dmlkit-kmeans: max_iter=%d reached before tol", self.max_iter)
            inertia, run_labels = self._final_pass(driver, state["centers"], backend,
                                                   blocks.lazy)
            best = state["best"]
            if best is None or inertia < best["inertia"]:
                best = {"centers": state["centers"], "n_iter": n_iter, "inertia": inertia,
                        "counts": state["counts"]}
                labels = run_labels
            state = dict(state, run=run + 1, centers=None, counts=None, best=best)
            it, done = 0, False
        best = state["best"]
        loop.finish(state)
        centers = best["centers"]
        if labels is None and not blocks.lazy:  # the best run was finished before a resume
            _, labels = self._final_pass(driver, centers, backend, False)
        self.cluster_centers_ = centers
        self.n_iter_ = int(best["n_iter"])
        self.inertia_ = float(best["inertia"])
        self._counts = best["counts"]
        self.labels_ = labels if labels is not None else self._predict_blocks(blocks, backend)
        self._n_init, self._algorithm, self._tol = n_init, algorithm, tol
        self._fit_seconds = time.perf_counter() - t0
        distinct = _n_distinct_rows(centers)
        if distinct < k:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than "
                          f"n_clusters ({k}). Possibly due to duplicate points in X.",
                          ConvergenceWarning, stacklevel=3)
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

    def _lloyd_step(self, loop, tol, backend, state, it):
        """One Lloyd iteration: assign and accumulate in one pass, then the new centres."""
        driver, centers = loop.driver, state["centers"]
        # The exact inertia costs as much as the assignment: only for progress.
        sums, counts, inertia = driver.map_reduce(
            _lloyd_task, _combine_lloyd, driver.shared(centers, "centers"), backend,
            bool(self.verbose), step="lloyd")
        check_finite_result(sums, counts)
        loop.say(f"Iteration {it}, inertia {inertia}.")
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            sums, counts = self._relocate_empty(driver, centers, sums, counts, empty, backend)
        new = _new_centers(centers, sums, counts, driver.X.dtype)
        diff = new.astype(np.float64) - centers
        shift = float(np.square(diff, out=diff).sum())
        # The centres did not move: the next assignment is this one (scikit-learn's
        # strict convergence, which compares labels and so starts at iteration 1).
        converged = (it > 0 and shift == 0) or shift <= tol
        if it > 0 and shift == 0:
            loop.say(f"Converged at iteration {it}: strict convergence.")
        elif shift <= tol:
            loop.say(f"Converged at iteration {it}: center shift {shift} within tolerance "
                     f"{tol}.")
        return (dict(state, centers=new, counts=counts),
                Step(converged=converged, metrics={"inertia": inertia, "shift": shift}))

    def _relocate_empty(self, driver, centers, sums, counts, empty, backend):
        """Move empty clusters to the rows farthest from their centre (as scikit-learn)."""
        m = len(empty)
        parts = driver.map_blocks(_farthest_task, driver.shared(centers, "centers"), m, backend,
                                  step="relocate")
        found = driver.compute(*parts)
        d2 = np.concatenate([f[0] for f in found])
        if not len(d2) or d2.max() == 0:
            # More clusters than distinct rows: relocating is pointless (as scikit-learn).
            return sums, counts
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
    @placed
    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the centres with one batch (mini-batch k-means, learning rate 1/count).

        The first call initialises the centres from the batch with ``init``.
        """
        with keep_state_on_error(self):
            try:
                return self._partial_fit(X, sample_weight)
            finally:
                self.__dict__.pop("_callable_X", None)

    def _partial_fit(self, X, sample_weight):
        first = not hasattr(self, "cluster_centers_")
        if first:
            self._check_params()
        blocks = to_row_blocks(X, estimator=self, reset=first, sample_weight=sample_weight,
                               accept_sparse=True)
        backend = backend_of(blocks.X._meta)
        driver = Driver("kmeans", blocks, cache=False, verbose=0)
        if first:
            if blocks.n_samples < self.n_clusters:
                raise ValueError(f"n_samples={blocks.n_samples} should be >= "
                                 f"n_clusters={self.n_clusters}.")
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            if is_arraylike_not_scalar(self.init):
                centers = self._check_init_array(blocks.n_features, blocks.dtype)
            elif callable(self.init):
                centers = self._callable_init(blocks, driver, seed)
            else:
                centers = self._init_centers(driver, seed, backend)
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
        return labels if blocks.lazy else compute(labels)[0]

    @placed
    def predict(self, X):
        """Index of the nearest centre for each row (dask array for dask input)."""
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False, accept_sparse=True)
        return self._predict_blocks(blocks, backend_of(blocks.X._meta))

    @placed
    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).labels_

    @placed
    def transform(self, X):
        """Euclidean distance from each row to each centre, shape (n_samples, n_clusters)."""
        return self._transform(X)

    def _transform(self, X):
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False, accept_sparse=True)
        centers = self.cluster_centers_.astype(blocks.dtype)
        backend = backend_of(blocks.X._meta)
        meta = blocks.X._meta
        meta = np.empty((0, self.n_clusters), dtype=blocks.dtype) if sp.issparse(meta) else \
            meta[:0, :0]
        out = blocks.X.map_blocks(_distances_task, centers, backend,
                                  chunks=(blocks.X.chunks[0], (self.n_clusters,)),
                                  dtype=blocks.dtype, name="dmlkit-kmeans-transform",
                                  meta=meta)
        return out if blocks.lazy else compute(out)[0]

    @placed
    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight)._transform(X)

    @placed
    def score(self, X, y=None, sample_weight=None):
        """Opposite of the inertia of X on the fitted centres (higher is better)."""
        check_is_fitted(self)
        blocks = to_row_blocks(X, estimator=self, reset=False, sample_weight=sample_weight,
                               accept_sparse=True)
        backend = backend_of(blocks.X._meta)
        driver = Driver("kmeans", blocks, cache=False)
        centers = self.cluster_centers_.astype(blocks.dtype)
        return -driver.map_reduce(_inertia_task, _sum_floats, driver.shared(centers, "centers"),
                                  backend, step="score")

    # -- set_output with dask input --------------------------------------------------------
    def _transform_output(self):
        """The container ``set_output`` (or scikit-learn's global ``transform_output``)
        asks for, read as scikit-learn's wrapper reads it."""
        own = getattr(self, "_sklearn_output_config", {})
        return own.get("transform", _sk_get_config()["transform_output"])

    def _check_lazy_container(self, kind):
        if kind != "pandas":
            raise ValueError(
                f"set_output(transform={kind!r}) cannot wrap {type(self).__name__}'s output "
                "for dask input without computing all of it into this process; use "
                "transform='pandas' (a lazy dask DataFrame) or 'default' (a dask array), or "
                "compute the input first.")

    def _lazy_container(self, X, out):
        """A dask result as a lazy dask DataFrame named by ``get_feature_names_out`` (with
        the index of a dask DataFrame input whose partitions match the blocks)."""
        import dask.dataframe as dd

        names = [str(c) for c in self.get_feature_names_out()]
        index = getattr(X, "index", None)
        if index is not None and getattr(X, "npartitions", None) == out.numblocks[0]:
            return dd.from_dask_array(out, columns=names, index=index)
        return dd.from_dask_array(out, columns=names)

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _new_centers(centers, sums, counts, dtype):
    """sums / counts for the clusters with weight, the old centre for the others; no
    temporary of the centres' size beyond the result (they are k x d: 8 MiB for 16
    centres of 2^16 hashed features)."""
    new = centers.astype(np.float64)
    np.divide(sums, counts[:, None], out=new, where=(counts > 0)[:, None])
    return new.astype(dtype, copy=False)


def _n_distinct_rows(a):
    """Distinct rows of a small 2-D array (np.unique(axis=0) sorts structured rows: 0.3 s
    for 16 x 65536)."""
    return len({np.ascontiguousarray(row + 0.0).tobytes() for row in a})  # -0.0 == 0.0


def _lazy_output(method, compute):
    """Put a lazy path in front of scikit-learn's ``set_output`` wrapper of ``method``.

    scikit-learn's wrapper builds ``pd.DataFrame(result)``, which would pull a dask
    result into this process.  For dask input under a non-default output config,
    ``compute(self, X, *args, **kwargs)`` gives the dask array and it is wrapped lazily
    (or refused); everything else goes through scikit-learn's wrapper unchanged.
    """

    @functools.wraps(method)
    def wrapped(self, X, *args, **kwargs):
        kind = self._transform_output()
        if is_dask_collection(X) and kind != "default":
            self._check_lazy_container(kind)  # before any work
            return self._lazy_container(X, compute(self, X, *args, **kwargs))
        return method(self, X, *args, **kwargs)

    return wrapped


KMeans.transform = _lazy_output(KMeans.transform, lambda self, X: self._transform(X))
KMeans.fit_transform = _lazy_output(
    KMeans.fit_transform,
    lambda self, X, y=None, sample_weight=None: self.fit(X, sample_weight=sample_weight)
    ._transform(X))


def _sum_floats(*parts):
    total = 0.0
    for p in parts:
        total += p
    return total


__all__ = ["KMeans"]
