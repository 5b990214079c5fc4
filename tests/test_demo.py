import pytest


@pytest.mark.slow
def test_demo_runs_small(capsys, caplog):
    import logging

    from dmlkit.demo import main

    caplog.set_level(logging.WARNING, logger="distributed")
    km = main(["--rows", "60000", "--features", "4", "--clusters", "3", "--block-rows", "20000"])
    out = capsys.readouterr().out
    assert "iterations:" in out and "inertia:" in out
    # no link to a dashboard that closes with the demo, unless asked to keep it open
    assert "dashboard" not in out and "127.0.0.1" in out
    assert km.cluster_centers_.shape == (3, 4)
    # the embedded cluster closes cleanly (no nanny killing a worker that would not exit)
    assert not [r for r in caplog.records if "still alive" in r.getMessage()
                or "killing" in r.getMessage().lower()]


@pytest.mark.slow
def test_demo_keeps_the_dashboard_open_when_asked(capsys, monkeypatch):
    from dmlkit.demo import main

    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt))
    main(["--rows", "20000", "--features", "3", "--clusters", "2", "--block-rows", "10000",
          "--dashboard"])
    out = capsys.readouterr().out
    assert "dashboard: http://127.0.0.1:" in out
    assert prompts and "close the cluster" in prompts[0]
