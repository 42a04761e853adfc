"""The controller's decisions as Prometheus gauges, for HPA (External metric) or KEDA.

`DecisionExporter` keeps, per decided server, the replicas the controller wants and the replicas
it saw, and serves them on ``GET /metrics`` (peers.md §1.6, WVA's names):

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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from inferno.control.cyclelog import CycleLog, CycleRecord, CycleStatus
from inferno.model.snapshot import ActuationReport, AllocationPlan

log = logging.getLogger(__name__)

LABELS = ("server", "namespace", "accelerator")

Response = tuple[int, str, bytes]
"""(HTTP status, content type, body), as the driver's extra routes return."""


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

    def route(self) -> Response:
        """The ``GET /metrics`` handler for `inferno.control.Driver.serve`."""
        return HTTPStatus.OK, CONTENT_TYPE_LATEST, self.render()


class ExportingCycleLog(CycleLog):
    """The cycle log (path "-" writes no file) that also feeds a DecisionExporter (if any).

    A failed write is logged once and does not fail the cycle (upstream: the recorder is
    best effort); the gauges are updated either way.
    """

    def __init__(self, path: str, exporter: DecisionExporter | None) -> None:
        super().__init__(path)
        self.exporter = exporter
        self._has_warned = False

    def append(self, record: CycleRecord) -> None:
        if self.exporter is not None:
            self.exporter.update(record)
        try:
            super().append(record)
        except OSError as exc:
            if not self._has_warned:
                log.warning("cannot write the cycle log %s: %s (further failures not logged)",
                            self.path, exc)
                self._has_warned = True


class MetricsActuator:
    """Actuator port for ``--actuation metrics``: decisions are exported, never patched."""

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Touches nothing; every planned server is reported unchanged."""
        return ActuationReport(unchanged=tuple(sorted(plan.servers)))
