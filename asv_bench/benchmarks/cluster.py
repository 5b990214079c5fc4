"""KMeans: dmlkit (threads and LocalCluster) against scikit-learn and dask-ml.

Every system starts from the same initial centres and runs exactly ``N_ITER`` Lloyd
iterations (``max_iter=N_ITER, tol=0, n_init=1``) on the same 2,000,000 x 32 float32
blobs with 16 clusters (the blobs overlap, so no system converges early); the systems
are the runners of ``dmlkit_bench.runners.kmeans``.  Figures to read are ratios between
systems of one run; ``asv_bench/compare_kmeans.py`` measures all four in one process,
interleaved.

- ``time_fit``: one whole fit (validation, the Lloyd iterations, the final labels or
  inertia pass each system does).
- ``track_seconds_per_iteration``: the same fit divided by the estimator's ``n_iter_``.
- ``track_inertia``: float64 inertia of the fitted centres on the data, computed the same
  way for every system, so a speed-up that changes the result shows.
- ``peakmem_fit`` (:class:`KMeansMemory`): the benchmark process's peak RSS.  asv only sees
  its own process, so the cluster systems run on ``LocalCluster(processes=False)`` there.
"""

from dmlkit_bench import data
from dmlkit_bench.runners import kmeans
from dmlkit_bench.settings import N_CLUSTERS, N_ITER, N_ROWS, Benchmark


class _KMeansBase(Benchmark):
    params = (list(kmeans.SYSTEMS),)
    param_names = ["system"]
    worker_processes = True  # LocalCluster(processes=...) for the cluster systems

    def setup_cache(self):
        # Generated once (cached on disk between runs too); every process loads it.
        return data.make_blobs_file(N_ROWS)

    def setup(self, path, system):
        from dmlkit_bench.cluster import DaskCluster

        self.data = data.BlobsData(path)
        init = data.initial_centers(data.load_blobs(path, mmap=True), N_CLUSTERS)
        runner_cls = kmeans.SYSTEMS[system]
        self.cluster = (DaskCluster(processes=self.worker_processes)
                        if runner_cls.uses_cluster else None)
        self.runner = runner_cls(kmeans.KMeansSettings(init, N_ITER), self.cluster)
        try:
            self.runner.prepare(self.data)
        except BaseException:
            self.teardown(path, system)
            raise

    def teardown(self, path, system):
        self.close_all("runner", "cluster")


class KMeansLloyd(_KMeansBase):
    """Time of N_ITER Lloyd iterations from a fixed init, and the quality reached."""

    def time_fit(self, path, system):
        self.runner.fit()

    def track_seconds_per_iteration(self, path, system):
        t0 = self.timer()
        est = self.runner.fit()
        seconds = self.timer() - t0
        if est.n_iter_ != N_ITER:
            raise AssertionError(f"{system} ran {est.n_iter_} iterations, not {N_ITER}")
        return seconds / est.n_iter_

    track_seconds_per_iteration.unit = "seconds"

    def track_inertia(self, path, system):
        est = self.runner.fit()
        return kmeans.inertia(data.load_blobs(path, mmap=True), est.cluster_centers_)

    track_inertia.unit = "inertia"


class KMeansMemory(_KMeansBase):
    """Peak RSS of a fit; the cluster systems use in-process workers so asv sees them."""

    worker_processes = False

    def peakmem_fit(self, path, system):
        self.runner.fit()
