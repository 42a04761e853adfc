"""A Prometheus view of one twin replica, with vLLM's metric names, types and buckets.

`ReplicaCollector` is a `prometheus_client` custom collector: each scrape reads the replica's
state at the current simulation time and yields metric families. Register it in a per-replica
`CollectorRegistry` (`registry_for`), never in the global default registry, so two twins (or two
replicas) in one process never share series. `render` returns the text exposition format; a live
helper can serve the same registry over HTTP.

Semantics follow vLLM v1: counters are cumulative since the replica started; prompt tokens
count once a request's prefill has produced its first token; generation tokens count every
token produced so far, including those of unfinished requests; TTFT is observed when the first
token appears; TPOT (``request_time_per_output_token``), E2E latency and the per-request
prompt and generation lengths (``request_prompt_tokens``, ``request_generation_tokens``) at
completion.
``kv_cache_usage_perc`` is a fraction in [0, 1] (0 when the KV cache is unlimited).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sim.replica import Replica
from sim.request import RequestStatus

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                  5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
                 100000)
E2E_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


class _Histogram:
    """Cumulative bucket counts and sum, fed in batches."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.asarray(bounds)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self.sum = 0.0

    def observe(self, values: np.ndarray) -> None:
        if values.size:
            idx = np.searchsorted(self.bounds, values, side="left")
            self.counts += np.bincount(idx, minlength=len(self.counts))
            self.sum += float(values.sum())

    def family(self, name: str, doc: str, labels: list[str], extra: np.ndarray | None = None
               ) -> HistogramMetricFamily:
        counts, total = self.counts, self.sum
        if extra is not None and extra.size:
            more = _Histogram(tuple(self.bounds))
            more.observe(extra)
            counts, total = counts + more.counts, total + more.sum
        cum = np.cumsum(counts)
        buckets = [(_le(b), int(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        buckets.append(("+Inf", int(cum[-1])))
        fam = HistogramMetricFamily(name, doc, labels=["model_name", "engine"])
        fam.add_metric(labels, buckets, sum_value=total)
        return fam


def _le(bound: float) -> str:
    return repr(float(bound))


class ReplicaCollector(Collector):
    """Yields the vLLM metric families of ``replica`` at the simulation's current time."""

    def __init__(self, replica: Replica, *, model_name: str, engine: str = "0") -> None:
        self.replica = replica
        self.labels = [model_name, engine]
        self._seen = 0
        self._ttft = _Histogram(TTFT_BUCKETS_S)
        self._tpot = _Histogram(TPOT_BUCKETS_S)
        self._e2e = _Histogram(E2E_BUCKETS_S)
        self._prompt_len = _Histogram(TOKEN_BUCKETS)
        self._gen_len = _Histogram(TOKEN_BUCKETS)
        self._aborted = 0

    def _absorb_finished(self) -> None:
        new = self.replica.finished[self._seen:]
        self._seen += len(new)
        done = [r for r in new if r.status is RequestStatus.DONE]
        self._aborted += len(new) - len(done)
        # Aborted requests that had produced a token were observed for TTFT while in flight;
        # keep them observed.
        ttft = [r.first_token_s - r.arrival_s for r in new if r.first_token_s == r.first_token_s]
        self._ttft.observe(np.asarray(ttft, dtype=float))
        self._e2e.observe(np.asarray([r.finish_s - r.arrival_s for r in done], dtype=float))
        self._prompt_len.observe(np.asarray([r.in_tokens for r in done], dtype=float))
        self._gen_len.observe(np.asarray([r.out_tokens for r in done], dtype=float))
        self._tpot.observe(np.asarray([(r.finish_s - r.first_token_s) / (r.out_tokens - 1)
                                       for r in done if r.out_tokens > 1], dtype=float))

    def collect(self) -> Iterator[Metric]:
        rep = self.replica
        now = rep.env.now
        self._absorb_finished()
        labels = self.labels
        names = ["model_name", "engine"]
        in_flight = rep.in_flight(now)
        started = [r for r, _ in in_flight if r.first_token_s <= now]
        gauge = GaugeMetricFamily
        yield _one(gauge("vllm:num_requests_running", "Requests in the model's batch.",
                         labels=names), labels, rep.num_running)
        yield _one(gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.",
                         labels=names), labels, rep.num_waiting)
        yield _one(gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.",
                         labels=names), labels, rep.kv_usage(now))
        success = CounterMetricFamily("vllm:request_success", "Finished requests.",
                                      labels=[*names, "finished_reason"])
        success.add_metric([*labels, "length"], rep.num_finished)
        if self._aborted:
            success.add_metric([*labels, "abort"], self._aborted)
        yield success
        prompt = rep.prompt_tokens_total + sum(r.in_tokens for r in started)
        yield _one(CounterMetricFamily("vllm:prompt_tokens", "Prefill tokens processed.",
                                       labels=names), labels, prompt)
        generated = rep.generation_tokens_total + sum(n for _, n in in_flight)
        yield _one(CounterMetricFamily("vllm:generation_tokens", "Generation tokens produced.",
                                       labels=names), labels, generated)
        yield _one(CounterMetricFamily("vllm:num_preemptions", "Cumulative preemptions.",
                                       labels=names), labels, rep.num_preemptions)
        extra = np.asarray([r.first_token_s - r.arrival_s for r in started], dtype=float)
        yield self._ttft.family("vllm:time_to_first_token_seconds",
                                "Time to first token in seconds.", labels, extra)
        yield self._tpot.family("vllm:request_time_per_output_token_seconds",
                                "Time per output token in seconds.", labels)
        yield self._e2e.family("vllm:e2e_request_latency_seconds",
                               "End-to-end request latency in seconds.", labels)
        yield self._prompt_len.family("vllm:request_prompt_tokens",
                                      "Prompt tokens of finished requests.", labels)
        yield self._gen_len.family("vllm:request_generation_tokens",
                                   "Generation tokens of finished requests.", labels)


def _one(fam: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: float
         ) -> GaugeMetricFamily | CounterMetricFamily:
    fam.add_metric(labels, value)
    return fam


def registry_for(replica: Replica, *, model_name: str) -> CollectorRegistry:
    """A fresh registry holding only this replica's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector(replica, model_name=model_name))
    return registry


def render(registry: CollectorRegistry) -> str:
    """Prometheus text exposition of ``registry``."""
    return generate_latest(registry).decode()
