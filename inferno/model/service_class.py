"""Service classes: priority and per-model latency targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_CLASS = "Free"
DEFAULT_PRIORITY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTarget:
    """Average-latency targets of one model in one class (0 = no target)."""

    model: str
    slo_itl_ms: float = 0.0
    slo_ttft_ms: float = 0.0
    slo_tps: float = 0.0
    """Output tokens per second; replaces the measured load when > 0."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceClass:
    name: str
    priority: int = DEFAULT_PRIORITY
    """1 (highest) .. 100 (lowest)."""
    targets: Mapping[str, ModelTarget] = field(default_factory=dict)
