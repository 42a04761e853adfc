"""Servers (one Deployment: service class × model) and allocations."""

from __future__ import annotations

from dataclasses import dataclass

from inferno.model.service_class import DEFAULT_CLASS


@dataclass(frozen=True, slots=True, kw_only=True)
class Load:
    """Offered load of a server. Rates in requests per minute, as in the upstream JSON."""

    arrival_rpm: float = 0.0
    throughput_rpm: float = 0.0
    avg_in_tokens: int = 0
    avg_out_tokens: int = 0

    @property
    def is_zero(self) -> bool:
        return self.arrival_rpm == 0.0 or self.avg_out_tokens == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What a server runs on: accelerator, replicas, max batch, and predicted latencies."""

    accelerator: str = ""
    num_replicas: int = 0
    max_batch: int = 0
    cost: float = 0.0
    itl_ms: float | None = 0.0
    """Predicted mean ITL (upstream ``itlAverage``) at the load each of the ``num_replicas``
    replicas gets; None if saturated."""
    ttft_ms: float | None = 0.0
    """Predicted mean TTFT (upstream ``ttftAverage``); None if saturated."""
    load: Load = Load()
    saturated: bool = False
    """The load per replica exceeds what a replica can carry at all (its max rate): the
    queue model has no finite latency to offer, so the latencies are None."""
    ttft_stat_ms: float | None = 0.0
    """Predicted TTFT in the statistic the server's class targets (a percentile or the
    mean); 0 when not predicted, None if saturated."""
    itl_stat_ms: float | None = 0.0
    """Predicted ITL in the statistic the server's class targets; 0 when not predicted,
    None if saturated."""


MAX_QUEUE_TO_BATCH_RATIO = 10
"""Queue slots per batch slot of a server that states no max queue size: Q = 10·N (project
decision, docs/design/optimizer-model.md §2.8)."""


def effective_max_queue(max_queue: int | None, max_batch: int) -> int:
    """A server's queue slots Q beyond its batch N: its own, or 10·N (the one home of that
    rule; vectorised code multiplies by `MAX_QUEUE_TO_BATCH_RATIO`)."""
    return MAX_QUEUE_TO_BATCH_RATIO * max_batch if max_queue is None else max_queue


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    name: str
    class_name: str = DEFAULT_CLASS
    model: str
    keep_accelerator: bool = False
    min_num_replicas: int = 0
    max_batch_size: int = 0
    """> 0 overrides the batch-size policy."""
    max_queue_size: int | None = None
    """Queue slots beyond the batch; None means 10·N."""
    current: Allocation = Allocation()

    @property
    def load(self) -> Load:
        """The load to plan for is the current allocation's load (upstream semantics)."""
        return self.current.load
