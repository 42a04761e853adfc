"""Greedy saturation policies on the capacity-starved small sample (docs/design/optimizer-model.md
§7.5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from inferno.io import load_system
from inferno.model import BatchPolicy, PerfModel, SaturationPolicy
from inferno.optimizer import Status, solve

SMALL = Path(__file__).resolve().parents[3] / "sample-data" / "small"

# §7.5 table: server -> cell per column; "-" = no allocation.
COLUMNS = ("None", "PriorityExhaustive", "RoundRobin", "delayed")
TABLE = {
    "Premium-granite_13b": ("G2×2", "G2×2", "G2×2", "G2×2"),
    "Premium-granite_34b": ("4xA100×5", "4xA100×5", "4xA100×5", "4xA100×5"),
    "Premium-llama_13b": ("G2×3", "G2×3", "G2×3", "G2×3"),
    "Premium-llama_70b": ("-", "G2×1", "G2×1", "4xA100×1"),
    "Premium-mixtral_8_7b": ("G2×27", "G2×27", "G2×27", "G2×27"),
    "Bronze-granite_13b": ("A100×4", "A100×4", "A100×4", "A100×4"),
    "Bronze-granite_34b": ("4xA100×9", "-", "4xA100×2", "4xA100×9"),
    "Bronze-llama_13b": ("G2×5", "A100×7", "A100×7", "G2×5"),
    "Bronze-llama_70b": ("-", "-", "4xA100×3", "-"),
    "Bronze-mixtral_8_7b": ("-", "4xA100×8", "4xA100×3", "-"),
    "Free-granite_13b": ("-", "G2×1", "G2×1", "-"),
    "Free-llama_13b": ("-", "A100×1", "A100×1", "-"),
    "Free-granite_34b": ("-", "-", "-", "-"),
    "Free-llama_70b": ("-", "-", "-", "-"),
    "Free-mixtral_8_7b": ("-", "-", "-", "-"),
}
TOTAL = {"None": 3872, "PriorityExhaustive": 4032, "RoundRobin": 4032, "delayed": 4032}
RUNS = [
    ("None", SaturationPolicy.NONE, False, "None"),
    ("None-delayed", SaturationPolicy.NONE, True, "None"),
    ("PriorityExhaustive", SaturationPolicy.PRIORITY_EXHAUSTIVE, False, "PriorityExhaustive"),
    ("PriorityRoundRobin", SaturationPolicy.PRIORITY_ROUND_ROBIN, False, "RoundRobin"),
    ("RoundRobin", SaturationPolicy.ROUND_ROBIN, False, "RoundRobin"),
    ("PriorityExhaustive-delayed", SaturationPolicy.PRIORITY_EXHAUSTIVE, True, "delayed"),
    ("PriorityRoundRobin-delayed", SaturationPolicy.PRIORITY_ROUND_ROBIN, True, "delayed"),
    ("RoundRobin-delayed", SaturationPolicy.ROUND_ROBIN, True, "delayed"),
]


def _starved(policy: SaturationPolicy, delayed: bool):
    system = load_system(SMALL, overrides={"perf_model": PerfModel.CLASSIC,
                                           "batch_policy": BatchPolicy.SCALED,
                                           "saturation_policy": policy,
                                           "delayed_best_effort": delayed})
    return dataclasses.replace(system, capacity={"A100": 64, "G2": 64})


@pytest.mark.parametrize(("policy", "delayed", "column"), [r[1:] for r in RUNS],
                         ids=[r[0] for r in RUNS])
def test_capacity_starved_table(policy: SaturationPolicy, delayed: bool, column: str) -> None:
    """Each saturation policy gives the §7.5 allocation and total cost."""
    solution = solve(_starved(policy, delayed))
    col = COLUMNS.index(column)
    got = {name: f"{a.accelerator}×{a.num_replicas}"
           for name, a in solution.allocations.items()}
    expected = {name: cells[col] for name, cells in TABLE.items() if cells[col] != "-"}
    assert got == expected
    assert solution.cost == pytest.approx(TOTAL[column])
    assert set(solution.unallocated) == {n for n, c in TABLE.items() if c[col] == "-"}
    assert solution.status is Status.PARTIAL


def test_unlimited_uses_g2_everywhere() -> None:
    """Unlimited mode: §7.4 except three servers that move to G2 (§7.5)."""
    system = load_system(SMALL, overrides={"perf_model": PerfModel.CLASSIC,
                                           "batch_policy": BatchPolicy.SCALED,
                                           "unlimited": True})
    solution = solve(system)
    assert {a.accelerator for a in solution.allocations.values()} == {"G2"}
    moved = {n: (a.num_replicas, a.cost) for n, a in solution.allocations.items()
             if n in ("Bronze-llama_70b", "Free-llama_70b", "Free-mixtral_8_7b")}
    assert moved == {"Bronze-llama_70b": (75, 6900), "Free-llama_70b": (132, 12144),
                     "Free-mixtral_8_7b": (90, 4140)}
    assert solution.status is Status.OPTIMAL


LIGHT_HEAD = {
    "Premium-granite_13b": ("G2", 2, 46), "Premium-granite_34b": ("G2", 6, 276),
    "Premium-llama_13b": ("G2", 3, 69), "Premium-llama_70b": ("G2", 21, 1932),
    "Premium-mixtral_8_7b": ("G2", 19, 874),
    "Bronze-granite_13b": ("G2", 3, None), "Bronze-granite_34b": ("G2", 11, None),
    "Bronze-llama_13b": ("G2", 5, None), "Bronze-llama_70b": ("G2", 42, None),
    "Bronze-mixtral_8_7b": ("G2", 33, None),
    "Free-granite_13b": ("G2", 6, None), "Free-granite_34b": ("G2", 22, None),
    "Free-llama_13b": ("G2", 9, None), "Free-llama_70b": ("4xA100", 54, None),
    "Free-mixtral_8_7b": ("4xA100", 41, None),
}


def test_optimizer_light_head_semantics() -> None:
    """chunked (G7) + scaled + Q = 0 gives the §7.5 optimizer-light HEAD allocation."""
    system = load_system(SMALL, overrides={"perf_model": PerfModel.CHUNKED,
                                           "batch_policy": BatchPolicy.SCALED})
    servers = tuple(dataclasses.replace(s, max_queue_size=0) for s in system.servers)
    solution = solve(dataclasses.replace(system, servers=servers))
    for name, (acc, n, cost) in LIGHT_HEAD.items():
        got = solution.allocations[name]
        assert (got.accelerator, got.num_replicas) == (acc, n), name
        if cost is not None:
            assert got.cost == pytest.approx(cost), name


@pytest.mark.parametrize(("factor", "expected"), [(0.1, "G2"), (1.0, "A100")])
def test_accel_penalty_factor_decides_migration(factor: float, expected: str) -> None:
    """§3.4: from A100×3 (cost 120), G2×2 (46) has value f·(120+46) − 74: < 0 at 0.1, > 0 at 1."""
    system = load_system(SMALL, overrides={"perf_model": PerfModel.CLASSIC,
                                           "batch_policy": BatchPolicy.SCALED,
                                           "unlimited": True, "accel_penalty_factor": factor})
    server = next(s for s in system.servers if s.name == "Premium-granite_13b")
    current = dataclasses.replace(server.current, accelerator="A100", num_replicas=3, cost=120.0)
    system = dataclasses.replace(system, servers=(dataclasses.replace(server, current=current),))
    assert solve(system).allocations["Premium-granite_13b"].accelerator == expected
