"""Time budgets: one deadline per control cycle, shared by every API and Prometheus call in it.

A hung API server must not stall the loop: each call's timeout is the smaller of its own
setting and what is left of the cycle, and retries stop when the cycle's time is spent (our
retries replace the client libraries' own, which are switched off in `live.config`).
`CycleBudget.begin` is called once per cycle, by the collector; collect may use
`collect_share` of the budget and actuation the rest of it, so a slow Prometheus cannot take
the whole cycle and leave nothing for the patches.

The budget also carries the one thing a cycle reads twice otherwise: the Deployments its
collect listed, which its actuation reuses (a second list of 500 Deployments costs ~0.1 s of
CPU in the client's deserialisation; the patches only add or replace, so a change made in
between is overwritten or, if it already matches the plan, left alone).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from live.kube import Discovery


class Deadline:
    """An absolute end on a monotonic clock; `end_s` inf never expires."""

    def __init__(self, end_s: float = math.inf, *,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.end_s = end_s
        self._now = now

    @classmethod
    def after(cls, budget_s: float, *, now: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(now() + budget_s, now=now)

    def remaining_s(self) -> float:
        """Seconds left (negative once passed; inf when unbounded)."""
        return self.end_s - self._now()

    @property
    def is_expired(self) -> bool:
        return self.remaining_s() <= 0.0

    def timeout_s(self, per_call_s: float) -> float:
        """The timeout of the next call: its own, capped by what is left (never below 1 ms)."""
        return max(min(per_call_s, self.remaining_s()), 0.001)


UNBOUNDED = Deadline()
"""For calls outside a control cycle (load emulator, emulation status writes)."""


class CycleBudget:
    """The deadlines (and listed Deployments) of the current cycle; `begin` starts one."""

    def __init__(self, budget_s: float, *, collect_share: float = 2 / 3,
                 now: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(budget_s) and budget_s > 0):
            raise ValueError(f"cycle budget must be > 0 s, got {budget_s!r}")
        self.budget_s = budget_s
        self.collect_share = collect_share
        self._now = now
        self.collect = UNBOUNDED
        """Deadline of the collect stage (API list and Prometheus queries)."""
        self.cycle = UNBOUNDED
        """Deadline of the whole cycle (actuation included)."""
        self.stage = ""
        """collect, decide or actuate while a cycle runs (for what a hard exit records)."""
        self.discovery: Discovery | None = None
        """The managed Deployments this cycle's collect listed; None outside a cycle."""

    def begin(self) -> None:
        self.stage = "collect"
        self.discovery = None
        start = self._now()
        self.collect = Deadline(start + self.budget_s * self.collect_share, now=self._now)
        self.cycle = Deadline(start + self.budget_s, now=self._now)
