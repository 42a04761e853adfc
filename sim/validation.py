"""Twin vs analyzer at one operating point (issue item 6), shared by the tests and
benchmarks/validate_twin.py.

An operating point is (model, accelerator, input/output tokens, load), with load = λ/λ_max, the
offered rate over the analyzer's max rate (throughput at a full batch). The twin runs one replica
with the analyzer's N (model-data maxBatchSize), Q = 10·N waiting slots, the same α/β/γ and
token budget, Poisson arrivals and fixed lengths; statistics skip the first and last 10% of
requests by arrival (warm-up and drain). Both token conventions can be measured: vLLM's
(the prefill samples the first token, the default) and the analyzer's (it does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from inferno.model import PerfModel, System
from inferno.model.units import MS_PER_S
from sim import workload
from sim.bench import perf_for
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.replica import EngineSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    model: str
    accelerator: str
    in_tokens: int
    out_tokens: int
    load: float
    """λ / λ_max."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Twin and analyzer means at one point (ms; running = mean requests in the batch)."""

    point: Point
    rate_rps: float
    max_batch: int
    num_requests: int
    twin_ttft_ms: float
    twin_itl_ms: float
    twin_wait_ms: float
    """Arrival to admission into the batch (includes the residual iteration)."""
    twin_prefill_ms: float
    """Admission to first token."""
    twin_running: float
    an_ttft_ms: float
    an_itl_ms: float
    an_wait_ms: float
    an_prefill_ms: float
    an_running: float
    an_rho: float

    @property
    def ttft_err(self) -> float:
        return self.twin_ttft_ms / self.an_ttft_ms - 1.0

    @property
    def itl_err(self) -> float:
        return self.twin_itl_ms / self.an_itl_ms - 1.0


def compare(system: System, point: Point, *, num_requests: int = 4000, seed: int = 0,
            prefill_emits_token: bool = True, output_kind: str = "fixed") -> Comparison:
    """Run the twin at ``point`` and evaluate the analyzer at the same rate.

    ``output_kind`` "exponential" draws output lengths from the geometric distribution with
    the point's mean (service-time variability like the analyzer's Markovian chain).
    """
    from inferno.analyzer import QueueConfig, analyze

    mp = perf_for(system, point.model, point.accelerator)
    n = mp.max_batch_size or 256
    cfg = QueueConfig(max_batch=n, max_queue=10 * n, in_tokens=point.in_tokens,
                      out_tokens=point.out_tokens, perf=mp.perf, perf_model=PerfModel.CHUNKED,
                      max_num_tokens=mp.max_num_tokens)
    rate = point.load * analyze(cfg, 1e-6).max_rate_rps
    an = analyze(cfg, rate)

    env = simpy.Environment()
    ss_cluster, ss_arrivals, ss_lengths = np.random.SeedSequence(seed).spawn(3)
    cluster = Cluster(env, system, seed=ss_cluster, sample_period_s=None)
    dep = cluster.add_deployment(DeploymentSpec(
        name="v", model=point.model, accelerator=point.accelerator, max_batch=n,
        engine=EngineSettings(max_num_batched_tokens=mp.max_num_tokens, max_waiting=10 * n,
                              prefill_emits_token=prefill_emits_token)))
    lengths = workload.Lengths(
        input=workload.fixed(point.in_tokens),
        output=workload.TokenDist(kind=output_kind, mean=point.out_tokens)).pairs(
        np.random.default_rng(ss_lengths))
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
    running = _window_mean_running(df, t0, t1)
    return Comparison(
        point=point, rate_rps=rate, max_batch=n, num_requests=len(mid),
        twin_ttft_ms=float(mid["ttft_s"].mean()) * MS_PER_S,
        twin_itl_ms=float(mid["itl_s"].mean()) * MS_PER_S,
        twin_wait_ms=float(mid["wait_s"].mean()) * MS_PER_S,
        twin_prefill_ms=float((mid["first_token_s"] - mid["first_scheduled_s"]).mean())
        * MS_PER_S,
        twin_running=running, an_ttft_ms=an.ttft_ms, an_itl_ms=an.itl_ms,
        an_wait_ms=an.wait_ms, an_prefill_ms=an.prefill_ms, an_running=an.num_in_service,
        an_rho=an.rho)


def _window_mean_running(df, t0: float, t1: float) -> float:
    """Time-average number in the batch over [t0, t1] from the per-request stamps."""
    start = df["first_scheduled_s"].to_numpy()
    end = df["finish_s"].to_numpy()
    ok = ~np.isnan(start) & ~np.isnan(end)
    overlap = np.clip(np.minimum(end[ok], t1) - np.maximum(start[ok], t0), 0.0, None)
    return float(overlap.sum() / (t1 - t0))
