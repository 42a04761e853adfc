"""`inferno live`: the controller on a real cluster, on the wall clock, until a signal stops it.

This module wires the live world into the world-independent control loop: `LiveCollector`
(Kubernetes discovery + Prometheus) → `Controller` (policy, stabilisation, safety rules) →
`KubeActuator` (JSON patches) or `MetricsActuator` (gauges only), driven by
`inferno.control.Driver` (periodic cycles and ``GET /invoke``), which also serves
``GET /metrics`` (`live.metrics`). Time comes from `WallClock`, a monotonic clock, so the
stabilisation windows never see NTP jumps.

SIGTERM and SIGINT (Ctrl-C) set the driver's stop event: a running cycle finishes, no new one
starts, the HTTP server closes and the process exits 0; a second signal interrupts at once.
Handlers are installed only from the main thread (tests run loops in threads and stop them with
`LiveLoop.stop`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from types import FrameType

import kubernetes.client

from inferno.control import (
    SETTINGS,
    Controller,
    ControllerSettings,
    Driver,
    FileStaticData,
    make_policy,
)
from inferno.control.controller import StaticData
from inferno.control.ports import Actuator, Clock
from inferno.control.tuning import make_tuner
from inferno.errors import ConfigError
from inferno.tuner import FirstToken, TunerSettings
from live.collector import LiveCollector
from live.config import KubeSettings, PromSettings, load_api_client
from live.kube import KubeActuator
from live.metrics import DecisionExporter, ExportingCycleLog, MetricsActuator
from live.prom import PromCollector

log = logging.getLogger(__name__)

DEFAULT_CYCLE_LOG = "inferno-cycles.jsonl"
"""Upstream default (INFERNO_CYCLE_LOG), relative to the working directory; "-" disables."""


class WallClock:
    """Clock port of live mode: `time.monotonic`, shifted to read Unix time at creation.

    Cycle records get readable timestamps, and the controller's windows never jump with the
    system clock.
    """

    def __init__(self) -> None:
        self._offset_s = time.time() - time.monotonic()

    def now_s(self) -> float:
        return time.monotonic() + self._offset_s


class Actuation(StrEnum):
    """How decisions reach the cluster."""

    PATCH = "patch"
    """JSON-patch the Deployments' replicas and allocation labels (upstream behaviour)."""
    METRICS = "metrics"
    """Only export the decisions on /metrics; an HPA or KEDA scales the Deployments."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSettings:
    """Everything `inferno live` needs, resolved from the environment and the command line."""

    controller: ControllerSettings = ControllerSettings()
    """Period, data path, /invoke address, dry run."""
    kube: KubeSettings = KubeSettings()
    """API access, watched namespace, write retries."""
    prom: PromSettings | None = PromSettings()
    """Prometheus access; None reads the load labels only (clusters without Prometheus)."""
    actuation: Actuation = Actuation.PATCH
    """patch, or metrics for HPA/KEDA actuation."""
    policy: str = "inferno"
    """A name of `inferno.control.POLICIES` (the oracle needs the twin and is refused)."""
    scale_down_window_s: float | None = None
    """s. Overrides the policy's scale-down stabilisation window; None keeps its default."""
    max_batch: int = 0
    """> 0 pins every server's max batch (inferno policy; upstream DEFAULT_MAX_BATCH_SIZE);
    0 lets the optimizer search it."""
    lead_s: float | None = None
    """s. The inferno policy's trend lead (plan for observed + trend × lead on a rising
    load); None keeps its default."""
    cycle_log: str = DEFAULT_CYCLE_LOG
    """JSONL file of cycle records; "-" writes none."""
    tuner: str = "off"
    """Online learning of α/β/γ: ekf, window or off (`inferno.control.tuning.make_tuner`)."""


def policy_settings(name: str, *, scale_down_window_s: float | None = None,
                    max_batch: int = 0, lead_s: float | None = None) -> object:
    """The policy's default settings with the command line's changes (None: no change).

    `max_batch` > 0 pins the max batch and `lead_s` sets the trend lead of the optimizer
    policy (upstream DEFAULT_MAX_BATCH_SIZE; `InfernoSettings.lead_s`); policies without
    these settings ignore them.
    """
    kind = SETTINGS.get(name)
    if kind is None:
        return None  # an unknown name is refused by make_policy, with the choices
    settings = kind()
    changes: dict[str, object] = {}
    if scale_down_window_s is not None:
        changes["stabilisation"] = replace(settings.stabilisation,
                                           scale_down_window_s=scale_down_window_s)
    for field, value, is_set in (("max_batch", max_batch, max_batch > 0),
                                 ("lead_s", lead_s, lead_s is not None)):
        if is_set and hasattr(settings, field):
            changes[field] = value
        elif is_set:
            log.info("%s %s ignored: policy %s has no such setting", field, value, name)
    return replace(settings, **changes) if changes else None


class LiveLoop:
    """One controller wired to a cluster; `serve`, then `run` until `stop`, then `close`.

    Everything that can be checked before the first cycle is checked in the constructor (static
    data files, policy name, kubeconfig, Prometheus token and CA), which raises ConfigError.
    Clients passed in are not closed by `close`.
    """

    def __init__(self, settings: LiveSettings, *,
                 api_client: kubernetes.client.ApiClient | None = None,
                 prom: PromCollector | None = None, static_data: StaticData | None = None,
                 clock: Clock | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.clock = clock or WallClock()
        ctl = settings.controller
        if static_data is None:
            static_data = FileStaticData(ctl.data_path, is_dynamic=ctl.is_dynamic)
        static_data()  # a bad data file aborts the start, as upstream
        if settings.policy == "oracle":
            raise ConfigError("policy 'oracle' needs the future load; it runs in the twin only")
        policy = make_policy(settings.policy, policy_settings(
            settings.policy, scale_down_window_s=settings.scale_down_window_s,
            max_batch=settings.max_batch, lead_s=settings.lead_s))
        if settings.policy == "inferno":
            import inferno.optimizer  # noqa: F401 - imported on first solve otherwise (~0.4 s)
        self._owned: list[Callable[[], None]] = []
        if api_client is None:
            api_client = load_api_client(settings.kube)
            self._owned.append(api_client.close)
        self.api_client = api_client
        if prom is None and settings.prom is not None:
            try:
                prom = PromCollector(settings.prom)
            except ConfigError:
                self.close()
                raise
            self._owned.append(prom.close)
        self.prom = prom
        self.exporter = DecisionExporter()
        actuator: Actuator = (KubeActuator(api_client, settings.kube, sleep=sleep)
                              if settings.actuation is Actuation.PATCH else MetricsActuator())
        self.controller = Controller(
            collector=LiveCollector(api_client, settings.kube, prom, self.clock),
            actuator=actuator, clock=self.clock, policy=policy, settings=ctl,
            static_data=static_data,
            # vLLM samples the first token in the prefill iteration (docs/tuner.md)
            tune=make_tuner(settings.tuner, TunerSettings(first_token=FirstToken.PREFILL)))
        # A dry run actuates nothing, and in metrics mode the gauges are the actuation.
        exporter = None if ctl.dry_run else self.exporter
        self.driver = Driver(self.controller, log=ExportingCycleLog(settings.cycle_log, exporter))

    def serve(self) -> tuple[str, int]:
        """Start ``GET /invoke``, ``/metrics`` and ``/health``; returns the bound address.

        Raises ConfigError when the address cannot be bound (port in use, unknown host).
        """
        try:
            return self.driver.serve({"/metrics": self.exporter.route})
        except OSError as exc:
            ctl = self.settings.controller
            raise ConfigError(f"CONTROLLER_HOST/CONTROLLER_PORT {ctl.host}:{ctl.port}: "
                              f"cannot listen: {exc}") from exc

    def run(self) -> int:
        """Periodic cycles until `stop` (period 0: on demand only); returns the cycle count."""
        return self.driver.run()

    def stop(self) -> None:
        """Ask `run` to return after the running cycle (thread and signal safe)."""
        self.driver.stop_event.set()

    def close(self) -> None:
        """Stop the HTTP server and release the clients this loop created."""
        if hasattr(self, "driver"):
            self.driver.stop()
        while self._owned:
            self._owned.pop()()


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[bool]:
    """Call `stop` on the first SIGTERM/SIGINT, interrupt on the second; yields whether the
    handlers are installed (only the main thread can install them)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            raise KeyboardInterrupt(f"second {name}")
        received.append(signum)
        log.warning("received %s: stopping after the running cycle", name)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_live(settings: LiveSettings, *, on_ready: Callable[[str, int], None] | None = None
             ) -> int:
    """`inferno live`: serve, cycle until SIGTERM/SIGINT (or `stop`), clean up.

    Returns the number of periodic cycles run. `on_ready` gets the bound host and port.
    """
    loop = LiveLoop(settings)
    try:
        with stop_on_signals(loop.stop):
            host, port = loop.serve()
            ctl = settings.controller
            log.info("inferno live: policy %s, %s, actuation %s%s; GET /invoke and /metrics on "
                     "http://%s:%d", settings.policy,
                     f"period {ctl.period_s:g} s" if ctl.period_s > 0 else "on demand only",
                     settings.actuation, " (dry run)" if ctl.dry_run else "", host, port)
            if on_ready is not None:
                on_ready(host, port)
            cycles = loop.run()
    finally:
        loop.close()
    log.info("inferno live: stopped after %d periodic cycles", cycles)
    return cycles
