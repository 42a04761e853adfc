"""What an operator's load test would give an HPA: a per-Deployment target concurrency.

A competent operator load-tests one replica of each Deployment before setting its HPA: the
largest closed-loop concurrency (``vllm bench serve --max-concurrency``) at which the mean ITL
and the mean TTFT still meet the class targets, on the server's nominal request shape. The HPA
on running + waiting requests per pod then targets a fraction of it (the utilisation factor,
headroom for bursts and reaction lag). The twin runs that load test on its own replica model
(true parameters, the server's max batch and KV cache), bisecting the concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from inferno.model import Accelerator, ModelPerf, System
from sim.bench import BenchConfig, run_bench

NUM_REQUESTS_PER_USER = 8
"""Requests per closed-loop user in one load-test point (at least 64 in all)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTest:
    """One replica's load test."""

    model: str
    accelerator: str
    max_batch: int
    in_tokens: int
    out_tokens: int
    slo_itl_ms: float
    """0 = no ITL target."""
    slo_ttft_ms: float
    """0 = no TTFT target."""
    kv_tokens: int | None = None


def _meets(system: System, test: LoadTest, concurrency: int) -> bool:
    result = run_bench(system, BenchConfig(
        model=test.model, accelerator=test.accelerator, in_tokens=test.in_tokens,
        out_tokens=test.out_tokens, concurrency=concurrency, max_batch=test.max_batch,
        kv_tokens=test.kv_tokens,
        num_requests=max(64, NUM_REQUESTS_PER_USER * concurrency)))
    return ((test.slo_itl_ms <= 0 or result.itl_ms.mean <= test.slo_itl_ms)
            and (test.slo_ttft_ms <= 0 or result.ttft_ms.mean <= test.slo_ttft_ms))


def max_concurrency(system: System, test: LoadTest) -> int:
    """The largest concurrency in [1, 2 × max batch] meeting both targets (1 if none does)."""
    if not _meets(system, test, 1):
        return 1
    lo, hi = 1, 2 * test.max_batch
    if _meets(system, test, hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _meets(system, test, mid):
            lo = mid
        else:
            hi = mid
    return lo


@lru_cache(maxsize=256)
def _cached(test: LoadTest, accelerator: Accelerator, perf: ModelPerf) -> int:
    system = System(accelerators={accelerator.name: accelerator},
                    perf={(perf.model, accelerator.name): perf})
    return max_concurrency(system, test)


def hpa_target(system: System, test: LoadTest, utilisation: float) -> float:
    """The HPA target of running + waiting requests per pod: utilisation × the load test's
    concurrency (memoised per process: every policy run of a sweep reuses it)."""
    return utilisation * _cached(test, system.accelerators[test.accelerator],
                                 system.perf[(test.model, test.accelerator)])
