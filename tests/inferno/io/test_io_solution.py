"""Solution documents: upstream field names, reading upstream files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from inferno.errors import ConfigError
from inferno.io import load_system, write_json_atomic
from inferno.io.solution import read_solution, read_unallocated, solution_to_json
from inferno.model import Allocation, Load
from inferno.optimizer.result import Solution, Status

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"
CASES = ROOT / "tests" / "data" / "optimizer-cases"


def test_solution_to_json_shape() -> None:
    """Allocations use the solution-data.json names, sorted, with the server's current load."""
    system = load_system(SMALL)
    alloc = Allocation(accelerator="G2", num_replicas=3, max_batch=38, cost=69.0,
                       itl_ms=36.419655, ttft_ms=425.16748, load=Load())
    other = Allocation(accelerator="A100", num_replicas=1, max_batch=8, cost=40.0, itl_ms=None,
                       ttft_ms=None, saturated=True,
                       load=Load(arrival_rpm=5.0, avg_in_tokens=1, avg_out_tokens=2))
    solution = Solution(status=Status.PARTIAL, message="1 server unallocated",
                        allocations={"zz-not-in-system": other, "Bronze-granite_13b": alloc},
                        unallocated=("Free-mixtral_8_7b", "Free-llama_70b"),
                        best_effort=("Premium-llama_70b",), cost=109.0, solve_time_s=0.0125)
    assert solution_to_json(solution, system) == {
        "allocations": {
            "Bronze-granite_13b": {
                "accelerator": "G2", "numReplicas": 3, "maxBatch": 38, "cost": 69.0,
                "itlAverage": 36.419655, "ttftAverage": 425.16748, "saturated": False,
                "load": {"arrivalRate": 120.0, "throughput": 0.0, "avgInTokens": 128,
                         "avgOutTokens": 1024}},
            "zz-not-in-system": {
                "accelerator": "A100", "numReplicas": 1, "maxBatch": 8, "cost": 40.0,
                "itlAverage": None, "ttftAverage": None, "saturated": True,
                "load": {"arrivalRate": 5.0, "throughput": 0.0, "avgInTokens": 1,
                         "avgOutTokens": 2}},
        },
        "unallocated": ["Free-llama_70b", "Free-mixtral_8_7b"],
        "bestEffort": ["Premium-llama_70b"],
        "solveTimeMs": 12.5,
        "status": "partial",
        "message": "1 server unallocated",
        "totalCost": 109.0,
    }
    assert list(solution_to_json(solution, system)["allocations"]) == [
        "Bronze-granite_13b", "zz-not-in-system"]


def test_solution_parts_written_when_present() -> None:
    """Heterogeneous parts appear under "parts" only when the solution has some."""
    system = load_system(SMALL)
    part = Allocation(accelerator="L4", num_replicas=2, max_batch=4, cost=24.0)
    solution = Solution(status=Status.OPTIMAL, message="", parts={"s": (part,)})
    doc = solution_to_json(solution, system)
    assert doc["parts"] == {"s": [{
        "accelerator": "L4", "numReplicas": 2, "maxBatch": 4, "cost": 24.0, "itlAverage": 0.0,
        "ttftAverage": 0.0, "saturated": False,
        "load": {"arrivalRate": 0.0, "throughput": 0.0, "avgInTokens": 0, "avgOutTokens": 0}}]}
    assert "parts" not in solution_to_json(Solution(status=Status.OPTIMAL, message=""), system)


def test_written_solution_reads_back(tmp_path: Path) -> None:
    """A written solution document reads back to the same allocations (server loads)."""
    system = load_system(SMALL)
    alloc = Allocation(accelerator="G2", num_replicas=3, max_batch=38, cost=69.0,
                       itl_ms=36.419655, ttft_ms=425.16748, load=system.servers[5].load)
    solution = Solution(status=Status.OPTIMAL, message="",
                        allocations={system.servers[5].name: alloc})
    path = tmp_path / "out.json"
    write_json_atomic(path, solution_to_json(solution, system))
    assert read_solution(path) == {system.servers[5].name: alloc}
    saturated = dataclasses.replace(alloc, itl_ms=None, ttft_ms=None, saturated=True)
    solution = dataclasses.replace(solution, allocations={system.servers[5].name: saturated})
    write_json_atomic(path, solution_to_json(solution, system))
    assert read_solution(path) == {system.servers[5].name: saturated}


def test_read_upstream_solution() -> None:
    """sample small solution-data.json: 15 allocations, Bronze-granite_13b as in the file."""
    allocations = read_solution(SMALL / "solution-data.json")
    assert len(allocations) == 15
    assert allocations["Bronze-granite_13b"] == Allocation(
        accelerator="G2", num_replicas=3, max_batch=38, cost=69.0, itl_ms=36.419655,
        ttft_ms=425.16748, load=Load(arrival_rpm=120.0, avg_in_tokens=128, avg_out_tokens=1024))


def test_read_expected_solution_and_unallocated() -> None:
    """Reference case 001: 16 allocations and the three servers of expected-unallocated.txt."""
    allocations = read_solution(CASES / "case-001" / "expected-solution.json")
    assert len(allocations) == 16
    assert allocations["Batch2K-granite_34b-15"] == Allocation(
        accelerator="MI300X", num_replicas=3, max_batch=28, cost=196.0122, itl_ms=31.155695,
        ttft_ms=1105.8755, load=Load(arrival_rpm=59.377, avg_in_tokens=64, avg_out_tokens=1024))
    assert read_unallocated(CASES / "case-001" / "expected-unallocated.txt") == (
        "Batch2K-llama3_8b-4", "Batch2K-llama_7b-14", "Batch2K-mistral_7b-7")


def test_read_solution_case_insensitive(tmp_path: Path) -> None:
    """Solution keys match in any case, like every upstream input."""
    path = tmp_path / "solution-data.json"
    path.write_text(json.dumps({"ALLOCATIONS": {"s": {"Accelerator": "L4", "NUMREPLICAS": 2,
                                                      "maxbatch": 4}}}))
    assert read_solution(path) == {"s": Allocation(accelerator="L4", num_replicas=2,
                                                   max_batch=4)}


def test_read_solution_bad_values(tmp_path: Path) -> None:
    """Bad solution values are all reported with their paths."""
    path = tmp_path / "solution-data.json"
    path.write_text(json.dumps({"allocations": {"a": {"numReplicas": "3"},
                                                "b": {"cost": -1, "load": []}}}))
    with pytest.raises(ConfigError) as info:
        read_solution(path)
    assert info.value.problems == (
        'solution-data.json: allocations.a.numReplicas: must be an integer, got "3"',
        "solution-data.json: allocations.b.cost: must be >= 0, got -1",
        "solution-data.json: allocations.b.load: must be an object, got a list",
    )


def test_read_unallocated_rejects_other_text(tmp_path: Path) -> None:
    """A text without the bracketed server list is a ConfigError."""
    path = tmp_path / "expected-unallocated.txt"
    path.write_text("all good\n")
    with pytest.raises(ConfigError, match="no '\\[server, ...\\]' list found"):
        read_unallocated(path)
