"""Prometheus view of a replica: vLLM names and types, values, monotone counters, isolation."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from prometheus_client.parser import text_string_to_metric_families

from inferno.model import PerfParms
from sim.promview import TTFT_BUCKETS_S, registry_for, render
from sim.replica import EngineSettings, Replica
from sim.request import Request

PERF = PerfParms(alpha_ms=10.0, beta_ms=0.1, gamma_ms=0.01)
TYPES = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:request_success": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
}


def scrape(registry) -> dict[str, dict[str, float]]:
    """{family: {sample name + labels: value}} from the text exposition."""
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(render(registry)):
        out[fam.name] = {s.name + str(sorted(s.labels.items())): s.value for s in fam.samples}
        out[fam.name]["__type__"] = fam.type  # type: ignore[assignment]
    return out


def value(doc: dict, family: str, sample: str, **labels: str) -> float:
    key = sample + str(sorted({"model_name": "m", "engine": "0", **labels}.items()))
    return doc[family][key]


@pytest.fixture
def loaded():
    """A replica with 40 Poisson requests and a KV small enough to preempt, plus a scrape log."""
    env = simpy.Environment()
    rep = Replica(env, name="r", perf=PERF, max_batch=8,
                  settings=EngineSettings(kv_capacity_tokens=2048))
    registry = registry_for(rep, model_name="m")
    rng = np.random.default_rng(11)
    reqs = [Request(i, int(rng.integers(50, 400)), int(rng.integers(20, 200)))
            for i in range(40)]
    scrapes: list[dict] = []

    def source():
        for req in reqs:
            yield env.timeout(float(rng.exponential(0.2)))
            req.arrival_s = env.now
            rep.submit(req)

    def scraper():
        while True:
            scrapes.append(scrape(registry))
            if env.peek() == float("inf"):
                return
            yield env.timeout(0.25)

    env.process(source())
    env.process(scraper())
    env.run()
    return rep, reqs, registry, scrapes


def test_families_have_vllm_names_and_types(loaded):
    """Every required vLLM metric is exposed with its Prometheus type."""
    _, _, registry, _ = loaded
    doc = scrape(registry)
    assert {name: doc[name]["__type__"] for name in TYPES} == TYPES


def test_final_values_match_the_request_records(loaded):
    """Counters and histograms at the end equal sums and bucket counts of the stamps."""
    rep, reqs, registry, _ = loaded
    doc = scrape(registry)
    assert value(doc, "vllm:request_success", "vllm:request_success_total",
                 finished_reason="length") == 40
    assert value(doc, "vllm:generation_tokens", "vllm:generation_tokens_total") == sum(
        r.out_tokens for r in reqs)
    assert value(doc, "vllm:prompt_tokens", "vllm:prompt_tokens_total") == sum(
        r.in_tokens for r in reqs)
    preemptions = value(doc, "vllm:num_preemptions", "vllm:num_preemptions_total")
    assert preemptions == sum(r.num_preemptions for r in reqs) > 0
    ttft = np.array([r.first_token_s - r.arrival_s for r in reqs])
    fam = "vllm:time_to_first_token_seconds"
    for le in (0.04, 0.25, 1.0, 5.0):
        assert le in TTFT_BUCKETS_S
        got = value(doc, fam, fam + "_bucket", le=repr(le))
        assert got == int((ttft <= le).sum())
    assert value(doc, fam, fam + "_count") == 40
    assert value(doc, fam, fam + "_sum") == pytest.approx(ttft.sum())
    assert value(doc, "vllm:num_requests_running", "vllm:num_requests_running") == 0


def test_counters_never_decrease_across_scrapes(loaded):
    """Scrapes during fast-path runs count in-flight tokens; counters stay monotone."""
    _, _, _, scrapes = loaded
    names = [("vllm:generation_tokens", "vllm:generation_tokens_total"),
             ("vllm:prompt_tokens", "vllm:prompt_tokens_total"),
             ("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count")]
    for fam, sample in names:
        series = [value(s, fam, sample) for s in scrapes]
        assert all(b >= a for a, b in zip(series, series[1:], strict=False)), fam
        assert len(set(series)) > 5, fam  # it actually moved while requests ran
    kv = [value(s, "vllm:kv_cache_usage_perc", "vllm:kv_cache_usage_perc") for s in scrapes]
    assert max(kv) <= 1.0
    assert max(kv) > 0.5


def test_two_replicas_have_independent_registries():
    """Each replica's registry exposes only its own state (no global registry)."""
    env = simpy.Environment()
    reps = [Replica(env, name=f"r{i}", perf=PERF, max_batch=4) for i in range(2)]
    regs = [registry_for(r, model_name="m") for r in reps]
    reps[0].submit(Request(0, 10, 3))
    env.run()
    done = [value(scrape(reg), "vllm:request_success", "vllm:request_success_total",
                  finished_reason="length") for reg in regs]
    assert done == [1, 0]
