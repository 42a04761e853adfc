"""One entry point: candidates, then the configured solver, then a `Solution` value."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from inferno.model import Allocation, Server, SolverKind, System
from inferno.optimizer.candidates import (
    Candidate,
    compute_candidates,
    demand_rps,
    priority_of,
    with_metrics,
)
from inferno.optimizer.greedy import fill_best_effort, solve_greedy
from inferno.optimizer.result import Solution, Status


def _allocation(c: Candidate, server: Server) -> Allocation:
    latency = (None, None) if c.saturated else (c.itl_ms, c.ttft_ms)
    return Allocation(accelerator=c.accelerator, num_replicas=c.num_replicas,
                      max_batch=c.max_batch, cost=c.cost, itl_ms=latency[0],
                      ttft_ms=latency[1], load=server.load, saturated=c.saturated,
                      ttft_stat_ms=None if c.saturated else _stat(c.ttft_stat_ms),
                      itl_stat_ms=None if c.saturated else _stat(c.itl_stat_ms))


def _stat(value_ms: float) -> float:
    """A candidate's predicted statistic, 0 where not predicted (NaN)."""
    return value_ms if value_ms == value_ms else 0.0


def _part_shares(parts: Sequence[Candidate]) -> dict[str, float]:
    """Fraction of the demand each piece carries: in proportion to its sustainable rate."""
    rates = [c.max_rate_rps * c.num_replicas for c in parts]
    total = sum(rates)
    return {str(i): (r / total if total > 0 else 1.0 / len(parts)) for i, r in enumerate(rates)}


def _run(system: System, kind: SolverKind, cands: Mapping[str, Sequence[Candidate]],
         priorities: Mapping[str, int]) -> tuple[dict, dict, set, str]:
    settings = system.settings
    if kind is SolverKind.UNLIMITED:
        return {s: cs[0] for s, cs in cands.items() if cs}, {}, set(), "unlimited capacity"
    if kind is SolverKind.GREEDY:
        res = solve_greedy(cands, priorities, system.capacity, settings.saturation_policy,
                           settings.delayed_best_effort)
        return dict(res.assigned), {}, set(res.best_effort), "greedy"
    # scipy (HiGHS) is imported only when a MILP is solved: it costs ~0.3 s of start-up.
    from inferno.optimizer.milp import solve_milp_heterogeneous, solve_milp_single

    # The greedy allocation is the MILP's incumbent: never serve fewer at any level.
    greedy = solve_greedy(cands, priorities, system.capacity, settings.saturation_policy,
                          settings.delayed_best_effort)
    incumbent = {s: c for s, c in greedy.assigned.items() if s not in greedy.best_effort}
    limit_s = settings.milp_time_limit_s
    if settings.heterogeneous:
        servers = {s.name: s for s in system.servers}
        empty = {s: cs[0] for s, cs in cands.items() if cs and cs[0].is_empty}
        rest = {s: cs for s, cs in cands.items() if s not in empty}
        demand = {s: demand_rps(system, servers[s]) for s in rest}
        mres = solve_milp_heterogeneous(rest, priorities, demand,
                                        {s: servers[s].min_num_replicas for s in rest},
                                        system.capacity, incumbent, limit_s)
        assigned = {**empty, **mres.assigned}
    else:
        mres = solve_milp_single(cands, priorities, system.capacity, incumbent, limit_s)
        assigned = dict(mres.assigned)
    left = [s for s, cs in cands.items() if cs and s not in assigned]
    fill = fill_best_effort(left, cands, priorities, mres.remaining, settings.saturation_policy)
    assigned.update(fill.assigned)
    # "optimal" is HiGHS's word for its stages, not the allocation's status: say only what
    # went wrong (a time limit, ...), so an infeasible system does not read "milp: optimal"
    how = "milp" if mres.message == "optimal" else f"milp ({mres.message})"
    return assigned, dict(mres.parts), set(fill.best_effort), how


def solve(system: System, *, solver: SolverKind | None = None) -> Solution:
    """Allocate every server of ``system``; a failure to serve is a status, not an exception.

    ``solver`` replaces the settings' choice, except that ``unlimited`` capacity in the
    settings wins over greedy and MILP (upstream precedence: capacity is then ignored).
    """
    start = time.perf_counter()
    kind = SolverKind.UNLIMITED if system.settings.unlimited else (
        solver or system.settings.solver)
    cands = compute_candidates(system)
    priorities = {s.name: priority_of(system, s) for s in system.servers}
    assigned, parts, best_effort, how = _run(system, kind, cands, priorities)
    parts = {name: tuple(with_metrics(system, {str(i): c for i, c in enumerate(ps)},
                                      _part_shares(ps)).values())
             for name, ps in parts.items()}
    # a split server reports its largest piece (the first), with that piece's latencies
    assigned = {**with_metrics(system, {n: c for n, c in assigned.items() if n not in parts}),
                **{n: ps[0] for n, ps in parts.items()}}
    servers = {s.name: s for s in system.servers}
    allocations = {name: _allocation(c, servers[name]) for name, c in sorted(assigned.items())}
    part_allocs = {name: tuple(_allocation(c, servers[name]) for c in ps)
                   for name, ps in parts.items()}
    unallocated = tuple(sorted(s.name for s in system.servers if s.name not in assigned))
    cost = sum(c.cost for name, c in assigned.items() for c in parts.get(name, (c,)))
    if not system.servers or (not unallocated and not best_effort):
        status, message = Status.OPTIMAL, f"{how}: all {len(assigned)} servers allocated"
    elif not assigned:
        status, message = Status.INFEASIBLE, f"{how}: no server could be allocated"
    else:
        status = Status.PARTIAL
        message = (f"{how}: {len(unallocated)} unallocated, "
                   f"{len(best_effort)} best-effort of {len(system.servers)} servers")
    return Solution(status=status, message=message, allocations=allocations,
                    unallocated=unallocated, best_effort=tuple(sorted(best_effort)),
                    parts=part_allocs, cost=cost, solve_time_s=time.perf_counter() - start)
