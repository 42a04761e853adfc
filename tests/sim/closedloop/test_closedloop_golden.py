"""Trace regression: the recorded quickstart run replays to its golden summary and decisions.

Tolerances (tests/golden/README.md): decisions and integers exact, floats relative 1e-6.
Re-record deliberately with `python benchmarks/record_golden.py`.
"""

from __future__ import annotations

import math

import pytest
from closedloop_helpers import ROOT

from sim.closedloop.record import decision_diff, load_run
from sim.closedloop.run import run_scenario

GOLDEN = ROOT / "tests" / "golden" / "closedloop-quickstart"
REL = 1e-6


def compare(got: object, want: object, path: str = "summary") -> list[str]:
    """Differences between two summary documents under the stated tolerances."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        if sorted(got) != sorted(want):
            return [f"{path}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in want for d in compare(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, float) and isinstance(got, float):
        ok = math.isclose(got, want, rel_tol=REL, abs_tol=0.0)
        return [] if ok else [f"{path}: {got!r} != {want!r} (rel {REL})"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.fixture(scope="module")
def replayed():
    """The golden recording and its replay."""
    recorded = load_run(GOLDEN)
    return recorded, run_scenario(recorded.scenario)


def test_replay_matches_the_golden_summary(replayed):
    """summary.json of the replay equals the golden one (integers exact, floats 1e-6)."""
    recorded, result = replayed
    assert recorded.summary is not None
    assert compare(result.summary.to_dict(), recorded.summary) == []


def test_replay_makes_the_recorded_decisions(replayed):
    """Every cycle decides the recorded accelerator, replicas and max batch per server."""
    recorded, result = replayed
    assert len(result.cycles) == len(recorded.cycles) == 9
    assert decision_diff(recorded.cycles, result.cycles) == []


def test_compare_flags_a_moved_number():
    """The comparison itself: a 1e-5 relative change of a float or any integer change fails."""
    want = {"cost": 10.0, "requests": 5, "ttft_ms": {"mean": 1.0}}
    assert compare({"cost": 10.0001, "requests": 5, "ttft_ms": {"mean": 1.0}}, want)
    assert compare({"cost": 10.0, "requests": 6, "ttft_ms": {"mean": 1.0}}, want)
    assert compare({"cost": 10.0 * (1 + 1e-8), "requests": 5, "ttft_ms": {"mean": 1.0}},
                   want) == []
