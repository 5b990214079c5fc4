"""KMeans on hashed text (CSR): dmlkit on local threads against scikit-learn.

The corpus of ``common.make_text_file`` (``DMLKIT_BENCH_SGD_DOCS`` documents, 200,000 by
default, ~40 tokens each) hashed into 2^16 features (``HashingVectorizer``,
``alternate_sign=False, norm='l2'``: ~38 non-zeros a row), one scipy CSR matrix.  Both
systems start from the same 16 rows and run ``N_ITER`` Lloyd iterations (``tol=0,
n_init=1``; scikit-learn with ``algorithm="lloyd"``, its sparse Lloyd).  Read the ratio
of the two in one run; ``asv_bench/compare_kmeans.py --sparse`` times them interleaved.
"""

import numpy as np

from .common import N_CLUSTERS, N_ITER, TEXT_DOCS, Benchmark, load_text, make_text_file

SPARSE_FEATURES = 2**16
SPARSE_SYSTEMS = ("dmlkit-threads", "sklearn")


def _initial_rows(X, k, seed=0):
    rng = np.random.default_rng([seed, 12345])
    idx = np.sort(rng.choice(X.shape[0], size=k, replace=False))
    return np.ascontiguousarray(X[idx].toarray())


def _fit(system, X, init, max_iter):
    kw = dict(n_clusters=init.shape[0], init=init, n_init=1, max_iter=max_iter, tol=0.0,
              random_state=0)
    if system == "sklearn":
        from sklearn.cluster import KMeans

        return KMeans(algorithm="lloyd", **kw).fit(X)
    import dmlkit

    return dmlkit.KMeans(**kw).fit(X)


class KMeansSparse(Benchmark):
    params = (list(SPARSE_SYSTEMS),)
    param_names = ["system"]

    def setup_cache(self):
        return make_text_file(TEXT_DOCS, 0, SPARSE_FEATURES)

    def setup(self, path, system):
        self.X = load_text(path, "train")[0].tocsr()
        self.init = _initial_rows(self.X, N_CLUSTERS)
        _fit(system, self.X[:4096], self.init, 2)  # imports and numba's dispatch

    def time_fit(self, path, system):
        _fit(system, self.X, self.init, N_ITER)

    def track_seconds_per_iteration(self, path, system):
        t0 = self.timer()
        est = _fit(system, self.X, self.init, N_ITER)
        return (self.timer() - t0) / est.n_iter_

    track_seconds_per_iteration.unit = "seconds"
