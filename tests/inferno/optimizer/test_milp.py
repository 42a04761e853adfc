"""MILP solver: optimal by brute force, capacity-safe, priority-first, splits when needed."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from inferno.io import load_system
from inferno.model import BatchPolicy, PerfModel, SaturationPolicy, SolverKind
from inferno.optimizer import compute_candidates, solve

SMALL = Path(__file__).resolve().parents[3] / "sample-data" / "small"
SERVERS = ("Premium-granite_13b", "Premium-llama_13b", "Bronze-granite_13b",
           "Bronze-llama_13b", "Free-granite_13b")


def _system(capacity: dict[str, int], heterogeneous: bool = False):
    system = load_system(SMALL, overrides={"perf_model": PerfModel.CLASSIC,
                                           "batch_policy": BatchPolicy.SCALED,
                                           "saturation_policy": SaturationPolicy.NONE,
                                           "heterogeneous": heterogeneous})
    servers = tuple(s for s in system.servers if s.name in SERVERS)
    return dataclasses.replace(system, servers=servers, capacity=capacity)


def _brute_force(system) -> tuple[tuple[int, ...], float]:
    """Best (served per priority level, -value) over every combination of candidates."""
    cands = compute_candidates(system)
    prio = {s.name: system.classes[s.class_name].priority for s in system.servers}
    levels = sorted(set(prio.values()))
    names = sorted(cands)
    best = None
    for combo in itertools.product(*[[None, *cands[n]] for n in names]):
        used: dict[str, int] = {}
        for c in combo:
            if c is not None:
                used[c.acc_type] = used.get(c.acc_type, 0) + c.cards
        if any(v > system.capacity.get(t, 0) for t, v in used.items()):
            continue
        served = tuple(sum(1 for n, c in zip(names, combo, strict=True)
                           if c is not None and prio[n] == p) for p in levels)
        value = sum(c.value for c in combo if c is not None)
        key = (served, -value)
        if best is None or key > best:
            best = key
    assert best is not None
    return best[0], -best[1]


@pytest.mark.parametrize("capacity", [{"G2": 8, "A100": 8}, {"G2": 4, "A100": 16},
                                      {"G2": 2, "A100": 2, "L4": 40}],
                         ids=["g2-8", "g2-4", "tiny"])
def test_milp_matches_brute_force(capacity: dict[str, int]) -> None:
    """The lexicographic MILP attains the brute-force optimum (served per priority, value)."""
    system = _system(capacity)
    served, value = _brute_force(system)
    solution = solve(system, solver=SolverKind.MILP)
    cands = {c.server: c for cs in compute_candidates(system).values() for c in cs
             if (a := solution.allocations.get(c.server)) is not None
             and (c.accelerator, c.num_replicas) == (a.accelerator, a.num_replicas)}
    prio = {s.name: system.classes[s.class_name].priority for s in system.servers}
    levels = sorted(set(prio.values()))
    got_served = tuple(sum(1 for n in solution.allocations if prio[n] == p) for p in levels)
    assert got_served == served
    assert sum(c.value for c in cands.values()) == pytest.approx(value)


def test_milp_respects_capacity_and_beats_greedy_on_priority() -> None:
    """No type is over-used, and the MILP serves at least as many premium servers as greedy."""
    system = _system({"G2": 6, "A100": 6})
    milp_sol = solve(system, solver=SolverKind.MILP)
    greedy_sol = solve(system, solver=SolverKind.GREEDY)
    used: dict[str, int] = {}
    units = {(m, a): p.acc_count * system.accelerators[a].multiplicity
             for (m, a), p in system.perf.items()}
    servers = {s.name: s for s in system.servers}
    for name, a in milp_sol.allocations.items():
        t = system.accelerators[a.accelerator].type
        used[t] = used.get(t, 0) + a.num_replicas * units[(servers[name].model, a.accelerator)]
    assert all(used[t] <= system.capacity.get(t, 0) for t in used)
    premium = lambda sol: sum(1 for n in sol.allocations if n.startswith("Premium"))  # noqa: E731
    assert premium(milp_sol) >= premium(greedy_sol)


def test_milp_equals_unlimited_when_capacity_is_ample() -> None:
    """With capacity to spare every server takes its cheapest option, as in unlimited mode."""
    system = _system({"G2": 10_000, "A100": 10_000, "L4": 10_000, "AIU2": 10_000})
    milp_sol = solve(system, solver=SolverKind.MILP)
    unl = solve(system, solver=SolverKind.UNLIMITED)
    assert {n: (a.accelerator, a.num_replicas) for n, a in milp_sol.allocations.items()} == \
        {n: (a.accelerator, a.num_replicas) for n, a in unl.allocations.items()}
    assert milp_sol.cost == pytest.approx(unl.cost)


def test_heterogeneous_splits_a_server_over_two_types() -> None:
    """When no single type can hold a server, heterogeneous mode spreads its replicas."""
    system = _system({"G2": 1, "A100": 1})
    system = dataclasses.replace(system, servers=tuple(
        s for s in system.servers if s.name == "Premium-granite_13b"))
    single = solve(system, solver=SolverKind.MILP)
    hetero = solve(dataclasses.replace(
        system, settings=dataclasses.replace(system.settings, heterogeneous=True)),
        solver=SolverKind.MILP)
    assert single.unallocated == ("Premium-granite_13b",)
    assert hetero.unallocated == ()
    parts = hetero.parts["Premium-granite_13b"]
    assert {p.accelerator for p in parts} == {"G2", "A100"}
    assert sum(p.num_replicas for p in parts) == 2
