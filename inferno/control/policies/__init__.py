"""Autoscaling policies behind one interface: `decide(snapshot, now_s, static) -> Decision`.

Each policy turns one `ClusterSnapshot` into raw per-server recommendations; damping
(`stabilise.py`) and the safety rules are the controller's. A policy leaves a server out of
its plan when it cannot decide (no metrics, unknown model); the controller then keeps that
server as it is. Policies are picked by name from `POLICIES`; they never read the clock, the
environment or files.

| name         | decides from                                                  | module           |
|--------------|---------------------------------------------------------------|------------------|
| `inferno`    | the optimizer over the planned load and the corrected model   | inferno          |
| `oracle`     | the optimizer over the true load when replicas are ready      | inferno          |
| `hpa`        | ceil(current × metric/target), 10 % tolerance (Kubernetes)    | here             |
| `saturation` | KV-usage / queue spare thresholds, ±1 replica (WVA V1)        | here             |
| `static`     | fixed replicas                                                | here             |
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from inferno.control.decision import (
    Decision,
    FutureLoad,
    Policy,
    Solve,
    current_replicas,
    finite,
    keep_plan,
    unit_cost_per_hr,
)
from inferno.control.demand import LoadEstimate
from inferno.control.policies.inferno import (
    InfernoPolicy,
    OraclePolicy,
    build_system,
    observed_load,
)
from inferno.control.settings import (
    HpaMetric,
    HpaSettings,
    InfernoSettings,
    SaturationSettings,
    StabilisationSettings,
    StaticSettings,
)
from inferno.control.stabilise import hpa_desired
from inferno.errors import ConfigError
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import System

__all__ = [
    "POLICIES", "SETTINGS", "Decision", "FutureLoad", "HpaPolicy", "InfernoPolicy",
    "LoadEstimate", "OraclePolicy", "Policy", "PolicyDeps", "SaturationScalingPolicy", "Solve",
    "StaticPolicy", "build_system", "current_replicas", "keep_plan", "make_policy",
    "observed_load", "unit_cost_per_hr",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDeps:
    """What a policy may need from outside: the optimizer and, for the oracle, the world."""

    solve: Solve | None = None
    future_load: FutureLoad | None = None
    horizon_s: float = 60.0
    """s of future load the oracle averages; the control period by default."""
    lead_s: float | None = None
    """s until replicas asked for now are ready (the world's startup delay); the oracle's
    future window starts there. None: the policy's own startup_s."""


def _oracle(settings: object, deps: PolicyDeps) -> Policy:
    if deps.future_load is None:
        raise ConfigError("policy 'oracle' needs the world's future load; "
                          "it is available in the twin only")
    return OraclePolicy(_settings(settings, InfernoSettings, "oracle"),
                        future_load=deps.future_load, horizon_s=deps.horizon_s,
                        lead_s=deps.lead_s, solve=deps.solve)


def _settings(settings: object, kind: type[_T], name: str) -> _T | None:
    if settings is None or isinstance(settings, kind):
        return settings
    raise ConfigError(f"policy {name!r}: settings must be {kind.__name__}, "
                      f"got {type(settings).__name__}")


POLICIES: dict[str, Callable[[object, PolicyDeps], Policy]] = {
    "inferno": lambda s, d: InfernoPolicy(_settings(s, InfernoSettings, "inferno"),
                                          solve=d.solve),
    "oracle": _oracle,
    "hpa": lambda s, d: HpaPolicy(_settings(s, HpaSettings, "hpa")),
    "saturation": lambda s, d: SaturationScalingPolicy(
        _settings(s, SaturationSettings, "saturation")),
    "static": lambda s, d: StaticPolicy(_settings(s, StaticSettings, "static")),
}
"""Policy name → factory(settings or None, deps)."""

SETTINGS: dict[str, type] = {
    "inferno": InfernoSettings, "oracle": InfernoSettings, "hpa": HpaSettings,
    "saturation": SaturationSettings, "static": StaticSettings,
}
"""Policy name → its settings class (for scenario loaders)."""


def make_policy(name: str, settings: object = None, deps: PolicyDeps | None = None) -> Policy:
    """Build the policy called `name`; unknown names raise ConfigError listing the choices."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ConfigError(f"policy: unknown name {name!r}; choose one of "
                          f"{', '.join(sorted(POLICIES))}")
    return factory(settings, deps or PolicyDeps())
