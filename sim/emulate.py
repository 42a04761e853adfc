"""GPU-free cluster emulation: the twin in real time, behind vLLM ``/metrics`` endpoints.

`ClusterEmulation` runs a `sim.cluster.Cluster` in a `simpy.rt.RealtimeEnvironment` (factor
1/speedup, not strict) and follows a desired state read from outside every `poll_s`: in
``inferno emulate`` the managed Deployments of a Kubernetes API (the command supplies the
reader; this module never imports Kubernetes). A new replica count scales the twin's
Deployment; a new accelerator or max batch rolls it over to a new revision; both with the
startup delay. Each Deployment offers Poisson arrivals at its ``load_rpm`` (a change restarts
the exponential clock, exact by memorylessness) with token lengths around its means.

Every replica that is ready or draining is a pod: its vLLM metrics (`sim.promview`) are served
at ``/metrics/<namespace>/<pod>`` by one HTTP server on 127.0.0.1, and `targets_file` (a
Prometheus file_sd JSON) lists one target group per pod with the labels ``namespace``,
``deployment`` and ``pod`` that `live.prom` aggregates on, and ``__metrics_path__``.

Requests from outside (`submit`, used by `sim.openai_server` for OpenAI clients) enter a
Deployment at the simulated time of their wall-clock arrival, next to its synthetic load.

Threads: one lock guards the SimPy environment. A clock thread advances the twin to the wall
clock every `tick_s` (``env.run(until=now)``: every due event is already in the past, so the
realtime step never sleeps while the lock is held); a scrape advances to "now" before it
renders; the poll thread reads the source outside the lock and applies it inside.

Time compression. At speedup s, simulated time runs s times faster than wall time. Counters
and histogram counts and sums are exported divided by s, so ``rate()`` over a wall-clock window
is a per-simulated-second rate and a ratio of rates a mean in simulated seconds: the controller
sees the load and latencies of the s = 1 cluster, s times sooner (scale its period, the
Prometheus window and the startup delay's wall time by 1/s). Gauges are exported as they are.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import simpy.rt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from inferno.errors import ConfigError, InfernoError
from inferno.model import System, effective_max_batch
from inferno.model.units import rpm_to_rps
from sim.cluster import Cluster
from sim.deployment import Deployment, DeploymentSpec, RolloutSettings, StartupDelay
from sim.promview import ReplicaCollector
from sim.replica import EngineSettings, Replica, ReplicaState
from sim.request import Request
from sim.workload import Lengths, RequestFactory, TokenDist

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, Deployment name)."""



TOKEN_KINDS = ("fixed", "exponential")
_SERVED = (ReplicaState.READY, ReplicaState.DRAINING)
_COUNTED = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.READY)


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredDeployment:
    """What the cluster asks of one Deployment (read from its spec and labels)."""

    namespace: str
    deployment: str
    model: str
    accelerator: str
    replicas: int
    max_batch: int = 0
    """0: the model's maxBatchSize on the accelerator (model-data.json), else 256."""
    load_rpm: float = 0.0
    """Offered load in requests/min (the ``.load.rpm`` label); 0 offers nothing."""
    in_tokens: float | None = None
    """Mean prompt tokens per request; None: `EmulationSettings.default_in_tokens`."""
    out_tokens: float | None = None
    """Mean generated tokens per request; None: `EmulationSettings.default_out_tokens`."""

    @property
    def key(self) -> Key:
        return self.namespace, self.deployment


Source = Callable[[], Mapping[Key, DesiredDeployment]]
"""Reads the desired state of every followed Deployment; raises InfernoError on failure (the
emulation keeps its state and retries at the next poll)."""

Report = Callable[[str, str, int, int], None]
"""(namespace, Deployment, replicas, ready replicas), called when the counts change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmulationSettings:
    speedup: float = 1.0
    """Simulated seconds per wall-clock second (see the module notes on time compression)."""
    poll_s: float = 2.0
    """Wall s between reads of the desired state (a Deployment watch would be sooner; polling
    is enough at control periods of tens of seconds)."""
    tick_s: float = 0.05
    """Wall s between advances of the twin when nothing scrapes; bounds how late a new pod
    appears in the targets file."""
    startup: StartupDelay = StartupDelay(mean_s=10.0)
    """Simulated time from scheduling to ready of a new replica (model load)."""
    engine: EngineSettings = EngineSettings()
    rollout: RolloutSettings = RolloutSettings()
    token_kind: str = "fixed"
    """fixed: every request has the mean token counts (rounded); exponential: geometric
    lengths with those means."""
    default_in_tokens: int = 128
    default_out_tokens: int = 128
    capacity: Mapping[str, int] | None = None
    """Physical cards per accelerator type; None: unlimited (the API decides what runs)."""
    host: str = "127.0.0.1"
    port: int = 0
    """Port of the metrics server; 0 picks a free one."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("speedup", "poll_s", "tick_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"emulate: {name} must be > 0, got {value!r}")
        if self.token_kind not in TOKEN_KINDS:
            raise ConfigError(f"emulate: token_kind must be one of {', '.join(TOKEN_KINDS)}, "
                              f"got {self.token_kind!r}")
        if self.default_in_tokens < 1 or self.default_out_tokens < 1:
            raise ConfigError(f"emulate: default token counts must be >= 1, got "
                              f"{self.default_in_tokens}, {self.default_out_tokens}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"emulate: port must be in [0, 65535], got {self.port}")


class CompressedTime(Collector):
    """Divides counter and histogram samples of `inner` by `speedup` (module notes)."""

    def __init__(self, inner: Collector, speedup: float) -> None:
        self.inner = inner
        self.speedup = speedup

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            if family.type not in ("counter", "histogram"):
                yield family
                continue
            scaled = Metric(family.name, family.documentation, family.type, family.unit)
            scaled.samples = [s if s.name.endswith("_created")
                              else s._replace(value=s.value / self.speedup)
                              for s in family.samples]
            yield scaled


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedDeployment:
    """A followed Deployment as its clients see it (`sim.openai_server`'s view)."""

    namespace: str
    deployment: str
    model: str
    out_tokens: int
    """Mean generated tokens of its workload (where an external request's output ends)."""
    twin: Deployment

    @property
    def key(self) -> Key:
        return self.namespace, self.deployment


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """A served replica."""

    namespace: str
    deployment: str
    name: str
    registry: CollectorRegistry


class _Followed:
    """One followed Deployment: its twin, load and arrival streams (mutated under the lock)."""

    def __init__(self, want: DesiredDeployment, twin: Deployment, rng: np.random.Generator,
                 env: simpy.Environment) -> None:
        self.want = want
        self.twin = twin
        self.rng_arrivals, self.rng_lengths = rng.spawn(2)
        self.rate_rps = 0.0
        self.load: tuple[float, float, float] | None = None
        self.lengths: Iterator[tuple[int, int]] = iter(())
        self.changed = env.event()
        self.is_present = True
        self.reported: tuple[int, int] | None = None


def scrape_config(targets_file: Path, *, scrape_interval_s: float = 1.0,
                  job: str = "inferno-emulate") -> dict[str, Any]:
    """A prometheus.yml that scrapes the pods listed in `targets_file`."""
    interval = f"{scrape_interval_s:g}s"
    return {"global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "scrape_configs": [{"job_name": job, "file_sd_configs": [
                {"files": [str(targets_file)], "refresh_interval": "1s"}]}]}


class ClusterEmulation:
    """The twin following a desired state in real time and serving its pods' metrics.

    `start` reads the desired state once (those replicas are ready at once: a running
    cluster), serves, and starts the clock and poll threads; `stop` ends them and empties the
    targets file. Also a context manager.
    """

    def __init__(self, system: System, source: Source,
                 settings: EmulationSettings | None = None, *,
                 targets_file: Path | None = None, report: Report | None = None) -> None:
        self.settings = s = settings or EmulationSettings()
        self.source = source
        self.targets_file = targets_file
        self.report = report
        self.env = simpy.rt.RealtimeEnvironment(factor=1.0 / s.speedup, strict=False)
        seed_cluster, self._seed_work = np.random.SeedSequence(s.seed).spawn(2)
        self.cluster = Cluster(self.env, system, capacity=s.capacity, seed=seed_cluster,
                               sample_period_s=None)
        self._perf = system.perf
        self._lock = threading.RLock()
        self._followed: dict[Key, _Followed] = {}
        self.skipped: dict[Key, str] = {}
        """Deployments that cannot be emulated, with the reason."""
        self._pods: dict[Key, Pod] = {}
        self._factory = RequestFactory()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: ThreadingHTTPServer | None = None
        self.error: BaseException | None = None
        """The exception that ended a background thread, if any."""
        self.num_polls = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> tuple[str, int]:
        """Serve, follow the current desired state, start the threads; returns the address.

        Raises ConfigError when the address cannot be bound.
        """
        try:
            http = ThreadingHTTPServer((self.settings.host, self.settings.port),
                                       _handler(self))
        except OSError as exc:
            raise ConfigError(f"emulate: cannot listen on {self.settings.host}:"
                              f"{self.settings.port}: {exc}") from exc
        http.daemon_threads = True
        self._http = http
        self.env.sync()
        self.poll(initial=True)
        loops: tuple[tuple[str, Callable[[], object]], ...] = (
            ("emulate-http", lambda: http.serve_forever(0.1)),
            ("emulate-clock", lambda: self._every(self.settings.tick_s, self.advance)),
            ("emulate-poll", lambda: self._every(self.settings.poll_s, self.poll)))
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.address

    def stop(self) -> None:
        """End the threads and the server; the targets file lists no pod afterwards."""
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self._http = None
        with self._lock:
            self._pods.clear()
        if self.targets_file is not None:
            self._write_targets([])

    def request_stop(self) -> None:
        """Ask the threads to end (signal safe); `stop` then cleans up."""
        self._stop.set()

    def __enter__(self) -> ClusterEmulation:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until stopped (or a thread failed); True if so within `timeout_s`."""
        return self._stop.wait(timeout_s)

    @property
    def address(self) -> tuple[str, int]:
        if self._http is None:
            raise RuntimeError("emulation not started")
        host, port = self._http.server_address[:2]
        return str(host), int(port)

    def _every(self, period_s: float, action: Callable[[], object]) -> None:
        while not self._stop.wait(period_s):
            try:
                action()
            except Exception as exc:  # a bug: stop the emulation, the command exits 1
                log.exception("emulation stopped by an error")
                self.error = exc
                self._stop.set()

    # ------------------------------------------------------------------ time
    def sim_now_s(self) -> float:
        """Simulated time of the current wall-clock instant."""
        env = self.env
        return float(env.env_start + (time.monotonic() - env.real_start) / env.factor)

    def advance(self) -> float:
        """Run the twin up to the wall clock and update the served pods; returns its time."""
        with self._lock:
            target = self.sim_now_s()
            if target > self.env.now:
                self.env.run(until=target)
            self._sync_pods()
            return float(self.env.now)

    def wall_s(self, sim_s: float) -> float:
        """Monotonic wall-clock time of the simulated instant `sim_s` (inverse of sim_now_s)."""
        env = self.env
        return float(env.real_start + (sim_s - env.env_start) * env.factor)

    @property
    def lock(self) -> threading.RLock:
        """Guards the SimPy environment; hold it to read replicas consistently."""
        return self._lock

    # ------------------------------------------------------------------ external requests
    def served(self) -> dict[Key, ServedDeployment]:
        """The Deployments present in the desired state, as clients see them."""
        with self._lock:
            return {key: ServedDeployment(namespace=key[0], deployment=key[1],
                                          model=f.want.model, out_tokens=int(f.load[2]),
                                          twin=f.twin)
                    for key, f in sorted(self._followed.items())
                    if f.is_present and f.load is not None}

    def submit(self, key: Key, in_tokens: int, out_tokens: int) -> Request | None:
        """A request from outside enters Deployment `key` at the simulated time of this wall
        instant, next to the synthetic load (mixed mode); None when `key` is not followed."""
        with self._lock:
            followed = self._followed.get(key)
            if followed is None or not followed.is_present:
                return None
            self.advance()
            req = self._factory.make(in_tokens, out_tokens, server=followed.twin.name)
            followed.twin.submit(req)
            return req

    # ------------------------------------------------------------------ following
    def poll(self, *, initial: bool = False) -> bool:
        """Read the desired state and follow it; False when the source failed."""
        try:
            desired = self.source()
        except InfernoError as exc:
            log.warning("emulate: cannot read the desired state: %s; retrying", exc)
            return False
        with self._lock:
            self.advance()
            self._follow(desired, initial=initial)
            self._sync_pods()
            reports = self._status_changes()
            self.num_polls += 1
        if self.report is not None:
            for key, (replicas, ready) in reports.items():
                self.report(key[0], key[1], replicas, ready)
        return True

    def _follow(self, desired: Mapping[Key, DesiredDeployment], *, initial: bool) -> None:
        for key in sorted(desired):
            want = desired[key]
            try:
                if key in self._followed:
                    self._update(self._followed[key], want)
                else:
                    self._followed[key] = self._add(want, start_ready=initial)
            except ConfigError as exc:
                if self.skipped.get(key) != str(exc):
                    log.warning("emulate: Deployment %s/%s: %s", key[0], key[1], exc)
                self.skipped[key] = str(exc)
                continue
            self.skipped.pop(key, None)
        for key, followed in self._followed.items():
            if key not in desired and followed.is_present:
                log.info("emulate: Deployment %s/%s is gone: draining its replicas", *key)
                followed.is_present = False
                followed.twin.set_replicas(0)
                self._set_load(followed, 0.0, 1, 1)

    def _max_batch(self, want: DesiredDeployment) -> int:
        perf = self._perf.get((want.model, want.accelerator))
        return effective_max_batch(want.max_batch, perf.max_batch_size if perf else 0)

    def _add(self, want: DesiredDeployment, *, start_ready: bool) -> _Followed:
        s = self.settings
        spec = DeploymentSpec(
            name=f"{want.namespace}/{want.deployment}", model=want.model,
            accelerator=want.accelerator, max_batch=self._max_batch(want),
            num_replicas=want.replicas, engine=s.engine, startup=s.startup,
            rollout=s.rollout, start_ready=start_ready)
        twin = self.cluster.add_deployment(spec)
        rng = np.random.default_rng(self._seed_work.spawn(1)[0])
        followed = _Followed(want, twin, rng, self.env)
        self._apply_load(followed, want)
        self.env.process(self._arrivals(followed))
        log.info("emulate: following Deployment %s/%s (%s on %s, %d replicas)",
                 want.namespace, want.deployment, want.model, want.accelerator, want.replicas)
        return followed

    def _update(self, followed: _Followed, want: DesiredDeployment) -> None:
        twin = followed.twin
        followed.want = want
        followed.is_present = True
        target = (want.accelerator, self._max_batch(want))
        self._apply_load(followed, want)
        if target != (twin.accelerator, twin.max_batch):
            try:
                twin.set_allocation(accelerator=target[0], max_batch=target[1],
                                    num_replicas=want.replicas)
            except ConfigError:
                twin.set_replicas(want.replicas)  # keep the old revision, follow the count
                raise
            log.info("emulate: %s rolls over to %s, max batch %d", twin.name, *target)
        elif want.replicas != twin.desired:
            twin.set_replicas(want.replicas)

    def _apply_load(self, followed: _Followed, want: DesiredDeployment) -> None:
        s = self.settings
        rpm = want.load_rpm if math.isfinite(want.load_rpm) else 0.0
        self._set_load(followed, max(rpm, 0.0),
                       max(1, round(want.in_tokens or s.default_in_tokens)),
                       max(1, round(want.out_tokens or s.default_out_tokens)))

    def _set_load(self, followed: _Followed, rpm: float, in_tokens: int, out_tokens: int
                  ) -> None:
        load = (rpm, float(in_tokens), float(out_tokens))
        if load == followed.load:
            return
        followed.load = load
        followed.rate_rps = rpm_to_rps(rpm)
        if self.settings.token_kind == "fixed":
            dists = TokenDist(kind="fixed", mean=in_tokens), TokenDist(kind="fixed",
                                                                       mean=out_tokens)
        else:
            dists = (TokenDist(kind="exponential", mean=in_tokens),
                     TokenDist(kind="exponential", mean=out_tokens))
        followed.lengths = Lengths(input=dists[0], output=dists[1]).pairs(followed.rng_lengths)
        changed, followed.changed = followed.changed, self.env.event()
        changed.succeed()

    def _arrivals(self, followed: _Followed) -> Generator[simpy.events.Event, object, None]:
        """Poisson arrivals at the current rate; a load change restarts the draw."""
        env = self.env
        while True:
            changed = followed.changed
            if followed.rate_rps <= 0.0:
                yield changed
                continue
            wake = env.timeout(followed.rng_arrivals.exponential(1.0 / followed.rate_rps))
            yield wake | changed
            if wake.processed:
                in_tokens, out_tokens = next(followed.lengths)
                followed.twin.submit(self._factory.make(in_tokens, out_tokens,
                                                        server=followed.twin.name))

    def _status_changes(self) -> dict[Key, tuple[int, int]]:
        changes: dict[Key, tuple[int, int]] = {}
        for key, followed in self._followed.items():
            reps = followed.twin.replicas
            status = (sum(r.state in _COUNTED for r in reps), len(followed.twin.ready))
            if status != followed.reported:
                followed.reported = status
                changes[key] = status
        return changes

    # ------------------------------------------------------------------ pods
    def _sync_pods(self) -> None:
        served: dict[Key, tuple[Replica, _Followed]] = {}
        for (namespace, deployment), followed in self._followed.items():
            prefix = len(followed.twin.name)
            for rep in followed.twin.replicas:
                if rep.state in _SERVED:
                    served[namespace, deployment + rep.name[prefix:]] = (rep, followed)
        if served.keys() == self._pods.keys():
            return
        for key in self._pods.keys() - served.keys():
            del self._pods[key]
        for key in served.keys() - self._pods.keys():
            rep, followed = served[key]
            self._pods[key] = Pod(namespace=key[0], deployment=followed.want.deployment,
                                  name=key[1], registry=self._registry(rep, followed.want.model))
        if self.targets_file is not None:
            self._write_targets(self.targets())

    def _registry(self, rep: Replica, model: str) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        collector: Collector = ReplicaCollector(rep, model_name=model)
        if self.settings.speedup != 1.0:
            collector = CompressedTime(collector, self.settings.speedup)
        registry.register(collector)
        return registry

    def pods(self) -> list[Pod]:
        """The served pods, by namespace and name."""
        with self._lock:
            return [self._pods[key] for key in sorted(self._pods)]

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus file_sd target groups, one per pod."""
        host, port = self.address
        return [{"targets": [f"{host}:{port}"],
                 "labels": {"__metrics_path__": f"/metrics/{pod.namespace}/{pod.name}",
                            "namespace": pod.namespace, "deployment": pod.deployment,
                            "pod": pod.name}}
                for pod in self.pods()]

    def _write_targets(self, groups: list[dict[str, Any]]) -> None:
        assert self.targets_file is not None
        tmp = self.targets_file.with_name(self.targets_file.name + ".tmp")
        tmp.write_text(json.dumps(groups, indent=1), encoding="utf-8")
        os.replace(tmp, self.targets_file)  # atomic, as file_sd readers require

    def scrape(self, namespace: str, pod: str) -> bytes | None:
        """The pod's metrics now, in the text format; None for an unknown pod."""
        with self._lock:
            self.advance()
            served = self._pods.get((namespace, pod))
            return None if served is None else generate_latest(served.registry)


def _handler(emulation: ClusterEmulation) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            body: bytes | None = None
            ctype = "text/plain; charset=utf-8"
            if len(parts) == 3 and parts[0] == "metrics":
                body, ctype = emulation.scrape(parts[1], parts[2]), CONTENT_TYPE_LATEST
            elif parts == ["targets"]:
                body, ctype = json.dumps(emulation.targets()).encode(), "application/json"
            elif parts == ["health"]:
                body = b"OK"
            status = HTTPStatus.OK if body is not None else HTTPStatus.NOT_FOUND
            body = body if body is not None else f"no pod or route {self.path}\n".encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("scraper went away before %s was answered", self.path)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler
