"""`inferno sim bench --workers`: the process count of a per-replica run changes its speed,
never its result (the summary is identical to the SimPy run's, `tests/sim/test_sim_openloop.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from inferno.cli import LazyGroup
from inferno.commands.sim import bench

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"


def invoke(*args: str):
    group = LazyGroup(name="inferno", commands={"bench": bench})
    return CliRunner().invoke(group, [
        "bench", "--data", str(SMALL), "--model", "granite_13b", "--accelerator", "A100",
        "--input-tokens", "64", "--output-tokens", "16", "--replicas", "4", "--rate", "6",
        "--duration", "60", "--seed", "3", "--json", *args])


def test_one_and_two_workers_print_the_same_document() -> None:
    one, two = invoke("--workers", "1"), invoke("--workers", "2")
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    first = json.loads(one.output)
    assert first["num_requests"] > 300  # 6 req/s for 60 s: about 360 requests
    assert first == json.loads(two.output)
    assert json.loads(invoke().output) == first  # the automatic count, too


def test_a_worker_count_below_one_is_a_usage_error() -> None:
    result = invoke("--workers", "0")
    assert result.exit_code == 2
    assert "--workers" in result.output
