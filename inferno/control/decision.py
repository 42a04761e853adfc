"""What every policy returns and the small rules all of them share.

A policy turns one `ClusterSnapshot` into a `Decision`: raw per-server recommendations, which
the controller floors, stabilises and actuates. Shared here: the server's current replicas,
"keep as is", and the cost and cards of a replica.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from inferno.model.server import Allocation
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import System

if TYPE_CHECKING:  # the optimizer is imported on first solve only
    from inferno.control.settings import StabilisationSettings
    from inferno.optimizer.result import Solution

Solve = Callable[[System], "Solution"]
"""The optimizer entry point, `inferno.optimizer.solve`."""

FutureLoad = Callable[[str, float, float], tuple[float, float, float]]
"""(server, t0_s, t1_s) → true mean (arrival_rpm, avg_in_tokens, avg_out_tokens) over
[t0_s, t1_s); provided by the world (the twin knows its workload)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A policy's raw answer for one snapshot."""

    plan: AllocationPlan
    """Recommendations; servers the policy could not decide are absent."""
    status: str = "ok"
    """`ok`, or the optimizer's status (optimal, partial, infeasible)."""
    message: str = ""
    predicted: Mapping[str, Allocation] = field(default_factory=dict)
    """Optimizer allocations (predicted itl_ms/ttft_ms, cost), when there was a solve."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Server → why it was left out or how it was decided (best effort, fallback...)."""
    solve_ms: float = 0.0
    unstabilised: frozenset[str] = frozenset()
    """Servers whose scale-down the controller applies at once, without the scale-down
    window: their cards go to a higher priority under scarce capacity."""
    records: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    """Server → extra cycle-log fields (`ServerRecord` names: planned load, corrections)."""


class Policy(Protocol):
    name: str

    @property
    def stabilisation(self) -> StabilisationSettings: ...

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision: ...


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def current_replicas(obs: ServerObservation) -> int:
    """Replicas a server has now: the spec, or the ready count if the spec was not read."""
    return max(obs.desired_replicas, obs.ready_replicas)


def held_replicas(obs: ServerObservation) -> int:
    """Replicas holding accelerators now (current ones when the world does not say)."""
    return obs.held_replicas if obs.held_replicas is not None else current_replicas(obs)


def keep_plan(obs: ServerObservation, num_replicas: int | None = None) -> ServerPlan:
    """The server as it is (optionally with another replica count)."""
    return ServerPlan(name=obs.name, namespace=obs.namespace, accelerator=obs.accelerator,
                      max_batch=obs.max_batch,
                      num_replicas=current_replicas(obs) if num_replicas is None else num_replicas)


def unit_cost_per_hr(static: System, model: str, accelerator: str) -> float:
    """Cost of one replica of `model` on `accelerator` (acc cost × accCount); 0 if unknown."""
    acc = static.accelerators.get(accelerator)
    if acc is None:
        return 0.0
    perf = static.perf.get((model, accelerator))
    acc_count = perf.acc_count if perf is not None and perf.acc_count > 0 else 1
    return acc.cost_per_hr * acc_count


def cards(static: System, model: str, accelerator: str, replicas: int) -> tuple[str, int]:
    """(accelerator type, physical cards) used by `replicas` replicas."""
    acc = static.accelerators[accelerator]
    perf = static.perf.get((model, accelerator))
    acc_count = perf.acc_count if perf is not None and perf.acc_count > 0 else 1
    return acc.type, replicas * acc_count * max(acc.multiplicity, 1)
