"""Queueing analyzer of one inference replica: metrics at a rate, sizing to SLO targets.

Scalar API (`analyze`, `size`, `optimal_concurrency`) for readability and reference; batched
API (`analyze_batch`, `size_batch`, `optimal_concurrency_batch`) for the optimizer. Rates are
req/s at this interface, times ms. Depends only on `inferno.model` (and numpy).
"""

from inferno.analyzer.analyzer import (
    EPSILON,
    SEARCH_MAX_ITERATIONS,
    SEARCH_TOLERANCE,
    STABILITY_SAFETY_FRACTION,
    Metrics,
    QueueConfig,
    Sizing,
    Targets,
    analyze,
    bisect,
    config_problem,
    rate_range,
    size,
)
from inferno.analyzer.batch import (
    MetricsBatch,
    QueueBatch,
    SizingBatch,
    analyze_batch,
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

__all__ = [
    "DEFAULT_CONCURRENCY_CEILING",
    "EPSILON",
    "SEARCH_MAX_ITERATIONS",
    "SEARCH_TOLERANCE",
    "STABILITY_SAFETY_FRACTION",
    "ConcurrencyBatch",
    "ConcurrencyResult",
    "Metrics",
    "MetricsBatch",
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
    "nominal_zero_load",
    "optimal_concurrency",
    "optimal_concurrency_batch",
    "optimal_concurrency_sizing",
    "rate_range",
    "search_concurrency_batch",
    "size",
    "size_batch",
    "solve_birth_death",
]
