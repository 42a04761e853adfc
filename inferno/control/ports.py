"""Ports between the controller and the worlds it drives (twin, cluster, tests).

The controller owns one pass; the driver owns time. Implementations live in `sim` (ClusterTwin),
`live` (LiveCollector, KubeActuator) and the tests (FakeCollector, RecordingActuator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from inferno.model.snapshot import ActuationReport, AllocationPlan, ClusterSnapshot
from inferno.model.system import System


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


class Tune(Protocol):
    """Optional online learning between collect and decide (`inferno.control.tuning`)."""

    def __call__(self, snapshot: ClusterSnapshot, static: System) -> System:
        """The static data with the model perf learned so far; raises InfernoError on a
        failure (the cycle then decides with ``static`` as it was)."""
        ...

    def state_for_log(self) -> Mapping[str, Any]:
        """What the cycle log records of the learner (parameters, NIS, counters)."""
        ...
