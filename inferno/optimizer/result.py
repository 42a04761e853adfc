"""The optimizer's answer: a value with a status, never an exception (scipy OptimizeResult)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from inferno.model.server import Allocation
from inferno.model.units import MS_PER_S


class Status(StrEnum):
    OPTIMAL = "optimal"
    """Every server with load has an allocation meeting its SLO."""
    PARTIAL = "partial"
    """Some servers are unallocated or only best-effort allocated."""
    INFEASIBLE = "infeasible"
    """No server could be allocated."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Solution:
    status: Status
    message: str
    allocations: Mapping[str, Allocation] = field(default_factory=dict)
    unallocated: tuple[str, ...] = ()
    """Servers left without an allocation, sorted by name."""
    best_effort: tuple[str, ...] = ()
    """Servers given fewer replicas than their SLO needs (saturation policy)."""
    parts: Mapping[str, tuple[Allocation, ...]] = field(default_factory=dict)
    """Heterogeneous MILP only: servers whose replicas span several accelerators."""
    cost: float = 0.0
    solve_time_s: float = 0.0
    """Candidate computation plus solving; excludes loading files."""

    @property
    def solve_time_ms(self) -> float:
        return self.solve_time_s * MS_PER_S
