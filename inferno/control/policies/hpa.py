"""The Kubernetes HPA: ceil(current × metric / target) on one per-pod metric, 10 % tolerance."""

from __future__ import annotations

from inferno.control.decision import Decision, current_replicas, finite, keep_plan
from inferno.control.settings import HpaMetric, HpaSettings, StabilisationSettings
from inferno.control.stabilise import hpa_desired
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import System

__all__ = ["HpaPolicy"]


def _hpa_metric(obs: ServerObservation, metric: HpaMetric) -> float | None:
    if metric is HpaMetric.KV_USAGE:
        return finite(obs.kv_usage)
    waiting = finite(obs.waiting_requests)
    if metric is HpaMetric.WAITING:
        return waiting
    running = finite(obs.running_requests)
    return None if running is None or waiting is None else running + waiting


_DEFAULT_TARGET = {HpaMetric.KV_USAGE: 0.8, HpaMetric.WAITING: 1.0}
_DEFAULT_BATCH_FRACTION = 0.8


class HpaPolicy:
    """The Kubernetes HPA on one per-pod metric; never touches accelerator or max batch."""

    name = "hpa"

    def __init__(self, settings: HpaSettings | None = None) -> None:
        self.settings = settings or HpaSettings()

    @property
    def stabilisation(self) -> StabilisationSettings:
        return self.settings.stabilisation

    def target(self, obs: ServerObservation) -> float | None:
        """Target per-pod metric value of a server (see `HpaSettings.target`)."""
        own = self.settings.targets.get(obs.name)
        if own is not None:
            return own
        if self.settings.target is not None:
            return self.settings.target
        if self.settings.metric is HpaMetric.REQUESTS:
            return _DEFAULT_BATCH_FRACTION * obs.max_batch if obs.max_batch > 0 else None
        return _DEFAULT_TARGET[self.settings.metric]

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision:
        s = self.settings
        plans: dict[str, ServerPlan] = {}
        notes: dict[str, str] = {}
        for name, obs in snapshot.servers.items():
            value = _hpa_metric(obs, s.metric)
            target = self.target(obs)
            if value is None:
                notes[name] = f"no {s.metric} metrics"
            elif obs.ready_replicas <= 0:
                notes[name] = "no ready replicas"
            elif target is None:
                notes[name] = "no max batch to derive the target from"
            else:
                current = current_replicas(obs)
                desired = hpa_desired(current, obs.ready_replicas, value, target, s.tolerance)
                low = max(s.min_replicas, obs.min_num_replicas)
                high = s.max_replicas_for.get(name, s.max_replicas)
                plans[name] = keep_plan(obs, min(max(desired, low), max(high, low)))
        return Decision(plan=AllocationPlan(servers=plans), notes=notes)
