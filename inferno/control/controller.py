"""The controller: one pass of collect → tune → decide → stabilise → actuate → record.

The controller owns one pass and the state between passes (stabilisation history); the
driver owns time (`driver.py` in live mode, a SimPy process in the twin). It reads time only
through its `Clock`, never sleeps, and never imports a world: the twin, the cluster and the
tests plug in through `ports.py`. Cycles never overlap (a lock), so a periodic cycle and an
on-demand `/invoke` can share one controller.

Safety rules (fixes of upstream pain points, docs/design/control-loop.md §8):
* a `CollectError` or unreadable static data skips the cycle: nothing is actuated (P12
(docs/design/control-loop.md §8));
* a server the policy could not decide (missing metrics, missing from the solution,
  unallocated) keeps its accelerator, replicas and max batch: never scaled to zero (P12);
* an infeasible solve falls back to best effort in the inferno policy (P11);
* every decided server is floored at `ControllerSettings.min_replicas` and its own minimum,
  then damped by the policy's `StabilisationSettings` (P9, P13), except the scale-downs a
  policy marks as releasing cards to a higher priority (`Decision.unstabilised`);
* no scale-down on less than a full metrics window of fresh data: after a failed collect
  (a Prometheus outage or restart) or a window in which a server had no load metrics, a
  server may scale down only once `ControllerSettings.metrics_window_s` has passed;
* the plan handed to the actuator lists every observed server; actuators must leave servers
  absent from a plan untouched.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict, Unpack

from inferno.control.cyclelog import CycleRecord, CycleStatus, ServerRecord, Timing
from inferno.control.decision import (
    Decision,
    Policy,
    current_replicas,
    keep_plan,
    unit_cost_per_hr,
)
from inferno.control.ports import Actuator, Clock, Collector, Tune
from inferno.control.settings import ControllerSettings
from inferno.control.stabilise import Recommendation, stabilise
from inferno.errors import ActuateError, CollectError, InfernoError
from inferno.io import load_capacity as load_capacity_file
from inferno.io import load_static_data
from inferno.model.server import Allocation
from inferno.model.service_class import DEFAULT_CLASS
from inferno.model.snapshot import (
    ActuationReport,
    AllocationPlan,
    ClusterSnapshot,
    ServerObservation,
    ServerPlan,
)
from inferno.model.system import System
from inferno.model.units import MS_PER_S

logger = logging.getLogger(__name__)

StaticData = Callable[[], System]
"""Returns accelerators, model perf, classes, optimizer settings and capacity (its servers
are ignored); called once per cycle. Raises ConfigError when the data cannot be read."""

class _Outcome(TypedDict, total=False):
    """The `CycleRecord` fields a cycle fills in as it goes (the rest are fixed per cycle)."""

    servers: tuple[ServerRecord, ...]
    skipped_servers: Mapping[str, str]
    actuation_failed: Mapping[str, str]
    solve_status: str
    solve_message: str
    total_cost_per_hr: float


class ControllerBusy(InfernoError):
    """Another cycle is running and did not end within the wait."""


class FileStaticData:
    """Static data from `INFERNO_DATA_PATH`: read once, capacity re-read every cycle.

    In dynamic mode every file is re-read each cycle. The first call reads everything, so a
    bad file shows up in the first cycle's record (and the CLI can call it once at start to
    abort early, as upstream does).
    """

    def __init__(self, path: Path | str, *, is_dynamic: bool = False,
                 load: Callable[[Path], System] | None = None,
                 load_capacity: Callable[[Path], Mapping[str, int]] | None = None) -> None:
        self.path = Path(path)
        self.is_dynamic = is_dynamic
        self._load = load or load_static_data
        self._load_capacity = load_capacity or load_capacity_file
        self._static: System | None = None

    def __call__(self) -> System:
        if self._static is None or self.is_dynamic:
            self._static = self._load(self.path)
            return self._static
        return replace(self._static, capacity=dict(self._load_capacity(self.path)))


class Controller:
    """One control pass at a time over a Collector, a Policy and an Actuator."""

    def __init__(self, *, collector: Collector, actuator: Actuator, clock: Clock,
                 policy: Policy, settings: ControllerSettings | None = None,
                 static_data: StaticData | None = None, tune: Tune | None = None,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.collector = collector
        self.actuator = actuator
        self.clock = clock
        self.policy = policy
        self.settings = settings or ControllerSettings()
        self.static_data = static_data
        self.tune = tune
        self._timer = timer
        self._lock = threading.Lock()
        self._history: dict[str, tuple[str, tuple[Recommendation, ...]]] = {}
        """Server → (accelerator the recommendations were made for, recommendations)."""
        self._fresh_since: dict[str, float] = {}
        """Server → since when its metrics have been read without a gap."""
        self._outage = False
        """The last collect failed: every server's fresh data starts again."""
        self._seen: set[str] = set()
        self.num_cycles = 0

    def step(self, *, wait_s: float | None = None) -> CycleRecord:
        """Run one cycle; wait at most `wait_s` (None: forever) for a running one to end.

        Raises ControllerBusy when the wait expires. Every other outcome, skipped and
        failed cycles included, is a `CycleRecord`.
        """
        if not self._lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise ControllerBusy("a control cycle is already running")
        try:
            return self._step()
        finally:
            self._lock.release()

    def _step(self) -> CycleRecord:
        t0 = self._timer()
        now_s = self.clock.now_s()
        self.num_cycles += 1
        ms: dict[str, float] = {}

        def lap(name: str, start: float) -> float:
            end = self._timer()
            ms[name] = (end - start) * MS_PER_S
            return end

        def done(status: CycleStatus, reason: str = "", stage: str = "",
                 **fields: Unpack[_Outcome]) -> CycleRecord:
            ms["total_ms"] = (self._timer() - t0) * MS_PER_S
            record = CycleRecord(cycle=self.num_cycles, time_s=now_s, policy=self.policy.name,
                                 status=status, reason=reason, stage=stage,
                                 timing=Timing(**ms), tuner=self._tuner_state(),
                                 **fields)
            log = logger.info if status is CycleStatus.OK else logger.warning
            log("cycle %d at %.1f s: %s%s", record.cycle, now_s, status,
                f" ({reason})" if reason else "")
            return record

        t = t0
        try:
            static = self.static_data() if self.static_data is not None else System()
        except InfernoError as exc:
            return done(CycleStatus.SKIPPED, f"static data: {exc}", "static")
        t = lap("static_ms", t)

        try:
            snapshot = self.collector.collect()
        except CollectError as exc:
            lap("collect_ms", t)
            self._outage = True
            return done(CycleStatus.SKIPPED, f"collect: {exc}", "collect")
        t = lap("collect_ms", t)
        self._track_freshness(snapshot, now_s)
        skipped_servers = dict(snapshot.skipped)
        if not snapshot.servers:
            return done(CycleStatus.SKIPPED, "collect: no managed server observed", "collect",
                        skipped_servers=skipped_servers)

        if self.tune is not None:
            try:
                static = self.tune(snapshot, static)
            except InfernoError as exc:
                logger.warning("tune failed, deciding with the current model data: %s", exc)
            t = lap("tune_ms", t)

        try:
            decision = self.policy.decide(snapshot, now_s, static)
        except InfernoError as exc:
            lap("decide_ms", t)
            kept = self._keep_all(snapshot, static)
            return done(CycleStatus.SKIPPED, f"decide: {exc}", "decide", servers=kept,
                        skipped_servers=skipped_servers)
        t = lap("decide_ms", t)
        ms["solve_ms"] = decision.solve_ms

        plan, records = self._finalise(snapshot, decision, static, now_s)
        common: _Outcome = {
            "servers": records, "skipped_servers": skipped_servers,
            "solve_status": decision.status, "solve_message": decision.message,
            "total_cost_per_hr": sum(r.cost_per_hr for r in records)}
        if self.settings.dry_run:
            return done(CycleStatus.OK, **common)
        try:
            report = self.actuator.apply(plan)
        except ActuateError as exc:
            lap("actuate_ms", t)
            return done(CycleStatus.FAILED, f"actuate: {exc}", "actuate", **common)
        lap("actuate_ms", t)
        common["actuation_failed"] = dict(_failures(report))
        return done(CycleStatus.OK, **common)

    def _track_freshness(self, snapshot: ClusterSnapshot, now_s: float) -> None:
        outage, self._outage = self._outage, False
        for name, obs in snapshot.servers.items():
            if obs.arrival_rpm is None:
                self._fresh_since.pop(name, None)
            elif outage or name not in self._fresh_since:
                # the first sight of a server counts as fresh unless data just came back
                is_back = outage or name in self._seen
                self._fresh_since[name] = now_s if is_back else -math.inf
            self._seen.add(name)

    def _is_fresh(self, name: str, now_s: float) -> bool:
        since = self._fresh_since.get(name)
        return since is not None and now_s - since >= self.settings.metrics_window_s

    def _tuner_state(self) -> Mapping[str, Any]:
        return self.tune.state_for_log() if self.tune is not None else {}

    def _keep_all(self, snapshot: ClusterSnapshot, static: System) -> tuple[ServerRecord, ...]:
        return tuple(_server_record(obs, keep_plan(obs), static, note="kept: cycle skipped")
                     for _, obs in sorted(snapshot.servers.items()))

    def _finalise(self, snapshot: ClusterSnapshot, decision: Decision, static: System,
                  now_s: float) -> tuple[AllocationPlan, tuple[ServerRecord, ...]]:
        """Apply the safety rules and stabilisation to the raw decision."""
        plans: dict[str, ServerPlan] = {}
        records: list[ServerRecord] = []
        for name in sorted(snapshot.servers):
            obs = snapshot.servers[name]
            raw = decision.plan.servers.get(name)
            note = decision.notes.get(name, "")
            if raw is None:
                final = keep_plan(obs)
                note = f"kept: {note or 'no recommendation'}"
                recommended = None
            else:
                final, extra = self._settle(obs, raw, now_s,
                                            release=name in decision.unstabilised)
                note = "; ".join(n for n in (note, extra) if n)
                recommended = raw.num_replicas
            plans[name] = final
            records.append(_server_record(
                obs, final, static, note=note, recommended=recommended,
                predicted=decision.predicted.get(name), extra=decision.records.get(name)))
        return AllocationPlan(servers=plans), tuple(records)

    def _settle(self, obs: ServerObservation, raw: ServerPlan, now_s: float, *,
                release: bool = False) -> tuple[ServerPlan, str]:
        """Floor and stabilise one server's recommendation; returns the plan and a note."""
        floor = max(self.settings.min_replicas, obs.min_num_replicas)
        desired = max(raw.num_replicas, floor)
        notes = [f"floored to {floor}"] if desired != raw.num_replicas else []
        current = current_replicas(obs)
        if desired < current and not self._is_fresh(obs.name, now_s):
            notes.append(f"held at {current}: less than {self.settings.metrics_window_s:g} s "
                         "of fresh metrics")
            desired = current
        accelerator = raw.accelerator or obs.accelerator
        # Like the HPA, a server seen for the first time (or since a migration) starts with
        # its current replicas as a recommendation, so a restart does not scale down at once.
        seed = (Recommendation(time_s=now_s, replicas=current),)
        history_acc, history = self._history.get(obs.name, (obs.accelerator, seed))
        if history_acc != obs.accelerator:
            history = seed  # recommendations for another accelerator do not compare
        if accelerator != obs.accelerator:
            replicas = desired  # a migration: replica counts of two accelerators do not compare
            self._history[obs.name] = (accelerator,
                                       (Recommendation(time_s=now_s, replicas=desired),))
        elif release and desired < current:
            replicas = desired  # cards for a higher priority: no scale-down window
            self._history[obs.name] = (accelerator,
                                       (Recommendation(time_s=now_s, replicas=desired),))
        else:
            result = stabilise(current, desired, history, now_s, self.policy.stabilisation)
            replicas = max(result.replicas, floor)
            self._history[obs.name] = (accelerator, result.history)
            if replicas != desired:
                notes.append(f"stabilised {desired} -> {replicas}")
        plan = ServerPlan(name=obs.name, namespace=obs.namespace, accelerator=accelerator,
                          num_replicas=replicas,
                          max_batch=raw.max_batch if raw.max_batch > 0 else obs.max_batch)
        return plan, "; ".join(notes)


def _failures(report: ActuationReport | None) -> Mapping[str, str]:
    return {} if report is None else report.failed


def _server_record(obs: ServerObservation, final: ServerPlan, static: System, *, note: str,
                   recommended: int | None = None, predicted: Allocation | None = None,
                   extra: Mapping[str, float | None] | None = None) -> ServerRecord:
    class_name = obs.class_name or DEFAULT_CLASS
    service_class = static.classes.get(class_name)
    target = service_class.targets.get(obs.model) if service_class is not None else None
    ttft_pct = target.slo_ttft_percentile if target is not None else 0.0
    itl_pct = target.slo_itl_percentile if target is not None else 0.0
    return ServerRecord(
        name=obs.name, class_name=class_name, model=obs.model, namespace=obs.namespace,
        arrival_rpm=obs.arrival_rpm, avg_in_tokens=obs.avg_in_tokens,
        avg_out_tokens=obs.avg_out_tokens, itl_ms=obs.itl_ms, ttft_ms=obs.ttft_ms,
        running_requests=obs.running_requests, waiting_requests=obs.waiting_requests,
        kv_usage=obs.kv_usage, ready_replicas=obs.ready_replicas,
        current_replicas=current_replicas(obs), current_accelerator=obs.accelerator,
        current_max_batch=obs.max_batch,
        slo_itl_ms=target.slo_itl_ms if target is not None else 0.0,
        slo_ttft_ms=target.slo_ttft_ms if target is not None else 0.0,
        slo_itl_percentile=itl_pct, slo_ttft_percentile=ttft_pct,
        itl_stat_ms=obs.itl_ms if not itl_pct else None,
        ttft_stat_ms=obs.ttft_ms if not ttft_pct else None,
        recommended_replicas=recommended, accelerator=final.accelerator,
        num_replicas=final.num_replicas, max_batch=final.max_batch,
        cost_per_hr=unit_cost_per_hr(static, obs.model, final.accelerator) * final.num_replicas,
        predicted_itl_ms=predicted.itl_ms if predicted is not None else None,
        predicted_ttft_ms=predicted.ttft_ms if predicted is not None else None,
        predicted_itl_stat_ms=(predicted.itl_stat_ms or None) if predicted is not None else None,
        predicted_ttft_stat_ms=(predicted.ttft_stat_ms or None) if predicted is not None
        else None, note=note,
        throughput_rpm=obs.throughput_rpm, waiting_now=obs.waiting_now,
        recent_arrival_rpm=obs.recent_arrival_rpm,
        held_replicas=obs.held_replicas,
        **{k: v for k, v in (extra or {}).items() if k in _EXTRA_FIELDS})


_EXTRA_FIELDS = frozenset({"planned_rpm", "itl_ratio", "ttft_ratio", "itl_factor",
                           "ttft_factor"})
"""ServerRecord fields a policy may fill through `Decision.records`."""
