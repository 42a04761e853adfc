"""Token streams of external requests: the twin's iteration boundaries, on the wall clock.

An external request is an ordinary `Request` in a twin replica: the engine does no per-token
work for it and does not know a client waits (the replica's hot path is the same with or
without clients). `TokenPump` is one asyncio task that, while streams are open, advances the
twin to the wall clock, reads how many tokens each attached request has produced
(`Replica.in_flight`) and sleeps until the end of the iteration in progress on those replicas
(`Replica.next_boundary`), converted to wall time. A token therefore reaches its stream at the
wall instant its iteration ended (plus the event loop's wake-up latency), never before, and a
late wake-up (a busy machine) delays the tokens without shifting the twin's own stamps.

Only replicas whose boundary has passed are re-read at a wake-up. A request held by its
Deployment (no ready replica yet) has no boundary to wait for; while one is held the pump
also wakes every `hold_poll_s`.

Thread model: the pump runs on the event loop's thread and takes the twin's lock for each
pass, as long as it takes to run the twin up to now and read the counts.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import AbstractContextManager, suppress
from typing import Any, Protocol

from sim.deployment import Deployment
from sim.replica import Replica
from sim.request import Request, RequestStatus

FINAL = (RequestStatus.DONE, RequestStatus.REJECTED, RequestStatus.ABORTED)


class RealTimeTwin(Protocol):
    """What the pump needs from a twin that runs in real time (`sim.emulate.ClusterEmulation`)."""

    @property
    def lock(self) -> AbstractContextManager[Any]: ...

    def advance(self) -> float:
        """Run the twin up to the wall clock; returns the simulated time."""
        ...

    def wall_s(self, sim_s: float) -> float:
        """Monotonic wall-clock time of a simulated instant."""
        ...


class TokenStream:
    """One external request as its client sees it: tokens so far, then the end."""

    __slots__ = ("req", "deployment", "replica", "produced", "changed")

    def __init__(self, req: Request, deployment: Deployment) -> None:
        self.req = req
        self.deployment = deployment
        self.replica: Replica | None = None
        self.produced = 0
        """Output tokens produced by the twin so far (delivered by the pump)."""
        self.changed = asyncio.Event()
        """Set when `produced` grew or the request ended."""

    @property
    def status(self) -> RequestStatus:
        return self.req.status

    @property
    def is_final(self) -> bool:
        return self.req.status in FINAL


class TokenPump:
    """Delivers the tokens of attached requests at their replicas' iteration boundaries."""

    def __init__(self, twin: RealTimeTwin, *, hold_poll_s: float = 0.02) -> None:
        self.twin = twin
        self.hold_poll_s = hold_poll_s
        self._held: set[TokenStream] = set()
        self._on: dict[Replica, set[TokenStream]] = {}
        self._due_s: dict[Replica, float] = {}
        """Simulated end of the iteration in progress per replica (when to re-read it)."""
        self._kick = asyncio.Event()
        self.num_passes = 0

    @property
    def num_streams(self) -> int:
        return len(self._held) + sum(len(s) for s in self._on.values())

    def attach(self, req: Request, deployment: Deployment) -> TokenStream:
        """Follow `req` (just submitted to `deployment`); call on the pump's loop."""
        stream = TokenStream(req, deployment)
        self._held.add(stream)
        self._kick.set()
        return stream

    def detach(self, stream: TokenStream) -> None:
        """Stop following `stream` (its client is gone or has everything)."""
        self._held.discard(stream)
        if stream.replica is not None:
            streams = self._on.get(stream.replica)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._on[stream.replica]
                    self._due_s.pop(stream.replica, None)

    def cancel(self, stream: TokenStream) -> None:
        """The client of `stream` went away: abort its request in the twin now, as vLLM does
        (a request still held by its Deployment, with no replica yet, runs when one is
        ready), and stop following it."""
        with self.twin.lock:
            self.twin.advance()
            if stream.replica is not None:
                stream.replica.cancel(stream.req)
        self.detach(stream)

    async def run(self) -> None:
        """Pump until cancelled."""
        kick = self._kick
        while True:
            if not self._held and not self._on:
                await kick.wait()
            kick.clear()
            delay_s = self.pump()
            if delay_s > 0.0:
                with suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await kick.wait()
            else:
                await asyncio.sleep(0)  # a boundary due now: let the handlers write first

    def pump(self) -> float:
        """One pass: deliver what was produced up to now; returns the wall s to sleep."""
        self.num_passes += 1
        changed: list[TokenStream] = []
        with self.twin.lock:
            now = self.twin.advance()
            self._place(now)
            next_s = math.inf
            for rep, streams in self._on.items():
                due = self._due_s.get(rep, -math.inf)
                if due <= now:
                    changed.extend(self._read(rep, streams, now))
                    due = self._due_s[rep] = rep.next_boundary(now)
                next_s = min(next_s, due)
            for rep in [r for r, s in self._on.items() if all(x.is_final for x in s)]:
                changed.extend(self._on.pop(rep))  # nothing more to wait for on `rep`
                self._due_s.pop(rep, None)
            wake = self.twin.wall_s(next_s) if next_s < math.inf else math.inf
        for stream in changed:
            stream.changed.set()
        delay = wake - time.monotonic()
        if self._held:
            delay = min(delay, self.hold_poll_s)
        return max(0.0, delay) if delay < math.inf else self.hold_poll_s

    def _place(self, now: float) -> None:
        """Streams whose request reached a replica (or ended) leave the held set."""
        for stream in [s for s in self._held if s.req.replica or s.is_final]:
            self._held.discard(stream)
            rep = _find(stream.deployment, stream.req.replica)
            if rep is None:  # rejected before routing: nothing to wait for
                stream.changed.set()
                continue
            stream.replica = rep
            self._on.setdefault(rep, set()).add(stream)
            self._due_s[rep] = -math.inf  # read it in this pass

    @staticmethod
    def _read(rep: Replica, streams: set[TokenStream], now: float) -> list[TokenStream]:
        produced = dict(rep.in_flight(now))
        changed = []
        for stream in streams:
            req = stream.req
            if req.status is RequestStatus.DONE:
                count = req.out_tokens
            else:
                count = produced.get(req, stream.produced)
            if count != stream.produced or stream.is_final:
                stream.produced = max(stream.produced, count)
                changed.append(stream)
        return changed


def _find(deployment: Deployment, name: str) -> Replica | None:
    if not name:
        return None
    for rep in reversed(deployment.replicas):
        if rep.name == name:
            return rep
    return None
