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
from typing import NamedTuple

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


class VllmSample(NamedTuple):
    """A replica's vLLM series at one instant (counters cumulative since the replica started).

    The twin's scraper stores these; `ReplicaCollector` exposes the same values.
    """

    success: float
    """``request_success_total`` over every finish reason (aborted requests included)."""
    prompt_tokens: float
    generation_tokens: float
    ttft_sum: float
    ttft_count: float
    tpot_sum: float
    tpot_count: float
    prompt_len_sum: float
    prompt_len_count: float
    gen_len_sum: float
    gen_len_count: float
    running: float
    waiting: float
    kv_usage: float


class VllmCounters:
    """vLLM's counting semantics over one replica: the single home of "what counts when".

    Finished requests are absorbed once each (sums and counts; with ``histograms`` also the
    bucket counts of the exposition), in batches, from the replica's hand-off list
    ``finished`` through a cursor counted from the replica's start, so a request handed off
    after it was absorbed is never needed again; in-flight requests add what vLLM has already
    counted for them (prompt tokens and TTFT once the first token exists, generation tokens
    so far).
    """

    def __init__(self, replica: Replica, *, histograms: bool = False) -> None:
        self.replica = replica
        self._seen = 0
        self.aborted = 0
        self.ttft = [0.0, 0]
        self.tpot = [0.0, 0]
        self.e2e = [0.0, 0]
        self.prompt_len = [0.0, 0]
        self.gen_len = [0.0, 0]
        self.histograms = ({
            "ttft": _Histogram(TTFT_BUCKETS_S), "tpot": _Histogram(TPOT_BUCKETS_S),
            "e2e": _Histogram(E2E_BUCKETS_S), "prompt_len": _Histogram(TOKEN_BUCKETS),
            "gen_len": _Histogram(TOKEN_BUCKETS)} if histograms else None)

    def absorb(self) -> None:
        """Count the requests that finished since the last call."""
        rep = self.replica
        finished = rep.finished
        start = self._seen - rep.num_handed_off
        assert start >= 0, "requests handed off before the vLLM counters absorbed them"
        if start == len(finished):
            return
        new = finished[start:]
        self._seen = rep.num_handed_off + len(finished)
        values: dict[str, list[float]] = {k: [] for k in ("ttft", "tpot", "e2e", "prompt_len",
                                                           "gen_len")}
        for r in new:
            first = r.first_token_s
            if first == first:  # aborted requests that had a first token were observed too
                values["ttft"].append(first - r.arrival_s)
            if r.status is not RequestStatus.DONE:
                self.aborted += 1
                continue
            values["e2e"].append(r.finish_s - r.arrival_s)
            values["prompt_len"].append(r.in_tokens)
            values["gen_len"].append(r.out_tokens)
            if r.out_tokens > 1:
                values["tpot"].append((r.finish_s - first) / (r.out_tokens - 1))
        for key, vals in values.items():
            acc = getattr(self, key)
            acc[0] += sum(vals)
            acc[1] += len(vals)
            if self.histograms is not None and vals:
                self.histograms[key].observe(np.asarray(vals, dtype=float))

    def sample(self, now: float, started_ttft_s: list[float] | None = None) -> VllmSample:
        """The replica's series at ``now`` (absorbs first); the TTFTs of in-flight requests
        already observed are appended to ``started_ttft_s`` when given (for the buckets)."""
        self.absorb()
        rep = self.replica
        prompt = float(rep.prompt_tokens_total)
        generated = float(rep.generation_tokens_total)
        ttft_sum, ttft_count = self.ttft
        for req, produced in rep.in_flight(now):
            generated += produced
            if req.first_token_s <= now:
                prompt += req.in_tokens
                ttft = req.first_token_s - req.arrival_s
                ttft_sum += ttft
                ttft_count += 1
                if started_ttft_s is not None:
                    started_ttft_s.append(ttft)
        return VllmSample(
            success=float(rep.num_finished + self.aborted), prompt_tokens=prompt,
            generation_tokens=generated, ttft_sum=ttft_sum, ttft_count=float(ttft_count),
            tpot_sum=self.tpot[0], tpot_count=float(self.tpot[1]),
            prompt_len_sum=self.prompt_len[0], prompt_len_count=float(self.prompt_len[1]),
            gen_len_sum=self.gen_len[0], gen_len_count=float(self.gen_len[1]),
            running=float(rep.num_running), waiting=float(rep.num_waiting),
            kv_usage=rep.kv_usage(now))


class ReplicaCollector(Collector):
    """Yields the vLLM metric families of ``replica`` at the simulation's current time."""

    def __init__(self, replica: Replica, *, model_name: str, engine: str = "0") -> None:
        self.replica = replica
        self.labels = [model_name, engine]
        self.counters = VllmCounters(replica, histograms=True)

    def collect(self) -> Iterator[Metric]:
        rep = self.replica
        now = rep.env.now
        counters = self.counters
        started: list[float] = []
        sample = counters.sample(now, started)
        hist = counters.histograms
        assert hist is not None
        labels = self.labels
        names = ["model_name", "engine"]
        gauge = GaugeMetricFamily
        yield _one(gauge("vllm:num_requests_running", "Requests in the model's batch.",
                         labels=names), labels, sample.running)
        yield _one(gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.",
                         labels=names), labels, sample.waiting)
        yield _one(gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means 100 percent.",
                         labels=names), labels, sample.kv_usage)
        success = CounterMetricFamily("vllm:request_success", "Finished requests.",
                                      labels=[*names, "finished_reason"])
        success.add_metric([*labels, "length"], sample.success - counters.aborted)
        if counters.aborted:
            success.add_metric([*labels, "abort"], counters.aborted)
        yield success
        yield _one(CounterMetricFamily("vllm:prompt_tokens", "Prefill tokens processed.",
                                       labels=names), labels, sample.prompt_tokens)
        yield _one(CounterMetricFamily("vllm:generation_tokens", "Generation tokens produced.",
                                       labels=names), labels, sample.generation_tokens)
        yield _one(CounterMetricFamily("vllm:num_preemptions", "Cumulative preemptions.",
                                       labels=names), labels, rep.num_preemptions)
        extra = np.asarray(started, dtype=float)
        yield hist["ttft"].family("vllm:time_to_first_token_seconds",
                                  "Time to first token in seconds.", labels, extra)
        yield hist["tpot"].family("vllm:request_time_per_output_token_seconds",
                                  "Time per output token in seconds.", labels)
        yield hist["e2e"].family("vllm:e2e_request_latency_seconds",
                                 "End-to-end request latency in seconds.", labels)
        yield hist["prompt_len"].family("vllm:request_prompt_tokens",
                                        "Prompt tokens of finished requests.", labels)
        yield hist["gen_len"].family("vllm:request_generation_tokens",
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
