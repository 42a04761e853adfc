"""The Collector port for a real cluster: Kubernetes discovery + Prometheus metrics.

Per managed Deployment the observation comes from its vLLM metrics in Prometheus
(`live.prom.PromReader`) through the formulas the twin uses too
(`inferno.control.observation`): offered load = completions + growth of running and waiting,
extended to the replicas that were ready through the whole window (from this collector's
previous reads of the Deployment) but did not report. When Prometheus has no data for a
quantity (no series yet, 0/0 ratio) the Deployment's load labels stand in for arrival rate and
token counts, as upstream does. Latencies and gauges have no label fallback (None = unknown).
Any failed API list or Prometheus query raises CollectError, so the controller skips the cycle
rather than acting on partial data.

`collect` is the first world call of a cycle, so it starts the cycle's time budget
(`live.deadline.CycleBudget`), which the actuator shares.

With migrations on (placement settings), a server whose accelerator label disagrees with the
accelerator its pod template places pods on (`live.placement.running_accelerator`) is skipped
with the reason: inferno would model pods that run elsewhere.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import kubernetes.client

from inferno.control.observation import ObservedLoad, VllmWindow, observe_window
from inferno.control.ports import Clock
from inferno.errors import ConfigError
from inferno.model.accelerator import Accelerator
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from live.config import KubeSettings, duration_s
from live.deadline import UNBOUNDED, CycleBudget
from live.kube import ManagedDeployment, discover_deployments
from live.placement import PlacementSettings, running_accelerator
from live.prom import PromReader


def observe(dep: ManagedDeployment, window: VllmWindow | None,
            steady_ready: int | None = None) -> ServerObservation:
    """Merge one Deployment's labels and metrics; metrics win, load labels fill gaps.

    ``steady_ready``: replicas ready through the whole window (see `observe_window`).
    """
    m = (observe_window(window, steady_ready=steady_ready) if window is not None
         else ObservedLoad())
    labels = dep.labels

    def first(measured: float | None, fallback: float | None) -> float | None:
        return measured if measured is not None else fallback

    return ServerObservation(
        name=labels.name, model=labels.model, class_name=labels.class_name,
        namespace=dep.namespace, accelerator=labels.accelerator, max_batch=labels.max_batch,
        max_queue_size=labels.max_queue_size,
        desired_replicas=dep.desired_replicas, ready_replicas=dep.ready_replicas,
        held_replicas=dep.held_replicas,
        arrival_rpm=first(m.arrival_rpm, labels.load_rpm),
        avg_in_tokens=first(m.avg_in_tokens, labels.load_in_tokens),
        avg_out_tokens=first(m.avg_out_tokens, labels.load_out_tokens),
        itl_ms=m.itl_ms, ttft_ms=m.ttft_ms, running_requests=m.running_requests,
        waiting_requests=m.waiting_requests, kv_usage=m.kv_usage,
        throughput_rpm=m.throughput_rpm, waiting_now=m.waiting_now,
        running_now=m.running_now, waiting_max=m.waiting_max,
        recent_arrival_rpm=m.recent_arrival_rpm, window_s=m.window_s,
        recent_window_s=m.recent_window_s)


class LiveCollector:
    """Collector port: one list call plus (when configured) a fixed set of PromQL queries."""

    def __init__(self, api_client: kubernetes.client.ApiClient, settings: KubeSettings,
                 prom: PromReader | None, clock: Clock, *,
                 budget: CycleBudget | None = None,
                 placement: PlacementSettings | None = None,
                 accelerators: Callable[[], Mapping[str, Accelerator]] | None = None) -> None:
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self.settings = settings
        self.prom = prom
        self.clock = clock
        self.budget = budget
        self.placement = placement
        self._accelerators = accelerators
        self._ready: dict[tuple[str, str], deque[tuple[float, int]]] = {}
        """(namespace, Deployment) → (time, ready replicas) of recent collects."""

    def collect(self) -> ClusterSnapshot:
        """Snapshot of every managed server; skipped ones are listed with their reason."""
        deadline = UNBOUNDED
        if self.budget is not None:
            self.budget.begin()
            deadline = self.budget.collect
        discovery = discover_deployments(self._apps, self.settings, deadline)
        if self.budget is not None:
            self.budget.discovery = discovery
        skipped = dict(discovery.skipped)
        deployments = {name: dep for name, dep in discovery.deployments.items()
                       if self._placement_problem(dep, skipped) is None}
        metrics = (self.prom.collect(namespace=self.settings.watch_namespace, deadline=deadline)
                   if self.prom is not None and deployments else {})
        now = self.clock.now_s()
        servers = {}
        for name, dep in deployments.items():
            key = (dep.namespace, dep.deployment)
            servers[name] = observe(dep, metrics.get(key), self._steady_ready(key, dep, now))
        if self.budget is not None:
            self.budget.stage = "decide"
        return ClusterSnapshot(time_s=now, servers=servers, skipped=skipped)

    def _steady_ready(self, key: tuple[str, str], dep: ManagedDeployment, now: float) -> int:
        """The least ready count over the window, from this collector's own past reads; a
        Deployment first seen now is assumed to have held its ready count."""
        window = duration_s(self.prom.settings.window) if self.prom is not None else 0.0
        history = self._ready.setdefault(key, deque(maxlen=64))
        history.append((now, dep.ready_replicas))
        while len(history) > 1 and history[1][0] <= now - window:
            history.popleft()
        return min(ready for _, ready in history)

    def _placement_problem(self, dep: ManagedDeployment, skipped: dict[str, str]) -> str | None:
        """Why the label and the pod template disagree (recorded in `skipped`), or None."""
        if self.placement is None or self._accelerators is None:
            return None
        try:
            running = running_accelerator(dep.template, self._accelerators(), self.placement)
        except ConfigError as exc:
            problem = str(exc)
        else:
            if running is None or running == dep.labels.accelerator:
                return None
            problem = (f"label {dep.labels.accelerator or '(none)'} but the pod template "
                       f"places pods on {running}")
        skipped[dep.labels.name] = f"Deployment {dep.ref}: {problem}"
        return problem
