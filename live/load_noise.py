"""Load noise against a cluster (the seed's load emulator).

`ClusterLoadNoise` is ``inferno load-noise [INTERVAL] [ALPHA]`` (formerly ``emulate-load``,
docs/design/control-loop.md §4.1):
every INTERVAL seconds (it sleeps first, as the seed did) each managed Deployment's load labels
take one step of `inferno.control.LoadNoise`, ``x ← x + N(0, (α·x₀)²)`` where x₀ is the
value seen the first time the server was read (a random walk, θ = 0, floored at rate 0 and 1
token). Only the load labels a Deployment already carries are rewritten: ``.load.rpm`` (4
decimals) and, for the token counts, ``.load.numtokens`` / ``.load.outtokens`` (generated) and
``.load.intokens`` (prompt), rounded up. A Deployment without ``.load.rpm`` is left alone. Writes
are JSON patches of the labels only (not upstream's full-object update, which conflicted with
the actuator, P26 (docs/design/control-loop.md §8)). One numpy Generator from the seed makes a run
reproducible: servers are
stepped in name order.

`DeploymentReader` and `DeploymentStatusWriter` moved to `live.emulate` (the cluster side of
``inferno emulate``); importing them from here still works, with a DeprecationWarning.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import numpy as np

from inferno.control import LoadNoise, LoadNoiseSettings, LoadPoint
from inferno.control.ports import Clock
from inferno.errors import ActuateError, CollectError
from live import labels as lbl
from live.config import KubeSettings
from live.errors import KUBE_ERRORS, kube_collect_error
from live.kube import (
    KubeActuator,
    ManagedDeployment,
    discover,
    list_managed,
)

log = logging.getLogger(__name__)

PLACEHOLDER_TOKENS = 1.0
"""Stands in for a token count a Deployment has no label for; drawn for but never written."""


class MonotonicClock:
    """Seconds since an arbitrary origin (the emulator only needs differences)."""

    def now_s(self) -> float:
        return time.monotonic()


def load_point(dep: ManagedDeployment) -> LoadPoint | None:
    """The load a Deployment's labels set, or None without ``.load.rpm``."""
    labels = dep.labels
    if labels.load_rpm is None:
        return None
    return LoadPoint(
        arrival_rpm=labels.load_rpm,
        avg_in_tokens=(labels.load_in_tokens if labels.load_in_tokens is not None
                       else PLACEHOLDER_TOKENS),
        avg_out_tokens=(labels.load_out_tokens if labels.load_out_tokens is not None
                        else PLACEHOLDER_TOKENS))


def load_labels(present: Mapping[str, str], point: LoadPoint) -> dict[str, str]:
    """Label values for `point`, restricted to the load labels in `present`."""
    values = {lbl.LOAD_RPM: f"{point.arrival_rpm:.4f}"}
    out_tokens = str(math.ceil(point.avg_out_tokens))
    values[lbl.LOAD_NUM_TOKENS] = out_tokens
    values[lbl.LOAD_OUT_TOKENS] = out_tokens
    values[lbl.LOAD_IN_TOKENS] = str(math.ceil(point.avg_in_tokens))
    return {key: value for key, value in values.items() if key in present}


class ClusterLoadNoise:
    """Perturbs the load labels of every managed Deployment, one pass per `step`."""

    def __init__(self, api_client: kubernetes.client.ApiClient, kube: KubeSettings,
                 settings: LoadNoiseSettings, *, seed: int | np.random.SeedSequence = 0,
                 clock: Clock | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock or MonotonicClock()
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._writer = KubeActuator(api_client, kube, sleep=sleep)
        sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(
            seed)
        self.emulator = LoadNoise(settings, np.random.default_rng(sequence),
                                     start_s=self.clock.now_s())

    def step(self) -> dict[str, LoadPoint]:
        """One pass; returns the load written per server. Raises CollectError if the
        Deployments cannot be listed; a failed write is logged and skips that server."""
        scope = self.kube.watch_namespace or "all namespaces"
        try:
            items = list_managed(self._apps, self.kube)
        except KUBE_ERRORS as exc:
            raise kube_collect_error(exc, f"list managed Deployments in {scope}") from exc
        raw = {(d["metadata"].get("namespace"), d["metadata"].get("name")):
               d["metadata"].get("labels") or {} for d in items}
        discovery = discover(items)
        current: dict[str, LoadPoint] = {}
        for name, dep in discovery.deployments.items():
            point = load_point(dep)
            if point is not None:
                current[name] = point
        written: dict[str, LoadPoint] = {}
        for name, point in sorted(self.emulator.step(current, self.clock.now_s()).items()):
            dep = discovery.deployments[name]
            try:
                self._writer.write_labels(
                    dep, load_labels(raw[dep.namespace, dep.deployment], point))
            except ActuateError as exc:
                log.warning("load emulator: %s; skipped this pass", exc)
                continue
            written[name] = point
        log.info("load emulator: %d Deployment(s) updated", len(written))
        return written

    def run(self, stop: threading.Event, *, max_passes: int | None = None) -> int:
        """Sleep an interval, then `step`, until `stop` (or `max_passes`); returns passes."""
        passes = 0
        while (max_passes is None or passes < max_passes) and not stop.wait(
                self.settings.interval_s):
            try:
                self.step()
            except CollectError as exc:
                log.warning("load emulator: %s; retrying next interval", exc)
            passes += 1
        return passes


_MOVED = ("DeploymentReader", "DeploymentStatusWriter")


def __getattr__(name: str) -> Any:
    """The names that moved to `live.emulate`, with a DeprecationWarning."""
    if name in _MOVED:
        warnings.warn(f"live.load_noise.{name} is deprecated: import it from live.emulate",
                      DeprecationWarning, stacklevel=2)
        from live import emulate

        return getattr(emulate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
