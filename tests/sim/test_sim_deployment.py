"""Deployments and cluster: lifecycle, capacity pools, rolling replacement, routing, cost."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from inferno.errors import ConfigError
from inferno.model import Accelerator, ModelPerf, PerfParms, System
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, RolloutSettings, StartupDelay
from sim.replica import EngineSettings, ReplicaState
from sim.request import Request, RequestStatus
from sim.router import LeastOutstanding, PowerOfTwo, RoundRobin

PERF = PerfParms(alpha_ms=10.0, beta_ms=0.1, gamma_ms=0.01)


def tiny_system() -> System:
    """Model m on accelerator A (1 card of type T, 60/h) and 2xA (2 cards of T, 100/h)."""
    accs = {"A": Accelerator(name="A", type="T", multiplicity=1, cost_per_hr=60.0),
            "2xA": Accelerator(name="2xA", type="T", multiplicity=2, cost_per_hr=100.0)}
    perf = {("m", a): ModelPerf(model="m", accelerator=a, max_batch_size=8, perf=PERF)
            for a in accs}
    return System(accelerators=accs, perf=perf)


def spec(**kw: object) -> DeploymentSpec:
    base = {"name": "d", "model": "m", "accelerator": "A", "max_batch": 8}
    base.update(kw)
    return DeploymentSpec(**base)  # type: ignore[arg-type]


def at(env: simpy.Environment, t: float, fn) -> None:
    """Call fn() at simulation time t."""
    env.timeout(t - env.now).callbacks.append(lambda _ev: fn())


def test_startup_delay_then_ready_and_cost_accrues_while_held():
    """Two replicas start at 0, ready at 30 s; cost 2 × 60/h × 90 s = 3.0, 0.05 card-hours."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=2, start_ready=False,
                                      startup=StartupDelay(mean_s=30.0)))
    assert [r.state for r in dep.replicas] == [ReplicaState.STARTING] * 2
    env.run(until=90.0)
    assert [r.ready_s for r in dep.replicas] == [30.0, 30.0]
    assert dep.cost(90.0) == pytest.approx(3.0)
    assert cluster.gpu_hours(90.0) == pytest.approx(0.05)


def test_requests_are_held_until_a_replica_is_ready():
    """A request arriving before any replica is ready is routed when the first becomes ready."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1, start_ready=False,
                                      startup=StartupDelay(mean_s=10.0)))
    req = Request(0, 10, 3)
    dep.submit(req)
    assert req.status is RequestStatus.HELD
    env.run()
    assert req.first_scheduled_s == 10.0
    assert req.status is RequestStatus.DONE


def test_replica_stays_pending_without_capacity_and_starts_when_freed():
    """One card of T: b's replica is pending (unbilled) until a's scale-down frees the card."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), capacity={"T": 1}, sample_period_s=None)
    a = cluster.add_deployment(spec(name="a", num_replicas=1))
    b = cluster.add_deployment(spec(name="b", num_replicas=1))
    assert b.replicas[0].state is ReplicaState.PENDING
    at(env, 50.0, lambda: a.set_replicas(0))
    env.run(until=100.0)
    assert a.replicas[0].released_s == 50.0
    assert b.replicas[0].state is ReplicaState.READY
    assert b.replicas[0].held_from_s == 50.0
    assert cluster.cost(100.0) == pytest.approx(60.0 * 100.0 / 3600.0)


def test_absent_accelerator_type_has_no_capacity():
    """With a capacity map, a type it does not list has 0 cards (upstream semantics)."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), capacity={"OTHER": 8}, sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1))
    assert dep.replicas[0].state is ReplicaState.PENDING
    assert cluster.pools.num_pending == 1


def test_draining_finishes_in_flight_then_goes():
    """Scale to 0 with a request in flight: it completes; the replica goes at its finish."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1))
    req = Request(0, 100, 500)
    dep.submit(req)
    at(env, 1.0, lambda: dep.set_replicas(0))
    env.run()
    rep = dep.replicas[0]
    assert req.status is RequestStatus.DONE
    assert rep.state is ReplicaState.GONE
    assert rep.released_s == req.finish_s > 1.0
    assert dep.cost(100.0) == pytest.approx(60.0 * req.finish_s / 3600.0)


def test_drain_grace_period_aborts_what_is_left():
    """drain_grace_s = 2: a long request is ABORTED 2 s after the scale-down."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1, drain_grace_s=2.0))
    req = Request(0, 100, 5000)
    dep.submit(req)
    at(env, 1.0, lambda: dep.set_replicas(0))
    env.run()
    assert req.status is RequestStatus.ABORTED
    assert req.finish_s == 3.0
    assert dep.replicas[0].released_s == 3.0


def test_accelerator_change_is_a_rolling_replacement():
    """maxSurge 1, maxUnavailable 0, startup 10 s: one new replica at a time, never < 3 ready."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=3, startup=StartupDelay(mean_s=10.0)))
    ready_log: list[tuple[float, int, int]] = []

    def watch():
        while env.now < 200:
            live = [r for r in dep.replicas if r.state is not ReplicaState.GONE]
            ready_log.append((env.now, len(dep.ready), len(live)))
            yield env.timeout(1.0)

    env.process(watch())
    at(env, 100.0, lambda: dep.set_allocation(accelerator="2xA"))
    env.run(until=200.0)
    old, new = dep.replicas[:3], dep.replicas[3:]
    assert [r.ready_s for r in new] == [110.0, 120.0, 130.0]
    assert sorted(r.released_s for r in old) == [110.0, 120.0, 130.0]
    assert {(r.accelerator, r.revision) for r in new} == {("2xA", 1)}
    assert min(n for _, n, _ in ready_log) == 3
    assert max(n for _, _, n in ready_log) == 4
    assert dep.counters(200.0).ready_replicas == 3


def test_max_batch_change_is_a_new_revision_and_count_change_is_not():
    """set_allocation(max_batch=...) starts a revision; set_replicas alone scales in place."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1))
    assert dep.set_allocation(num_replicas=2) is False
    assert dep.revision == 0
    assert dep.set_allocation(max_batch=4) is True
    env.run(until=10.0)
    assert {(r.revision, r.max_batch) for r in dep.ready} == {(1, 4)}
    assert len(dep.ready) == 2


def test_scale_down_drains_newest_pending_first():
    """Scaling 3 → 1 while two are still starting cancels those two, keeps the ready one."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=1, startup=StartupDelay(mean_s=60.0)))
    dep.set_replicas(3)
    at(env, 5.0, lambda: dep.set_replicas(1))
    env.run(until=100.0)
    assert [r.state for r in dep.replicas] == [ReplicaState.READY, ReplicaState.GONE,
                                               ReplicaState.GONE]
    assert dep.cost(100.0) == pytest.approx(60.0 * (100.0 + 5.0 + 5.0) / 3600.0)


def test_round_robin_spreads_evenly():
    """Round robin over 3 replicas: 6 requests at once → 2 each."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    dep = cluster.add_deployment(spec(num_replicas=3, router="round_robin"))
    for i in range(6):
        dep.submit(Request(i, 10, 5))
    assert [r.num_outstanding for r in dep.ready] == [2, 2, 2]


class _Stub:
    def __init__(self, n: int) -> None:
        self.num_outstanding = n


def test_least_outstanding_and_power_of_two_prefer_the_emptier_replica():
    """LOR picks the minimum (first on ties); P2C with two replicas always picks the emptier."""
    reps = [_Stub(3), _Stub(1), _Stub(1), _Stub(5)]
    assert LeastOutstanding().pick(reps) is reps[1]  # type: ignore[arg-type]
    pair = [_Stub(4), _Stub(2)]
    p2c = PowerOfTwo(np.random.default_rng(0))
    assert all(p2c.pick(pair) is pair[1] for _ in range(50))  # type: ignore[arg-type]
    rr = RoundRobin()
    assert [rr.pick(reps) for _ in range(5)] == [*reps, reps[0]]  # type: ignore[arg-type]


@pytest.mark.parametrize(("kw", "match"), [
    ({"accelerator": "Z"}, "unknown accelerator 'Z'"),
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"router": "random"}, "unknown router 'random'"),
    ({"num_replicas": -1}, "num_replicas"),
    ({"max_batch": 0}, "max_batch"),
], ids=["accelerator", "model", "router", "replicas", "batch"])
def test_bad_deployment_specs_are_config_errors(kw, match):
    """Unknown names and out-of-range values raise ConfigError naming them."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    with pytest.raises(ConfigError, match=match):
        cluster.add_deployment(spec(**kw))


def test_bad_settings_objects_are_config_errors():
    """Rollout with no surge and no unavailability, bad startup delays, negative capacity."""
    with pytest.raises(ConfigError, match="max_surge"):
        RolloutSettings(max_surge=0, max_unavailable=0)
    with pytest.raises(ConfigError, match="startup.kind"):
        StartupDelay(kind="gauss")
    with pytest.raises(ConfigError, match="capacity"):
        Cluster(simpy.Environment(), tiny_system(), capacity={"T": -1})


def test_cluster_submit_routes_by_server_name():
    """Cluster.submit sends a request to the deployment named by req.server."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=None)
    a = cluster.add_deployment(spec(name="a"))
    cluster.add_deployment(spec(name="b"))
    cluster.submit(Request(0, 10, 5, server="a"))
    assert len(a.requests) == 1
    with pytest.raises(ConfigError, match="unknown server 'c'"):
        cluster.submit(Request(1, 10, 5, server="c"))


def test_counters_difference_gives_window_sums():
    """Counters: arrivals, completions and latency sums match the per-request records."""
    env = simpy.Environment()
    cluster = Cluster(env, tiny_system(), sample_period_s=1.0)
    dep = cluster.add_deployment(spec(num_replicas=2, engine=EngineSettings()))
    reqs = [Request(i, 50, 20) for i in range(8)]
    for i, r in enumerate(reqs):
        at(env, 0.1 * i, lambda r=r: dep.submit(r))
    env.run()
    c = dep.counters()
    assert (c.num_arrivals, c.num_finished, c.generation_tokens, c.prompt_tokens) == (
        8, 8, 160, 400)
    assert c.ttft_sum_s == pytest.approx(sum(r.ttft_s for r in reqs))
    assert c.e2e_sum_s == pytest.approx(sum(r.e2e_s for r in reqs))
    assert c.running_area + c.waiting_area == pytest.approx(c.e2e_sum_s)
    done = dep.completed_between(0.0, math.inf)
    assert sorted(r.id for r in done) == list(range(8))
    assert len(dep.arrivals_between(0.15, 0.55)) == 4
    ts = cluster.timeseries()
    assert set(ts.columns) >= {"time_s", "replica", "running", "waiting", "kv_usage",
                               "throughput_rps"}
    assert ts["finished_total"].max() <= 8
