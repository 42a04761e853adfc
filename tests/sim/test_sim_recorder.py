"""Streaming records: bounded hand-off, sketches, streamed tables, flat memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import simpy

from sim import workload as wl
from sim.bench import BenchConfig, run_bench
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.digest import SKETCH_ACCURACY, ExactDigest, SketchDigest
from sim.recorder import RunRecorder, SloTargets
from sim.replica import EngineSettings
from sim.twin import ClusterTwin, ServerInfo, TwinSettings


def twin_run(large_system, *, retain: bool, duration_s: float = 120.0):
    """Two granite replicas with a small KV cache under 6 req/s, scraped every 5 s, with a
    recorder flushing after each scrape."""
    env = simpy.Environment()
    cluster = Cluster(env, large_system, seed=3, sample_period_s=None, retain_requests=retain)
    dep = cluster.add_deployment(DeploymentSpec(
        name="d", model="granite_13b", accelerator="H100", max_batch=16, num_replicas=2,
        engine=EngineSettings(kv_capacity_tokens=8_000, max_waiting=10)))
    recorder = RunRecorder({"d": dep}, {"d": SloTargets(ttft_ms=500, itl_ms=40)},
                           exact=retain, window_s=60.0)
    twin = ClusterTwin(env, cluster, {"d": ServerInfo(name="d", model="granite_13b",
                                                      class_name="Premium")},
                       TwinSettings(scrape_interval_s=5.0), on_scrape=recorder.flush)
    twin.start()
    rng = np.random.default_rng(5)
    wl.arrivals(env, wl.ArrivalProcess(rate=wl.constant(6.0)).times(rng),
                wl.Lengths(input=wl.TokenDist(kind="lognormal", mean=600, cv=1.0),
                           output=wl.TokenDist(kind="exponential", mean=120)).pairs(rng),
                dep.submit, wl.RequestFactory(), until_s=duration_s)
    longest = 0
    while env.now < duration_s + 60:
        env.run(until=env.now + 5.0)
        longest = max(longest, *(len(r.finished) for r in dep.replicas))
    recorder.finish(float(env.now))
    samples = {rep.name: list(series.samples) for rep, series in twin.scraper.pods("d").items()}
    return dep, recorder, samples, longest


def test_hand_off_leaves_the_vllm_series_unchanged(large_system):
    """Handing requests off after each scrape: every scraped vLLM sample equals the one of a
    run that keeps every request; replicas hold only what finished since the last scrape."""
    kept_dep, kept, kept_samples, kept_longest = twin_run(large_system, retain=True)
    dep, streamed, samples, longest = twin_run(large_system, retain=False)
    assert samples == kept_samples
    assert kept_dep.num_arrivals == dep.num_arrivals > 500
    assert kept_dep.requests
    assert not dep.requests
    assert kept_longest > 200
    assert longest < 40
    a, b = kept.tallies["d"], streamed.tallies["d"]
    assert (a.num_done, a.num_meets_slo) == (b.num_done, b.num_meets_slo)
    assert b.ttft_ms.statistic(0) == pytest.approx(a.ttft_ms.statistic(0), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sketch_percentiles_within_the_relative_accuracy(seed):
    """p50/p90/p99 of 100,000 lognormal values fed in batches: within 0.5 % (+ a rank's width)
    of numpy's; the mean is exact."""
    values = np.random.default_rng(seed).lognormal(3.0, 1.2, 100_000)
    sketch = SketchDigest()
    for part in np.array_split(values, 37):
        sketch.add(part)
    for pct in (50, 90, 99):
        assert sketch.statistic(pct) == pytest.approx(np.percentile(values, pct),
                                                      rel=SKETCH_ACCURACY + 1e-3)
    assert sketch.statistic(0) == pytest.approx(values.mean(), rel=1e-12)


def test_sketch_merge_is_independent_of_order_and_grouping():
    """Merging per-part sketches in any order gives the same quantiles and counts."""
    values = np.random.default_rng(7).gamma(2.0, 30.0, 20_000)
    parts = np.array_split(values, 5)
    sketches = []
    for part in parts:
        s = SketchDigest()
        s.add(part)
        sketches.append(s)
    forward, backward = SketchDigest(), SketchDigest()
    for s in sketches:
        forward.merge(s)
    for s in reversed(sketches):
        backward.merge(s)
    whole = SketchDigest()
    whole.add(values)
    for pct in (50, 90, 99):
        assert forward.statistic(pct) == backward.statistic(pct) == whole.statistic(pct)
    assert forward.count == backward.count == whole.count == values.size


def test_exact_digest_is_numpy():
    """The exact digest's statistics are numpy's over the non-NaN values."""
    d = ExactDigest()
    d.add(np.array([3.0, np.nan, 1.0]))
    d.add(np.array([2.0, 10.0]))
    stats = d.stats()
    assert (stats.mean, stats.p50) == (4.0, 2.5)
    assert stats.p99 == pytest.approx(np.percentile([1, 2, 3, 10], 99))


def bench(large_system, table, duration_s=60.0, kv_tokens=3_000):
    """4 granite replicas at 20 req/s; a 3,000-token KV cache preempts (and overloads)."""
    cfg = BenchConfig(model="granite_13b", accelerator="H100", in_tokens=512, out_tokens=128,
                      rate_rps=20.0, replicas=4, duration_s=duration_s, kv_tokens=kv_tokens,
                      seed=2)
    return run_bench(large_system, cfg, requests_table=table)


def test_streamed_bench_agrees_with_the_kept_one(large_system, tmp_path):
    """Same completions, throughput, means and preemptions; sketch percentiles within 0.5 %;
    the streamed CSV has one row per request with the kept table's stamps."""
    kept = bench(large_system, True)
    path = tmp_path / "requests.csv"
    streamed = bench(large_system, path)
    assert streamed.num_requests == kept.num_requests > 1000
    assert streamed.num_preemptions == kept.num_preemptions > 0
    assert streamed.throughput_rps == pytest.approx(kept.throughput_rps, rel=1e-12)
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        a, b = getattr(kept, key), getattr(streamed, key)
        assert b.mean == pytest.approx(a.mean, rel=1e-9)
        for pct in ("p50", "p90", "p99"):
            assert getattr(b, pct) == pytest.approx(getattr(a, pct), rel=2 * SKETCH_ACCURACY)
    # vllm bench's totals and token-weighted mean ITL need no table either.
    assert (streamed.total_input_tokens, streamed.total_output_tokens) == (
        kept.total_input_tokens, kept.total_output_tokens)
    assert streamed.total_tokens_per_s == pytest.approx(kept.total_tokens_per_s, rel=1e-12)
    assert streamed.mean_running == pytest.approx(kept.mean_running, rel=1e-12)
    sv, kv = streamed.vllm_bench, kept.vllm_bench
    assert sv is not None
    assert kv is not None
    assert sv.keys() == kv.keys()
    for key in ("completed", "total_input_tokens", "total_output_tokens", "request_throughput",
                "mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2el_ms"):
        assert sv[key] == pytest.approx(kv[key], rel=1e-9)
    assert sv["p99_ttft_ms"] == pytest.approx(kv["p99_ttft_ms"], rel=2 * SKETCH_ACCURACY)
    table = pd.read_csv(path)
    assert len(table) == (table["status"] == "done").sum() == kept.num_requests


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_is_flat_in_simulated_time_without_a_table(large_system):
    """A stable load (no KV limit), 4x the simulated time: the streaming bench's peak traced
    memory stays within 1.5x; the bench that keeps its table grows about 4x."""
    short = peak_bytes(lambda: bench(large_system, False, 60.0, None))
    long = peak_bytes(lambda: bench(large_system, False, 240.0, None))
    kept_short = peak_bytes(lambda: bench(large_system, True, 60.0, None))
    kept_long = peak_bytes(lambda: bench(large_system, True, 240.0, None))
    assert long < 1.5 * short
    assert kept_long > 2.5 * kept_short
