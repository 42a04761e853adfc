"""Twin vs analyzer at one operating point (docs/validation.md), shared by the tests and
benchmarks/validate_twin.py.

An operating point is (model, accelerator, input/output tokens, load), with load = λ/λ_max, the
offered rate over the analyzer's max rate (vllm model: throughput at a full batch). The twin
runs one replica with the analyzer's N (model-data maxBatchSize), Q = 10·N waiting slots, the
same α/β/γ and token budget, Poisson arrivals and fixed (or lognormal) lengths; statistics skip
the first and last 10% of requests by arrival (warm-up and drain). The analyzer predicts the
same point with each requested model (mean and percentiles of TTFT and ITL). Both token
conventions can be measured in the twin: vLLM's (the prefill samples the first token, the
default) and upstream's (it does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import simpy

from inferno.analyzer import LatencyStats, QueueConfig, analyze, latency_stats
from inferno.model import MAX_QUEUE_TO_BATCH_RATIO, PerfModel, System, effective_max_batch
from inferno.model.units import MS_PER_S
from sim import workload
from sim.bench import perf_for
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.metrics import Stats
from sim.replica import EngineSettings

STATISTICS = ("mean", "p50", "p90", "p99")


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    model: str
    accelerator: str
    in_tokens: int
    out_tokens: int
    load: float
    """λ / λ_max."""
    lengths: str = "fixed"
    """Token lengths around the means: "fixed" or "lognormal" (input and output)."""
    length_cv: float = 0.5
    """Coefficient of variation of lognormal lengths."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """One analyzer model's prediction at a point (ms; running = mean requests in service)."""

    ttft: LatencyStats
    itl: LatencyStats
    wait_ms: float
    prefill_ms: float
    running: float
    rho: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Twin statistics and the analyzer's predictions at one point.

    The ``an_*`` fields and ``ttft_err``/``itl_err`` are those of the first model asked for.
    """

    point: Point
    rate_rps: float
    max_batch: int
    num_requests: int
    twin_ttft: Stats
    twin_itl: Stats
    twin_wait_ms: float
    """Arrival to admission into the batch (includes the residual iteration)."""
    twin_prefill_ms: float
    """Admission to first token."""
    twin_running: float
    predictions: Mapping[PerfModel, Prediction]
    primary: PerfModel

    @property
    def twin_ttft_ms(self) -> float:
        return self.twin_ttft.mean

    @property
    def twin_itl_ms(self) -> float:
        return self.twin_itl.mean

    def prediction(self, model: PerfModel | None = None) -> Prediction:
        return self.predictions[self.primary if model is None else model]

    @property
    def an_ttft_ms(self) -> float:
        return self.prediction().ttft.mean

    @property
    def an_itl_ms(self) -> float:
        return self.prediction().itl.mean

    @property
    def an_wait_ms(self) -> float:
        return self.prediction().wait_ms

    @property
    def an_prefill_ms(self) -> float:
        return self.prediction().prefill_ms

    @property
    def an_running(self) -> float:
        return self.prediction().running

    @property
    def an_rho(self) -> float:
        return self.prediction().rho

    @property
    def ttft_err(self) -> float:
        return self.twin_ttft_ms / self.an_ttft_ms - 1.0

    @property
    def itl_err(self) -> float:
        return self.twin_itl_ms / self.an_itl_ms - 1.0

    def error(self, kind: str, statistic: str, model: PerfModel | None = None) -> float:
        """analyzer / twin − 1 for ``kind`` ("ttft", "itl") and a `STATISTICS` entry."""
        twin = getattr(self.twin_ttft if kind == "ttft" else self.twin_itl, statistic)
        pred = self.prediction(model)
        return getattr(pred.ttft if kind == "ttft" else pred.itl, statistic) / twin - 1.0


def _predict(cfg: QueueConfig, rate: float) -> Prediction:
    m = analyze(cfg, rate)
    ttft, itl = latency_stats(cfg, rate)
    return Prediction(ttft=ttft, itl=itl, wait_ms=m.wait_ms, prefill_ms=m.prefill_ms,
                      running=m.num_in_service, rho=m.rho)


def _lengths(point: Point, output_kind: str | None) -> workload.Lengths:
    def dist(mean: int) -> workload.TokenDist:
        if point.lengths == "lognormal":
            return workload.TokenDist(kind="lognormal", mean=mean, cv=point.length_cv)
        return workload.fixed(mean)

    output = (dist(point.out_tokens) if output_kind is None
              else workload.TokenDist(kind=output_kind, mean=point.out_tokens))
    return workload.Lengths(input=dist(point.in_tokens), output=output)


def compare(system: System, point: Point, *, num_requests: int = 4000, seed: int = 0,
            prefill_emits_token: bool = True, output_kind: str | None = None,
            models: tuple[PerfModel, ...] = (PerfModel.VLLM,)) -> Comparison:
    """Run the twin at ``point`` and evaluate the analyzer at the same rate, per model.

    The rate is ``point.load`` × the first model's max rate. ``output_kind`` "exponential"
    draws output lengths from the geometric distribution with the point's mean (service-time
    variability like the analyzer's Markovian chain), overriding ``point.lengths``.
    """
    mp = perf_for(system, point.model, point.accelerator)
    n = effective_max_batch(mp.max_batch_size)
    q = MAX_QUEUE_TO_BATCH_RATIO * n
    base = QueueConfig(max_batch=n, max_queue=q, in_tokens=point.in_tokens,
                       out_tokens=point.out_tokens, perf=mp.perf, perf_model=models[0],
                       max_num_tokens=mp.max_num_tokens)
    rate = point.load * analyze(base, 1e-6).max_rate_rps
    predictions = {m: _predict(replace(base, perf_model=m), rate) for m in models}

    env = simpy.Environment()
    ss_cluster, ss_arrivals, ss_lengths = np.random.SeedSequence(seed).spawn(3)
    cluster = Cluster(env, system, seed=ss_cluster, sample_period_s=None)
    dep = cluster.add_deployment(DeploymentSpec(
        name="v", model=point.model, accelerator=point.accelerator, max_batch=n,
        engine=EngineSettings(max_num_batched_tokens=mp.max_num_tokens, max_waiting=q,
                              prefill_emits_token=prefill_emits_token)))
    lengths = _lengths(point, output_kind).pairs(np.random.default_rng(ss_lengths))
    times = workload.ArrivalProcess(rate=workload.constant(rate)).times(
        np.random.default_rng(ss_arrivals))
    workload.arrivals(env, times, lengths, dep.submit, workload.RequestFactory(),
                      max_requests=num_requests)
    env.run()
    df = cluster.requests()
    lo, hi = int(0.1 * len(df)), int(0.9 * len(df))
    mid = df.iloc[lo:hi]
    mid = mid[mid["status"] == "done"]
    t0, t1 = float(mid["arrival_s"].iloc[0]), float(mid["arrival_s"].iloc[-1])
    return Comparison(
        point=point, rate_rps=rate, max_batch=n, num_requests=len(mid),
        twin_ttft=Stats.of_seconds(mid["ttft_s"].to_numpy()),
        twin_itl=Stats.of_seconds(mid["itl_s"].to_numpy()),
        twin_wait_ms=float(mid["wait_s"].mean()) * MS_PER_S,
        twin_prefill_ms=float((mid["first_token_s"] - mid["first_scheduled_s"]).mean())
        * MS_PER_S,
        twin_running=_window_mean_running(df, t0, t1), predictions=predictions,
        primary=models[0])


def _window_mean_running(df: pd.DataFrame, t0: float, t1: float) -> float:
    """Time-average number in the batch over [t0, t1] from the per-request stamps."""
    start = df["first_scheduled_s"].to_numpy()
    end = df["finish_s"].to_numpy()
    ok = ~np.isnan(start) & ~np.isnan(end)
    overlap = np.clip(np.minimum(end[ok], t1) - np.maximum(start[ok], t0), 0.0, None)
    return float(overlap.sum() / (t1 - t0))
