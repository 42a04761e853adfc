"""Autoscaling policies behind one interface: `decide(snapshot, now_s, static) -> Decision`.

Each policy turns one `ClusterSnapshot` into raw per-server recommendations; damping
(`stabilise.py`) and the safety rules are the controller's. A policy leaves a server out of
its plan when it cannot decide (no metrics, unknown model); the controller then keeps that
server as it is. Policies are picked by name from `POLICIES`; they never read the clock, the
environment or files.

| name         | decides from                                   | reference                    |
|--------------|------------------------------------------------|------------------------------|
| `inferno`    | the optimizer over the observed load           | optimizer-model.md           |
| `oracle`     | the optimizer over the true load of the next period (an upper bound) |  |
| `hpa`        | ceil(current × metric/target), 10 % tolerance  | Kubernetes HPA               |
| `saturation` | KV-usage / queue spare thresholds, ±1 replica  | WVA capacity saturation V1   |
| `static`     | fixed replicas                                 | baseline                     |
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

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
from inferno.model.server import Allocation, Load, Server
from inferno.model.service_class import DEFAULT_CLASS
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import SaturationPolicy, System

if TYPE_CHECKING:  # the optimizer is imported on first solve only
    from inferno.optimizer.result import Solution

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

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


class Policy(Protocol):
    name: str

    @property
    def stabilisation(self) -> StabilisationSettings: ...

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision: ...


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def current_replicas(obs: ServerObservation) -> int:
    """Replicas a server has now: the spec, or the ready count if the spec was not read."""
    return max(obs.desired_replicas, obs.ready_replicas)


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


def _units(static: System, model: str, accelerator: str, replicas: int) -> tuple[str, int]:
    """(accelerator type, physical cards) used by `replicas` replicas."""
    acc = static.accelerators[accelerator]
    perf = static.perf.get((model, accelerator))
    acc_count = perf.acc_count if perf is not None and perf.acc_count > 0 else 1
    return acc.type, replicas * acc_count * max(acc.multiplicity, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadEstimate:
    arrival_rpm: float
    avg_in_tokens: float
    avg_out_tokens: float


def observed_load(obs: ServerObservation) -> LoadEstimate | str:
    """The observed load, or why it cannot be used (a reason string)."""
    rpm = _finite(obs.arrival_rpm)
    in_tokens = _finite(obs.avg_in_tokens)
    out_tokens = _finite(obs.avg_out_tokens)
    if rpm is None or rpm < 0:
        return "no arrival-rate metrics"
    if rpm > 0 and (in_tokens is None or out_tokens is None or out_tokens <= 0 or in_tokens < 0):
        # Tokens read as 0 under saturation upstream (P8); planning for "zero load" would
        # scale the server down exactly when it is busiest.
        return "no token metrics"
    return LoadEstimate(arrival_rpm=rpm, avg_in_tokens=in_tokens or 0.0,
                        avg_out_tokens=out_tokens or 0.0)


def build_system(static: System, snapshot: ClusterSnapshot,
                 loads: Mapping[str, LoadEstimate | str],
                 settings: InfernoSettings) -> tuple[System, dict[str, str]]:
    """The optimizer input: static data plus one server per observation with a usable load.

    Servers without a usable load or model data are left out (returned with the reason) and
    their current replicas are taken off the capacity, since they keep running.
    """
    models = {model for model, _ in static.perf}
    capacity = dict(static.capacity)
    servers: list[Server] = []
    excluded: dict[str, str] = {}
    for name in sorted(snapshot.servers):
        obs = snapshot.servers[name]
        load = loads[name]
        if obs.model not in models or isinstance(load, str):
            excluded[name] = (load if isinstance(load, str)
                              else f"model {obs.model!r} has no performance data")
            if obs.accelerator in static.accelerators:
                acc_type, units = _units(static, obs.model, obs.accelerator,
                                         current_replicas(obs))
                if acc_type in capacity:
                    capacity[acc_type] = max(capacity[acc_type] - units, 0)
            continue
        replicas = current_replicas(obs)
        current = Allocation(
            accelerator=obs.accelerator, num_replicas=replicas, max_batch=obs.max_batch,
            cost=unit_cost_per_hr(static, obs.model, obs.accelerator) * replicas,
            itl_ms=_finite(obs.itl_ms) or 0.0, ttft_ms=_finite(obs.ttft_ms) or 0.0,
            load=Load(arrival_rpm=load.arrival_rpm,
                      avg_in_tokens=round(load.avg_in_tokens),
                      avg_out_tokens=round(load.avg_out_tokens)))
        servers.append(Server(
            name=name, class_name=obs.class_name or DEFAULT_CLASS, model=obs.model,
            keep_accelerator=settings.keep_accelerator, min_num_replicas=obs.min_num_replicas,
            max_batch_size=settings.max_batch, max_queue_size=obs.max_queue_size,
            current=current))
    settings_ = replace(static.settings, accel_penalty_factor=settings.migration_penalty)
    return replace(static, servers=tuple(servers), capacity=capacity,
                   settings=settings_), excluded


def _sticky_batches(system: System, solution: Solution, snapshot: ClusterSnapshot,
                    tolerance: float) -> System | None:
    """The system with near-optimal current max batches pinned, or None if none qualifies.

    A server qualifies when the solution keeps its accelerator and its max batch moves by at
    most ``tolerance`` (relative): it is re-solved on its current accelerator and max batch.
    """
    servers = []
    changed = False
    for server in system.servers:
        obs = snapshot.servers[server.name]
        alloc = solution.allocations.get(server.name)
        if (tolerance > 0 and alloc is not None and obs.max_batch > 0
                and server.max_batch_size <= 0 and alloc.accelerator == obs.accelerator
                and alloc.max_batch != obs.max_batch
                and abs(alloc.max_batch - obs.max_batch) <= tolerance * obs.max_batch):
            servers.append(replace(server, max_batch_size=obs.max_batch, keep_accelerator=True))
            changed = True
        else:
            servers.append(server)
    return replace(system, servers=tuple(servers)) if changed else None


def _default_solve(system: System) -> Solution:
    from inferno.optimizer import solve  # imported on use: the optimizer is optional here

    return solve(system)


class InfernoPolicy:
    """The optimizer: SLO-aware, cost-optimal accelerator, replicas and max batch per server."""

    name = "inferno"

    def __init__(self, settings: InfernoSettings | None = None, *,
                 solve: Solve | None = None) -> None:
        self.settings = settings or InfernoSettings()
        self._solve = solve or _default_solve
        self._history: dict[str, list[tuple[float, float]]] = {}
        self._placed: dict[str, tuple[str, float]] = {}
        """server -> (accelerator, time it was first seen there)."""

    @property
    def stabilisation(self) -> StabilisationSettings:
        return self.settings.stabilisation

    def loads(self, snapshot: ClusterSnapshot, now_s: float) -> dict[str, LoadEstimate | str]:
        """The load to plan for, per server: the observed one, projected ahead on a rise."""
        loads: dict[str, LoadEstimate | str] = {}
        for name, obs in snapshot.servers.items():
            load = observed_load(obs)
            if isinstance(load, LoadEstimate):
                load = self._lead(name, load, now_s)
            loads[name] = load
        return loads

    def _hold_recent_migrations(self, system: System, snapshot: ClusterSnapshot,
                                now_s: float) -> System:
        """Keep the accelerator of servers that moved less than `min_dwell_s` ago."""
        dwell = self.settings.min_dwell_s
        servers = []
        for server in system.servers:
            acc = snapshot.servers[server.name].accelerator
            placed = self._placed.get(server.name)
            if placed is None or placed[0] != acc:
                # first sight counts as settled; a change of accelerator starts the clock
                self._placed[server.name] = (acc, -math.inf if placed is None else now_s)
                placed = self._placed[server.name]
            if dwell > 0 and acc and now_s - placed[1] < dwell and not server.keep_accelerator:
                server = replace(server, keep_accelerator=True)
            servers.append(server)
        return replace(system, servers=tuple(servers))

    def _lead(self, name: str, load: LoadEstimate, now_s: float) -> LoadEstimate:
        """rate + trend × lead_s, the trend taken over at least lead_s/2 (a short control
        period would otherwise turn window noise into a steep slope), at most doubling."""
        lead = self.settings.lead_s
        history = self._history.setdefault(name, [])
        history.append((now_s, load.arrival_rpm))
        del history[:-64]
        if lead <= 0:
            return load
        base = next(((t, rpm) for t, rpm in reversed(history) if t <= now_s - lead / 2), None)
        if base is None or now_s <= base[0]:
            return load
        trend = (load.arrival_rpm - base[1]) / (now_s - base[0])
        if trend <= 0:
            return load
        rpm = min(load.arrival_rpm + trend * lead, 2.0 * load.arrival_rpm)
        return replace(load, arrival_rpm=rpm)

    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision:
        system, notes = build_system(static, snapshot, self.loads(snapshot, now_s),
                                     self.settings)
        system = self._hold_recent_migrations(system, snapshot, now_s)
        if not system.servers:
            return Decision(plan=AllocationPlan(), status="ok",
                            message="no server with usable load", notes=notes)
        solution = self._solve(system)
        solve_ms = solution.solve_time_ms
        sticky = _sticky_batches(system, solution, snapshot, self.settings.max_batch_tolerance)
        if sticky is not None:
            system = sticky
            solution = self._solve(system)
            solve_ms += solution.solve_time_ms
        fallback = self.settings.fallback_saturation_policy
        is_short = solution.status == "infeasible" or bool(solution.unallocated)
        if (is_short and system.settings.saturation_policy is SaturationPolicy.NONE
                and fallback is not SaturationPolicy.NONE):
            first = solution
            solution = self._solve(replace(
                system, settings=replace(system.settings, saturation_policy=fallback)))
            solve_ms += solution.solve_time_ms
            message = (f"{first.status}: {first.message}; best effort by {fallback}: "
                       f"{solution.status}: {solution.message}")
        else:
            message = solution.message
        best_effort = set(solution.best_effort)
        plans: dict[str, ServerPlan] = {}
        for server in system.servers:
            obs = snapshot.servers[server.name]
            alloc = solution.allocations.get(server.name)
            if alloc is None:
                notes[server.name] = ("unallocated" if server.name in solution.unallocated
                                      else "missing from solution")
                continue
            if alloc.num_replicas == 0 or not alloc.accelerator:
                plans[server.name] = keep_plan(obs, alloc.num_replicas)
            else:
                plans[server.name] = ServerPlan(
                    name=server.name, namespace=obs.namespace, accelerator=alloc.accelerator,
                    num_replicas=alloc.num_replicas, max_batch=alloc.max_batch)
            if server.name in best_effort:
                notes[server.name] = "best effort"
        return Decision(plan=AllocationPlan(servers=plans), status=str(solution.status),
                        message=message, predicted=dict(solution.allocations), notes=notes,
                        solve_ms=solve_ms)


class OraclePolicy(InfernoPolicy):
    """The optimizer fed the true mean load of the next `horizon_s`: an upper bound."""

    name = "oracle"

    def __init__(self, settings: InfernoSettings | None = None, *, future_load: FutureLoad,
                 horizon_s: float = 60.0, solve: Solve | None = None) -> None:
        super().__init__(settings, solve=solve)
        if not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ConfigError(f"oracle: horizon_s must be > 0, got {horizon_s!r}")
        self._future_load = future_load
        self.horizon_s = horizon_s

    def loads(self, snapshot: ClusterSnapshot, now_s: float) -> dict[str, LoadEstimate | str]:
        loads: dict[str, LoadEstimate | str] = {}
        for name in snapshot.servers:
            rpm, in_tokens, out_tokens = self._future_load(name, now_s, now_s + self.horizon_s)
            loads[name] = LoadEstimate(arrival_rpm=rpm, avg_in_tokens=in_tokens,
                                       avg_out_tokens=out_tokens)
        return loads


def _hpa_metric(obs: ServerObservation, metric: HpaMetric) -> float | None:
    if metric is HpaMetric.KV_USAGE:
        return _finite(obs.kv_usage)
    waiting = _finite(obs.waiting_requests)
    if metric is HpaMetric.WAITING:
        return waiting
    running = _finite(obs.running_requests)
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
                plans[name] = keep_plan(obs, min(max(desired, low), max(s.max_replicas, low)))
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
        kv = _finite(obs.kv_usage)
        waiting = _finite(obs.waiting_requests)
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


def _oracle(settings: object, deps: PolicyDeps) -> Policy:
    if deps.future_load is None:
        raise ConfigError("policy 'oracle' needs the world's future load; "
                          "it is available in the twin only")
    return OraclePolicy(_settings(settings, InfernoSettings, "oracle"),
                        future_load=deps.future_load, horizon_s=deps.horizon_s,
                        solve=deps.solve)


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
