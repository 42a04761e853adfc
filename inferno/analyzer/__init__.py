"""Queueing analyzer of one inference replica: metrics at a rate, sizing to SLO targets.

Scalar API (`analyze`, `latency_stats`, `size`, `optimal_concurrency`) for readability and
reference; batched API (`analyze_batch`, `latency_percentiles_batch`, `size_batch`,
`optimal_concurrency_batch`) for the optimizer. Rates are req/s at this interface, times ms.
Depends only on `inferno.model` (and numpy/scipy).
"""

from inferno.analyzer.analyzer import (
    EPSILON,
    SEARCH_MAX_ITERATIONS,
    SEARCH_TOLERANCE,
    STABILITY_SAFETY_FRACTION,
    LatencyStats,
    Metrics,
    QueueConfig,
    Sizing,
    Targets,
    analyze,
    bisect,
    config_problem,
    latency_stats,
    rate_range,
    size,
)
from inferno.analyzer.batch import (
    DEFAULT_PERCENTILES,
    MetricsBatch,
    PercentilesBatch,
    QueueBatch,
    SizingBatch,
    analyze_batch,
    latency_percentiles_batch,
    size_batch,
)
from inferno.analyzer.concurrency import (
    DEFAULT_CONCURRENCY_CEILING,
    ConcurrencyBatch,
    ConcurrencyResult,
    nominal_zero_load,
    optimal_concurrency,
    optimal_concurrency_batch,
    optimal_concurrency_sizing,
    search_concurrency_batch,
)
from inferno.analyzer.queueing import QueueSolution, solve_birth_death
from inferno.analyzer.service import perf_columns

__all__ = [
    "DEFAULT_CONCURRENCY_CEILING",
    "DEFAULT_PERCENTILES",
    "EPSILON",
    "SEARCH_MAX_ITERATIONS",
    "SEARCH_TOLERANCE",
    "STABILITY_SAFETY_FRACTION",
    "ConcurrencyBatch",
    "ConcurrencyResult",
    "LatencyStats",
    "Metrics",
    "MetricsBatch",
    "PercentilesBatch",
    "QueueBatch",
    "QueueConfig",
    "QueueSolution",
    "Sizing",
    "SizingBatch",
    "Targets",
    "analyze",
    "analyze_batch",
    "bisect",
    "config_problem",
    "latency_percentiles_batch",
    "latency_stats",
    "nominal_zero_load",
    "optimal_concurrency",
    "optimal_concurrency_batch",
    "optimal_concurrency_sizing",
    "perf_columns",
    "rate_range",
    "search_concurrency_batch",
    "size",
    "size_batch",
    "solve_birth_death",
]
