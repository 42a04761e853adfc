"""WVA's saturation scaling (V1): ±1 replica on KV-usage and queue spare capacity."""

from __future__ import annotations

import math

from inferno.control.decision import Decision, current_replicas, finite, keep_plan
from inferno.control.settings import SaturationSettings, StabilisationSettings
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import System

__all__ = ["SaturationScalingPolicy"]


class SaturationScalingPolicy:
    """WVA capacity-based saturation scaling (V1) on per-replica mean KV usage and queue.

    Scale up by one when the spare KV or queue capacity falls below its trigger and no
    replica is pending; scale down by one when spreading the load over one replica fewer
    would still leave both spares at or above their triggers.
    """

    name = "saturation"

    def __init__(self, settings: SaturationSettings | None = None) -> None:
        self.settings = settings or SaturationSettings()

    @property
    def stabilisation(self) -> StabilisationSettings:
        return self.settings.stabilisation

    def desired(self, obs: ServerObservation) -> int | str:
        """Desired replicas of one server, or why it cannot be decided."""
        s = self.settings
        kv = finite(obs.kv_usage)
        waiting = finite(obs.waiting_requests)
        ready = obs.ready_replicas
        if kv is None and waiting is None:
            return "no kv_usage or waiting metrics"
        if ready <= 0:
            return "no ready replicas"
        current = current_replicas(obs)
        if current > ready:
            return current  # pods still starting: no cascade, no scale-down on partial data
        spare_kv = math.inf if kv is None else s.kv_threshold - kv
        spare_queue = math.inf if waiting is None else s.queue_threshold - waiting
        if spare_kv < s.kv_spare_trigger or spare_queue < s.queue_spare_trigger:
            return current + 1
        if ready >= 2:
            spread = ready / (ready - 1)
            kv_after = math.inf if kv is None else s.kv_threshold - kv * spread
            queue_after = math.inf if waiting is None else s.queue_threshold - waiting * spread
            if kv_after >= s.kv_spare_trigger and queue_after >= s.queue_spare_trigger:
                return current - 1
        return current

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision:
        s = self.settings
        plans: dict[str, ServerPlan] = {}
        notes: dict[str, str] = {}
        for name, obs in snapshot.servers.items():
            desired = self.desired(obs)
            if isinstance(desired, str):
                notes[name] = desired
                continue
            low = max(s.min_replicas, obs.min_num_replicas)
            plans[name] = keep_plan(obs, min(max(desired, low), max(s.max_replicas, low)))
        return Decision(plan=AllocationPlan(servers=plans), notes=notes)
