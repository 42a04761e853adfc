"""MILP properties on random small systems: brute-force optimum, never below greedy, never fails.

The MILP's contract (docs/milp.md): among the allocations that serve, at every priority level,
at least as many servers as the greedy solver, the lexicographic maximum of servers served per
level (highest priority first), then the least total value. Checked against enumeration of
every allocation on random systems, most of them capacity-starved.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from inferno.io import load_system
from inferno.model import Load, SaturationPolicy, Server, SolverKind, System
from inferno.optimizer import Candidate, compute_candidates, solve
from inferno.optimizer.greedy import solve_greedy
from inferno.optimizer.milp import solve_milp_heterogeneous, solve_milp_single

CASES = Path(__file__).resolve().parents[2] / "data" / "optimizer-cases"
SEEDS = range(40)


def _candidates(rng: np.random.Generator, num_servers: int, types: Sequence[str]
                ) -> tuple[dict[str, list[Candidate]], dict[str, int]]:
    """Random candidates (1–4 per server), sorted by (value, accelerator) as the optimizer's."""
    cands: dict[str, list[Candidate]] = {}
    prio: dict[str, int] = {}
    for i in range(num_servers):
        name = f"s{i}"
        prio[name] = int(rng.integers(1, 4))
        opts = []
        for j in rng.choice(len(types) * 2, size=int(rng.integers(1, min(5, len(types) * 2 + 1))),
                            replace=False):
            units, n = int(rng.integers(1, 3)), int(rng.integers(1, 4))
            cost = float(rng.integers(1, 40)) * n
            opts.append(Candidate(name, f"acc{j}", types[j % len(types)], units, n, 8, cost,
                                  cost * 1.1, np.nan, np.nan, np.nan,
                                  float(rng.uniform(0.5, 2.0)), 0, n))
        cands[name] = sorted(opts, key=lambda c: (c.value, c.accelerator))
    return cands, prio


def _levels(prio: Mapping[str, int], served: object) -> tuple[int, ...]:
    return tuple(sum(1 for s in served if prio[s] == p)  # type: ignore[attr-defined]
                 for p in sorted(set(prio.values())))


def _brute_force(cands: Mapping[str, list[Candidate]], prio: Mapping[str, int],
                 capacity: Mapping[str, int], floor: tuple[int, ...]
                 ) -> tuple[tuple[int, ...], float, tuple[int, ...]]:
    """(served per level, value) of the best allocation meeting ``floor``, and the plain
    lexicographic optimum's served per level (no floor)."""
    names = sorted(cands)
    best, plain = None, None
    for combo in itertools.product(*[[None, *cands[n]] for n in names]):
        used: dict[str, int] = {}
        for c in combo:
            if c is not None:
                used[c.acc_type] = used.get(c.acc_type, 0) + c.cards
        if any(v > capacity.get(t, 0) for t, v in used.items()):
            continue
        served = _levels(prio, [n for n, c in zip(names, combo, strict=True) if c is not None])
        key = (served, -sum(c.value for c in combo if c is not None))
        plain = served if plain is None or served > plain else plain
        if all(s >= f for s, f in zip(served, floor, strict=True)) and (
                best is None or key > best):
            best = key
    assert best is not None
    assert plain is not None
    return best[0], -best[1], plain


@pytest.mark.parametrize("seed", SEEDS)
def test_single_milp_matches_brute_force(seed: int) -> None:
    """Random starved systems: the MILP attains the enumerated optimum and never loses to
    greedy at any level; where the plain lexicographic optimum also beats greedy everywhere,
    the MILP is that optimum."""
    rng = np.random.default_rng(seed)
    types = ("A", "B", "C")[: int(rng.integers(1, 4))]
    cands, prio = _candidates(rng, int(rng.integers(2, 6)), types)
    capacity = {t: int(rng.integers(0, 10)) for t in types}
    greedy = solve_greedy(cands, prio, capacity, SaturationPolicy.NONE, False)
    floor = _levels(prio, greedy.assigned)
    served, value, plain = _brute_force(cands, prio, capacity, floor)
    res = solve_milp_single(cands, prio, capacity, greedy.assigned)
    got = _levels(prio, res.assigned)
    assert got == served, (got, served, floor)
    assert sum(c.value for c in res.assigned.values()) == pytest.approx(value)
    assert all(v >= 0 for v in res.remaining.values())
    if all(p >= f for p, f in zip(plain, floor, strict=True)):
        assert got == plain


def _hetero_brute_force(cands: Mapping[str, list[Candidate]], prio: Mapping[str, int],
                        demand: Mapping[str, float], capacity: Mapping[str, int],
                        floor: tuple[int, ...]) -> tuple[tuple[int, ...], float]:
    cols = [c for n in sorted(cands) for c in cands[n]]
    best = None
    for y in itertools.product(*[range(c.num_replicas + 1) for c in cols]):
        used: dict[str, int] = {}
        rate: dict[str, float] = {}
        count: dict[str, int] = {}
        cost = 0.0
        for c, k in zip(cols, y, strict=True):
            used[c.acc_type] = used.get(c.acc_type, 0) + k * c.units
            rate[c.server] = rate.get(c.server, 0.0) + k * c.max_rate_rps
            count[c.server] = count.get(c.server, 0) + k
            cost += k * c.cost / c.num_replicas
        if any(v > capacity.get(t, 0) for t, v in used.items()):
            continue
        served = [n for n in cands if count.get(n, 0) >= 1 and rate.get(n, 0) >= demand[n]]
        levels = _levels(prio, served)
        if all(s >= f for s, f in zip(levels, floor, strict=True)):
            key = (levels, -cost)
            best = key if best is None or key > best else best
    assert best is not None
    return best[0], -best[1]


@pytest.mark.parametrize("seed", range(15))
def test_heterogeneous_milp_matches_brute_force(seed: int) -> None:
    """Heterogeneous mode: served per level and cost equal the enumerated optimum."""
    rng = np.random.default_rng(1000 + seed)
    types = ("A", "B")
    cands, prio = _candidates(rng, int(rng.integers(1, 4)), types)
    cands = {n: cs[:2] for n, cs in cands.items()}
    demand = {n: float(rng.uniform(0.5, 3.0)) for n in cands}
    # the candidates' own replica counts must cover the demand, as the optimizer's do
    cands = {n: [c._replace(max_rate_rps=demand[n] / c.num_replicas * rng.uniform(1.0, 1.5))
                 for c in cs] for n, cs in cands.items()}
    capacity = {t: int(rng.integers(0, 7)) for t in types}
    greedy = solve_greedy(cands, prio, capacity, SaturationPolicy.NONE, False)
    floor = _levels(prio, greedy.assigned)
    served, cost = _hetero_brute_force(cands, prio, demand, capacity, floor)
    res = solve_milp_heterogeneous(cands, prio, demand, dict.fromkeys(cands, 0), capacity,
                                   greedy.assigned)
    assert _levels(prio, res.assigned) == served
    pieces = [c for n in res.assigned for c in res.parts.get(n, (res.assigned[n],))]
    assert sum(c.cost for c in pieces) == pytest.approx(cost)
    assert all(v >= 0 for v in res.remaining.values())


def test_no_time_keeps_the_incumbent() -> None:
    """With no time to solve, the result is the incumbent (greedy), not a failure."""
    rng = np.random.default_rng(7)
    cands, prio = _candidates(rng, 8, ("A", "B"))
    capacity = {"A": 4, "B": 4}
    greedy = solve_greedy(cands, prio, capacity, SaturationPolicy.NONE, False)
    res = solve_milp_single(cands, prio, capacity, greedy.assigned, time_limit_s=0.0)
    assert _levels(prio, res.assigned) == _levels(prio, greedy.assigned)
    assert "no time left" in res.message


def _full(system: System, solution: object) -> tuple[int, ...]:
    prio = {s.name: system.classes[s.class_name].priority for s in system.servers}
    served = [n for n in solution.allocations  # type: ignore[attr-defined]
              if n not in solution.best_effort]  # type: ignore[attr-defined]
    return _levels(prio, served)


def _used(system: System, solution: object) -> dict[str, int]:
    units = {(m, a): p.acc_count * system.accelerators[a].multiplicity
             for (m, a), p in system.perf.items()}
    model = {s.name: s.model for s in system.servers}
    used: dict[str, int] = {}
    for name, alloc in solution.allocations.items():  # type: ignore[attr-defined]
        for part in solution.parts.get(name, (alloc,)):  # type: ignore[attr-defined]
            if part.accelerator:
                t = system.accelerators[part.accelerator].type
                used[t] = used.get(t, 0) + part.num_replicas * units[(model[name],
                                                                      part.accelerator)]
    return used


CASE_DIRS = sorted(CASES.iterdir())


@pytest.mark.parametrize("case", CASE_DIRS, ids=[c.name for c in CASE_DIRS])
def test_reference_case_milp_never_below_greedy(case: Path) -> None:
    """Every reference case: no failure, capacity kept (or unlimited kept unlimited), and at
    least greedy's fully served count at every level."""
    system = load_system(case)
    milp = solve(system, solver=SolverKind.MILP)
    assert "fail" not in milp.message.lower()
    if system.settings.unlimited:
        assert milp.allocations == solve(system).allocations
        assert milp.message.startswith("unlimited")
        return
    greedy = solve(system, solver=SolverKind.GREEDY)
    assert all(m >= g for m, g in zip(_full(system, milp), _full(system, greedy), strict=True))
    assert all(v <= system.capacity.get(t, 0) for t, v in _used(system, milp).items())


def _random_system(seed: int, num_servers: int, scale: float) -> System:
    """Servers drawn over the reference-case catalog, capacity case-001's × ``scale``."""
    base = load_system(CASES / "case-001")
    rng = np.random.default_rng(seed)
    servers = []
    for i in range(num_servers):
        cls = sorted(base.classes)[int(rng.integers(len(base.classes)))]
        models = sorted(base.classes[cls].targets)
        model = models[int(rng.integers(len(models)))]
        load = Load(arrival_rpm=float(np.exp(rng.uniform(0, np.log(3000)))),
                    avg_in_tokens=int(2 ** rng.integers(6, 13)),
                    avg_out_tokens=int(2 ** rng.integers(4, 12)))
        servers.append(Server(name=f"{cls}-{model}-{i}", class_name=cls, model=model,
                              max_queue_size=int(rng.choice([0, 16, 64, 256])),
                              current=dataclasses.replace(base.servers[0].current, load=load,
                                                          accelerator="", num_replicas=0,
                                                          cost=0.0)))
    capacity = {t: int(c * scale) for t, c in base.capacity.items()}
    policy = (SaturationPolicy.NONE, SaturationPolicy.PRIORITY_EXHAUSTIVE,
              SaturationPolicy.ROUND_ROBIN)[seed % 3]
    settings = dataclasses.replace(base.settings, unlimited=False, saturation_policy=policy,
                                   delayed_best_effort=bool(seed % 2))
    return dataclasses.replace(base, servers=tuple(servers), capacity=capacity,
                               settings=settings)


STARVED = [(False, 14, seed, scale) for seed in range(4) for scale in (0.03, 0.1, 0.4)] + [
    (True, 8, seed, scale) for seed in range(2) for scale in (0.03, 0.4)]


@pytest.mark.parametrize(("heterogeneous", "num_servers", "seed", "scale"), STARVED,
                         ids=[f"{'het' if h else 'single'}-{n}-{s}-{c}" for h, n, s, c in STARVED])
def test_random_starved_system_milp_never_below_greedy(heterogeneous: bool, num_servers: int,
                                                       seed: int, scale: float) -> None:
    """Random capacity-starved systems: the same guarantees as on the reference cases."""
    system = _random_system(seed, num_servers, scale)
    system = dataclasses.replace(system, settings=dataclasses.replace(
        system.settings, heterogeneous=heterogeneous))
    milp = solve(system, solver=SolverKind.MILP)
    greedy = solve(system, solver=SolverKind.GREEDY)
    assert "fail" not in milp.message.lower()
    assert all(m >= g for m, g in zip(_full(system, milp), _full(system, greedy), strict=True))
    assert all(v <= system.capacity.get(t, 0) for t, v in _used(system, milp).items())
    assert compute_candidates(system)  # the system is not trivial


def test_time_limit_setting_reaches_the_milp() -> None:
    """milp_time_limit_s = 0 (optimizer-data milpTimeLimit): the solve says it ran out of time
    and returns greedy's fully served allocation, not a failure."""
    system = _random_system(0, 14, 0.03)
    system = dataclasses.replace(system, settings=dataclasses.replace(
        system.settings, milp_time_limit_s=0.0))
    milp = solve(system, solver=SolverKind.MILP)
    greedy = solve(system, solver=SolverKind.GREEDY)
    assert "no time left" in milp.message
    assert _full(system, milp) == _full(system, greedy)


@pytest.mark.parametrize("solver", [SolverKind.GREEDY, SolverKind.MILP])
def test_no_capacity_is_infeasible_and_says_so(solver: SolverKind) -> None:
    """With no accelerator in the inventory nothing can be allocated: status infeasible, and
    the message does not call it optimal (HiGHS's "optimal" is about its own stages)."""
    system = load_system(Path(__file__).resolve().parents[3] / "sample-data" / "small")
    system = dataclasses.replace(system, capacity={t: 0 for t in system.capacity})
    solution = solve(system, solver=solver)
    assert str(solution.status) == "infeasible"
    assert not solution.allocations
    assert "optimal" not in solution.message
    assert solution.message.endswith("no server could be allocated")


def test_interruptible_wait_ends_at_ctrl_c() -> None:
    """A solve runs in a worker thread the caller waits for: a SIGINT arriving while the
    worker sits in C code without the GIL (as HiGHS does) interrupts the wait at once,
    instead of after the solve's time limit."""
    import signal
    import threading
    import time

    from inferno.optimizer.milp import interruptible

    main = threading.get_ident()
    timer = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        interruptible(time.sleep, 5.0)
    assert time.monotonic() - start < 2.0
    assert interruptible(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        interruptible(divmod, 1, 0)
