"""One inference request: what the client asked for, when things happened, and engine state.

A `Request` is the only mutable record that travels through the twin: the workload creates it,
the deployment stamps the arrival, the replica engine stamps the rest. It is a plain slotted
class (not a dataclass) because the engine touches a few of its fields on every iteration
boundary; per-request work must stay a handful of attribute writes.

Timestamps are simulation seconds; NaN means "did not happen" (a rejected request has no first
token). ITL follows `vllm bench`: decode time per output token after the first,
``(finish − first_token) / (out_tokens − 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum

NAN = math.nan


class RequestStatus(StrEnum):
    WAITING = "waiting"
    """In a replica's waiting queue (new, or preempted and waiting for recompute)."""
    RUNNING = "running"
    DONE = "done"
    REJECTED = "rejected"
    """Turned away: the replica's waiting queue was full or the request can never fit its KV."""
    ABORTED = "aborted"
    """Killed with its replica (drain grace period over)."""
    HELD = "held"
    """Accepted by a deployment that has no ready replica yet."""


class Request:
    """A request and its per-request stamps.

    Engine fields (``computed``, ``emitted``, ``target``, ``cbase``, ``gbase``, ``seq``) belong
    to `sim.replica.Replica`; nothing else writes them.
    """

    __slots__ = (
        "id", "server", "in_tokens", "out_tokens", "arrival_s", "replica",
        "first_scheduled_s", "first_token_s", "finish_s", "num_preemptions", "status", "on_done",
        "computed", "emitted", "target", "cbase", "gbase", "seq",
    )

    def __init__(self, id: int, in_tokens: int, out_tokens: int, *, server: str = "",
                 on_done: Callable[[Request], None] | None = None) -> None:
        self.id = id
        self.server = server
        self.in_tokens = in_tokens
        self.out_tokens = out_tokens
        self.on_done = on_done
        """Called once when the request reaches a terminal state (closed-loop users)."""
        self.arrival_s = NAN
        self.replica = ""
        self.first_scheduled_s = NAN
        self.first_token_s = NAN
        self.finish_s = NAN
        self.num_preemptions = 0
        self.status = RequestStatus.WAITING
        self.computed = 0
        """Tokens whose KV is in the cache (reset to 0 by a recompute preemption)."""
        self.emitted = 0
        """Tokens sampled so far, including an invisible prefill token in analyzer accounting."""
        self.target = 0
        self.cbase = 0
        self.gbase = 0
        self.seq = -1
        """Heap entry id while in the replica's decode set, else -1."""

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        return self.finish_s - self.arrival_s

    @property
    def itl_s(self) -> float:
        """Mean decode time per output token after the first (NaN for one-token outputs)."""
        if self.out_tokens <= 1:
            return NAN
        return (self.finish_s - self.first_token_s) / (self.out_tokens - 1)

    def __repr__(self) -> str:
        return (f"Request(id={self.id}, server={self.server!r}, in={self.in_tokens}, "
                f"out={self.out_tokens}, status={self.status.value})")
