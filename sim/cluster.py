"""The simulated cluster: accelerator pools, deployments, and a periodic metrics sampler.

`Cluster` is the twin's world below the controller. It owns no global state: the SimPy
environment and the seed are passed in, every random stream is spawned from that seed in
creation order (one child `SeedSequence` per deployment), and two clusters in one process never
share anything.

Capacity. Pools count *physical cards per accelerator type* (upstream capacity-data.json
semantics): a replica of ``accCount`` units of an accelerator with multiplicity m takes
``accCount·m`` cards of its type. A replica that finds no free cards stays pending; freed cards
go to pending replicas in request order (first fit, so a small request is not blocked behind a
large one). ``capacity=None`` means unlimited; a type absent from a given capacity has 0 cards.

API for a controller-facing twin: `Cluster.add_deployment(spec)` → `sim.deployment.Deployment`
(see that module for set_replicas / set_allocation / counters), `Cluster.cost(now)`,
`Cluster.gpu_hours(now)`, `Cluster.submit(req)` (routes by ``req.server``),
`Cluster.timeseries()` and `Cluster.requests()` (pandas, via `sim.metrics`).

The sampler records every ready/draining replica each ``sample_period_s`` and stops by itself
when no other event is scheduled, so ``env.run()`` without ``until`` still ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING

import numpy as np
import simpy

from inferno.errors import ConfigError
from inferno.model import System
from sim.deployment import Deployment, DeploymentSpec
from sim.metrics import requests_frame, timeseries_frame
from sim.replica import Replica, ReplicaState
from sim.request import Request

if TYPE_CHECKING:
    import pandas as pd


class AcceleratorPools:
    """Free physical cards per accelerator type, and the replicas waiting for some."""

    def __init__(self, capacity: Mapping[str, int] | None) -> None:
        if capacity is not None:
            for acc_type, cards in capacity.items():
                if cards < 0:
                    raise ConfigError(f"capacity['{acc_type}'] must be >= 0, got {cards}")
        self.is_limited = capacity is not None
        self.capacity: dict[str, int] = dict(capacity or {})
        self.free: dict[str, int] = dict(capacity or {})
        self.peak_used: dict[str, int] = {}
        """Most cards of each type held at once since the last `reset_peaks` (limited pools)."""
        self._queue: list[tuple[Replica, str, int, Callable[[Replica], None]]] = []

    def reset_peaks(self) -> None:
        self.peak_used = {t: self.capacity.get(t, 0) - free for t, free in self.free.items()}

    def _take(self, acc_type: str, cards: int) -> None:
        free = self.free.get(acc_type, 0) - cards
        self.free[acc_type] = free
        used = self.capacity.get(acc_type, 0) - free
        if used > self.peak_used.get(acc_type, 0):
            self.peak_used[acc_type] = used

    def request(self, rep: Replica, acc_type: str, cards: int,
                grant: Callable[[Replica], None]) -> None:
        """Grant ``cards`` now if free, else queue (first fit, like a scheduler without
        reservations: a small replica is never blocked behind a large pending one)."""
        if not self.is_limited:
            grant(rep)
            return
        if self.free.get(acc_type, 0) >= cards:
            self._take(acc_type, cards)
            grant(rep)
        else:
            self._queue.append((rep, acc_type, cards, grant))

    def cancel(self, rep: Replica) -> None:
        self._queue = [q for q in self._queue if q[0] is not rep]

    def release(self, acc_type: str, cards: int) -> None:
        if not self.is_limited:
            return
        self.free[acc_type] = self.free.get(acc_type, 0) + cards
        granted = []
        for item in self._queue:
            rep, t, c, _ = item
            if t == acc_type and self.free[t] >= c and rep.state is ReplicaState.PENDING:
                self._take(t, c)
                granted.append(item)
        if granted:
            self._queue = [q for q in self._queue if q not in granted]
            for rep, _, _, grant in granted:
                grant(rep)

    @property
    def num_pending(self) -> int:
        return len(self._queue)


class Cluster:
    """Deployments sharing accelerator pools in one SimPy environment."""

    def __init__(self, env: simpy.Environment, system: System, *,
                 capacity: Mapping[str, int] | None = None,
                 seed: int | np.random.SeedSequence = 0,
                 sample_period_s: float | None = 5.0, retain_requests: bool = True) -> None:
        self.env = env
        self.retain_requests = retain_requests
        self.system = system
        self.pools = AcceleratorPools(capacity)
        self._seed = seed if isinstance(seed, np.random.SeedSequence) else (
            np.random.SeedSequence(seed))
        self.deployments: dict[str, Deployment] = {}
        self._samples: list[tuple] = []
        if sample_period_s is not None:
            if not sample_period_s > 0:
                raise ConfigError(f"sample_period_s must be > 0, got {sample_period_s}")
            env.process(self._sample(sample_period_s))

    def add_deployment(self, spec: DeploymentSpec,
                       seed: np.random.SeedSequence | None = None) -> Deployment:
        """Add a deployment; its streams come from ``seed``, by default the cluster seed's next
        child (a sharded run passes each deployment the child it has in the whole cluster)."""
        if spec.name in self.deployments:
            raise ConfigError(f"deployment '{spec.name}' already exists")
        perf = {acc: mp for (model, acc), mp in self.system.perf.items() if model == spec.model}
        if not perf:
            raise ConfigError(f"deployment '{spec.name}': unknown model '{spec.model}' "
                              f"(model-data.json)")
        rng = np.random.default_rng(seed if seed is not None else self._seed.spawn(1)[0])
        dep = Deployment(self.env, spec, perf=perf, accelerators=dict(self.system.accelerators),
                         pools=self.pools, rng=rng, retain_requests=self.retain_requests)
        self.deployments[spec.name] = dep
        return dep

    def submit(self, req: Request) -> None:
        """Route a request to the deployment named by ``req.server``."""
        try:
            dep = self.deployments[req.server]
        except KeyError:
            raise ConfigError(f"request {req.id}: unknown server '{req.server}'; known: "
                              f"{', '.join(self.deployments) or 'none'}") from None
        dep.submit(req)

    def cost(self, now: float | None = None) -> float:
        return sum(d.cost(now) for d in self.deployments.values())

    def gpu_hours(self, now: float | None = None) -> float:
        return sum(d.gpu_hours(now) for d in self.deployments.values())

    @property
    def num_events(self) -> int:
        """Replica wake-ups scheduled so far (arrivals are counted by the workload)."""
        return sum(d.num_events for d in self.deployments.values())

    @property
    def num_iterations(self) -> int:
        return sum(d.num_iterations for d in self.deployments.values())

    def requests(self) -> pd.DataFrame:
        """Every request that arrived, one row each (see `sim.metrics.requests_frame`)."""
        return requests_frame((r for d in self.deployments.values() for r in d.requests),
                              now=float(self.env.now))

    def timeseries(self) -> pd.DataFrame:
        """Per-replica samples (see `sim.metrics.timeseries_frame`)."""
        return timeseries_frame(self._samples)

    def _sample(self, period_s: float) -> Generator[simpy.events.Event, object, None]:
        while True:
            now = self.env.now
            for dep in self.deployments.values():
                for rep in dep.replicas:
                    if rep.state in (ReplicaState.READY, ReplicaState.DRAINING):
                        self._samples.append((
                            now, dep.name, rep.name, rep.state.value, rep.num_running,
                            rep.num_waiting, rep.kv_usage(now), rep.num_finished,
                            rep.generation_tokens_total))
            if self.env.peek() == math.inf:
                return  # nothing else will ever happen: let env.run() end
            yield self.env.timeout(period_s)
