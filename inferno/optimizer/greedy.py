"""Greedy allocation under limited capacity, exactly as upstream (docs/design/optimizer-model.md
§4.3), with deterministic ties.

Entries are served by priority, then largest regret (delta between the best and the next
option; regrets equal but for rounding are equal, `regret`), then most expensive current
option; an entry that does not fit moves to its next
candidate and is re-inserted in order. Leftovers get best-effort capacity by the saturation
policy, per priority group or after all groups (delayedBestEffort).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from inferno.model import SaturationPolicy
from inferno.optimizer.candidates import Candidate

_INF = math.inf
_REGRET_BITS = 30
"""Significant bits a regret keeps (~1e-9 relative)."""


def regret(next_value: float, value: float) -> float:
    """next_value − value, rounded to `_REGRET_BITS` significant bits.

    Two servers often have the same regret exactly (the same two accelerators at the same
    replica count) but computed from different values, so the float differences disagree in
    their last bits and that noise, not the documented tie rule (most expensive option,
    then name), would order them. Rounding makes them equal again, except in the rare case
    (~1e-4) where the noise straddles a rounding boundary.
    """
    mantissa, exponent = math.frexp(next_value - value)
    return math.ldexp(round(mantissa * (1 << _REGRET_BITS)), exponent - _REGRET_BITS)


@dataclass(slots=True)
class _Entry:
    server: str
    priority: int
    cands: Sequence[Candidate]
    idx: int = 0
    delta: float = field(default=_INF)

    def key(self) -> tuple[int, float, float]:
        """Upstream order: priority, then largest regret, then most expensive option."""
        return (self.priority, -self.delta, -self.cands[self.idx].value)


@dataclass(slots=True)
class _State:
    avail: dict[str, int]
    assigned: dict[str, Candidate] = field(default_factory=dict)
    best_effort: set[str] = field(default_factory=set)


def _entries(candidates: Mapping[str, Sequence[Candidate]],
             priorities: Mapping[str, int]) -> list[_Entry]:
    entries = []
    for name, cands in candidates.items():
        if not cands:
            continue
        delta = regret(cands[1].value, cands[0].value) if len(cands) > 1 else _INF
        entries.append(_Entry(server=name, priority=priorities[name], cands=cands, delta=delta))
    entries.sort(key=lambda e: (*e.key(), e.server))  # name: deterministic ties
    return entries


def _allocate(entries: list[_Entry], state: _State) -> list[_Entry]:
    """Serve entries in order; returns those that fit on none of their candidates.

    The queue is held reversed (next entry last) so taking the next one is O(1); its keys
    are negated to keep them ascending for `bisect`.
    """
    work = entries[::-1]
    neg_keys = [_negated(e.key()) for e in work]
    avail = state.avail
    unallocated: list[_Entry] = []
    while work:
        e = work.pop()
        neg_keys.pop()
        a = e.cands[e.idx]
        if a.is_empty:
            state.assigned[e.server] = a  # zero load, zero replicas: nothing to place
            continue
        need = a.num_replicas * a.units
        have = avail.get(a.acc_type, 0)
        if have >= need:
            avail[a.acc_type] = have - need
            state.assigned[e.server] = a
            continue
        e.idx += 1
        if e.idx + 1 < len(e.cands):
            e.delta = regret(e.cands[e.idx + 1].value, e.cands[e.idx].value)
        elif e.idx == len(e.cands):
            unallocated.append(e)
            continue
        else:
            e.delta = _INF
        # Upstream inserts before elements with an equal key: here, after them in reverse.
        nk = _negated(e.key())
        pos = bisect.bisect_right(neg_keys, nk)
        work.insert(pos, e)
        neg_keys.insert(pos, nk)
    return unallocated


def _negated(key: tuple[int, float, float]) -> tuple[int, float, float]:
    return (-key[0], -key[1], -key[2])


def _allocate_maximally(entries: list[_Entry], state: _State) -> None:
    """PriorityExhaustive: each entry takes as many replicas as fit on its first usable option."""
    for e in entries:
        for a in e.cands:
            if a.is_empty or a.units <= 0:
                continue
            k = min(state.avail.get(a.acc_type, 0) // a.units, a.num_replicas)
            if k > 0:
                state.assigned[e.server] = a.rescaled(k)
                state.best_effort.add(e.server)
                state.avail[a.acc_type] -= k * a.units
                break


def _allocate_equally(entries: list[_Entry], state: _State) -> None:
    """Round-robin: one replica per entry per round until capacity or tickets run out."""
    bound: dict[str, Candidate] = {}
    counts: dict[str, int] = {e.server: 0 for e in entries}
    active = [e for e in entries]
    while active:
        still: list[_Entry] = []
        for e in active:
            a = bound.get(e.server)
            if a is None:
                a = next((c for c in e.cands if not c.is_empty and c.units > 0
                          and state.avail.get(c.acc_type, 0) >= c.units), None)
                if a is None:
                    continue
                bound[e.server] = a
            if (state.avail.get(a.acc_type, 0) // a.units >= 1 and a.num_replicas >= 1
                    and counts[e.server] < a.num_replicas):
                counts[e.server] += 1
                state.avail[a.acc_type] -= a.units
                still.append(e)
        active = still
    for e in entries:
        if counts[e.server] > 0:
            state.assigned[e.server] = bound[e.server].rescaled(counts[e.server])
            state.best_effort.add(e.server)


def _best_effort(unallocated: list[_Entry], policy: SaturationPolicy, state: _State) -> None:
    if policy is SaturationPolicy.PRIORITY_EXHAUSTIVE:
        _allocate_maximally(unallocated, state)
    elif policy is SaturationPolicy.PRIORITY_ROUND_ROBIN:
        for _, group in groupby(unallocated, key=lambda e: e.priority):
            _allocate_equally(list(group), state)
    elif policy is SaturationPolicy.ROUND_ROBIN:
        _allocate_equally(unallocated, state)


@dataclass(frozen=True, slots=True)
class GreedyResult:
    assigned: Mapping[str, Candidate]
    best_effort: frozenset[str]
    remaining: Mapping[str, int]


def solve_greedy(candidates: Mapping[str, Sequence[Candidate]], priorities: Mapping[str, int],
                 capacity: Mapping[str, int], policy: SaturationPolicy,
                 delayed_best_effort: bool) -> GreedyResult:
    """Allocate servers against ``capacity`` (cards per type); see module docstring."""
    state = _State(avail=dict(capacity))
    entries = _entries(candidates, priorities)
    if delayed_best_effort:
        _best_effort(_allocate(entries, state), policy, state)
    else:
        for _, group in groupby(entries, key=lambda e: e.priority):
            _best_effort(_allocate(list(group), state), policy, state)
    return GreedyResult(assigned=state.assigned, best_effort=frozenset(state.best_effort),
                        remaining=state.avail)


def fill_best_effort(names: list[str], candidates: Mapping[str, Sequence[Candidate]],
                     priorities: Mapping[str, int], capacity: Mapping[str, int],
                     policy: SaturationPolicy) -> GreedyResult:
    """Best-effort capacity for servers another solver left unallocated (used after the MILP)."""
    state = _State(avail=dict(capacity))
    entries = _entries({n: candidates[n] for n in names}, priorities)
    _best_effort(entries, policy, state)
    return GreedyResult(assigned=state.assigned, best_effort=frozenset(state.best_effort),
                        remaining=state.avail)
