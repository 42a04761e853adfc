"""`ClusterTwin`: the simulated cluster behind the controller's ports (Collector, Actuator, Clock).

The controller cannot tell the twin from a cluster: `collect()` returns the `ClusterSnapshot` a
Prometheus-backed collector would build, and `apply()` changes Deployments the way the
Kubernetes actuator patches them.

Collect. What the controller sees comes from the replicas' vLLM metrics only, through the
code the live collector uses: every `scrape_interval_s` each served replica (ready or
draining) is scraped (`sim.scrape`: the values its ``/metrics`` would show, with vLLM's
counting semantics, `sim.promview`); a collect at t evaluates the live collector's PromQL
(`sim.promql`, Prometheus' rate/delta extrapolation and range semantics) over the samples
taken strictly before t in [t − window, t), and `inferno.control.observation` turns the
aggregates into the observation: offered load = completions + growth of running + waiting
(vLLM has no arrival counter), per-request means, gauges averaged over the window and the
pods. Requests held while no replica is ready are invisible, as they are to vLLM.
``arrival_signal`` picks the arrival rate: ``offered`` (that estimate, the default),
``completions`` (the completion rate alone, upstream P3 (docs/design/control-loop.md §8)) or
``arrivals`` (a gateway's exact
arrival counter, which live mode does not have; deprecated).

A deployment-level scrape (`DeploymentCounters`: true arrivals, costs) at the same instants
feeds the run's time series and plots, never the controller.

Apply. Replica count changes scale in place; an accelerator or max-batch change is a new
revision rolled out with surge (see `sim.deployment`), and capacity limits keep replicas
pending. A server absent from a plan is left untouched; a plan naming an unknown server, an
unknown accelerator or a max batch the engine rejects fails for that server only.

Same-time order: the scrape process and the controller process are plain SimPy processes; a
collect never uses a scrape taken at its own instant, so the order of same-time scrape and
collect events does not change any observation.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pandas as pd
import simpy

from inferno.control.observation import observe_window
from inferno.errors import ConfigError
from inferno.io import safe
from inferno.model.snapshot import (
    ActuationReport,
    AllocationPlan,
    ClusterSnapshot,
    ServerObservation,
)
from inferno.model.units import S_PER_MIN
from sim.cluster import Cluster
from sim.deployment import Deployment, DeploymentCounters, RolloutSettings, StartupDelay
from sim.engine import DEFAULT_MAX_NUM_TOKENS
from sim.replica import EngineSettings, ReplicaState
from sim.scrape import VllmScraper


class ArrivalSignal(StrEnum):
    """What the twin's collector reports as a server's arrival rate."""

    OFFERED = "offered"
    """Completions + growth of running and waiting requests, from the replicas' vLLM
    metrics (vLLM has no arrival counter): what the live collector reads."""
    ARRIVALS = "arrivals"
    """Requests received (a gateway dispatch counter live mode does not have); deprecated."""
    COMPLETIONS = "completions"
    """Requests finished (vLLM request_success_total, upstream's proxy): under-reads when a
    server is saturated (upstream pain point P3 (docs/design/control-loop.md §8))."""


class RouterKind(StrEnum):
    """The router in front of every deployment's replicas (`sim.router`)."""

    ROUND_ROBIN = "round_robin"
    LEAST_OUTSTANDING = "least_outstanding"
    POWER_OF_TWO = "power_of_two"
    RANDOM = "uniform_random"
    """A uniformly random ready replica (kube-proxy in iptables mode): each replica's
    arrivals stay Poisson, as the analyzer assumes; round robin makes them Erlang-R."""


ARRIVAL_SIGNALS = tuple(signal.value for signal in ArrivalSignal)
_HOLDING = (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.DRAINING)
TIMESERIES_COLUMNS = ("time_s", "server", "accelerator", "max_batch", "desired", "ready",
                      "arrivals_total", "finished_total", "running", "waiting", "kv_usage",
                      "cost")
ACTUATION_COLUMNS = ("time_s", "server", "from_accelerator", "to_accelerator",
                     "from_replicas", "to_replicas", "from_max_batch", "to_max_batch")


@dataclass(frozen=True, slots=True, kw_only=True)
class TwinSettings:
    """The twin's settings; a scenario's ``twin`` section binds to them (`sim.scenario`).

    `ClusterTwin` reads the observation part (windows, scrapes, arrival signal); the replica
    part (router, startup, engine, rollout, drain grace) is what every server's
    `sim.deployment.DeploymentSpec` is built with (`sim.closedloop.run`)."""

    window_s: float = 60.0
    """s behind every rate and mean (the PromQL range window; upstream default 1m)."""
    scrape_interval_s: float = 5.0
    """s between scrapes; gauges are averaged over the scrapes in the window."""
    arrival_signal: ArrivalSignal = ArrivalSignal.OFFERED
    """offered (completions + growth in the system, from vLLM metrics), completions (vLLM's
    completion rate alone: under-reads under saturation) or arrivals (a gateway's exact
    counter that live mode lacks; deprecated). A plain string is read as its member."""
    router: RouterKind = RouterKind.ROUND_ROBIN
    startup: StartupDelay = StartupDelay(mean_s=60.0)
    """Time from accelerator grant to ready (image pull, model load, warm-up): kind fixed,
    uniform, exponential or lognormal; mean_s; spread (uniform: half-width in s, lognormal:
    coefficient of variation)."""
    engine: EngineSettings = EngineSettings(max_num_batched_tokens=None)
    """vLLM engine arguments shared by every replica; the token budget defaults to the model
    data's (`EngineSettings.for_server`)."""
    rollout: RolloutSettings = RolloutSettings()
    """RollingUpdate of an accelerator or max-batch change: max_surge, max_unavailable."""
    drain_grace_s: float | None = None
    """Kill a draining replica after this long; None lets it finish every request."""
    recent_window_s: float | None = field(default=None, metadata={"internal": True})
    """s of the recent-load window at the window's end; None = half the window, at least two
    scrape intervals (live mode's default is 30 s of a 1 m window). Not a scenario key."""

    def __post_init__(self) -> None:
        for name in ("window_s", "scrape_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"twin: {name} must be > 0, got {value!r}")
        if self.arrival_signal not in ARRIVAL_SIGNALS:
            raise ConfigError(f"twin: arrival_signal must be one of "
                              f"{', '.join(ARRIVAL_SIGNALS)}, got {self.arrival_signal!r}")
        object.__setattr__(self, "arrival_signal", ArrivalSignal(self.arrival_signal))
        # the engine's own checks, for any server (a per-server token budget of None or 0
        # is the model data's), so a bad twin.engine value is named here, at load
        self.engine.for_server(DEFAULT_MAX_NUM_TOKENS).check(1, where="twin: engine")
        if self.startup.mean_s > safe.MAX_SIM_DURATION_S:
            raise ConfigError(f"twin: startup.mean_s must be <= "
                              f"{safe.MAX_SIM_DURATION_S:,.0f} (MAX_SIM_DURATION_S), "
                              f"got {self.startup.mean_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What the cluster's labels say about a server besides its Deployment."""

    name: str
    model: str
    class_name: str
    min_num_replicas: int = 0
    max_queue_size: int | None = None


@dataclass(frozen=True, slots=True)
class _Sample:
    counters: DeploymentCounters
    accelerator: str
    max_batch: int


class ClusterTwin:
    """Collector, Actuator and Clock over a `sim.cluster.Cluster`."""

    def __init__(self, env: simpy.Environment, cluster: Cluster,
                 servers: Mapping[str, ServerInfo], settings: TwinSettings | None = None,
                 *, on_scrape: Callable[[float], None] | None = None) -> None:
        missing = [name for name in servers if name not in cluster.deployments]
        if missing:
            raise ConfigError(f"twin: no deployment for server(s) {', '.join(missing)}")
        self.env = env
        self.cluster = cluster
        self.servers = dict(servers)
        self.settings = settings or TwinSettings()
        self.on_scrape = on_scrape
        """Called with the time after each scrape (a streaming run hands requests off then,
        once the vLLM counters have absorbed them)."""
        if self.settings.arrival_signal is ArrivalSignal.ARRIVALS:
            warnings.warn("twin.arrival_signal 'arrivals' reads a gateway counter that live "
                          "mode does not have; use 'offered' (the default)",
                          FutureWarning, stacklevel=2)
        self.scraper = VllmScraper({name: cluster.deployments[name] for name in self.servers},
                                   retention_s=self.settings.window_s
                                   + 2 * self.settings.scrape_interval_s)
        self._samples: dict[str, list[_Sample]] = {name: [] for name in self.servers}
        self._times: dict[str, list[float]] = {name: [] for name in self.servers}
        """Deployment-level scrape times per server, for bisection."""
        self.num_changes: dict[str, int] = dict.fromkeys(self.servers, 0)
        """Actuations that changed a server's replica count, accelerator or max batch."""
        self._actuations: list[tuple] = []

    # ------------------------------------------------------------------ Clock
    def now_s(self) -> float:
        return float(self.env.now)

    # ------------------------------------------------------------------ scraping
    def start(self) -> simpy.events.Process:
        """Start the scrape process (one scrape now, then every scrape_interval_s)."""
        return self.env.process(self._scraping())

    def _scraping(self) -> Generator[simpy.events.Event, object, None]:
        while True:
            self.scrape()
            yield self.env.timeout(self.settings.scrape_interval_s)

    def scrape(self) -> None:
        """Scrape every served replica's vLLM metrics, and every deployment's counters."""
        now = self.now_s()
        self.scraper.scrape(now)
        for name in self.servers:
            dep = self._dep(name)
            counters = dep.counters()
            self._samples[name].append(_Sample(counters, dep.accelerator, dep.max_batch))
            self._times[name].append(counters.time_s)
        if self.on_scrape is not None:
            self.on_scrape(now)

    def _dep(self, name: str) -> Deployment:
        return self.cluster.deployments[name]

    # ------------------------------------------------------------------ Collector
    def collect(self) -> ClusterSnapshot:
        now = self.now_s()
        observations = {name: self.observe(name, now) for name in sorted(self.servers)}
        return ClusterSnapshot(time_s=now, servers=observations)

    def observe(self, name: str, now: float) -> ServerObservation:
        """One server's observation from the scrapes strictly before ``now``."""
        info = self.servers[name]
        dep = self._dep(name)
        end = math.nextafter(now, -math.inf)  # a scrape at the collect's instant is not in yet
        settings = self.settings
        recent = settings.recent_window_s or max(2 * settings.scrape_interval_s,
                                                 settings.window_s / 2)
        window = self.scraper.window(name, end, settings.window_s, recent)
        seen = observe_window(window, steady_ready=self._steady_ready(name, now))
        fields = {f: getattr(seen, f) for f in seen.__dataclass_fields__}
        signal = settings.arrival_signal
        if signal is ArrivalSignal.COMPLETIONS:
            fields["arrival_rpm"] = seen.throughput_rpm
        elif signal is ArrivalSignal.ARRIVALS:
            fields.update(self._gateway_arrivals(name, now))
        return ServerObservation(
            name=name, model=info.model, class_name=info.class_name,
            accelerator=dep.accelerator, max_batch=dep.max_batch,
            desired_replicas=dep.desired, ready_replicas=len(dep.ready),
            held_replicas=sum(r.state in _HOLDING for r in dep.replicas),
            min_num_replicas=info.min_num_replicas, max_queue_size=info.max_queue_size,
            **fields)

    def _steady_ready(self, name: str, now: float) -> int:
        """Replicas ready through the whole window: the least ready count seen by the
        deployment-level scrapes in it and now."""
        times = self._times[name]
        first = bisect_left(times, now - self.settings.window_s)
        counts = [s.counters.ready_replicas for s in self._samples[name][first:]]
        return min([len(self._dep(name).ready), *counts])

    def _gateway_arrivals(self, name: str, now: float) -> dict[str, float | None]:
        """Arrival rate and token means from the deployment's exact arrival counters."""
        times = self._times[name]
        first = bisect_right(times, now - self.settings.window_s + 1e-9)
        last = bisect_left(times, now)
        samples = self._samples[name]
        if first > 0:
            base = samples[first - 1].counters
        elif last > 0:
            base = samples[0].counters
        else:
            return {"arrival_rpm": None}
        current = self._dep(name).counters(now)
        dt = current.time_s - base.time_s
        count = current.num_arrivals - base.num_arrivals
        if dt <= 0:
            return {"arrival_rpm": None}
        return {
            "arrival_rpm": count / dt * S_PER_MIN,
            "avg_in_tokens": ((current.arrival_in_tokens - base.arrival_in_tokens) / count
                              if count > 0 else None),
            "avg_out_tokens": ((current.arrival_out_tokens - base.arrival_out_tokens) / count
                               if count > 0 else None)}

    # ------------------------------------------------------------------ Actuator
    def apply(self, plan: AllocationPlan) -> ActuationReport:
        applied: list[str] = []
        unchanged: list[str] = []
        failed: dict[str, str] = {}
        now = self.now_s()
        for name in sorted(plan.servers):
            target = plan.servers[name]
            if name not in self.servers:
                failed[name] = "no such server in the twin"
                continue
            dep = self._dep(name)
            accelerator = target.accelerator or dep.accelerator
            max_batch = target.max_batch if target.max_batch > 0 else dep.max_batch
            before = (dep.accelerator, dep.desired, dep.max_batch)
            if target.num_replicas < 0:
                failed[name] = f"replicas must be >= 0, got {target.num_replicas}"
                continue
            try:
                if (accelerator, max_batch) != (dep.accelerator, dep.max_batch):
                    dep.set_allocation(accelerator=accelerator, max_batch=max_batch,
                                       num_replicas=target.num_replicas)
                elif target.num_replicas != dep.desired:
                    dep.set_replicas(target.num_replicas)
            except ConfigError as exc:
                failed[name] = str(exc)
                continue
            after = (dep.accelerator, dep.desired, dep.max_batch)
            if after == before:
                unchanged.append(name)
                continue
            applied.append(name)
            self.num_changes[name] += 1
            self._actuations.append((now, name, before[0], after[0], before[1], after[1],
                                     before[2], after[2]))
        return ActuationReport(applied=tuple(applied), unchanged=tuple(unchanged),
                               failed=failed)

    # ------------------------------------------------------------------ results
    def timeseries(self) -> pd.DataFrame:
        """Every scrape, one row per server (cost is the cumulative cost accrued)."""
        rows = [(c.time_s, name, s.accelerator, s.max_batch, c.desired_replicas,
                 c.ready_replicas, c.num_arrivals, c.num_finished, c.running, c.waiting,
                 c.kv_usage, c.cost)
                for name, samples in self._samples.items() for s in samples
                for c in (s.counters,)]
        df = pd.DataFrame.from_records(rows, columns=list(TIMESERIES_COLUMNS))
        return df.sort_values(["time_s", "server"], kind="stable").reset_index(drop=True)

    def actuations(self) -> pd.DataFrame:
        """Every applied change, in order."""
        return pd.DataFrame.from_records(self._actuations, columns=list(ACTUATION_COLUMNS))
