"""ClusterTwin: windowed observations like PromQL rate(); actuation with startup and capacity."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from closedloop_helpers import A_MS, B_MS, G_MS, tiny_system, tiny_twin

from inferno.errors import ConfigError
from inferno.model import PerfParms
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
    """One request per second, alternating 100/300 input tokens, scraped every 5 s: at t=120
    the window's samples are 60..115 s; Prometheus extrapolates the 55 completions between
    them to the 60 s window (60 rpm), and the per-request means are over those 55 requests:
    TTFT = one prefill iteration, ITL = the mean of three decode iterations."""
    env, cluster, twin = tiny_twin()
    reqs = [(k + 0.5, 100 if k % 2 == 0 else 300, 4) for k in range(130)]
    feed(env, cluster, reqs)
    env.run(until=120.0)
    obs = twin.collect().servers["d"]
    counted = [n_in for t, n_in, _ in reqs if 60 < t < 115]  # finished between the samples
    assert len(counted) == 55
    assert obs.arrival_rpm == pytest.approx(55 * 60 / 55, rel=1e-9)
    assert obs.throughput_rpm == pytest.approx(60.0, rel=1e-9)
    assert obs.avg_in_tokens == pytest.approx(sum(counted) / 55, rel=1e-12)
    assert obs.avg_out_tokens == pytest.approx(4.0, rel=1e-12)
    ttft = sum(it_ms(n, n) for n in counted) / 55
    itl = sum(sum(it_ms(1, n + j) for j in (1, 2, 3)) / 3 for n in counted) / 55
    assert obs.ttft_ms == pytest.approx(ttft, rel=1e-9)
    assert obs.itl_ms == pytest.approx(itl, rel=1e-9)
    assert (obs.running_requests, obs.waiting_requests, obs.waiting_now) == (0.0, 0.0, 0.0)
    assert (obs.desired_replicas, obs.ready_replicas, obs.held_replicas, obs.accelerator,
            obs.max_batch) == (1, 1, 1, "A", 8)


def test_rates_use_only_the_window():
    """A burst before the window does not count: 28 completions between the samples at 60 s
    and 115 s, extrapolated to the window (Prometheus rate): 28 · 60/55 rpm."""
    env, cluster, twin = tiny_twin()
    burst = [(1.0 + 0.1 * k, 50, 2) for k in range(100)]
    later = [(60.5 + 2 * k, 50, 2) for k in range(30)]
    feed(env, cluster, burst + later)
    env.run(until=120.0)
    assert twin.collect().servers["d"].arrival_rpm == pytest.approx(28 * 60 / 55, rel=1e-9)


def test_short_history_reads_low_like_prometheus():
    """At t = 0 there is no sample and no rate. At t = 30 s a 60 s window holds 30 s of data:
    rate() divides the 30 extrapolated completions by the whole window, so 60 rpm reads 30
    (the controller waits for a full window before scaling down on it)."""
    env, cluster, twin = tiny_twin()
    env.step()  # the first scrape, at t = 0
    first = twin.collect().servers["d"]
    assert (first.arrival_rpm, first.ttft_ms, first.avg_in_tokens) == (None, None, None)
    feed(env, cluster, [(k + 0.5, 10, 2) for k in range(30)])
    env.run(until=30.0)
    assert twin.collect().servers["d"].arrival_rpm == pytest.approx(30.0, rel=1e-9)


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
    assert obs.running_now == 2.0


def test_offered_load_counts_the_growing_queue_of_a_saturated_server():
    """max batch 1 and 2 req/s of ~1 s requests: completions read about half the load, the
    offered estimate (completions + queue growth) reads the 120 rpm offered, within the
    extrapolation error; a gateway counter (deprecated signal) reads it exactly."""
    rates = {}
    for signal in ("offered", "completions", "arrivals"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            env, cluster, twin = tiny_twin(max_batch=1, signal=signal)
        feed(env, cluster, [(0.25 + 0.5 * k, 10, 100) for k in range(400)])
        env.run(until=120.0)
        rates[signal] = twin.collect().servers["d"].arrival_rpm
    assert rates["arrivals"] == pytest.approx(120.0, rel=1e-12)
    assert rates["offered"] == pytest.approx(120.0, rel=0.05)
    assert rates["completions"] < 0.6 * rates["offered"]


def test_gateway_signal_is_deprecated():
    """arrival_signal 'arrivals' still works but warns: live mode has no such counter."""
    with pytest.warns(FutureWarning, match="gateway counter"):
        tiny_twin(signal="arrivals")


def test_generations_that_outlive_the_window_still_read_the_offered_load():
    """A statically overloaded replica (max batch 8) whose 3,000-token generations take about
    twice the 60 s window: at 8 rpm nothing is queued; after a step to 32 rpm completions
    stay near 8·60/90 rpm while the queue grows. Completions alone read a fraction of the
    load; completions + growth of running and waiting read the offered 32 rpm (within 20 %)."""
    slow = tiny_system()
    perf = PerfParms(alpha_ms=30.0, beta_ms=0.0, gamma_ms=0.0)
    slow = replace(slow, perf={key: replace(mp, perf=perf) for key, mp in slow.perf.items()})
    step_s, end_s = 600.0, 900.0
    times = [*np.arange(0.0, step_s, 7.5), *np.arange(step_s, end_s, 1.875)]  # 8, 32 rpm
    readings = {}
    for signal in ("offered", "completions"):
        env, cluster, twin = tiny_twin(max_batch=8, signal=signal, system=slow)
        feed(env, cluster, [(float(t), 100, 3000) for t in times])
        env.run(until=end_s)
        readings[signal] = twin.collect().servers["d"].arrival_rpm
    assert readings["offered"] == pytest.approx(32.0, rel=0.20)
    assert readings["completions"] < 0.5 * 32.0


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


def test_twin_settings_read_a_signal_string_as_the_enum_member():
    """Scripts that passed the arrival signal as a string (its type before it was an enum)
    get the member, so comparisons by identity in the twin hold."""
    from sim.twin import ArrivalSignal

    for signal in ArrivalSignal:
        assert TwinSettings(arrival_signal=signal.value).arrival_signal is signal


def test_clock_is_simulation_time():
    """now_s() reads env.now (the controller's only clock in the twin)."""
    env, _, twin = tiny_twin()
    env.run(until=12.5)
    assert twin.now_s() == 12.5
