"""ClusterTwin: windowed observations like PromQL rate(); actuation with startup and capacity."""

from __future__ import annotations

import pytest
from closedloop_helpers import A_MS, B_MS, G_MS, tiny_twin

from inferno.errors import ConfigError
from inferno.model.snapshot import AllocationPlan, ServerPlan
from sim.request import Request
from sim.twin import ClusterTwin, ServerInfo, TwinSettings


def it_ms(tokens: float, kv: float) -> float:
    """Iteration time written out from the α/β/γ definition."""
    return A_MS + B_MS * tokens + G_MS * kv


def feed(env, cluster, times_tokens) -> None:
    """Submit (t, in_tokens, out_tokens) requests to deployment d at their times."""

    def source():
        for i, (t, n_in, n_out) in enumerate(times_tokens):
            yield env.timeout(t - env.now)
            cluster.submit(Request(i, n_in, n_out, server="d"))

    env.process(source())


def plan(replicas: int, accelerator: str = "A", max_batch: int = 8,
         name: str = "d") -> AllocationPlan:
    return AllocationPlan(servers={name: ServerPlan(name=name, accelerator=accelerator,
                                                    num_replicas=replicas,
                                                    max_batch=max_batch)})


def test_window_rates_and_latencies_of_isolated_requests():
    """One request per second, alternating 100/300 input tokens: 60 rpm, 200 tokens, exact
    TTFT = one prefill iteration and ITL = mean of three decode iterations."""
    env, cluster, twin = tiny_twin()
    feed(env, cluster, [(k + 0.5, 100 if k % 2 == 0 else 300, 4) for k in range(130)])
    env.run(until=120.0)
    obs = twin.collect().servers["d"]
    assert obs.arrival_rpm == pytest.approx(60.0, rel=1e-12)
    assert obs.avg_in_tokens == pytest.approx(200.0, rel=1e-12)
    assert obs.avg_out_tokens == pytest.approx(4.0, rel=1e-12)
    ttft = (it_ms(100, 100) + it_ms(300, 300)) / 2
    itl = (sum(it_ms(1, 100 + j) for j in (1, 2, 3)) + sum(it_ms(1, 300 + j) for j in (1, 2, 3))
           ) / 6
    assert obs.ttft_ms == pytest.approx(ttft, rel=1e-9)
    assert obs.itl_ms == pytest.approx(itl, rel=1e-9)
    assert (obs.running_requests, obs.waiting_requests) == (0.0, 0.0)
    assert (obs.desired_replicas, obs.ready_replicas, obs.accelerator, obs.max_batch) == (
        1, 1, "A", 8)


def test_rates_use_only_the_window():
    """A burst before the window does not count: 30 arrivals in (60, 120] → 30 rpm."""
    env, cluster, twin = tiny_twin()
    burst = [(1.0 + 0.1 * k, 50, 2) for k in range(100)]
    later = [(60.5 + 2 * k, 50, 2) for k in range(30)]
    feed(env, cluster, burst + later)
    env.run(until=120.0)
    assert twin.collect().servers["d"].arrival_rpm == pytest.approx(30.0, rel=1e-12)


def test_short_history_uses_what_there_is_and_nothing_at_t0():
    """At t = 0 there is no rate; at t = 30 s the rate is over the 30 s seen so far."""
    env, cluster, twin = tiny_twin()
    env.step()  # the first scrape, at t = 0
    first = twin.collect().servers["d"]
    assert (first.arrival_rpm, first.ttft_ms, first.avg_in_tokens) == (None, None, None)
    feed(env, cluster, [(k + 0.5, 10, 2) for k in range(30)])
    env.run(until=30.0)
    assert twin.collect().servers["d"].arrival_rpm == pytest.approx(60.0, rel=1e-12)


def test_no_completions_means_no_latency_but_a_zero_rate():
    """An idle window reads 0 rpm and no TTFT/ITL/tokens (no data is None, not zero)."""
    env, _, twin = tiny_twin()
    env.run(until=120.0)
    obs = twin.collect().servers["d"]
    assert obs.arrival_rpm == 0.0
    assert (obs.ttft_ms, obs.itl_ms, obs.avg_in_tokens) == (None, None, None)


def test_running_gauge_is_per_ready_replica_over_the_window():
    """Two long requests on two replicas (round robin): one running per replica."""
    env, cluster, twin = tiny_twin(replicas=2)
    feed(env, cluster, [(0.5, 10, 100_000), (0.6, 10, 100_000)])
    env.run(until=120.0)
    obs = twin.collect().servers["d"]
    assert obs.running_requests == pytest.approx(1.0)
    assert obs.waiting_requests == pytest.approx(0.0)


def test_completion_signal_under_reads_a_saturated_server():
    """max batch 1 and 2 req/s of ~1 s requests: arrivals read 120 rpm, completions far less."""
    rates = {}
    for signal in ("arrivals", "completions"):
        env, cluster, twin = tiny_twin(max_batch=1, signal=signal)
        feed(env, cluster, [(0.25 + 0.5 * k, 10, 100) for k in range(400)])
        env.run(until=120.0)
        rates[signal] = twin.collect().servers["d"].arrival_rpm
    assert rates["arrivals"] == pytest.approx(120.0, rel=1e-12)
    assert rates["completions"] < 0.6 * rates["arrivals"]


def test_scale_up_waits_for_the_startup_delay():
    """Two more replicas are desired at once, ready 30 s later; the report lists the server."""
    env, cluster, twin = tiny_twin(startup_s=30.0)
    env.run(until=10.0)
    report = twin.apply(plan(3))
    assert report.applied == ("d",)
    env.run(until=39.0)
    obs = twin.collect().servers["d"]
    assert (obs.desired_replicas, obs.ready_replicas) == (3, 1)
    env.run(until=41.0)
    assert twin.collect().servers["d"].ready_replicas == 3
    assert twin.apply(plan(3)).unchanged == ("d",)
    assert twin.num_changes == {"d": 1}


def test_capacity_keeps_extra_replicas_pending_and_unbilled():
    """Two cards of type T: four desired replicas, two ready, cost of two cards only."""
    env, cluster, twin = tiny_twin(capacity={"T": 2})
    twin.apply(plan(4))
    env.run(until=3600.0)
    obs = twin.collect().servers["d"]
    assert (obs.desired_replicas, obs.ready_replicas) == (4, 2)
    assert cluster.deployments["d"].cost(3600.0) == pytest.approx(2 * 60.0)


def test_accelerator_change_rolls_to_a_new_revision():
    """A plan on accelerator B replaces the replica (surge 1) and is logged as one change."""
    env, cluster, twin = tiny_twin(startup_s=20.0)
    env.run(until=5.0)
    assert twin.apply(plan(1, accelerator="B", max_batch=4)).applied == ("d",)
    env.run(until=60.0)
    dep = cluster.deployments["d"]
    assert [(r.accelerator, r.max_batch, r.state.value) for r in dep.replicas] == [
        ("A", 8, "gone"), ("B", 4, "ready")]
    obs = twin.collect().servers["d"]
    assert (obs.accelerator, obs.max_batch, obs.ready_replicas) == ("B", 4, 1)
    acts = twin.actuations()
    assert acts[["from_accelerator", "to_accelerator", "from_max_batch", "to_max_batch"]
                ].values.tolist() == [["A", "B", 8, 4]]


def test_bad_plans_fail_per_server_and_leave_the_rest():
    """Unknown server or accelerator fails that entry only; absent servers are untouched."""
    env, cluster, twin = tiny_twin()
    bad = AllocationPlan(servers={
        "d": ServerPlan(name="d", accelerator="Z", num_replicas=2, max_batch=8),
        "ghost": ServerPlan(name="ghost", accelerator="A", num_replicas=1, max_batch=8)})
    report = twin.apply(bad)
    assert set(report.failed) == {"d", "ghost"}
    assert "unknown accelerator 'Z'" in report.failed["d"]
    assert cluster.deployments["d"].desired == 1
    assert twin.apply(AllocationPlan()).applied == ()


def test_twin_requires_a_deployment_per_server():
    """A server without a deployment is a ConfigError at construction."""
    env, cluster, _ = tiny_twin()
    with pytest.raises(ConfigError, match="no deployment for server"):
        ClusterTwin(env, cluster, {"x": ServerInfo(name="x", model="m", class_name="c")})


@pytest.mark.parametrize(("field", "value"), [("window_s", 0.0), ("scrape_interval_s", -1.0),
                                              ("arrival_signal", "throughput")])
def test_twin_settings_are_checked(field, value):
    """Non-positive windows and unknown signals are rejected with the field name."""
    with pytest.raises(ConfigError, match=field):
        TwinSettings(**{field: value})


def test_clock_is_simulation_time():
    """now_s() reads env.now (the controller's only clock in the twin)."""
    env, _, twin = tiny_twin()
    env.run(until=12.5)
    assert twin.now_s() == 12.5
