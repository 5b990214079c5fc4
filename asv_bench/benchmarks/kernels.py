"""Single-block k-means kernels, without Dask.

``assign_partial_sums_block(X, None, centers, n_threads)`` (the fused assign + accumulate
of one Lloyd pass over one block) from the numba module ``_kernels_cpu`` and from the
array-API module ``_kernels_xp`` (run here on NumPy, where its matrix products use BLAS),
on one 500,000 x 32 float32 block with 16 centres.  ``n_threads`` is numba's thread count
for the numba kernel and the BLAS thread limit for the array-API one (which ignores its
``n_threads`` argument), so both get the same cores.  The JIT is warmed in setup.
"""

import numpy as np

from dmlkit_bench.data import initial_centers, load_blobs, make_blobs_file
from dmlkit_bench.settings import KERNEL_ROWS, N_CLUSTERS, Benchmark


class AssignPartialSumsBlock(Benchmark):
    params = (["numba", "xp"], [1, 2])
    param_names = ["kernel", "n_threads"]
    repeat = (3, 10, 30.0)
    number = 1

    def setup_cache(self):
        return make_blobs_file(KERNEL_ROWS)

    def setup(self, path, kernel, n_threads):
        from dmlkit._core.numba_utils import parallel_available
        from dmlkit.cluster import _kernels_cpu, _kernels_xp
        from threadpoolctl import threadpool_limits

        if kernel == "numba" and n_threads > 1 and not parallel_available():
            raise NotImplementedError("no thread-safe numba threading layer (tbb/omp)")
        self.X = np.ascontiguousarray(load_blobs(path))
        self.centers = initial_centers(self.X, N_CLUSTERS)
        self.n_threads = n_threads
        self.module = _kernels_cpu if kernel == "numba" else _kernels_xp
        self.limits = threadpool_limits(limits=n_threads, user_api="blas")
        # warm the JIT (numba compiles or loads its cache on the first call)
        self.result = self.module.assign_partial_sums_block(self.X[:4096], None, self.centers,
                                                            n_threads=n_threads)

    def teardown(self, path, kernel, n_threads):
        self.limits.restore_original_limits()

    def time_assign_partial_sums(self, path, kernel, n_threads):
        self.module.assign_partial_sums_block(self.X, None, self.centers, n_threads=n_threads)

    def track_inertia(self, path, kernel, n_threads):
        _, _, inertia = self.module.assign_partial_sums_block(self.X, None, self.centers,
                                                              n_threads=n_threads)
        return float(np.asarray(inertia))

    track_inertia.unit = "inertia"
