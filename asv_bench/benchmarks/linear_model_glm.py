"""Full-batch logistic regression to the optimum: dmlkit (threads and LocalCluster)
against scikit-learn's lbfgs, scikit-learn-intelex and dask-ml (the runners of
``dmlkit_bench.runners.glm``), on the dense problem of ``compare_sgd.py`` (2,000,000 x 50
float64, standardised make_classification), l2 with C=1, every system at tol=1e-4.

- ``time_fit``: wall time of one fit to the system's own convergence.
- ``track_objective_gap``: the objective's relative distance to scikit-learn's at
  tol=1e-10 (computed once per benchmark process, in setup).
- ``track_passes``: dmlkit's passes over the data (line-search trials included).
"""

from dmlkit_bench import data
from dmlkit_bench.runners import glm
from dmlkit_bench.settings import N_ROWS, SGD_BLOCK_ROWS, SGD_FEATURES, SGD_TEST_ROWS, Benchmark


class LogisticRegressionDense(Benchmark):
    params = (list(glm.SYSTEMS),)
    param_names = ["system"]
    timeout = 1200  # dask-ml on 2,000,000 rows

    def setup_cache(self):
        return data.make_classification_files(N_ROWS, SGD_FEATURES, SGD_TEST_ROWS)

    def setup(self, cached, system):
        self.data = data.ClassificationData(cached, SGD_BLOCK_ROWS)
        self.runner = glm.SYSTEMS[system](glm.GLMSettings())
        try:
            self.runner.prepare(self.data)
        except BaseException:
            self.close_all("runner")
            raise

    def teardown(self, cached, system):
        self.close_all("runner")

    def time_fit(self, cached, system):
        self.runner.fit()

    def track_objective_gap(self, cached, system):
        import warnings

        from sklearn.linear_model import LogisticRegression

        X, y = self.data.train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            best = LogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y)
        f_star = glm.objective(best, X, y, 1.0)
        return (glm.objective(self.runner.fit(), X, y, 1.0) - f_star) / abs(f_star)

    track_objective_gap.unit = "relative"

    def track_passes(self, cached, system):
        return int(getattr(self.runner.fit(), "n_passes_", -1))

    track_passes.unit = "passes"
