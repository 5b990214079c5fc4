"""KMeans: dmlkit (threads and LocalCluster) against scikit-learn and dask-ml.

Every system starts from the same initial centres and runs exactly ``N_ITER`` Lloyd
iterations (``max_iter=N_ITER, tol=0, n_init=1``) on the same 2,000,000 x 32 float32
blobs with 16 clusters (the blobs overlap, so no system converges early).  Figures to
read are ratios between systems of one run; ``asv_bench/compare_kmeans.py`` measures all
four in one process, interleaved.

- ``time_fit``: one whole fit (validation, the Lloyd iterations, the final labels or
  inertia pass each system does).
- ``track_seconds_per_iteration``: the same fit divided by the estimator's ``n_iter_``.
- ``track_inertia``: float64 inertia of the fitted centres on the data, computed the same
  way for every system, so a speed-up that changes the result shows.
- ``peakmem_fit`` (:class:`KMeansMemory`): the benchmark process's peak RSS.  asv only sees
  its own process, so the cluster systems run on ``LocalCluster(processes=False)`` there.

Inputs: dmlkit-threads and scikit-learn get the numpy array; dmlkit-localcluster and
dask-ml get the same dask array, persisted on the cluster in setup, in the blocks dmlkit
picks for numpy input (``dmlkit.block-size``, 128 MiB: 1,048,576 rows of 32 float32).
"""

from .common import (
    N_CLUSTERS,
    N_ITER,
    N_ROWS,
    SYSTEMS,
    Benchmark,
    KMeansCase,
    inertia,
    load_blobs,
    make_blobs_file,
)


class _KMeansBase(Benchmark):
    params = (list(SYSTEMS),)
    param_names = ["system"]
    worker_processes = True  # LocalCluster(processes=...) for the cluster systems

    def setup_cache(self):
        # Generated once (cached on disk between runs too); every process loads it.
        return make_blobs_file(N_ROWS)

    def setup(self, path, system):
        self.case = KMeansCase(system, path, N_CLUSTERS, N_ITER, processes=self.worker_processes)

    def teardown(self, path, system):
        self.case.close()


class KMeansLloyd(_KMeansBase):
    """Time of N_ITER Lloyd iterations from a fixed init, and the quality reached."""

    def time_fit(self, path, system):
        self.case.fit()

    def track_seconds_per_iteration(self, path, system):
        t0 = self.timer()
        est = self.case.fit()
        seconds = self.timer() - t0
        if est.n_iter_ != N_ITER:
            raise AssertionError(f"{system} ran {est.n_iter_} iterations, not {N_ITER}")
        return seconds / est.n_iter_

    track_seconds_per_iteration.unit = "seconds"

    def track_inertia(self, path, system):
        est = self.case.fit()
        return inertia(load_blobs(path, mmap=True), est.cluster_centers_)

    track_inertia.unit = "inertia"


class KMeansMemory(_KMeansBase):
    """Peak RSS of a fit; the cluster systems use in-process workers so asv sees them."""

    worker_processes = False

    def peakmem_fit(self, path, system):
        self.case.fit()
