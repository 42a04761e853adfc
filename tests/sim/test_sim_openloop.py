

def test_default_workers_follow_size_cores_and_load(monkeypatch):
    """Worker count is a speed choice only (the summaries above are identical either way)."""
    import os

    from sim.openloop import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert default_workers(1000, 9e6) == 2
    assert default_workers(20, 180_000) == 1  # busy machine, medium run
    assert default_workers(20, 1000) == 1
    assert default_workers(1, 9e6) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert default_workers(20, 180_000) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_workers(1000, 9e6) == 1
