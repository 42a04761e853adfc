"""The per-replica open-loop engine (`sim.openloop`) against one SimPy environment.

References: the SimPy run of the same deployment (per-request stamps must be identical, the
issue's constraint being 1e-9 s), exact rational arithmetic for `ExactSum`, and SimPy's own
clock arithmetic for the arrival times.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import simpy

from inferno.model import PerfParms
from sim import workload
from sim.bench import BenchConfig, run_bench
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.digest import ExactSum
from sim.openloop import OpenLoopReplica, Streams, simpy_arrival_times
from sim.replica import EngineSettings, Replica
from sim.request import Request, RequestStatus

STAMPS = ("id", "replica", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
          "num_preemptions", "status")


def _stamps(reqs: list[Request]) -> list[tuple]:
    return sorted(tuple(getattr(r, k) for k in STAMPS) for r in reqs)


def _deployment(large_system, engine: EngineSettings, replicas: int):
    env = simpy.Environment()
    cluster = Cluster(env, large_system, seed=5, sample_period_s=None, retain_requests=True)
    dep = cluster.add_deployment(DeploymentSpec(
        name="d", model="granite_13b", accelerator="H100", max_batch=16,
        num_replicas=replicas, engine=engine))
    return env, dep


def _streams(seed: int, rate_rps: float, until_s: float, lengths: workload.Lengths) -> Streams:
    ss_t, ss_l = np.random.SeedSequence(seed).spawn(2)
    times = workload.ArrivalProcess(rate=workload.constant(rate_rps)).times(
        np.random.default_rng(ss_t))
    return Streams(times, lengths.pairs(np.random.default_rng(ss_l)), until_s)


LENGTHS = {
    "fixed": workload.Lengths(input=workload.fixed(512), output=workload.fixed(128)),
    "lognormal": workload.Lengths(input=workload.TokenDist(kind="lognormal", mean=700, cv=1.0),
                                  output=workload.TokenDist(kind="lognormal", mean=150, cv=1.5)),
}


@pytest.mark.parametrize(("seed", "engine", "lengths"), [
    (1, EngineSettings(), "fixed"),
    (2, EngineSettings(kv_capacity_tokens=6_000), "lognormal"),  # preempts
    (3, EngineSettings(max_waiting=4, max_num_batched_tokens=1024), "lognormal"),  # rejects
    (4, EngineSettings(prefill_emits_token=False), "fixed"),
])
def test_per_replica_stamps_equal_the_simpy_run(large_system, seed, engine, lengths):
    """Bursty traffic (3 replicas pushed past saturation): every request's stamps and every
    replica's counters (rejections included) are identical in both engines."""
    until_s = 40.0
    env, dep = _deployment(large_system, engine, 3)
    streams = _streams(seed, 45.0, until_s, LENGTHS[lengths])
    workload.arrivals(env, streams.times, streams.lengths, dep.submit,
                      workload.RequestFactory(), until_s=until_s)
    env.run()
    _, dep2 = _deployment(large_system, engine, 3)
    reps = [OpenLoopReplica(r, "d") for r in dep2.ready]
    for first, times, ins, outs in _streams(seed, 45.0, until_s, LENGTHS[lengths]).chunks():
        ids = np.arange(first, first + times.size)
        for j, rep in enumerate(reps):
            s = (j - first) % 3
            rep.feed(times[s::3].tolist(), ids[s::3].tolist(), ins[s::3].tolist(),
                     outs[s::3].tolist())
    for rep in reps:
        rep.drain()
    fast = [req for r in dep2.replicas for req in r.finished]  # rejected ones are counted
    kept = [req for req in dep.requests if req.status is not RequestStatus.REJECTED]
    assert len(fast) == len(kept) > 500
    assert _stamps(fast) == _stamps(kept)
    for a, b in zip(dep.replicas, dep2.replicas, strict=True):
        assert (a.num_finished, a.num_rejected, a.num_preemptions, a.num_iterations,
                a.area_running, a.area_waiting, a.area_busy) == (
            b.num_finished, b.num_rejected, b.num_preemptions, b.num_iterations,
            b.area_running, b.area_waiting, b.area_busy)
    if engine.kv_capacity_tokens:
        assert sum(r.num_preemptions for r in dep.replicas) > 0
    if engine.max_waiting is not None:
        assert sum(r.num_rejected for r in dep.replicas) > 0


def test_front_end_delay_and_simultaneous_arrivals_keep_simpy_order(submit_at):
    """A front-end cost (its hand-over is a NORMAL event) and arrivals sharing one instant
    (replayed times with ties): one replica, stamps equal to SimPy's."""
    perf = PerfParms(alpha_ms=8.0, beta_ms=0.05, gamma_ms=0.002, frontend_ms=3.0,
                     frontend_per_token_ms=0.01)
    times = np.repeat(np.round(np.cumsum(np.random.default_rng(7).exponential(0.02, 400)), 3),
                      2)
    ins = [64 + (i * 37) % 900 for i in range(times.size)]
    outs = [1 + (i * 53) % 120 for i in range(times.size)]
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=perf, max_batch=8)
    reqs = [Request(i, n, m, server="s") for i, (n, m) in enumerate(zip(ins, outs, strict=True))]
    submit_at(env, rep, reqs, times.tolist())
    env.run()
    other = Replica(simpy.Environment(), name="r", perf=perf, max_batch=8)
    fast = OpenLoopReplica(other, "s")
    fast.feed(simpy_arrival_times(times, 0.0).tolist(), list(range(times.size)), ins, outs)
    fast.drain()
    assert _stamps(other.finished) == _stamps(reqs)
    assert len(reqs) == 800


def test_arrival_times_follow_simpys_clock():
    """SimPy reaches ``now + (t − now)``, not always ``t``; the vectorised recurrence agrees
    with SimPy's clock, including times where the rounding shows."""
    times = np.array([0.1, 12345.678901234567, 12345.678901234569, 3e7 + 0.3, 3e7 + 0.7, 9e15])
    env = simpy.Environment()
    seen = []

    def source():
        for t in times.tolist():
            yield env.timeout(t - env.now)
            seen.append(env.now)

    env.process(source())
    env.run()
    assert simpy_arrival_times(times, 0.0).tolist() == seen
    assert simpy_arrival_times(times[3:], seen[2]).tolist() == seen[3:]


def test_exact_sum_is_exact_whatever_the_batching():
    """Against rational arithmetic; batches and merges in any order give one value."""
    rng = np.random.default_rng(11)
    values = rng.lognormal(0.0, 6.0, 5000) * rng.choice([-1.0, 1.0], 5000)
    exact = sum((Fraction(v) for v in values.tolist()), Fraction(0))
    whole = ExactSum()
    whole.add(values)
    parts = [ExactSum() for _ in range(3)]
    for k, part in enumerate(parts):
        part.add(values[k::3][::-1])
    merged = ExactSum()
    for part in reversed(parts):
        merged.merge(part)
    assert whole.value() == merged.value() == float(exact) == math.fsum(values.tolist())
    assert whole.mean(values.size) == float(exact / values.size)
    assert math.isnan(ExactSum().mean(0))


def _json(result) -> str:
    return json.dumps(result.to_json(), default=str, sort_keys=True)


@pytest.mark.parametrize("cfg", [
    BenchConfig(model="granite_13b", accelerator="H100", in_tokens=512, out_tokens=128,
                rate_rps=30.0, replicas=5, duration_s=60.0, seed=3, kv_tokens=8_000),
    BenchConfig(model="llama_7b", accelerator="H100", in_tokens=300, out_tokens=200,
                rate_rps=80.0, replicas=7, num_requests=3000, seed=4, max_batch=16,
                input=workload.TokenDist(kind="lognormal", mean=300, cv=1.2)),
    BenchConfig(model="granite_13b", accelerator="H100", in_tokens=200, out_tokens=1,
                arrival_times_s=tuple(float(t) for t in np.repeat(np.arange(0, 30, 0.05), 3)),
                replicas=4, seed=5, output=workload.TokenDist(kind="uniform", low=1, high=3)),
], ids=["kv-limited", "num-requests", "replay-ties"])
def test_bench_summary_is_the_same_in_both_engines_and_any_worker_count(large_system, cfg):
    """The whole summary (sketch percentiles, exact means, totals, mean batch) is identical:
    SimPy run, per-replica run in one process, in two; another seed gives another one."""
    simpy_run = run_bench(large_system, cfg, requests_table=False, per_replica=False)
    one = run_bench(large_system, cfg, requests_table=False, per_replica=True, workers=1)
    two = run_bench(large_system, cfg, requests_table=False, per_replica=True, workers=2)
    assert simpy_run.num_requests > 500
    assert _json(one) == _json(simpy_run) == _json(two)
    other_seed = run_bench(large_system, replace(cfg, seed=cfg.seed + 10),
                           requests_table=False, per_replica=True, workers=2)
    assert _json(other_seed) != _json(two)


def test_per_replica_refuses_what_it_cannot_simulate(large_system):
    from inferno.errors import ConfigError

    cfg = BenchConfig(model="granite_13b", accelerator="H100", in_tokens=100, out_tokens=10,
                      rate_rps=5.0, replicas=2, num_requests=20, router="least_outstanding")
    with pytest.raises(ConfigError, match="round_robin"):
        run_bench(large_system, cfg, requests_table=False, per_replica=True)
    with pytest.raises(ConfigError, match="no request table"):
        run_bench(large_system, replace(cfg, router="round_robin"), per_replica=True)


def test_default_workers_follow_size_cores_and_load(monkeypatch):
    """Worker count is a speed choice only (the summaries above are identical either way)."""
    import os

    from sim.openloop import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert default_workers(1000, 9e6) == 2
    assert default_workers(20, 180_000) == 1  # busy machine, medium run
    assert default_workers(20, 1000) == 1
    assert default_workers(1, 9e6) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert default_workers(20, 180_000) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.2, 1.0))  # one core's worth
    assert default_workers(20, 180_000) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))  # both cores busy
    assert default_workers(20, 180_000) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_workers(1000, 9e6) == 1
