"""Service classes: priority and per-model latency targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_CLASS = "Free"
"""Service class of a server that names none (a Deployment without a class label, a
server-data entry without ``class``): the lowest priority upstream."""
DEFAULT_PRIORITY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTarget:
    """Latency targets of one model in one class (0 = no target).

    A target is on the mean unless its percentile is set (e.g. 99: the 99th percentile of
    TTFT must not exceed ``slo_ttft_ms``).
    """

    model: str
    slo_itl_ms: float = 0.0
    slo_ttft_ms: float = 0.0
    slo_tps: float = 0.0
    """Output tokens per second; replaces the measured load when > 0."""
    slo_ttft_percentile: float = 0.0
    """Percentile (0 < p < 100) the TTFT target is on; 0 means the mean (upstream)."""
    slo_itl_percentile: float = 0.0
    """Percentile (0 < p < 100) the ITL target is on; 0 means the mean (upstream)."""

    def ttft_statistic(self) -> str:
        """"mean" or "p99"-style label of the statistic the TTFT target is on."""
        return statistic_label(self.slo_ttft_percentile)

    def itl_statistic(self) -> str:
        return statistic_label(self.slo_itl_percentile)


def statistic_label(percentile: float) -> str:
    """"mean" for 0, else "p" and the percentile ("p99", "p99.9")."""
    return "mean" if percentile == 0 else f"p{percentile:g}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceClass:
    name: str
    priority: int = DEFAULT_PRIORITY
    """1 (highest) .. 100 (lowest)."""
    targets: Mapping[str, ModelTarget] = field(default_factory=dict)
