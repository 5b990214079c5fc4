"""The notebooks run top to bottom (their code cells, executed in order)."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_runs(path, monkeypatch):
    nb = json.loads(path.read_text())
    src = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # Shrink the data so the check stays quick; the code path is the same.
    src = src.replace("1_000_000", "40_000").replace("chunks=250_000", "chunks=10_000")
    monkeypatch.chdir(path.parent)  # as Jupyter runs it: relative paths from notebooks/
    ns = {"__name__": "__notebook__"}
    exec(compile(src, str(path), "exec"), ns)
    CHECKS[path.name](ns)


def _check_kmeans(ns):
    assert ns["km"].cluster_centers_.shape == (6, 8)


def _check_als(ns):
    import numpy as np

    als = ns["als"]
    assert als.user_factors_.shape[1] == 10
    assert -als.score(ns["held_out"]) < 1.0  # MovieLens or its synthetic stand-in
    assert np.all(np.diff(als.loss_curve_) <= 1e-6 * als.loss_curve_[0])
    assert len(ns["all_recs"].columns) == 4


CHECKS = {"kmeans_quickstart.ipynb": _check_kmeans, "als_movielens.ipynb": _check_als}
