"""A deployment: replicas of one model behind a router, with a Kubernetes-like lifecycle.

Lifecycle of a replica: pending (no accelerator capacity free) → starting (holds capacity and
is billed, startup delay drawn from `StartupDelay`) → ready (routed to) → draining (no new
requests, finishes everything it accepted; killed after ``drain_grace_s`` if set) → gone
(capacity released).

API used by a controller-facing twin (`sim.twin.ClusterTwin`, built on this):

- `Deployment.set_replicas(n)`, `Deployment.set_allocation(accelerator=..., max_batch=...,
  num_replicas=...)`: change the desired state. A new accelerator or max batch is a new
  *revision*, rolled out like a Deployment's RollingUpdate (``max_surge`` new replicas beyond the
  desired count, at most ``max_unavailable`` below it); a count change alone scales in place.
- `Deployment.counters(now)`: cumulative, Prometheus-like counters and integrals
  (`DeploymentCounters`); the difference of two snapshots gives window rates and means
  (arrivals, completions, tokens, TTFT/ITL/E2E sums, ∫running, ∫waiting, cost, GPU-hours).
  Gauges in the snapshot (running and waiting summed over ready replicas, waiting including
  requests held for lack of a ready replica; KV usage averaged over them) are instantaneous,
  like a Prometheus scrape.
- `Deployment.completed_between(t0, t1)`: the requests that finished in a window (for
  percentiles); `Deployment.requests` holds every request that arrived, in arrival order,
  unless the deployment was built with ``retain_requests=False`` (a streaming run: terminal
  requests are handed off, `Replica.hand_off` and ``rejected``, and then forgotten).
- `Deployment.cost(now)`, `Deployment.gpu_hours(now)`: accrued while capacity is held.

Requests that arrive while no replica is ready are held (FIFO) and routed when one becomes
ready, as a gateway queue would; their wait counts in their TTFT.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import simpy

from inferno.errors import ConfigError
from inferno.io.yamlbind import choices
from inferno.model import Accelerator, ModelPerf
from inferno.model.units import S_PER_HR
from sim.replica import EngineSettings, Replica, ReplicaState
from sim.request import Request, RequestStatus
from sim.router import make_router

_LIVE = (ReplicaState.PENDING, ReplicaState.STARTING, ReplicaState.READY)
STARTUP_KINDS = ("fixed", "uniform", "exponential", "lognormal")


@dataclass(frozen=True, slots=True, kw_only=True)
class StartupDelay:
    """Time from capacity grant to ready (model load, warm-up)."""

    kind: str = field(default="fixed", metadata=choices(STARTUP_KINDS))
    """fixed | uniform | exponential | lognormal (YAML: any case)."""
    mean_s: float = 0.0
    spread: float = 0.0
    """uniform: half-width (s) around the mean; lognormal: coefficient of variation."""

    def __post_init__(self) -> None:
        if self.kind not in STARTUP_KINDS:
            raise ConfigError(f"startup.kind must be one of {', '.join(STARTUP_KINDS)}; "
                              f"got '{self.kind}'")
        if not (self.mean_s >= 0 and math.isfinite(self.mean_s)):
            raise ConfigError(f"startup.mean_s must be >= 0, got {self.mean_s}")
        if not self.spread >= 0 or (self.kind == "uniform" and self.spread > self.mean_s):
            raise ConfigError(f"startup.spread must be in [0, mean_s] for uniform and >= 0 "
                              f"otherwise, got {self.spread}")

    def sample(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed" or self.mean_s == 0.0:
            return self.mean_s
        if self.kind == "uniform":
            return float(rng.uniform(self.mean_s - self.spread, self.mean_s + self.spread))
        if self.kind == "exponential":
            return float(rng.exponential(self.mean_s))
        sigma2 = math.log1p(self.spread * self.spread)
        return float(rng.lognormal(math.log(self.mean_s) - sigma2 / 2.0, math.sqrt(sigma2)))


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutSettings:
    """RollingUpdate of a revision change (Kubernetes semantics, absolute counts)."""

    max_surge: int = 1
    max_unavailable: int = 0

    def __post_init__(self) -> None:
        if self.max_surge < 0 or self.max_unavailable < 0 or (
                self.max_surge == 0 and self.max_unavailable == 0):
            raise ConfigError(f"rollout: max_surge and max_unavailable must be >= 0 and not "
                              f"both 0, got {self.max_surge}, {self.max_unavailable}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentSpec:
    """Desired state of one server (service class × model) at creation."""

    name: str
    model: str
    accelerator: str
    max_batch: int
    """vLLM max_num_seqs."""
    num_replicas: int = 1
    router: str = "round_robin"
    engine: EngineSettings = EngineSettings()
    startup: StartupDelay = StartupDelay()
    rollout: RolloutSettings = RolloutSettings()
    drain_grace_s: float | None = None
    """Kill a draining replica after this long (requests ABORTED); None waits for them."""
    start_ready: bool = True
    """The initial replicas are ready at creation (a running cluster), skipping startup."""

    def __post_init__(self) -> None:
        if self.num_replicas < 0:
            raise ConfigError(f"deployment '{self.name}': num_replicas must be >= 0, got "
                              f"{self.num_replicas}")
        if self.drain_grace_s is not None and not self.drain_grace_s >= 0:
            raise ConfigError(f"deployment '{self.name}': drain_grace_s must be >= 0, got "
                              f"{self.drain_grace_s}")
        self.engine.check(self.max_batch, where=f"deployment '{self.name}'")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentCounters:
    """Cumulative state of a deployment at ``time_s`` (counters never decrease)."""

    time_s: float
    num_arrivals: int
    arrival_in_tokens: int
    arrival_out_tokens: int
    num_finished: int
    num_rejected: int
    num_preemptions: int
    prompt_tokens: int
    """Prompt tokens of finished requests (and of aborted ones that had a first token)."""
    generation_tokens: int
    """Output tokens of finished requests plus what aborted ones had produced."""
    ttft_sum_s: float
    itl_sum_s: float
    itl_count: int
    e2e_sum_s: float
    running_area: float
    """∫ running requests dt summed over replicas (request·s)."""
    waiting_area: float
    cost: float
    gpu_hours: float
    desired_replicas: int
    ready_replicas: int
    running: int
    waiting: int
    kv_usage: float | None
    """Mean KV usage over ready replicas now; None without ready replicas."""


class Deployment:
    """Replicas of one (model, accelerator, max batch) revision behind a router."""

    def __init__(self, env: simpy.Environment, spec: DeploymentSpec, *,
                 perf: dict[str, ModelPerf], accelerators: dict[str, Accelerator],
                 pools: AcceleratorPoolsLike, rng: np.random.Generator,
                 retain_requests: bool = True) -> None:
        self.env = env
        self.name = spec.name
        self.model = spec.model
        self.spec = spec
        self._perf = perf
        """This model's performance data per accelerator name."""
        self._accelerators = accelerators
        self._pools = pools
        self._rng_startup, rng_router = rng.spawn(2)
        self.router = make_router(spec.router, rng_router, where=f"deployment '{spec.name}'")
        self.accelerator = ""
        self.max_batch = 0
        self.revision = 0
        self.desired = spec.num_replicas
        self.replicas: list[Replica] = []
        """Every replica ever created, in creation order."""
        self.ready: list[Replica] = []
        """Ready replicas in the order they became ready (the router's view)."""
        self.retain_requests = retain_requests
        """Keep every request in ``requests``; False keeps none once terminal (a streaming run
        hands them off: `Replica.hand_off`, ``rejected``)."""
        self.requests: list[Request] = []
        self.rejected: list[Request] = []
        """Requests turned away since the last hand-off (only when not retaining)."""
        self.num_arrivals = 0
        self.backlog: deque[Request] = deque()
        self.arrival_in_tokens = 0
        self.arrival_out_tokens = 0
        self._num_created = 0
        self._check_target(spec.accelerator, spec.max_batch)
        self.accelerator = spec.accelerator
        self.max_batch = spec.max_batch
        # The initial replicas are created in one go (no reconcile in between); with
        # start_ready, those that get capacity are ready at once.
        self._reconciling = True
        self._dirty = False
        self._instant = spec.start_ready
        for _ in range(spec.num_replicas):
            self._create()
        self._instant = False
        self._reconciling = False
        self._reconcile()

    # ------------------------------------------------------------------ requests
    def submit(self, req: Request) -> None:
        """A request arrives now: route it to a ready replica or hold it."""
        req.server = self.name
        req.arrival_s = self.env.now
        if self.retain_requests:
            self.requests.append(req)
        self.num_arrivals += 1
        self.arrival_in_tokens += req.in_tokens
        self.arrival_out_tokens += req.out_tokens
        if self.ready:
            self._route(req)
        else:
            req.status = RequestStatus.HELD
            self.backlog.append(req)

    def _route(self, req: Request) -> None:
        if not self.router.pick(self.ready).submit(req) and not self.retain_requests:
            self.rejected.append(req)

    def num_pending(self) -> int:
        """Requests that arrived and are not terminal yet (held, waiting or running)."""
        done = sum(r.num_finished + r.num_aborted + r.num_rejected for r in self.replicas)
        return self.num_arrivals - done

    def oldest_pending_arrival_s(self) -> float:
        """Arrival time of the oldest request not terminal yet (inf: none)."""
        oldest = self.backlog[0].arrival_s if self.backlog else math.inf
        for rep in self.replicas:
            if rep.num_outstanding:
                oldest = min(oldest, min(req.arrival_s for req, _ in rep.in_flight(rep.env.now)))
        return oldest

    def completed_between(self, t0: float, t1: float) -> list[Request]:
        """Requests that finished (DONE) in [t0, t1), over all replicas, unordered."""
        out: list[Request] = []
        for rep in self.replicas:
            fin = rep.finished
            if not fin:
                continue
            lo = bisect_left(fin, t0, key=_finish_key)
            hi = bisect_left(fin, t1, key=_finish_key)
            out.extend(r for r in fin[lo:hi] if r.status is RequestStatus.DONE)
        return out

    def arrivals_between(self, t0: float, t1: float) -> list[Request]:
        """Requests that arrived in [t0, t1)."""
        lo = bisect_left(self.requests, t0, key=_arrival_key)
        hi = bisect_left(self.requests, t1, key=_arrival_key)
        return self.requests[lo:hi]

    # ------------------------------------------------------------------ desired state
    def set_replicas(self, num_replicas: int) -> None:
        if num_replicas < 0:
            raise ConfigError(f"deployment '{self.name}': replicas must be >= 0, got "
                              f"{num_replicas}")
        self.desired = num_replicas
        self._reconcile()

    def set_allocation(self, *, accelerator: str | None = None, max_batch: int | None = None,
                       num_replicas: int | None = None) -> bool:
        """Change accelerator / max batch (a rolling replacement) and/or the replica count.

        Returns True when a new revision was started.
        """
        acc = self.accelerator if accelerator is None else accelerator
        batch = self.max_batch if max_batch is None else max_batch
        self._check_target(acc, batch)
        if num_replicas is not None:
            if num_replicas < 0:
                raise ConfigError(f"deployment '{self.name}': replicas must be >= 0, got "
                                  f"{num_replicas}")
            self.desired = num_replicas
        changed = (acc, batch) != (self.accelerator, self.max_batch)
        if changed:
            self.accelerator, self.max_batch = acc, batch
            self.revision += 1
        self._reconcile()
        return changed

    def _check_target(self, accelerator: str, max_batch: int) -> None:
        if accelerator not in self._accelerators:
            raise ConfigError(f"deployment '{self.name}': unknown accelerator '{accelerator}' "
                              f"(accelerator-data.json)")
        if accelerator not in self._perf:
            raise ConfigError(f"deployment '{self.name}': no perfParms for model "
                              f"'{self.model}' on accelerator '{accelerator}' (model-data.json)")
        self.spec.engine.check(max_batch, where=f"deployment '{self.name}'")

    # ------------------------------------------------------------------ observation
    def counters(self, now: float | None = None) -> DeploymentCounters:
        now = self.env.now if now is None else now
        fin = rej = pre = ptok = gtok = itl_n = 0
        ttft = itl = e2e = run_a = wait_a = 0.0
        for rep in self.replicas:
            fin += rep.num_finished
            rej += rep.num_rejected
            pre += rep.num_preemptions
            ptok += rep.prompt_tokens_total
            gtok += rep.generation_tokens_total
            ttft += rep.ttft_sum_s
            itl += rep.itl_sum_s
            itl_n += rep.itl_count
            e2e += rep.e2e_sum_s
            if rep.state is not ReplicaState.PENDING:
                ra, wa, _ = rep.areas(now if rep.state is not ReplicaState.GONE
                                      else rep.released_s)
                run_a += ra
                wait_a += wa
        ready = self.ready
        kv = (sum(r.kv_usage(now) for r in ready) / len(ready)) if ready else None
        return DeploymentCounters(
            time_s=now, num_arrivals=self.num_arrivals,
            arrival_in_tokens=self.arrival_in_tokens,
            arrival_out_tokens=self.arrival_out_tokens, num_finished=fin, num_rejected=rej,
            num_preemptions=pre, prompt_tokens=ptok, generation_tokens=gtok, ttft_sum_s=ttft,
            itl_sum_s=itl, itl_count=itl_n, e2e_sum_s=e2e, running_area=run_a,
            waiting_area=wait_a, cost=self.cost(now), gpu_hours=self.gpu_hours(now),
            desired_replicas=self.desired, ready_replicas=len(ready),
            running=sum(r.num_running for r in ready),
            waiting=sum(r.num_waiting for r in ready) + len(self.backlog), kv_usage=kv)

    def cost(self, now: float | None = None) -> float:
        """Cost accrued so far (accelerator cost per hour × hours held)."""
        now = self.env.now if now is None else now
        return sum(r.cost_per_hr * _held_s(r, now) for r in self.replicas) / S_PER_HR

    def gpu_hours(self, now: float | None = None) -> float:
        """Physical accelerator card-hours held so far."""
        now = self.env.now if now is None else now
        return sum(r.cards * _held_s(r, now) for r in self.replicas) / S_PER_HR

    @property
    def num_events(self) -> int:
        return sum(r.num_events for r in self.replicas)

    @property
    def num_iterations(self) -> int:
        return sum(r.num_iterations for r in self.replicas)

    # ------------------------------------------------------------------ lifecycle
    def _create(self) -> Replica:
        acc = self._accelerators[self.accelerator]
        mp = self._perf[self.accelerator]
        acc_count = max(1, mp.acc_count)
        rep = Replica(
            self.env, name=f"{self.name}-r{self.revision}-{self._num_created}",
            perf=mp.perf, max_batch=self.max_batch, settings=self.spec.engine,
            deployment=self.name, revision=self.revision, accelerator=acc.name,
            cost_per_hr=acc.cost_per_hr * acc_count, cards=acc_count * acc.multiplicity,
            on_gone=self._on_gone)
        self._num_created += 1
        self.replicas.append(rep)
        self._pools.request(rep, acc.type, rep.cards, self._granted)
        return rep

    def _granted(self, rep: Replica) -> None:
        if rep.state is not ReplicaState.PENDING:
            return
        rep.start()
        if self._instant:
            self._ready(rep)
            return
        delay = self.spec.startup.sample(self._rng_startup)
        ev = self.env.timeout(delay)
        ev.callbacks.append(lambda _ev: self._ready(rep))

    def _ready(self, rep: Replica) -> None:
        if rep.state is not ReplicaState.STARTING:
            return  # drained while starting
        rep.mark_ready()
        self.ready.append(rep)
        backlog = self.backlog
        while backlog:
            self._route(backlog.popleft())
        self._reconcile()

    def _drain(self, rep: Replica) -> None:
        if rep in self.ready:
            self.ready.remove(rep)
        if rep.state is ReplicaState.PENDING:
            self._pools.cancel(rep)
        rep.drain()
        grace = self.spec.drain_grace_s
        if grace is not None and rep.state is ReplicaState.DRAINING:
            self.env.timeout(grace).callbacks.append(lambda _ev: rep.abort())

    def _on_gone(self, rep: Replica) -> None:
        if rep in self.ready:
            self.ready.remove(rep)
        if not math.isnan(rep.held_from_s):
            acc = self._accelerators[rep.accelerator]
            self._pools.release(acc.type, rep.cards)
        self._reconcile()

    def _reconcile(self) -> None:
        """Move the replica set one step towards the desired revision and count."""
        if self._reconciling:
            self._dirty = True  # a nested change (e.g. a replica gone at once): run again
            return
        self._reconciling = True
        try:
            self._dirty = True
            while self._dirty:
                self._dirty = False
                self._reconcile_once()
        finally:
            self._reconciling = False

    def _reconcile_once(self) -> None:
        desired = self.desired
        live = [r for r in self.replicas if r.state in _LIVE]
        new = [r for r in live if r.revision == self.revision]
        old = [r for r in live if r.revision != self.revision]
        if old:
            rollout = self.spec.rollout
            for rep in [r for r in old if r.state is not ReplicaState.READY]:
                self._drain(rep)
            old_ready = [r for r in old if r.state is ReplicaState.READY]
            new_unavailable = sum(r.state is not ReplicaState.READY for r in new)
            can_remove = (len(old_ready) + len(new) - (desired - rollout.max_unavailable)
                          - new_unavailable)
            for rep in _newest_first(old_ready)[:max(0, can_remove)]:
                self._drain(rep)
            remaining_old = max(0, len(old_ready) - max(0, can_remove))
            room = desired + rollout.max_surge - remaining_old - len(new)
            new.extend(self._create() for _ in range(max(0, min(desired - len(new), room))))
        elif len(new) < desired:
            new.extend(self._create() for _ in range(desired - len(new)))
        if len(new) > desired:
            order = {ReplicaState.PENDING: 0, ReplicaState.STARTING: 1, ReplicaState.READY: 2}
            victims = sorted(_newest_first(new), key=lambda r: order[r.state])
            for rep in victims[:len(new) - desired]:
                self._drain(rep)


class AcceleratorPoolsLike(Protocol):
    """What a deployment needs from the cluster's accelerator pools (see sim.cluster)."""

    def request(self, rep: Replica, acc_type: str, cards: int,
                grant: Callable[[Replica], None]) -> None: ...

    def cancel(self, rep: Replica) -> None: ...

    def release(self, acc_type: str, cards: int) -> None: ...


def _held_s(rep: Replica, now: float) -> float:
    if math.isnan(rep.held_from_s):
        return 0.0
    end = now if math.isnan(rep.released_s) else min(now, rep.released_s)
    return max(0.0, end - rep.held_from_s)


def _newest_first(reps: list[Replica]) -> list[Replica]:
    return reps[::-1]


def _finish_key(req: Request) -> float:
    return req.finish_s


def _arrival_key(req: Request) -> float:
    return req.arrival_s

