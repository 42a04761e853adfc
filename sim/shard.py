"""One closed-loop run sharded over worker processes or a Dask cluster, in lock-step periods.

The scenario's servers are split over S shards (`split`: balanced by nominal load). Each shard
is a `ShardWorker` in its own process: the cluster of its servers
(`sim.closedloop.run.build_world`, with the seeds those servers have in the whole scenario),
its twin scraping its replicas, its recorder. The coordinator holds the one
`inferno.control.Controller`; its collector and actuator are `ShardedPorts`. Every control
period:

1. each shard simulates up to the cycle instant (all shards at once);
2. each shard observes its servers through its twin (its scrapes, the same PromQL and
   observation code as a single-process run) and returns the `ServerObservation`s;
3. the controller decides on the union; the plan is split by shard and applied there, and
   each shard schedules its next cycle right after, as the single-process driver does.

A shard's events are the single-process run's events of its servers, in the same order: the
servers of different shards share nothing but accelerator pools, arrivals are scheduled at
their trace times, and a cycle sits at the same place in each shard's event order as the
driver's timeout in one process. So the result equals the single-process run exactly, as long
as no accelerator pool is contended across shards; every period checks that the shards' peak
card use adds up within the capacity and stops the run with a ConfigError otherwise.

Workers: local processes (`multiprocessing`, spawn; S = ``shards``) or the actors of a Dask
cluster (``scheduler`` address; S = ``shards``, default its worker count).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import simpy

from inferno.errors import ConfigError
from inferno.model.snapshot import (
    ActuationReport,
    AllocationPlan,
    ClusterSnapshot,
    ServerObservation,
)
from sim.closedloop.run import (
    Progress,
    RequestsTable,
    build_world,
    control_period,
    cycle_times,
    finish_result,
    make_controller,
    prepare,
)
from sim.closedloop.summary import RunResult, ServerOutcome, slo_columns
from sim.scenario import Scenario

DRAIN_STEP_S = 10.0


def split(scenario: Scenario, shards: int) -> list[tuple[str, ...]]:
    """Servers per shard: largest nominal load first onto the least-loaded shard (ties to the
    lower shard), each shard's servers in scenario order; no empty shard."""
    shards = max(1, min(shards, len(scenario.servers)))
    load = [0.0] * shards
    members: list[set[str]] = [set() for _ in range(shards)]
    for spec in sorted(scenario.servers, key=lambda s: (-s.load.rate_rpm, s.name)):
        i = min(range(shards), key=lambda k: (load[k], k))
        load[i] += max(spec.load.rate_rpm, 1e-9)
        members[i].add(spec.name)
    return [tuple(n for n in scenario.server_names if n in m) for m in members]


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardResult:
    outcomes: dict[str, ServerOutcome]
    window_stats: dict[tuple[str, float], tuple[float, float]]
    actuations: pd.DataFrame
    num_changes: dict[str, int]
    timeseries: pd.DataFrame
    requests: pd.DataFrame | None
    end_s: float


class ShardWorker:
    """The simulation of some servers of a scenario, driven one period at a time."""

    def __init__(self, scenario: Scenario, servers: Sequence[str],
                 requests_table: RequestsTable) -> None:
        self.scenario, self.system, work = prepare(scenario, None)
        self.period_s = control_period(self.scenario, self.system)
        self.requests_table = requests_table
        self.world = build_world(self.scenario, self.system, work, servers,
                                 requests_table=requests_table, period_s=self.period_s)
        self.env = self.world.env
        holder: list[simpy.events.Event] = []
        # Where the single-process driver's first timeout is created: in a process started
        # after the twin's and the replay's.
        started = self.env.process(_first_cycle(self.env, self.period_s, holder))
        self.env.run(until=started)  # the processes' starts at t = 0, in creation order
        self._cycle = holder[0]
        self.world.cluster.pools.reset_peaks()

    def advance_to_cycle(self) -> float:
        """Simulate through the next cycle's timeout; the time reached."""
        self.env.run(until=self._cycle)
        return float(self.env.now)

    def advance(self, until_s: float) -> tuple[float, int]:
        """Simulate up to ``until_s``; (time reached, requests still pending)."""
        if until_s > self.env.now:
            self.env.run(until=until_s)
        return float(self.env.now), self.world.num_pending()

    def observe(self) -> tuple[dict[str, ServerObservation], dict[str, int]]:
        """Observations of this shard's servers now, and the pools' peak card use per type
        since the last call."""
        now = float(self.env.now)
        pools = self.world.cluster.pools
        peaks = dict(pools.peak_used)
        pools.reset_peaks()
        return {name: self.world.twin.observe(name, now) for name in self.world.servers}, peaks

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Apply this shard's part of the plan and schedule the next cycle (the driver's next
        timeout comes right after the controller's step)."""
        report = self.world.twin.apply(plan)
        self._cycle = self.env.timeout(self.period_s)
        return report

    def skip_cycle(self) -> None:
        """The cycle decided nothing to apply (a skipped step): schedule the next one."""
        self._cycle = self.env.timeout(self.period_s)

    def peaks(self) -> dict[str, int]:
        pools = self.world.cluster.pools
        peaks = dict(pools.peak_used)
        pools.reset_peaks()
        return peaks

    def finish(self) -> ShardResult:
        world, twin = self.world, self.world.twin
        world.recorder.finish(float(self.env.now))
        requests = (slo_columns(world.cluster.requests(), self.scenario, self.system)
                    if self.requests_table is True else None)
        return ShardResult(outcomes=world.outcomes(self.scenario.duration_s),
                           window_stats=dict(world.recorder.window_stats),
                           actuations=twin.actuations(), num_changes=dict(twin.num_changes),
                           timeseries=twin.timeseries(), requests=requests,
                           end_s=float(self.env.now))


def _first_cycle(env: simpy.Environment, period_s: float, holder: list[simpy.events.Event]
                 ) -> Generator[simpy.events.Event, Any, None]:
    holder.append(env.timeout(period_s))
    yield from ()  # a generator: started like the driver's process


# ---------------------------------------------------------------------------- transports
class _LocalShard:
    """A `ShardWorker` in a spawned process, called over a pipe (one call in flight)."""

    def __init__(self, context: Any, *args: Any) -> None:
        self._conn, child = context.Pipe()
        self._proc = context.Process(target=_serve, args=(child, args), daemon=True)
        self._proc.start()
        child.close()

    def send(self, method: str, *args: Any) -> None:
        self._conn.send((method, args))

    def recv(self) -> Any:
        ok, value = self._conn.recv()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(None)
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()


def _serve(conn: Any, args: tuple) -> None:
    try:
        worker = ShardWorker(*args)
        conn.send((True, None))
    except Exception as exc:  # sent to the coordinator, which raises it
        conn.send((False, exc))
        return
    while True:
        message = conn.recv()
        if message is None:
            return
        method, margs = message
        try:
            conn.send((True, getattr(worker, method)(*margs)))
        except Exception as exc:
            conn.send((False, exc))


class _DaskShard:
    """A `ShardWorker` actor on a Dask worker."""

    def __init__(self, client: Any, worker: str, *args: Any) -> None:
        self._actor = client.submit(ShardWorker, *args, actor=True, workers=[worker],
                                    pure=False).result()
        self._pending: Any = None

    def send(self, method: str, *args: Any) -> None:
        self._pending = getattr(self._actor, method)(*args)

    def recv(self) -> Any:
        return self._pending.result()

    def close(self) -> None:
        self._actor = None


def _call_all(shards: Sequence[Any], method: str, *args: Any) -> list[Any]:
    for shard in shards:
        shard.send(method, *args)
    return [shard.recv() for shard in shards]


# ---------------------------------------------------------------------------- coordinator
class ShardedPorts:
    """Collector, actuator and clock of the controller over the shards."""

    def __init__(self, shards: Sequence[Any], members: Sequence[tuple[str, ...]],
                 capacity: Mapping[str, int], is_limited: bool) -> None:
        self.shards = list(shards)
        self.members = list(members)
        self.now = 0.0
        self.capacity = dict(capacity)
        self.is_limited = is_limited
        self._owner = {name: i for i, names in enumerate(members) for name in names}
        self.applied = False

    def now_s(self) -> float:
        return self.now

    def collect(self) -> ClusterSnapshot:
        parts = _call_all(self.shards, "observe")
        self.check_pools([peaks for _, peaks in parts])
        observations = {name: obs for part, _ in parts for name, obs in part.items()}
        return ClusterSnapshot(time_s=self.now,
                               servers={name: observations[name] for name in sorted(observations)})

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        parts: list[dict[str, Any]] = [{} for _ in self.shards]
        unknown = []
        for name, target in plan.servers.items():
            if name in self._owner:
                parts[self._owner[name]][name] = target
            else:
                unknown.append(name)
        for shard, servers in zip(self.shards, parts, strict=True):
            shard.send("apply", AllocationPlan(servers=servers))
        reports = [shard.recv() for shard in self.shards]
        self.applied = True
        applied = sorted(n for r in reports for n in r.applied)
        unchanged = sorted(n for r in reports for n in r.unchanged)
        failed = {n: "no such server in the twin" for n in unknown}
        for r in reports:
            failed.update(r.failed)
        return ActuationReport(applied=tuple(applied), unchanged=tuple(unchanged),
                               failed={n: failed[n] for n in sorted(failed)})

    def check_pools(self, peaks: Sequence[Mapping[str, int]]) -> None:
        """ConfigError when the shards' peak card use of a type adds up beyond its capacity
        (the single-process run would have queued a replica there)."""
        if not self.is_limited:
            return
        for acc_type in sorted({t for p in peaks for t in p}):
            total = sum(p.get(acc_type, 0) for p in peaks)
            if total > self.capacity.get(acc_type, 0):
                raise ConfigError(
                    f"sharded run: accelerator type {acc_type} may be contended across shards "
                    f"(peak {total} of {self.capacity.get(acc_type, 0)} cards by t = "
                    f"{self.now:g} s); run this scenario in one process")


def run_sharded(scenario: Scenario, *, policy: str | None = None, shards: int = 2,
                scheduler: str | None = None, requests_table: RequestsTable = True,
                progress: Progress | None = None) -> RunResult:
    """`sim.closedloop.run.run_scenario` over shards (see the module docstring)."""
    wall0 = time.perf_counter()
    scenario, system, work = prepare(scenario, policy)
    client = None
    if scheduler is not None:
        from distributed import Client

        client = Client(scheduler, set_as_default=False)
        workers = sorted(client.scheduler_info()["workers"])
        if shards <= 1:
            shards = len(workers)
    members = split(scenario, shards)
    tables = [_shard_table(requests_table, i, len(members)) for i in range(len(members))]
    if client is not None:
        with client.as_current():
            handles: list[Any] = [
                _DaskShard(client, workers[i % len(workers)], scenario, m, t)
                for i, (m, t) in enumerate(zip(members, tables, strict=True))]
    else:
        context = multiprocessing.get_context("spawn")
        handles = [_LocalShard(context, scenario, m, t)
                   for m, t in zip(members, tables, strict=True)]
    try:
        if client is None:
            for h in handles:
                h.recv()  # construction done (or its error)
            return _coordinate(scenario, system, work, handles, members, tables,
                               requests_table, progress, wall0)
        with client.as_current():  # actor proxies call through the current client
            return _coordinate(scenario, system, work, handles, members, tables,
                               requests_table, progress, wall0)
    finally:
        for h in handles:
            h.close()
        if client is not None:
            client.close()


def _shard_table(requests_table: RequestsTable, index: int, count: int) -> RequestsTable:
    """Each shard streams its rows to its own part file; the coordinator joins them."""
    if isinstance(requests_table, Path) and count > 1:
        return requests_table.with_name(f"{requests_table.stem}.part{index}"
                                        f"{requests_table.suffix}")
    return requests_table


def _coordinate(scenario: Scenario, system: Any, work: Any, handles: Sequence[Any],
                members: Sequence[tuple[str, ...]], tables: Sequence[RequestsTable],
                requests_table: RequestsTable, progress: Progress | None,
                wall0: float) -> RunResult:
    ports = ShardedPorts(handles, members, system.capacity, is_limited=True)
    controller, period, controller_system, tuner = make_controller(scenario, system, work, ports)
    end = scenario.duration_s
    records = []
    for _ in cycle_times(period, end):
        ports.now = _same(_call_all(handles, "advance_to_cycle"))
        ports.applied = False
        records.append(controller.step())
        if not ports.applied:
            _call_all(handles, "skip_cycle")
        if progress is not None:
            progress(ports.now, end)
    now, pending = _advance(handles, end)
    ports.now = now
    ports.check_pools(_call_all(handles, "peaks"))
    until = end + scenario.drain_s
    while pending and now < until:
        now, pending = _advance(handles, min(until, now + DRAIN_STEP_S))
    ports.check_pools(_call_all(handles, "peaks"))
    parts: list[ShardResult] = _call_all(handles, "finish")
    return _merge(scenario, system, work, records, parts, tables, requests_table,
                  controller_system, tuner is not None, wall0)


def _advance(handles: Sequence[Any], until_s: float) -> tuple[float, int]:
    reached = _call_all(handles, "advance", until_s)
    return _same([t for t, _ in reached]), sum(n for _, n in reached)


def _same(times: Sequence[float]) -> float:
    assert all(t == times[0] for t in times), f"shards out of step: {times}"
    return times[0]


def _merge(scenario: Scenario, system: Any, work: Any, records: list, parts: list[ShardResult],
           tables: Sequence[RequestsTable], requests_table: RequestsTable,
           controller_system: Any, tuned: bool, wall0: float) -> RunResult:
    order = {name: i for i, name in enumerate(scenario.server_names)}
    outcomes = {name: o for p in parts for name, o in p.outcomes.items()}
    outcomes = {name: outcomes[name] for name in scenario.server_names}
    num_changes = {name: c for p in parts for name, c in p.num_changes.items()}
    num_changes = {name: num_changes[name] for name in scenario.server_names}
    window_stats = {k: v for p in parts for k, v in p.window_stats.items()}
    actuations = _concat([p.actuations for p in parts], ["time_s", "server"], order)
    timeseries = _concat([p.timeseries for p in parts], ["time_s", "server"], None)
    requests = None
    if requests_table is True:
        requests = pd.concat([p.requests for p in parts if p.requests is not None])
        rank = requests["server"].map(order)
        requests = requests.iloc[rank.argsort(kind="stable")].reset_index(drop=True)
    elif isinstance(requests_table, Path) and len(parts) > 1:
        _join_tables([Path(t) for t in tables if isinstance(t, Path)], requests_table)
    return finish_result(
        scenario, system, work, records, outcomes, window_stats, actuations=actuations,
        num_changes=num_changes, timeseries=timeseries, requests=requests,
        controller_system=controller_system, tuned=tuned,
        end_s=max(p.end_s for p in parts), wall0=wall0,
        requests_path=requests_table if isinstance(requests_table, Path) else None)


def _concat(frames: list[pd.DataFrame], keys: list[str], order: Mapping[str, int] | None
            ) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        return df.reset_index(drop=True)
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _join_tables(parts: list[Path], out: Path) -> None:
    """Concatenate the shards' part files into ``out`` and remove them."""
    if out.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        writer = None
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    else:
        with out.open("w", encoding="utf-8") as f:
            for i, part in enumerate(parts):
                with part.open(encoding="utf-8") as src:
                    header = src.readline()
                    if i == 0:
                        f.write(header)
                    for line in src:
                        f.write(line)
    for part in parts:
        part.unlink()


