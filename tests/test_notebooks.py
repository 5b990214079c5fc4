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
    ns = {"__name__": "__notebook__"}
    exec(compile(src, str(path), "exec"), ns)
    assert ns["km"].cluster_centers_.shape == (6, 8)
