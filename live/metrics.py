"""The controller's decisions as Prometheus gauges (for HPA or KEDA), and its own health.

`DecisionExporter` keeps, per decided server, the replicas the controller wants and the replicas
it saw, and serves them on ``GET /metrics`` (docs/design/peers.md §1.6, WVA's names):

| gauge                      | value                                                    |
|----------------------------|----------------------------------------------------------|
| `inferno_desired_replicas` | replicas decided in the last cycle that decided anything |
| `inferno_current_replicas` | replicas observed at the start of that cycle             |
| `inferno_desired_ratio`    | desired / current; desired when current is 0             |

Labels: ``server`` (inferno.server.name), ``namespace``, ``accelerator`` (the decided one). With
``--actuation metrics`` these gauges are the only actuation: an HPA with an External metric and
``AverageValue: 1`` (or a KEDA ``prometheus`` trigger) scales the Deployment to the desired value.

The gauges live in a dedicated `CollectorRegistry`, never the process-wide default one, so two
loops (or a test and a loop) in one process never share series. Skipped cycles leave the gauges
as they were; a decided cycle replaces the whole set, so deleted servers and old accelerator
labels disappear.

`ControllerMetrics` describes the controller itself, in the same registry (alert on these):

| metric                                              | type      | labels           |
|-----------------------------------------------------|-----------|------------------|
| `inferno_cycle_duration_seconds`                    | histogram |                  |
| `inferno_cycles_total`                              | counter   | `status`, `stage`|
| `inferno_last_successful_cycle_timestamp_seconds`   | gauge     |                  |
| `inferno_decisions_total`                           | counter   | `change`         |
| `inferno_actuation_failures_total`                  | counter   |                  |
| `inferno_managed_servers`, `inferno_skipped_servers`| gauge     |                  |

``stage`` is where a skipped or failed cycle stopped (static, collect, decide, actuate; empty
when ok): the reason's class, with a bounded set of values (the full reason is in the cycle log
and the log line). ``change`` counts decided changes per server: scale_up, scale_down, migrate
(accelerator), max_batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferno.control.cyclelog import CycleLog, CycleRecord, CycleStatus, ServerRecord
from inferno.model.snapshot import ActuationReport, AllocationPlan
from inferno.model.units import MS_PER_S

log = logging.getLogger(__name__)

LABELS = ("server", "namespace", "accelerator")


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRow:
    """One server's exported decision."""

    server: str
    namespace: str
    accelerator: str
    desired_replicas: int
    current_replicas: int

    @property
    def desired_ratio(self) -> float:
        """desired / current; the desired count itself when nothing runs (WVA rule)."""
        if self.current_replicas <= 0:
            return float(self.desired_replicas)
        return self.desired_replicas / self.current_replicas


def decision_rows(record: CycleRecord) -> tuple[DecisionRow, ...] | None:
    """The rows a cycle decided, or None when it decided nothing (skipped cycle)."""
    if record.status is CycleStatus.SKIPPED:
        return None
    return tuple(DecisionRow(server=s.name, namespace=s.namespace, accelerator=s.accelerator,
                             desired_replicas=s.num_replicas,
                             current_replicas=s.current_replicas)
                 for s in record.servers)


class _RowsCollector(Collector):
    def __init__(self, exporter: DecisionExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        rows = self._exporter.rows
        families = (
            (GaugeMetricFamily("inferno_desired_replicas",
                               "Replicas the inferno controller wants.", labels=LABELS),
             lambda r: float(r.desired_replicas)),
            (GaugeMetricFamily("inferno_current_replicas",
                               "Replicas observed when inferno decided.", labels=LABELS),
             lambda r: float(r.current_replicas)),
            (GaugeMetricFamily("inferno_desired_ratio",
                               "Desired over current replicas (desired when current is 0).",
                               labels=LABELS),
             lambda r: r.desired_ratio),
        )
        for family, value in families:
            for row in rows:
                family.add_metric([row.server, row.namespace, row.accelerator], value(row))
            yield family


class DecisionExporter:
    """The three gauges over the last decided cycle, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._rows: tuple[DecisionRow, ...] = ()
        self._lock = threading.Lock()
        self.registry.register(_RowsCollector(self))

    @property
    def rows(self) -> tuple[DecisionRow, ...]:
        with self._lock:
            return self._rows

    def update(self, record: CycleRecord) -> bool:
        """Export a cycle's decisions; returns False (and keeps the old ones) if it skipped."""
        rows = decision_rows(record)
        if rows is None:
            return False
        with self._lock:
            self._rows = rows
        return True

    def render(self) -> bytes:
        """The text exposition of the gauges."""
        return generate_latest(self.registry)


CYCLE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Cycle duration buckets: a healthy cycle takes well under 1 s, a bounded hung one a period."""

CHANGES = ("scale_up", "scale_down", "migrate", "max_batch")


def changes(server: ServerRecord) -> tuple[str, ...]:
    """The decided changes of one server (empty when kept as it was)."""
    found = []
    if server.num_replicas > server.current_replicas:
        found.append("scale_up")
    elif server.num_replicas < server.current_replicas:
        found.append("scale_down")
    if server.accelerator and server.accelerator != server.current_accelerator:
        found.append("migrate")
    if server.max_batch > 0 and server.max_batch != server.current_max_batch:
        found.append("max_batch")
    return tuple(found)


class ControllerMetrics:
    """The controller's own metrics (module table), fed one cycle record at a time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram("inferno_cycle_duration_seconds",
                                  "Duration of control cycles, skipped ones included.",
                                  buckets=CYCLE_BUCKETS_S, registry=registry)
        self.cycles = Counter("inferno_cycles", "Control cycles by outcome and the stage a "
                              "skipped or failed one stopped at.", ["status", "stage"],
                              registry=registry)
        self.last_success = Gauge("inferno_last_successful_cycle_timestamp_seconds",
                                  "Unix time of the start of the last successful cycle.",
                                  registry=registry)
        self.decisions = Counter("inferno_decisions", "Decided changes, per server and cycle.",
                                 ["change"], registry=registry)
        self.actuation_failures = Counter("inferno_actuation_failures",
                                          "Servers whose actuation failed.", registry=registry)
        self.servers = Gauge("inferno_managed_servers", "Servers observed in the last cycle.",
                             registry=registry)
        self.skipped_servers = Gauge("inferno_skipped_servers",
                                     "Managed Deployments the last cycle could not read.",
                                     registry=registry)
        for change in CHANGES:
            self.decisions.labels(change=change)
        self.cycles.labels(status=CycleStatus.OK, stage="")

    def observe(self, record: CycleRecord) -> None:
        self.duration.observe(record.timing.total_ms / MS_PER_S)
        self.cycles.labels(status=record.status, stage=record.stage).inc()
        if record.is_ok:
            self.last_success.set(record.time_s)
        if record.status is not CycleStatus.SKIPPED:
            for server in record.servers:
                for change in changes(server):
                    self.decisions.labels(change=change).inc()
        self.actuation_failures.inc(len(record.actuation_failed))
        if record.servers or record.status is CycleStatus.OK:
            self.servers.set(len(record.servers))
        self.skipped_servers.set(len(record.skipped_servers))


class BestEffortCycleLog(CycleLog):
    """The cycle log (path "-" writes no file), rotated by size.

    A failed write is logged once and does not fail the cycle (upstream: the recorder is
    best effort).
    """

    def __init__(self, path: str, *, max_bytes: int = 0, backups: int = 0) -> None:
        super().__init__(path, max_bytes=max_bytes, backups=backups)
        self._has_warned = False

    def append(self, record: CycleRecord, *, timeout_s: float = -1) -> bool:
        try:
            return super().append(record, timeout_s=timeout_s)
        except OSError as exc:
            if not self._has_warned:
                log.warning("cannot write the cycle log %s: %s (further failures not logged)",
                            self.path, exc)
                self._has_warned = True
            return False


class MetricsActuator:
    """Actuator port for ``--actuation metrics``: decisions are exported, never patched."""

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Touches nothing; every planned server is reported unchanged."""
        return ActuationReport(unchanged=tuple(sorted(plan.servers)))
