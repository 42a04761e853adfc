"""Exact allocation with a mixed-integer program (scipy.optimize.milp, HiGHS).

Unlike upstream (docs/design/optimizer-model.md §4.4, §8.6) the program is lexicographic: it
maximises the number of servers
served in each priority level, highest priority first, then minimises the ranking value (cost
plus transition penalty). It honours minNumReplicas and per-type capacity, and reports the
replica counts it chose.

It never does worse than a known feasible allocation (the greedy solver's, the `incumbent`):
every level keeps at least the incumbent's count (a floor), a level's count is fixed at what
its own solve achieved (never at a count taken from elsewhere), and a solve that fails or runs
out of time leaves the best allocation found so far in place. Allocating nothing is always
feasible, so the result is never a failure. Formulation: docs/milp.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array, vstack

from inferno.optimizer.candidates import Candidate

TIME_LIMIT_S = 60.0
"""Default budget of one MILP allocation, all stages together (upstream lp_solve: 60 s)."""
_EPS = 1e-6
_TOL = 1e-6
"""Slack when checking a rounded solution against the constraints."""


_T = TypeVar("_T")


def interruptible(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in a daemon thread, the caller waiting for it.

    HiGHS releases the GIL but does not return to Python until its time limit, so a Ctrl-C
    (or SIGTERM) arriving during a solve would wait up to a minute; the waiting thread stays
    interruptible, the exception unwinds at once (output reservations are cleaned up) and
    the abandoned solve ends with the process.
    """
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            out["error"] = exc

    worker = threading.Thread(target=target, name="highs", daemon=True)
    worker.start()
    worker.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@dataclass(frozen=True, slots=True)
class MilpResult:
    assigned: Mapping[str, Candidate]
    parts: Mapping[str, tuple[Candidate, ...]]
    """Heterogeneous mode: the per-accelerator pieces of servers split over several types."""
    remaining: Mapping[str, int]
    message: str


@dataclass(slots=True)
class _Program:
    """One integer program: columns, constraint rows and a feasible starting point."""

    objective: np.ndarray
    """(cols,) the value to minimise in the last stage."""
    served: csr_array
    """(servers, cols): row i · x = 1 when server i is served."""
    priority: np.ndarray
    """(servers,) priority level per server (1 = highest)."""
    rows: csr_array
    lower: np.ndarray
    upper: np.ndarray
    integrality: np.ndarray
    bounds: Bounds
    incumbent: np.ndarray
    """(cols,) a feasible solution (the greedy one, or all zeros)."""

    def feasible(self, x: np.ndarray) -> bool:
        """``x`` meets every row and bound (within `_TOL`)."""
        ax = self.rows @ x
        return bool(np.all(ax >= self.lower - _TOL) and np.all(ax <= self.upper + _TOL)
                    and np.all(x >= self.bounds.lb - _TOL) and np.all(x <= self.bounds.ub + _TOL))

    def add(self, row: csr_array, lower: float) -> None:
        """Append the row ``row · x >= lower``."""
        self.rows = csr_array(vstack([self.rows, row]))
        self.lower = np.append(self.lower, lower)
        self.upper = np.append(self.upper, np.inf)


def _staged(prog: _Program, time_limit_s: float, rounding: object) -> tuple[np.ndarray, str]:
    """Lexicographic stages from ``prog.incumbent``; returns (x, message). Never fails.

    ``rounding`` maps a HiGHS solution to an exact integral one (or None if it is unusable).
    """
    deadline = time.monotonic() + time_limit_s
    best = prog.incumbent
    notes: list[str] = []
    counts = lambda x: prog.served @ x  # noqa: E731 - served servers per server row

    def run(objective: np.ndarray, stage: str) -> np.ndarray | None:
        left = deadline - time.monotonic()
        if left <= 0:
            notes.append(f"{stage}: no time left")
            return None
        res = interruptible(
            milp, objective, constraints=[LinearConstraint(prog.rows, prog.lower, prog.upper)],
            integrality=prog.integrality, bounds=prog.bounds, options={"time_limit": left})
        x = None if res.x is None else rounding(res.x)  # type: ignore[operator]
        if x is not None and not prog.feasible(x):
            x = None
        if res.status != 0:
            notes.append(f"{stage}: {res.message}"
                         + ("" if x is None else " (best solution found kept)"))
        return x

    for level in np.unique(prog.priority):
        mask = (prog.priority == level).astype(float)
        row = csr_array(mask[None, :] @ prog.served)
        have = float(mask @ counts(best))
        if have < mask.sum() - 0.5:
            x = run(-row.toarray()[0], f"priority {level}")
            if x is not None and float(mask @ counts(x)) > have + 0.5:
                best, have = x, float(mask @ counts(x))
        prog.add(row, have - 0.5)  # fixed at what was achieved: the incumbent meets it
    x = run(prog.objective, "cost")
    if x is not None and float(prog.objective @ x) < float(prog.objective @ best) - _EPS:
        best = x
    return best, "; ".join(notes) if notes else "optimal"


def _capacity_rows(cands: Sequence[Candidate], per_unit: np.ndarray,
                   capacity: Mapping[str, int], num_cols: int) -> tuple[csr_array, np.ndarray]:
    """One row per accelerator type: cards used ≤ cards available (absent type: 0).

    Candidate k is column k; further columns (up to ``num_cols``) use no capacity.
    """
    types = sorted({c.acc_type for c in cands})
    row_of = {t: k for k, t in enumerate(types)}
    rows = np.array([row_of[c.acc_type] for c in cands], dtype=np.int64)
    cols = np.arange(len(cands))
    a = csr_array((per_unit, (rows, cols)), shape=(len(types), num_cols))
    ub = np.array([capacity.get(t, 0) for t in types], dtype=float)
    return a, ub


def _floor_rows(served: csr_array, prio: np.ndarray, names: Sequence[str],
                floor_served: frozenset[str]) -> tuple[csr_array, np.ndarray]:
    """Per level: servers served ≥ the incumbent's count at that level."""
    levels = np.unique(prio)
    have = np.array([n in floor_served for n in names], dtype=float)
    masks = np.stack([(prio == p).astype(float) for p in levels]) if levels.size else \
        np.zeros((0, len(names)))
    return csr_array(masks @ served), masks @ have


def solve_milp_single(candidates: Mapping[str, Sequence[Candidate]], priorities: Mapping[str, int],
                      capacity: Mapping[str, int],
                      incumbent: Mapping[str, Candidate] | None = None,
                      time_limit_s: float = TIME_LIMIT_S) -> MilpResult:
    """One accelerator per server: binary choice among its candidates (or none).

    ``incumbent``: a feasible allocation (server → one of its candidates at full size, e.g.
    the greedy solver's fully served servers). The result serves at least as many servers as
    it at every priority level and, at equal counts, costs no more.
    """
    names = [s for s, cs in candidates.items() if cs]
    kept = {s: _undominated(candidates[s]) for s in names}
    cands = [c for s in names for c in kept[s]]
    if not cands:
        return MilpResult({}, {}, dict(capacity), "no candidates")
    cheapest = {s: kept[s][0] for s in names}
    if all(v >= 0 for v in _remaining(capacity, cheapest.values()).values()):
        # every server's best option fits together: that is the optimum of every stage
        return MilpResult(cheapest, {}, _remaining(capacity, cheapest.values()),
                          "cheapest options fit")
    server_of = np.array([i for i, s in enumerate(names) for _ in kept[s]], dtype=np.int64)
    v = len(cands)
    pick = csr_array((np.ones(v), (server_of, np.arange(v))), shape=(len(names), v))
    cap_a, cap_ub = _capacity_rows(cands, np.array([c.cards for c in cands], float), capacity,
                                   v)
    prio = np.array([priorities[s] for s in names])
    x0 = np.zeros(v)
    start = {s: c for s, c in (incumbent or {}).items() if s in kept}
    first = np.concatenate([[0], np.cumsum([len(kept[s]) for s in names])])
    index = {s: i for i, s in enumerate(names)}
    for s, c in start.items():
        x0[first[index[s]] + _column_for(kept[s], c)] = 1.0
    floor_a, floor_lb = _floor_rows(pick, prio, names, frozenset(start))
    rows = csr_array(vstack([pick, cap_a, floor_a]))
    lower = np.concatenate([np.zeros(len(names)), np.full(cap_ub.size, -np.inf), floor_lb])
    upper = np.concatenate([np.ones(len(names)), cap_ub, np.full(floor_lb.size, np.inf)])
    prog = _Program(objective=np.array([c.value for c in cands]), served=pick, priority=prio,
                    rows=rows, lower=lower, upper=upper, integrality=np.ones(v),
                    bounds=Bounds(0, 1), incumbent=x0)
    if not prog.feasible(x0):  # a bad incumbent is a caller bug; start from nothing instead
        prog.incumbent = np.zeros(v)
        prog.lower[len(names) + cap_ub.size:] = 0.0
    x, message = _staged(prog, time_limit_s, lambda z: np.where(z > 0.5, 1.0, 0.0))
    chosen = np.flatnonzero(x > 0.5)
    assigned = {names[server_of[k]]: cands[k] for k in chosen}
    return MilpResult(assigned, {}, _remaining(capacity, assigned.values()), message)


def _column_for(kept: Sequence[Candidate], c: Candidate) -> int:
    """Column of the incumbent's choice ``c``; if it was pruned, its dominator (same type,
    no more cards, lower value), which keeps the incumbent feasible and no dearer."""
    for k, d in enumerate(kept):
        if d.accelerator == c.accelerator and d.num_replicas == c.num_replicas:
            return k
    options = [k for k, d in enumerate(kept) if d.acc_type == c.acc_type and d.cards <= c.cards]
    return min(options, key=lambda k: kept[k].value)


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


def solve_milp_heterogeneous(candidates: Mapping[str, Sequence[Candidate]],
                             priorities: Mapping[str, int], demand_rps: Mapping[str, float],
                             min_replicas: Mapping[str, int],
                             capacity: Mapping[str, int],
                             incumbent: Mapping[str, Candidate] | None = None,
                             time_limit_s: float = TIME_LIMIT_S) -> MilpResult:
    """Replicas of a server may mix accelerators: integer replicas per (server, accelerator).

    Columns: y_ij (replicas of server i on candidate j, ≤ that candidate's own count) and a
    binary z_i (server i served). Served means Σ_j rate_ij·y_ij ≥ demand_i and
    Σ_j y_ij ≥ minNumReplicas_i. ``incumbent`` as in `solve_milp_single` (a single-accelerator
    allocation is a heterogeneous one with one piece).
    """
    names = [s for s, cs in candidates.items() if cs]
    cands = [c for s in names for c in candidates[s] if not c.is_empty]
    if not cands:
        return MilpResult({}, {}, dict(capacity), "no candidates")
    idx_of = {s: i for i, s in enumerate(names)}
    server_of = np.array([idx_of[c.server] for c in cands], dtype=np.int64)
    v, n = len(cands), len(names)
    # columns: [y_0..y_{v-1}, z_0..z_{n-1}]
    rate = np.array([c.max_rate_rps for c in cands])
    demand = np.array([demand_rps[s] for s in names])
    mins = np.array([max(min_replicas[s], 1) for s in names], float)
    both = (np.concatenate([server_of, np.arange(n)]),
            np.concatenate([np.arange(v), v + np.arange(n)]))
    cover = csr_array((np.concatenate([rate, -demand]), both), shape=(n, v + n))
    count = csr_array((np.concatenate([np.ones(v), -mins]), both), shape=(n, v + n))
    cap_a, cap_ub = _capacity_rows(cands, np.array([c.units for c in cands], float), capacity,
                                   v + n)
    served = csr_array((np.ones(n), (np.arange(n), v + np.arange(n))), shape=(n, v + n))
    prio = np.array([priorities[s] for s in names])
    x0 = np.zeros(v + n)
    column = {(c.server, c.accelerator): k for k, c in enumerate(cands)}
    start = {s: c for s, c in (incumbent or {}).items()
             if s in idx_of and (s, c.accelerator) in column}
    for s, c in start.items():
        x0[column[(s, c.accelerator)]] = c.num_replicas
        x0[v + idx_of[s]] = 1.0
    ub = np.concatenate([[c.num_replicas for c in cands], np.ones(n)])
    # y_ij <= n_ij·z_i: an unserved server holds no replicas (tightens the relaxation a lot)
    link = csr_array((np.concatenate([np.ones(v), -ub[:v]]),
                      (np.concatenate([np.arange(v), np.arange(v)]),
                       np.concatenate([np.arange(v), v + server_of]))), shape=(v, v + n))
    floor_a, floor_lb = _floor_rows(served, prio, names, frozenset(start))
    rows = csr_array(vstack([cover, count, link, cap_a, floor_a]))
    lower = np.concatenate([np.full(n, -_EPS), np.zeros(n), np.full(v, -np.inf),
                            np.full(cap_ub.size, -np.inf), floor_lb])
    upper = np.concatenate([np.full(2 * n, np.inf), np.zeros(v), cap_ub,
                            np.full(floor_lb.size, np.inf)])
    per_replica = np.array([c.cost / c.num_replicas for c in cands])
    prog = _Program(objective=np.concatenate([per_replica, np.zeros(n)]), served=served,
                    priority=prio, rows=rows, lower=lower, upper=upper,
                    integrality=np.ones(v + n), bounds=Bounds(0, ub), incumbent=x0)
    if not prog.feasible(x0):
        prog.incumbent = np.zeros(v + n)
        prog.lower[2 * n + v + cap_ub.size:] = 0.0

    def rounding(x: np.ndarray) -> np.ndarray:
        y = np.rint(x[:v])
        z = (x[v:] > 0.5).astype(float)
        return np.concatenate([np.where(z[server_of] > 0, y, 0.0), z])

    x, message = _staged(prog, time_limit_s, rounding)
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
