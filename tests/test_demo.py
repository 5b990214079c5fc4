import pytest


@pytest.mark.slow
def test_demo_runs_small(capsys):
    from dmlkit.demo import main

    km = main(["--rows", "60000", "--features", "4", "--clusters", "3", "--block-rows", "20000"])
    out = capsys.readouterr().out
    assert "iterations:" in out and "dashboard:" in out and "inertia:" in out
    assert km.cluster_centers_.shape == (3, 4)
