"""Fakes for controller tests: a replaying collector, a recording actuator, a fake clock.

The third world of the ports, after the twin and the cluster: no SimPy, no Kubernetes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferno.model import (
    Accelerator,
    Allocation,
    ModelPerf,
    ModelTarget,
    PerfParms,
    ServiceClass,
    System,
)
from inferno.model.snapshot import (
    ActuationReport,
    AllocationPlan,
    ClusterSnapshot,
    ServerObservation,
)
from inferno.optimizer.result import Solution, Status


@dataclass
class FakeClock:
    t_s: float = 0.0

    def now_s(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        self.t_s += dt_s


class FakeCollector:
    """Replays snapshots (or raises the exceptions) in order; the last one repeats."""

    def __init__(self, items: Sequence[ClusterSnapshot | Exception],
                 before: Callable[[], None] | None = None) -> None:
        self.items = list(items)
        self.calls = 0
        self.before = before

    def collect(self) -> ClusterSnapshot:
        if self.before is not None:
            self.before()
        item = self.items[min(self.calls, len(self.items) - 1)]
        self.calls += 1
        if isinstance(item, Exception):
            raise item
        return item


@dataclass
class RecordingActuator:
    plans: list[AllocationPlan] = field(default_factory=list)
    error: Exception | None = None

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        self.plans.append(plan)
        if self.error is not None:
            raise self.error
        return ActuationReport(applied=tuple(sorted(plan.servers)))


class FakeSolver:
    """A `solve` callable answering from a function of the system; records every system."""

    def __init__(self, answer: Callable[[System], Solution]) -> None:
        self.answer = answer
        self.systems: list[System] = []
        self.lock = threading.Lock()

    def __call__(self, system: System) -> Solution:
        with self.lock:
            self.systems.append(system)
        return self.answer(system)


def obs(name: str, **kw: object) -> ServerObservation:
    """A healthy observation: model m1, class Premium, 2 ready replicas on A100."""
    values: dict[str, object] = {
        "model": "m1", "class_name": "Premium", "accelerator": "A100", "max_batch": 16,
        "desired_replicas": 2, "ready_replicas": 2, "arrival_rpm": 120.0,
        "avg_in_tokens": 100.0, "avg_out_tokens": 200.0, "itl_ms": 20.0, "ttft_ms": 150.0,
        "running_requests": 8.0, "waiting_requests": 0.0, "kv_usage": 0.3}
    values.update(kw)
    return ServerObservation(name=name, **values)  # type: ignore[arg-type]


def snapshot(*observations: ServerObservation, time_s: float = 0.0,
             skipped: dict[str, str] | None = None) -> ClusterSnapshot:
    return ClusterSnapshot(time_s=time_s, servers={o.name: o for o in observations},
                           skipped=skipped or {})


def static_system(capacity: dict[str, int] | None = None) -> System:
    """A100 (cost 40/h, 1 card) and H100 (cost 75/h, 1 card); m1 uses 2 A100 per replica."""
    perf = PerfParms(alpha_ms=8.0, beta_ms=0.016, gamma_ms=0.0005)
    return System(
        accelerators={
            "A100": Accelerator(name="A100", type="A100", cost_per_hr=40.0),
            "H100": Accelerator(name="H100", type="H100", cost_per_hr=75.0)},
        perf={("m1", "A100"): ModelPerf(model="m1", accelerator="A100", acc_count=2, perf=perf),
              ("m1", "H100"): ModelPerf(model="m1", accelerator="H100", acc_count=1, perf=perf)},
        classes={"Premium": ServiceClass(name="Premium", priority=1, targets={
            "m1": ModelTarget(model="m1", slo_itl_ms=30.0, slo_ttft_ms=200.0)})},
        capacity=capacity if capacity is not None else {"A100": 16, "H100": 8})


def allocation(accelerator: str, replicas: int, max_batch: int = 32,
               cost: float = 0.0) -> Allocation:
    return Allocation(accelerator=accelerator, num_replicas=replicas, max_batch=max_batch,
                      itl_ms=25.0, ttft_ms=120.0, cost=cost)


def solution(allocations: dict[str, Allocation], *, status: Status = Status.OPTIMAL,
             unallocated: tuple[str, ...] = (), best_effort: tuple[str, ...] = ()) -> Solution:
    return Solution(status=status, message=str(status), allocations=allocations,
                    unallocated=unallocated, best_effort=best_effort, solve_time_s=0.002)
