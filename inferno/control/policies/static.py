"""Fixed replicas per server: the baseline an operator sets by hand."""

from __future__ import annotations

from inferno.control.decision import Decision, keep_plan
from inferno.control.settings import StabilisationSettings, StaticSettings
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot
from inferno.model.system import System

__all__ = ["StaticPolicy"]


class StaticPolicy:
    """Fixed replicas per server; accelerator and max batch stay as observed."""

    name = "static"

    def __init__(self, settings: StaticSettings | None = None) -> None:
        self.settings = settings or StaticSettings()

    @property
    def stabilisation(self) -> StabilisationSettings:
        return self.settings.stabilisation

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision:
        s = self.settings
        plans = {name: keep_plan(obs, s.replicas.get(name, s.default_replicas))
                 for name, obs in snapshot.servers.items()}
        return Decision(plan=AllocationPlan(servers=plans))
