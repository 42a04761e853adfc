"""Closed-loop twin runs: a Scenario in, a `RunResult` out.

`run_scenario` builds a SimPy environment from a `sim.scenario.Scenario`: the cluster and
its deployments (`sim.cluster`), the `ClusterTwin` adapter, the workload, and the unchanged
`inferno.control.Controller` driven by a SimPy process every control period (the first cycle
one period after the start, as upstream). The model writes nothing to disk; the CLI stores a
result with `record.write_run`; `workload` makes the requests, `summary` the report.

Workload. The requests of a run are materialised before it starts, as a trace (arrival time,
tokens, server), and replayed by `sim.trace.replay`; a recorded run therefore replays exactly
(`inferno sim replay`), and the oracle policy reads the true load of the next period from the
same trace. Synthetic requests come from each server's nominal load moved by the profile and,
optionally, by the load emulator (`inferno.control.load_noise`, stepped every `interval_s` from
t = 0 as upstream's emulator loop does; its steps depend only on its seed, never on the twin,
so stepping it ahead of the run is the same as stepping it in a process). Arrival times are
exact (thinning of the piecewise-linear rate, `sim.workload`); token lengths are the step's
mean times a unit-mean draw of the configured shape, rounded, at least 1.

Random streams: ``SeedSequence(seed).spawn(4)`` → cluster (startup delays, routers), emulator,
workload (two streams per server: arrivals, lengths), random routers (one per server). The
workload streams do not depend on the policy, so every policy of a scenario sees the same
requests.

End of a run: arrivals stop at ``duration_s``, so does the controller; requests in flight get
``drain_s`` more seconds with the allocation frozen. Summary cost and GPU-hours are accrued over
[0, duration_s]; requests rejected, aborted or unfinished after the drain are `dropped` and
count as SLO misses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from inferno.control import (
    Controller,
    ControllerSettings,
    CycleRecord,
    PolicyDeps,
    make_policy,
)
from inferno.control.decision import cards
from inferno.control.settings import HpaMetric, HpaSettings
from inferno.control.tuning import TunerHook, make_tuner
from inferno.errors import ConfigError
from inferno.model import System, effective_max_batch
from sim.closedloop.summary import (
    RunResult,
    ServerOutcome,
    slo_columns,
    slo_targets,
    summarise,
    tuner_summary,
    with_window_statistics,
)
from sim.closedloop.workload import Workload, synthesize, trace_workload
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.loadtest import LoadTest, hpa_target
from sim.recorder import RequestTable, RunRecorder
from sim.request import RequestStatus
from sim.router import UniformRandom
from sim.scenario import Scenario, ServerSpec, scaled_perf, scaled_targets, scenario_system
from sim.trace import replay_columns
from sim.twin import ClusterTwin, RouterKind, ServerInfo

Progress = Callable[[float, float], None]
"""progress(simulated_s, end_s), called between chunks of simulation."""

TERMINAL = (RequestStatus.DONE, RequestStatus.REJECTED, RequestStatus.ABORTED)


# ------------------------------------------------------------------------------ running
def _deployment_spec(spec: ServerSpec, scenario: Scenario, system: System) -> DeploymentSpec:
    twin = scenario.twin
    perf = system.perf[(spec.model, spec.accelerator)]
    return DeploymentSpec(
        name=spec.name, model=spec.model, accelerator=spec.accelerator,
        max_batch=effective_max_batch(spec.max_batch, perf.max_batch_size),
        num_replicas=spec.replicas,
        router=(RouterKind.ROUND_ROBIN if twin.router is RouterKind.RANDOM
                else twin.router).value,  # the random router is seeded by run_scenario
        engine=twin.engine.for_server(perf.max_num_tokens, spec.kv_capacity_tokens),
        startup=twin.startup, rollout=twin.rollout,
        drain_grace_s=twin.drain_grace_s, start_ready=True)


RequestsTable = bool | Path
"""A run's request table: True keeps it in memory (`RunResult.requests`), False keeps no
request once it is terminal (summary percentiles from sketches), a path streams it to that
file (``.csv`` or ``.parquet``) as the run goes."""


def cycle_times(period_s: float, end_s: float) -> list[float]:
    """The control cycles' times, accumulated as the driver's timeouts accumulate them."""
    out: list[float] = []
    t = 0.0
    while True:
        t = t + period_s
        if t >= end_s:
            return out
        out.append(t)


@dataclass(eq=False)
class World:
    """One simulated cluster of (some of) a scenario's servers, its twin and its recorder."""

    env: simpy.Environment
    cluster: Cluster
    twin: ClusterTwin
    recorder: RunRecorder
    servers: tuple[str, ...]

    def outcomes(self, horizon_s: float) -> dict[str, ServerOutcome]:
        deps = self.cluster.deployments
        return {name: ServerOutcome(requests=deps[name].num_arrivals,
                                    tally=self.recorder.tallies[name],
                                    cost=deps[name].cost(horizon_s),
                                    gpu_hours=deps[name].gpu_hours(horizon_s))
                for name in self.servers}

    def num_pending(self) -> int:
        return sum(d.num_pending() for d in self.cluster.deployments.values())


def build_world(scenario: Scenario, system: System, work: Workload, servers: Sequence[str],
                *, requests_table: RequestsTable, period_s: float) -> World:
    """The cluster of ``servers`` with the scenario's seeds (each server's streams are the ones
    it has in the whole scenario, whichever servers are built with it), its twin scraping from
    t = 0, the workload rows of those servers replayed, and the recorder."""
    ss_cluster, _, _, ss_router = np.random.SeedSequence(scenario.seed).spawn(4)
    position = {spec.name: i for i, spec in enumerate(scenario.servers)}
    cluster_seeds = ss_cluster.spawn(len(scenario.servers))
    router_seeds = ss_router.spawn(len(scenario.servers))
    env = simpy.Environment()
    cluster = Cluster(env, system, capacity=dict(system.capacity), seed=ss_cluster,
                      sample_period_s=None, retain_requests=requests_table is True)
    specs = [spec for spec in scenario.servers if spec.name in set(servers)]
    infos = {}
    for spec in specs:
        i = position[spec.name]
        try:
            dep = cluster.add_deployment(_deployment_spec(spec, scenario, system),
                                         seed=cluster_seeds[i])
        except ConfigError as exc:
            raise ConfigError(f"{scenario.source}: servers.{spec.name}: {exc}") from None
        if scenario.twin.router is RouterKind.RANDOM:
            # one stream per server from the scenario seed, independent of the cluster's
            dep.router = UniformRandom(np.random.default_rng(router_seeds[i]))
        infos[spec.name] = ServerInfo(name=spec.name, model=spec.model,
                                      class_name=spec.class_name,
                                      min_num_replicas=spec.min_replicas,
                                      max_queue_size=scenario.twin.engine.max_waiting)
    table = (RequestTable(requests_table, lambda df: slo_columns(df, scenario, system))
             if isinstance(requests_table, Path) else None)
    names = tuple(spec.name for spec in specs)
    recorder = RunRecorder({n: cluster.deployments[n] for n in names},
                           {n: t for n, t in slo_targets(scenario, system).items() if n in names},
                           exact=requests_table is True, window_s=scenario.twin.window_s,
                           table=table)
    for name in names:
        for t in cycle_times(period_s, scenario.duration_s):
            recorder.request_window(name, t)
    twin = ClusterTwin(env, cluster, infos, scenario.twin, on_scrape=recorder.flush)
    twin.start()
    mine = np.isin(work.server_index, [position[n] for n in names])
    replay_columns(env, work.arrival_s[mine], work.in_tokens[mine], work.out_tokens[mine],
                   work.server_index[mine], work.servers, cluster.submit,
                   ids=np.flatnonzero(mine))
    return World(env=env, cluster=cluster, twin=twin, recorder=recorder, servers=names)


def prepare(scenario: Scenario, policy: str | None) -> tuple[Scenario, System, Workload]:
    """The scenario under ``policy``, its system and its workload."""
    if policy is not None:
        scenario = scenario.with_policy(policy)
    system = scenario_system(scenario)
    _, ss_emulator, ss_workload, _ = np.random.SeedSequence(scenario.seed).spawn(4)
    work = (trace_workload(scenario, scenario.trace) if scenario.trace is not None
            else synthesize(scenario, ss_emulator, ss_workload))
    return scenario, system, work


def make_controller(scenario: Scenario, system: System, work: Workload, ports: Any
                    ) -> tuple[Controller, float, System, TunerHook | None]:
    """The controller over ``ports`` (collector, actuator and clock), its period, the system
    it plans with and its tuner."""
    policy_name = scenario.policy.name
    settings = _policy_settings(scenario, policy_name, system)
    period = scenario.controller.period_s
    if isinstance(settings, HpaSettings) and settings.sync_period_s is not None:
        period = settings.sync_period_s  # the HPA controller's own sync period
    controller_system = scaled_perf(scaled_targets(system, scenario.controller.slo_scale),
                                    scenario.controller.perf_scale)
    tuner = _tuner_hook(scenario)
    controller = Controller(
        collector=ports, actuator=ports, clock=ports,
        policy=make_policy(policy_name, settings,
                           PolicyDeps(future_load=work.future_load(),
                                      horizon_s=scenario.controller.period_s,
                                      lead_s=scenario.twin.startup.mean_s)),
        settings=ControllerSettings(period_s=period,
                                    min_replicas=scenario.controller.min_replicas,
                                    metrics_window_s=scenario.twin.window_s),
        static_data=lambda: controller_system, tune=tuner)
    return controller, period, controller_system, tuner


def control_period(scenario: Scenario, system: System) -> float:
    settings = _policy_settings(scenario, scenario.policy.name, system)
    if isinstance(settings, HpaSettings) and settings.sync_period_s is not None:
        return settings.sync_period_s
    return scenario.controller.period_s


def finish_result(scenario: Scenario, system: System, work: Workload,
                  records: Sequence[CycleRecord], outcomes: Mapping[str, ServerOutcome],
                  window_stats: Mapping[tuple[str, float], tuple[float, float]], *,
                  actuations: pd.DataFrame, num_changes: Mapping[str, int],
                  timeseries: pd.DataFrame, requests: pd.DataFrame | None,
                  controller_system: System, tuned: bool, end_s: float, wall0: float,
                  requests_path: Path | None = None) -> RunResult:
    """The run's result from what its world (or its shards) reported."""
    cycles = list(with_window_statistics(records, window_stats))
    summary = summarise(outcomes, actuations, num_changes, scenario.policy.name, system=system,
                        classes={s.name: (s.class_name, s.model) for s in scenario.servers},
                        cycles=cycles)
    if tuned:
        summary = replace(summary, tuner=tuner_summary(cycles, system, controller_system))
    return RunResult(scenario=scenario, policy=scenario.policy.name, summary=summary,
                     requests=requests, workload=work, cycles=tuple(cycles),
                     timeseries=timeseries, actuations=actuations, end_s=end_s,
                     wall_s=time.perf_counter() - wall0, requests_path=requests_path)


def run_scenario(scenario: Scenario, *, policy: str | None = None,
                 progress: Progress | None = None, requests_table: RequestsTable = True,
                 shards: int = 1, scheduler: str | None = None) -> RunResult:
    """Run the closed loop of `scenario` (under `policy`, default the scenario's).

    ``requests_table``: see `RequestsTable`. ``shards`` > 1 (or a Dask ``scheduler``
    address) splits the servers over worker processes that advance in lock-step control
    periods (`sim.shard`); the result is the single-process one.
    """
    if shards > 1 or scheduler is not None:
        from sim.shard import run_sharded

        return run_sharded(scenario, policy=policy, shards=shards, scheduler=scheduler,
                           requests_table=requests_table, progress=progress)
    wall0 = time.perf_counter()
    scenario, system, work = prepare(scenario, policy)
    period = control_period(scenario, system)
    world = build_world(scenario, system, work, scenario.server_names,
                        requests_table=requests_table, period_s=period)
    env, twin = world.env, world.twin
    controller, period, controller_system, tuner = make_controller(scenario, system, work, twin)
    records: list[CycleRecord] = []
    env.process(_control(env, controller, period, scenario.duration_s, records))

    end = scenario.duration_s
    chunk = max(period, end / 100.0)
    while env.now < end:
        env.run(until=min(end, env.now + chunk))
        if progress is not None:
            progress(float(env.now), end)
    _drain(env, world, end + scenario.drain_s)
    world.recorder.finish(float(env.now))
    requests = (slo_columns(world.cluster.requests(), scenario, system)
                if requests_table is True else None)
    return finish_result(
        scenario, system, work, records, world.outcomes(end), world.recorder.window_stats,
        actuations=twin.actuations(), num_changes=twin.num_changes,
        timeseries=twin.timeseries(), requests=requests, controller_system=controller_system,
        tuned=tuner is not None, end_s=float(env.now), wall0=wall0,
        requests_path=requests_table if isinstance(requests_table, Path) else None)


def _policy_settings(scenario: Scenario, name: str, system: System) -> object:
    """The policy's settings; an HPA on requests per pod without a shared target gets, per
    server, what a load test of one replica gives (`sim.loadtest`), and a maxReplicas of
    what the cluster's cards of its accelerator type allow."""
    settings = scenario.policy.settings_for(name)
    if not isinstance(settings, HpaSettings):
        return settings
    targets = dict(settings.targets)
    maxima = dict(settings.max_replicas_for)
    for spec in scenario.servers:
        if (settings.metric is HpaMetric.REQUESTS and settings.target is None
                and spec.name not in targets):
            cls = system.classes[spec.class_name]
            target = cls.targets[spec.model]
            perf = system.perf[(spec.model, spec.accelerator)]
            test = LoadTest(model=spec.model, accelerator=spec.accelerator,
                            max_batch=effective_max_batch(spec.max_batch, perf.max_batch_size),
                            in_tokens=round(spec.load.in_tokens),
                            out_tokens=round(spec.load.out_tokens),
                            slo_itl_ms=target.slo_itl_ms, slo_ttft_ms=target.slo_ttft_ms,
                            kv_tokens=scenario.twin.engine.for_server(
                                perf.max_num_tokens, spec.kv_capacity_tokens
                            ).kv_capacity_tokens)
            targets[spec.name] = hpa_target(system, test, settings.target_utilisation)
        acc = system.accelerators[spec.accelerator]
        if spec.name not in maxima and acc.type in system.capacity:
            _, per_replica = cards(system, spec.model, spec.accelerator, 1)
            allowed = system.capacity[acc.type] // max(per_replica, 1)
            maxima[spec.name] = max(min(allowed, settings.max_replicas),
                                    settings.min_replicas, 1)
    return replace(settings, targets=targets, max_replicas_for=maxima)


def _tuner_hook(scenario: Scenario) -> TunerHook | None:
    """The controller's tune stage (`controller.tuner`), None when off."""
    return make_tuner(scenario.controller.tuner.value, scenario.controller.tuner_config)


def _control(env: simpy.Environment, controller: Controller, period_s: float, end_s: float,
             records: list[CycleRecord]) -> Generator[simpy.events.Event, object, None]:
    """The driver: one cycle every period (the first one period in) until end_s."""
    while True:
        yield env.timeout(period_s)
        if env.now >= end_s:
            return
        records.append(controller.step())


def _drain(env: simpy.Environment, world: World, until_s: float, step_s: float = 10.0
           ) -> None:
    while world.num_pending() and env.now < until_s:
        env.run(until=min(until_s, env.now + step_s))
