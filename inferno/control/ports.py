"""Ports between the controller and the worlds it drives (twin, cluster, tests).

The controller owns one pass; the driver owns time. Implementations live in `sim` (ClusterTwin),
`live` (LiveCollector, KubeActuator) and the tests (FakeCollector, RecordingActuator).
"""

from __future__ import annotations

from typing import Protocol

from inferno.model.snapshot import ActuationReport, AllocationPlan, ClusterSnapshot


class Clock(Protocol):
    def now_s(self) -> float: ...


class Collector(Protocol):
    def collect(self) -> ClusterSnapshot:
        """Observe every managed server; raises CollectError when nothing usable was read."""
        ...


class Actuator(Protocol):
    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Make the plan true; raises ActuateError on a failure of the whole call."""
        ...
