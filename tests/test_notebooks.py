"""The notebooks run top to bottom (their code cells, executed in order), on less data, and
give meaningful results; their committed copies hold the outputs of a full run."""

import json
import pathlib

import numpy as np
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
MAX_NOTEBOOK_BYTES = 300_000

# Smaller data for the check (the code path is the same); every substitution must apply.
SHRINK = {
    "als_movielens.ipynb": [("factors = [2, 4, 8, 16, 32, 64]", "factors = [4, 16, 64]")],
    "kmeans_quickstart.ipynb": [("1_000_000", "40_000"), ("chunks=250_000", "chunks=10_000")],
    "fraud_detection.ipynb": [("N_SAMPLES = 1_000_000", "N_SAMPLES = 200_000"),
                              ("CHUNKS = 125_000", "CHUNKS = 25_000")],
    "text_classification.ipynb": [("N_DOCS = 60_000", "N_DOCS = 20_000"),
                                  ("CHUNKS = 15_000", "CHUNKS = 5_000")],
}


def _load(path):
    return json.loads(path.read_text())


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*non-interactive.*:UserWarning")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_runs(path, monkeypatch):
    src = "\n\n".join("".join(c["source"]) for c in _code_cells(_load(path)))
    for old, new in SHRINK.get(path.name, []):
        assert old in src, f"{path.name}: {old!r} is no longer in the notebook"
        src = src.replace(old, new)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(path.parent)  # as Jupyter runs it: relative paths from notebooks/
    import matplotlib.pyplot as plt

    ns = {"__name__": "__notebook__"}
    try:
        exec(compile(src, str(path), "exec"), ns)
    finally:
        plt.close("all")
    CHECKS[path.name](ns)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_outputs(path):
    """Every code cell was executed, in order, in one run, without errors; the notebook's
    plots are saved (PNG); the file stays small."""
    nb = _load(path)
    cells = _code_cells(nb)
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, f"{path.name}: cells never executed: run tools/run_notebooks.py"
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not one run in order"
    outputs = [o for c in cells for o in c["outputs"]]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    plots = [c for c in cells if "plt.show()" in "".join(c["source"])]
    for cell in plots:
        assert any("image/png" in o.get("data", {}) for o in cell["outputs"]), (
            f"{path.name}: a plotting cell has no PNG output: {''.join(cell['source'])[:80]}")
    assert plots, f"{path.name}: no plot"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name}: {path.stat().st_size} B"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _check_kmeans(ns):
    km = ns["km"]
    assert km.cluster_centers_.shape == (6, 8)
    inertias = np.array(ns["inertias"])
    assert ns["ks"] == list(range(2, 11)) and np.all(np.diff(inertias) < 0)
    drops = inertias[:-1] / inertias[1:]          # drops[i]: from k = i + 2 to k = i + 3
    assert drops[3] > 1.5 and drops[4:].max() < 1.1   # the elbow at k = 6
    for curve, model in [(ns["curve"], km), (ns["curve_random"], ns["km_random"])]:
        assert len(curve) == model.n_iter_ >= 1
        assert np.all(np.diff(curve) <= 1e-6 * curve[0])   # Lloyd never increases it
    assert ns["km_random"].inertia_ >= km.inertia_ * (1 - 1e-6)
    assert ns["worst"] < 0.2                       # every true centre found
    assert np.array_equal(ns["again"].cluster_centers_, km.cluster_centers_)


def _check_als(ns):
    als = ns["als"]
    assert als.user_factors_.shape[1] == 10
    assert -als.score(ns["held_out"]) < 1.0  # MovieLens or its synthetic stand-in
    assert np.all(np.diff(als.loss_curve_) <= 1e-6 * als.loss_curve_[0])
    assert len(ns["all_recs"].columns) == 4
    recs = ns["with_titles"](ns["recs"])
    assert recs["item_title"].notna().all() and len(recs) == 10
    similar = ns["similar"]
    assert len(similar) == 8 and similar.similar_item_title.notna().all()
    if ns["found"]:   # the real MovieLens: Star Wars' neighbours are its sequels
        assert ns["titles"][ns["movie"]] == "Star Wars (1977)"
        top3 = " ".join(similar.similar_item_title[:3])
        assert "Empire Strikes Back" in top3 and "Return of the Jedi" in top3
    results = ns["results"]
    assert list(results.index) == ns["factors"]
    assert results["precision@10"].max() > 1.2 * ns["baseline_precision"] > 0


def _check_fraud(ns):
    rate = ns["FRAUD_RATE"]
    assert ns["n_fraud"] == pytest.approx(rate * ns["N_SAMPLES"], rel=0.25)
    summary = ns["summary"]
    assert list(summary.index) == ["none", "balanced"]
    assert (summary["ROC AUC"] > 0.9).all()
    # weighting the frauds flags more transactions at the default threshold
    flagged = summary["flagged at the default threshold"]
    assert flagged["balanced"] > 3 * flagged["none"]
    assert ns["test_average_precision"] > 50 * rate     # far above chance (the fraud rate)
    assert ns["precision"][ns["best"]] >= ns["TARGET_PRECISION"]
    cm = ns["cm"]
    assert cm.sum() == len(ns["y_test"]) and cm[1].sum() == ns["y_test"].sum()
    assert ns["test_recall"] > 0.1 and ns["test_precision"] > 0.2


def _check_text(ns):
    assert ns["accuracy"] > 1 / 5 + 0.4                    # 5 topics: chance is 0.2
    assert ns["X"].shape == (ns["N_DOCS"], 2**16)
    assert ns["planted_share"].min() >= 0.7                # top terms are the topic's words


def _check_fault_tolerance(ns):
    assert ns["identical"] is True
    assert np.array_equal(ns["faulty"].cluster_centers_, ns["reference"].cluster_centers_)
    assert ns["worker_lost"] and ns["removals"]            # a worker really died ...
    clock = ns["clock"]
    assert clock.killed_at is not None and clock.killed_at < clock.times[-1]   # ... mid-fit
    assert len(clock.times) == ns["faulty"].n_iter_ == ns["params"]["max_iter"]
    assert ns["cluster"].status.name == "closed"


CHECKS = {"kmeans_quickstart.ipynb": _check_kmeans, "als_movielens.ipynb": _check_als,
          "fraud_detection.ipynb": _check_fraud, "text_classification.ipynb": _check_text,
          "fault_tolerance.ipynb": _check_fault_tolerance}


def test_every_notebook_is_checked():
    assert sorted(CHECKS) == sorted(p.name for p in NOTEBOOKS)
