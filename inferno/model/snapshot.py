"""Observations and plans exchanged between the controller and the worlds (twin or cluster).

Plain data shared by `sim` and `live`: a `ClusterSnapshot` is what a Collector saw, an
`AllocationPlan` is what an Actuator must make true. `None` means "no data", never zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerObservation:
    """One managed server (Deployment) as observed over the collection window."""

    name: str
    model: str
    class_name: str
    namespace: str = ""
    accelerator: str = ""
    max_batch: int = 0
    desired_replicas: int = 0
    ready_replicas: int = 0
    arrival_rpm: float | None = None
    """Offered request rate summed over all ready replicas."""
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    itl_ms: float | None = None
    ttft_ms: float | None = None
    running_requests: float | None = None
    """Mean requests in service per ready replica."""
    waiting_requests: float | None = None
    """Mean requests waiting per ready replica."""
    kv_usage: float | None = None
    """Mean KV-cache usage per ready replica, fraction in [0, 1]."""
    throughput_rpm: float | None = None
    """Completed requests per minute over the window, all ready replicas."""
    waiting_now: float | None = None
    """Requests waiting now, summed over the replicas: the backlog to drain."""
    running_now: float | None = None
    """Requests in service now, summed over the replicas."""
    waiting_max: float | None = None
    """Most requests one replica had waiting at any scrape of the window."""
    recent_arrival_rpm: float | None = None
    """Offered load over the last couple of scrapes: the load now, without the window's lag
    (and with more noise)."""
    window_s: float | None = None
    """s behind the windowed rates and means (None: not from metrics)."""
    recent_window_s: float | None = None
    """s behind `recent_arrival_rpm`."""
    held_replicas: int | None = None
    """Replicas holding accelerators now (starting, ready or draining); None if unknown."""
    min_num_replicas: int = 0
    max_queue_size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSnapshot:
    time_s: float
    servers: Mapping[str, ServerObservation] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Servers the collector could not read, with the reason (e.g. malformed labels)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPlan:
    name: str
    accelerator: str
    num_replicas: int
    max_batch: int
    namespace: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationPlan:
    servers: Mapping[str, ServerPlan] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActuationReport:
    applied: tuple[str, ...] = ()
    """Servers whose state was changed."""
    unchanged: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    """Server → reason."""
