"""`inferno live`: the controller on a real cluster, on the wall clock, until a signal stops it.

This module wires the live world into the world-independent control loop: `LiveCollector`
(Kubernetes discovery + Prometheus) → `Controller` (policy, stabilisation, safety rules) →
`KubeActuator` (JSON patches) or `MetricsActuator` (gauges only), driven by
`inferno.control.Driver` (periodic and on-demand cycles, health), served over HTTP by
`live.server` (``/invoke``, ``/health``, ``/metrics``). Time comes from `WallClock`, a
monotonic clock, so the stabilisation windows never see NTP jumps.

Bounded cycles: every cycle has one time budget (`LiveSettings.cycle_timeout_s`, default one
period) shared by its API and Prometheus calls (`live.deadline`), so a hung API server costs a
skipped or failed cycle, never a stalled loop.

SIGTERM and SIGINT (Ctrl-C) set the driver's stop event: a running cycle finishes (within its
budget), no new one starts, the HTTP server closes and the process exits 0. A second signal
exits at once (exit 1) after writing what is known of the interrupted cycle to the cycle log
(a failed record with its stage) and flushing the logs. Handlers are installed only from the
main thread (tests run loops in threads and stop them with `LiveLoop.stop`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from types import FrameType
from typing import NoReturn

import kubernetes.client

from inferno.control import (
    POLICY_TABLE,
    Controller,
    ControllerSettings,
    CycleRecord,
    CycleStatus,
    Driver,
    FileStaticData,
    make_policy,
)
from inferno.control.controller import StaticData
from inferno.control.driver import DEFAULT_HEALTH_PERIODS
from inferno.control.ports import Actuator, Clock
from inferno.control.tuning import make_tuner
from inferno.errors import ConfigError
from inferno.model.accelerator import Accelerator
from inferno.model.system import System
from inferno.tuner import FirstToken, TunerSettings
from live.collector import LiveCollector
from live.config import KubeSettings, PromSettings, load_api_client
from live.deadline import CycleBudget
from live.kube import KubeActuator
from live.metrics import BestEffortCycleLog, ControllerMetrics, DecisionExporter, MetricsActuator
from live.placement import PlacementSettings
from live.prom import PromReader
from live.report import report_cycle
from live.server import ControlServer, ServerSettings

log = logging.getLogger(__name__)

DEFAULT_CYCLE_LOG = "inferno-cycles.jsonl"
"""Upstream default (INFERNO_CYCLE_LOG), relative to the working directory; "-" disables."""
DEFAULT_CYCLE_LOG_MAX_BYTES = 100 * 2**20
"""Rotate the cycle log at 100 MiB: about 6 h of records at 500 servers and a 60 s period."""
DEFAULT_CYCLE_LOG_BACKUPS = 5
"""Keep 5 rotated files: 600 MiB in all, about a day and a half at 500 servers."""
ON_DEMAND_BUDGET_S = 30.0
"""Cycle budget in on-demand mode (period 0), which has no period to scale it by."""


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
    """A name of `inferno.control.LIVE_POLICY_NAMES` (twin-only policies are refused)."""
    scale_down_window_s: float | None = None
    """s. Overrides the policy's scale-down stabilisation window; None keeps its default."""
    max_batch: int = 0
    """> 0 pins every server's max batch (inferno policy; upstream DEFAULT_MAX_BATCH_SIZE);
    0 lets the optimizer search it."""
    lead_s: float | None = None
    """s. The inferno policy's trend lead (plan for observed + trend × lead on a rising
    load); None keeps its default."""
    policy_settings_path: str | None = None
    """YAML file of the policy's settings (the keys of a scenario's ``policy.<name>``
    section, docs/scenarios.md); the flags above override it."""
    cycle_log: str = DEFAULT_CYCLE_LOG
    """JSONL file of cycle records; "-" writes none."""
    tuner: str = "off"
    """Online learning of α/β/γ: ekf, window or off (`inferno.control.tuning.make_tuner`)."""
    cycle_timeout_s: float | None = None
    """s. Time budget of one cycle's API and Prometheus calls; None: one period (30 s on
    demand), so a hung API can delay the schedule by one period at most."""
    health_periods: int = DEFAULT_HEALTH_PERIODS
    """/health fails after this many periods without a successful cycle."""
    allow_migration: bool = False
    """Let the optimizer change accelerators, actuated by placing the pod template
    (`live.placement`). Off (default): every server keeps its accelerator."""
    placement: PlacementSettings = PlacementSettings()
    """Node label, GPU resource and container used when migrating."""
    metrics_port: int | None = None
    """Separate port of /metrics and /health (CONTROLLER_METRICS_PORT); None: the main one."""
    invoke_token_path: str | None = None
    """File with the bearer token /invoke requires (INFERNO_INVOKE_TOKEN_PATH); None: none."""
    cycle_log_max_bytes: int = DEFAULT_CYCLE_LOG_MAX_BYTES
    """Rotate the cycle log at this size; 0 never rotates."""
    cycle_log_backups: int = DEFAULT_CYCLE_LOG_BACKUPS
    """Rotated cycle logs kept."""

    def __post_init__(self) -> None:
        if self.cycle_timeout_s is not None and not (self.cycle_timeout_s > 0):
            raise ConfigError(f"cycle timeout must be > 0 s, got {self.cycle_timeout_s!r}")
        if self.health_periods < 1:
            raise ConfigError(f"INFERNO_HEALTH_PERIODS: must be >= 1, got {self.health_periods}")

    @property
    def budget_s(self) -> float:
        """The cycle budget in force (see `cycle_timeout_s`)."""
        if self.cycle_timeout_s is not None:
            return self.cycle_timeout_s
        period_s = self.controller.period_s
        return period_s if period_s > 0 else ON_DEMAND_BUDGET_S


def policy_settings(name: str, *, scale_down_window_s: float | None = None,
                    max_batch: int = 0, lead_s: float | None = None,
                    keep_accelerator: bool = False, path: str | None = None) -> object:
    """The policy's settings (from the YAML file `path`, else the defaults) with the command
    line's changes (None: no change).

    `max_batch` > 0 pins the max batch and `lead_s` sets the trend lead of the optimizer
    policy (upstream DEFAULT_MAX_BATCH_SIZE; `InfernoSettings.lead_s`); `keep_accelerator`
    forbids migrations (live mode's default). Policies without these settings ignore them.
    """
    entry = POLICY_TABLE.get(name)
    if entry is None:
        return None  # an unknown name is refused by make_policy, with the choices
    if path is None:
        settings = entry.settings()
    else:
        from inferno.io.yamlbind import load_settings  # the scenarios' YAML binder

        settings = load_settings(path, entry.settings)
    changes: dict[str, object] = {}
    if scale_down_window_s is not None:
        changes["stabilisation"] = replace(settings.stabilisation,
                                           scale_down_window_s=scale_down_window_s)
        if hasattr(settings, "scale_down_window_s"):  # inferno's load-peak window: no longer
            changes["scale_down_window_s"] = min(settings.scale_down_window_s,
                                                 scale_down_window_s)
    for field, value, is_set in (("max_batch", max_batch, max_batch > 0),
                                 ("lead_s", lead_s, lead_s is not None),
                                 ("keep_accelerator", True, keep_accelerator)):
        if is_set and hasattr(settings, field):
            changes[field] = value
        elif is_set and field != "keep_accelerator":  # other policies never migrate
            log.info("%s %s ignored: policy %s has no such setting", field, value, name)
    if path is not None or changes:
        return replace(settings, **changes)
    return None


class LastStaticData:
    """Static data source that remembers what it returned last (the actuator and collector
    read the accelerators of the running cycle without reading the files again)."""

    def __init__(self, inner: StaticData) -> None:
        self.inner = inner
        self.last: System | None = None

    def __call__(self) -> System:
        self.last = self.inner()
        return self.last

    def accelerators(self) -> Mapping[str, Accelerator]:
        return self.last.accelerators if self.last is not None else {}


class LiveLoop:
    """One controller wired to a cluster; `serve`, then `run` until `stop`, then `close`.

    Everything that can be checked before the first cycle is checked in the constructor (static
    data files, policy name, kubeconfig, Prometheus token and CA, /invoke token), which raises
    ConfigError. Clients passed in are not closed by `close`.
    """

    def __init__(self, settings: LiveSettings, *,
                 api_client: kubernetes.client.ApiClient | None = None,
                 prom: PromReader | None = None, static_data: StaticData | None = None,
                 clock: Clock | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.clock = clock or WallClock()
        ctl = settings.controller
        if static_data is None:
            static_data = FileStaticData(ctl.data_path, is_dynamic=ctl.is_dynamic)
        static = LastStaticData(static_data)
        static()  # a bad data file aborts the start, as upstream
        entry = POLICY_TABLE.get(settings.policy)
        if entry is not None and entry.twin_only:
            raise ConfigError(f"policy {settings.policy!r} needs the future load; "
                              "it runs in the twin only")
        policy = make_policy(settings.policy, policy_settings(
            settings.policy, scale_down_window_s=settings.scale_down_window_s,
            max_batch=settings.max_batch, lead_s=settings.lead_s,
            keep_accelerator=not settings.allow_migration,
            path=settings.policy_settings_path))
        if settings.policy == "inferno":
            import inferno.optimizer  # noqa: F401 - imported on first solve otherwise (~0.4 s)
        self.server_settings = ServerSettings(
            host=ctl.host, port=ctl.port, metrics_port=settings.metrics_port,
            invoke_token_path=settings.invoke_token_path)
        self.server_settings.check()
        self.server: ControlServer | None = None
        self._owned: list[Callable[[], None]] = []
        if api_client is None:
            api_client = load_api_client(settings.kube)
            self._owned.append(api_client.close)
        self.api_client = api_client
        if prom is None and settings.prom is not None:
            try:
                prom = PromReader(settings.prom)
            except ConfigError:
                self.close()
                raise
            self._owned.append(prom.close)
        self.prom = prom
        self.exporter = DecisionExporter()
        self.metrics = ControllerMetrics(self.exporter.registry)
        self.budget = CycleBudget(settings.budget_s)
        placement = settings.placement if settings.allow_migration else None
        actuator: Actuator = (
            KubeActuator(api_client, settings.kube, sleep=sleep, budget=self.budget,
                         placement=placement, accelerators=static.accelerators)
            if settings.actuation is Actuation.PATCH else MetricsActuator())
        self.controller = Controller(
            collector=LiveCollector(api_client, settings.kube, prom, self.clock,
                                    budget=self.budget, placement=placement,
                                    accelerators=static.accelerators),
            actuator=actuator, clock=self.clock, policy=policy,
            # an /invoke waits for at most one bounded cycle, not upstream's 60 s
            settings=replace(ctl, invoke_wait_s=min(ctl.invoke_wait_s, settings.budget_s)),
            static_data=static,
            # vLLM samples the first token in the prefill iteration (docs/tuner.md)
            tune=make_tuner(settings.tuner, TunerSettings(first_token=FirstToken.PREFILL)))
        self.cycle_log = BestEffortCycleLog(settings.cycle_log,
                                            max_bytes=settings.cycle_log_max_bytes,
                                            backups=settings.cycle_log_backups)
        self.driver = Driver(self.controller, log=self.cycle_log,
                             observers=self._observers(), health_periods=settings.health_periods)

    def _observers(self) -> tuple[Callable[[CycleRecord], None], ...]:
        dry_run = self.settings.controller.dry_run

        def report(record: CycleRecord) -> None:
            report_cycle(record, dry_run=dry_run)

        def cycle_over(record: CycleRecord) -> None:
            self.budget.stage = ""
            self.budget.discovery = None

        # A dry run actuates nothing, and in metrics mode the gauges are the actuation.
        exports = () if dry_run else (self.exporter.update,)
        return (cycle_over, self.metrics.observe, report, *exports)

    def serve(self) -> tuple[str, int]:
        """Start ``GET /invoke``, ``/metrics`` and ``/health``; returns the main address.

        Raises ConfigError when an address cannot be bound (port in use, unknown host).
        """
        server = ControlServer(self.driver, self.exporter.registry, self.server_settings)
        try:
            address = server.start()
        except OSError as exc:
            s = self.server_settings
            ports = f"{s.port}" if s.metrics_port is None else f"{s.port}/{s.metrics_port}"
            raise ConfigError(f"CONTROLLER_HOST/CONTROLLER_PORT {s.host}:{ports}: "
                              f"cannot listen: {exc}") from exc
        self.server = server
        return address

    def run(self) -> int:
        """Periodic cycles until `stop` (period 0: on demand only); returns the cycle count."""
        return self.driver.run()

    def stop(self) -> None:
        """Ask `run` to return after the running cycle (thread and signal safe)."""
        self.driver.stop()

    def finish(self, poll_s: float = 0.05) -> bool:
        """Wait for a cycle still running (an /invoke), at most its budget and a second;
        True when none runs any more."""
        deadline = time.monotonic() + self.settings.budget_s + 1.0
        while self.driver.running_since_s is not None and time.monotonic() < deadline:
            time.sleep(poll_s)
        return self.driver.running_since_s is None

    def abort(self, reason: str) -> NoReturn:
        """Exit now (a second signal): record the running cycle as failed, flush, exit 1."""
        since_s = self.driver.running_since_s
        if since_s is not None:
            record = CycleRecord(
                cycle=self.controller.num_cycles, time_s=since_s,
                policy=self.controller.policy.name, status=CycleStatus.FAILED,
                stage=self.budget.stage or "static",
                reason=f"interrupted: {reason} after {self.clock.now_s() - since_s:.1f} s")
            if not self.cycle_log.append(record, timeout_s=0.5):
                log.error("could not write the interrupted cycle to the cycle log")
            log.error("%s: exiting during cycle %d (%s)", reason, record.cycle, record.stage)
        else:
            log.error("%s: exiting", reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(1)

    def close(self) -> None:
        """Stop the HTTP server, let a running /invoke cycle end (`finish`), and release the
        clients this loop created."""
        if hasattr(self, "driver"):
            self.driver.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if hasattr(self, "driver"):
            self.finish()
        while self._owned:
            self._owned.pop()()


@contextmanager
def stop_on_signals(stop: Callable[[], None], *,
                    abort: Callable[[str], NoReturn] | None = None) -> Iterator[bool]:
    """Call `stop` on the first SIGTERM/SIGINT; on the second call `abort` (which must not
    return) or, without one, raise KeyboardInterrupt. Yields whether the handlers are
    installed (only the main thread can install them)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            if abort is not None:
                abort(f"second {name}")
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
    # The handlers stay in place until the running cycle is over, so a second signal during
    # the graceful stop still exits at once, writing what it knows.
    with stop_on_signals(loop.stop, abort=loop.abort):
        try:
            host, port = loop.serve()
            ctl = settings.controller
            log.info("inferno live: policy %s, %s, cycle budget %g s, actuation %s%s%s; "
                     "GET /invoke on http://%s:%d", settings.policy,
                     f"period {ctl.period_s:g} s" if ctl.period_s > 0 else "on demand only",
                     settings.budget_s, settings.actuation,
                     ", migrations allowed" if settings.allow_migration else "",
                     " (dry run)" if ctl.dry_run else "", host, port)
            if on_ready is not None:
                on_ready(host, port)
            cycles = loop.run()
        finally:
            loop.close()
    log.info("inferno live: stopped after %d periodic cycles", cycles)
    return cycles
