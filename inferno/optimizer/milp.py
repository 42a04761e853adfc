"""Exact allocation with a mixed-integer program (scipy.optimize.milp, HiGHS).

Unlike upstream (§4.4, §8.6) the program is lexicographic: it first maximises the number of
servers served in each priority group, highest priority first, fixing each optimum before
the next; then it minimises the ranking value (cost plus transition penalty). It honours
minNumReplicas and per-type capacity, and reports the replica counts it chose.
Formulation: docs/milp.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from inferno.optimizer.candidates import Candidate

TIME_LIMIT_S = 60.0
"""Per solve, as upstream's lp_solve timeout."""
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class MilpResult:
    assigned: Mapping[str, Candidate]
    parts: Mapping[str, tuple[Candidate, ...]]
    """Heterogeneous mode: the per-accelerator pieces of servers split over several types."""
    remaining: Mapping[str, int]
    message: str


@dataclass(frozen=True, slots=True)
class _Columns:
    server_of: np.ndarray  # (V,) server index per column
    cands: list[Candidate]


def _capacity_rows(cands: Sequence[Candidate], per_unit: np.ndarray,
                   capacity: Mapping[str, int], num_cols: int) -> tuple[csr_array, np.ndarray]:
    """One row per accelerator type: cards used ≤ cards available (absent type: 0).

    Candidate k is column k; further columns (up to ``num_cols``) use no capacity.
    """
    types = sorted({c.acc_type for c in cands})
    row_of = {t: k for k, t in enumerate(types)}
    rows = np.array([row_of[c.acc_type] for c in cands])
    cols = np.arange(len(cands))
    a = csr_array((per_unit, (rows, cols)), shape=(len(types), num_cols))
    ub = np.array([capacity.get(t, 0) for t in types], dtype=float)
    return a, ub


def _lexicographic(c_value: np.ndarray, served: csr_array, priorities: np.ndarray,
                   constraints: list[LinearConstraint], integrality: np.ndarray,
                   bounds: Bounds, known_served: Mapping[int, int] | None = None
                   ) -> tuple[np.ndarray | None, str]:
    """Maximise served servers per priority level in turn, then minimise value.

    ``known_served`` gives, per level, a count already proven optimal (a feasible solution
    serving every server of the level): that level's solve is skipped.
    """
    cons = list(constraints)
    known = known_served or {}
    for p in np.unique(priorities):
        mask = (priorities == p).astype(float)
        if int(p) in known:
            best = float(known[int(p)])
        else:
            obj = -(mask @ served)  # maximise servers of this priority
            res = milp(obj, constraints=cons, integrality=integrality, bounds=bounds,
                       options={"time_limit": TIME_LIMIT_S})
            if res.x is None:
                return None, f"MILP failed at priority {p}: {res.message}"
            best = -res.fun
        cons.append(LinearConstraint(mask @ served, lb=best - 0.5, ub=np.inf))
    res = milp(c_value, constraints=cons, integrality=integrality, bounds=bounds,
               options={"time_limit": TIME_LIMIT_S})
    if res.x is None:
        return None, f"MILP failed: {res.message}"
    return res.x, str(res.message)


def solve_milp_single(candidates: Mapping[str, list[Candidate]], priorities: Mapping[str, int],
                      capacity: Mapping[str, int],
                      fully_served: frozenset[int] = frozenset()) -> MilpResult:
    """One accelerator per server: binary choice among its candidates (or none).

    ``fully_served``: priority levels for which a feasible allocation serving all their
    servers is known (e.g. from the greedy solver); their maximisation step is skipped.
    """
    names = [s for s, cs in candidates.items() if cs]
    candidates = {s: _undominated(candidates[s]) for s in names}
    cands = [c for s in names for c in candidates[s]]
    if not cands:
        return MilpResult({}, {}, dict(capacity), "no candidates")
    cheapest = {s: candidates[s][0] for s in names}
    if all(v >= 0 for v in _remaining(capacity, cheapest.values()).values()):
        # every server's best option fits together: that is the optimum of every stage
        return MilpResult(cheapest, {}, _remaining(capacity, cheapest.values()),
                          "cheapest options fit")
    server_of = np.array([i for i, s in enumerate(names) for _ in candidates[s]])
    v = len(cands)
    pick = csr_array((np.ones(v), (server_of, np.arange(v))), shape=(len(names), v))
    cap_a, cap_ub = _capacity_rows(cands, np.array([c.cards for c in cands], float), capacity,
                                   v)
    constraints = [LinearConstraint(pick, ub=1.0), LinearConstraint(cap_a, ub=cap_ub)]
    prio = np.array([priorities[s] for s in names])
    values = np.array([c.value for c in cands])
    known = {int(p): int((prio == p).sum()) for p in np.unique(prio) if int(p) in fully_served}
    x, message = _lexicographic(values, pick, prio, constraints, np.ones(v), Bounds(0, 1),
                                known)
    if x is None:
        return MilpResult({}, {}, dict(capacity), message)
    chosen = np.flatnonzero(x > 0.5)
    assigned = {names[server_of[k]]: cands[k] for k in chosen}
    return MilpResult(assigned, {}, _remaining(capacity, assigned.values()), message)


def _undominated(cands: Sequence[Candidate]) -> list[Candidate]:
    """Drop options beaten on both value and cards of the same type by an earlier option.

    Swapping a dominated option for its dominator keeps every constraint and never raises
    the objective, so the optimum is unchanged while the program shrinks.
    """
    best_cards: dict[str, int] = {}
    kept = []
    for c in cands:  # ascending value
        if c.acc_type in best_cards and best_cards[c.acc_type] <= c.cards:
            continue
        best_cards[c.acc_type] = c.cards
        kept.append(c)
    return kept


def solve_milp_heterogeneous(candidates: Mapping[str, list[Candidate]],
                             priorities: Mapping[str, int], demand_rps: Mapping[str, float],
                             min_replicas: Mapping[str, int],
                             capacity: Mapping[str, int]) -> MilpResult:
    """Replicas of a server may mix accelerators: integer replicas per (server, accelerator).

    Columns: y_ij (replicas of server i on candidate j, ≤ that candidate's own count) and a
    binary z_i (server i served). Served means Σ_j rate_ij·y_ij ≥ demand_i and
    Σ_j y_ij ≥ minNumReplicas_i.
    """
    names = [s for s, cs in candidates.items() if cs]
    cands = [c for s in names for c in candidates[s] if not c.is_empty]
    if not cands:
        return MilpResult({}, {}, dict(capacity), "no candidates")
    idx_of = {s: i for i, s in enumerate(names)}
    server_of = np.array([idx_of[c.server] for c in cands])
    v, n = len(cands), len(names)
    # columns: [y_0..y_{v-1}, z_0..z_{n-1}]
    rate = np.array([c.max_rate_rps for c in cands])
    demand = np.array([demand_rps[s] for s in names])
    mins = np.array([max(min_replicas[s], 1) for s in names], float)
    cover = csr_array((np.concatenate([rate, -demand]),
                       (np.concatenate([server_of, np.arange(n)]),
                        np.concatenate([np.arange(v), v + np.arange(n)]))), shape=(n, v + n))
    count = csr_array((np.concatenate([np.ones(v), -mins]),
                       (np.concatenate([server_of, np.arange(n)]),
                        np.concatenate([np.arange(v), v + np.arange(n)]))), shape=(n, v + n))
    cap_a, cap_ub = _capacity_rows(cands, np.array([c.units for c in cands], float), capacity,
                                   v + n)
    constraints = [LinearConstraint(cover, lb=-_EPS), LinearConstraint(count, lb=0),
                   LinearConstraint(cap_a, ub=cap_ub)]
    served = csr_array((np.ones(n), (np.arange(n), v + np.arange(n))), shape=(n, v + n))
    per_replica = np.array([c.cost / c.num_replicas for c in cands])
    cost = np.concatenate([per_replica, np.zeros(n)])
    ub = np.concatenate([[c.num_replicas for c in cands], np.ones(n)])
    prio = np.array([priorities[s] for s in names])
    x, message = _lexicographic(cost, served, prio, constraints, np.ones(v + n),
                                Bounds(0, ub))
    if x is None:
        return MilpResult({}, {}, dict(capacity), message)
    y = np.rint(x[:v]).astype(np.int64)
    z = x[v:] > 0.5
    by_server: dict[str, list[Candidate]] = {}
    for k in np.flatnonzero(y > 0):
        if z[server_of[k]]:
            by_server.setdefault(cands[k].server, []).append(cands[k].rescaled(int(y[k])))
    assigned: dict[str, Candidate] = {}
    parts: dict[str, tuple[Candidate, ...]] = {}
    for s, pieces in by_server.items():
        pieces.sort(key=lambda c: (-c.num_replicas, c.accelerator))
        assigned[s] = pieces[0]
        if len(pieces) > 1:
            parts[s] = tuple(pieces)
    used = [c for s in assigned for c in parts.get(s, (assigned[s],))]
    return MilpResult(assigned, parts, _remaining(capacity, used), message)


def _remaining(capacity: Mapping[str, int], used: object) -> dict[str, int]:
    avail = dict(capacity)
    for c in used:  # type: ignore[attr-defined]
        if not c.is_empty:
            avail[c.acc_type] = avail.get(c.acc_type, 0) - c.cards
    return avail
