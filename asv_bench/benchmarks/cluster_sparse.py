"""KMeans on hashed text (CSR): dmlkit on local threads against scikit-learn.

The corpus of ``dmlkit_bench.text`` (``DMLKIT_BENCH_SGD_DOCS`` documents, 200,000 by
default, ~40 tokens each) hashed into 2^16 features (``HashingVectorizer``,
``alternate_sign=False, norm='l2'``: ~38 non-zeros a row), one scipy CSR matrix.  Both
systems start from the same 16 rows and run ``N_ITER`` Lloyd iterations (``tol=0,
n_init=1``; scikit-learn with ``algorithm="lloyd"``, its sparse Lloyd).  Read the ratio
of the two in one run; ``asv_bench/compare_kmeans.py --sparse`` times them interleaved.
"""

from dmlkit_bench import data, text
from dmlkit_bench.runners import kmeans
from dmlkit_bench.settings import N_CLUSTERS, N_ITER, SPARSE_FEATURES, TEXT_DOCS, Benchmark

SPARSE_SYSTEMS = ("dmlkit-threads", "sklearn")



class KMeansSparse(Benchmark):
    params = (list(SPARSE_SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        return text.make_text_file(TEXT_DOCS, 0, SPARSE_FEATURES)

    def setup(self, path, system):
        self.data = text.TextData(path)
        init = data.initial_centers(self.data.train()[0], N_CLUSTERS)
        self.runner = kmeans.kmeans_runner(system, kmeans.KMeansSettings(init, N_ITER))
        self.runner.prepare(self.data)  # imports and numba's dispatch

    def teardown(self, path, system):
        self.close_all("runner")

    def time_fit(self, path, system):
        self.runner.fit()

    def track_seconds_per_iteration(self, path, system):
        t0 = self.timer()
        est = self.runner.fit()
        return (self.timer() - t0) / est.n_iter_

    track_seconds_per_iteration.unit = "seconds"
