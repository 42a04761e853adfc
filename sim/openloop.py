"""Open-loop benchmark runs replica by replica: no global event queue, optionally two processes.

When arrivals do not depend on the fleet's state (open loop: Poisson or replayed times) and
neither does routing (round robin over replicas that are all ready from t = 0), the requests
each replica receives are known up front: request i goes to replica i mod R. The replicas then
share nothing, and each one can be simulated on its own, in a `LocalEnv` that offers the part
of `simpy.Environment` a `sim.replica.Replica` uses (``now``, ``timeout``, its event queue).
The very same `Replica` code runs; only the loop that feeds it changes: the replica's next
arrival against its own next event (its one live wake-up, or the head of its small event queue
when it has a front-end cost, `OpenLoopReplica`), with SimPy's order at equal times (front-end
hand-overs and arrivals, priority NORMAL, before wake-ups, priority LATE). Every
replica sees the events, times and order it sees in one SimPy environment, so per-request
timestamps are identical; the global heap, whose cost grows with the fleet, is gone.

Arrival times are those the SimPy arrival process produces: it sleeps ``t − now`` from the
previous arrival, so an arrival lands at ``now + (t − now)``, which equals ``t`` except in
rare roundings (recomputed here the same way).

Replicas are split into contiguous groups, one per process (the caller's and forked workers);
each process draws the same streams from the same seeds and keeps the requests of its
replicas. What a process keeps (`StreamedStats`: sketches, exact sums, counts, maxima) merges
exactly, whatever the grouping, so 1 and 2 processes give identical summaries.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count, islice
from typing import Any, cast

import numpy as np
import simpy
from simpy.events import NORMAL

from inferno.model.units import MS_PER_S
from sim.digest import ExactSum, SketchDigest
from sim.recorder import RequestTable, latencies_of
from sim.replica import Replica
from sim.request import Request, RequestStatus

CHUNK = 1 << 16
"""Arrivals drawn at a time."""
WINDOW_S = 10.0
"""Arrivals are dispatched, and finished requests forgotten, per window of simulated time
(memory bounded whatever the duration, as the SimPy run's hand-off every 10 s)."""


class StreamedStats:
    """What a benchmark keeps of its finished requests when it keeps no table: digests (ms) of
    TTFT, ITL and E2E, completions, input and output tokens, decode time (for the mean ITL),
    the last completion. Every part merges exactly (`merge`), in any order."""

    def __init__(self, table: RequestTable | None = None) -> None:
        self.table = table
        self.ttft, self.itl, self.e2e = SketchDigest(), SketchDigest(), SketchDigest()
        self.num_done = 0
        self.in_tokens = 0
        self.out_tokens = 0
        self.decode = ExactSum()
        """Sum of the completed requests' decode times (first token to finish), s."""
        self.gaps = 0
        """Sum of their output tokens after the first."""
        self.last_finish_s = 0.0

    @property
    def decode_s(self) -> float:
        return self.decode.value()

    def add(self, batch: list[Request]) -> None:
        """Terminal requests (DONE ones count; every one goes to the table, if any)."""
        if self.table is not None and batch:
            self.table.add(batch)
        done = [r for r in batch if r.status is RequestStatus.DONE]
        if not done:
            return
        rows = np.array([(r.arrival_s, r.first_token_s, r.finish_s, r.out_tokens, r.in_tokens)
                         for r in done], dtype=float).reshape(-1, 5)
        first, finish, ttft, itl = latencies_of(rows)
        arrival = rows[:, 0]
        out = rows[:, 3].astype(np.int64)
        self.ttft.add(ttft)
        self.itl.add(itl)
        self.e2e.add((finish - arrival) * MS_PER_S)
        self.num_done += len(done)
        self.in_tokens += int(rows[:, 4].astype(np.int64).sum())
        self.out_tokens += int(out.sum())
        self.gaps += int(np.maximum(out - 1, 0).sum())
        self.decode.add(finish - first)
        self.last_finish_s = max(self.last_finish_s, float(finish.max()))

    def merge(self, other: StreamedStats) -> None:
        self.ttft.merge(other.ttft)
        self.itl.merge(other.itl)
        self.e2e.merge(other.e2e)
        self.num_done += other.num_done
        self.in_tokens += other.in_tokens
        self.out_tokens += other.out_tokens
        self.decode.merge(other.decode)
        self.gaps += other.gaps
        self.last_finish_s = max(self.last_finish_s, other.last_finish_s)


class _Timeout:
    """A `LocalEnv` timeout: something with ``callbacks``, processed at its time (NORMAL)."""

    __slots__ = ("callbacks",)

    def __init__(self) -> None:
        self.callbacks: list[Any] = []


class LocalEnv:
    """The part of `simpy.Environment` a replica uses, for one replica: ``now``, ``timeout``,
    and the queue (``_now``, ``_queue``, ``_eid``) its wake-ups are pushed on directly.

    Queue entries are SimPy's ``(time, priority, event id, event)``; events are processed by
    `OpenLoopReplica`, in SimPy's order.
    """

    __slots__ = ("_now", "_queue", "_eid")

    def __init__(self, now: float = 0.0) -> None:
        self._now = now
        self._queue: list[tuple[float, int, int, Any]] = []
        self._eid = count()

    @property
    def now(self) -> float:
        return self._now

    def timeout(self, delay: float) -> _Timeout:
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        ev = _Timeout()
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), ev))
        return ev


class OpenLoopReplica:
    """One replica fed its own arrivals in a `LocalEnv`.

    Without a front-end cost a replica's only events are its wake-ups, of which one at most
    is live (a later one supersedes it, and SimPy then skips the old one), so the wake-up is
    a slot (``wake_at``) rather than queue entries; with one, the replica's events go on the
    `LocalEnv` queue as in SimPy.
    """

    __slots__ = ("replica", "env", "server", "num_rejected", "wake_at", "_slot")

    def __init__(self, replica: Replica, server: str) -> None:
        if replica.num_outstanding or replica.finished:
            raise ValueError(f"replica '{replica.name}' must be idle and new")
        self.env = LocalEnv(float(replica.env.now))
        self._slot = not replica.has_frontend
        replica.rehome(cast(simpy.Environment, self.env), self._arm if self._slot else None)
        self.replica = replica
        self.server = server
        self.num_rejected = 0
        self.wake_at = math.inf

    def _arm(self, delay: float) -> object:
        self.wake_at = self.env._now + delay
        return _ARMED

    def feed(self, times: list[float], ids: list[int], ins: list[int], outs: list[int]
             ) -> None:
        """Arrivals at ``times`` (increasing, after every arrival fed before)."""
        if not self._slot:
            self._feed_queued(times, ids, ins, outs)
            return
        env = self.env
        rep = self.replica
        submit = rep.submit
        on_wake = rep._on_wake
        server = self.server
        for t, rid, in_tokens, out_tokens in zip(times, ids, ins, outs, strict=True):
            while rep._wake is not None and self.wake_at < t:  # at t: after the arrival
                env._now = self.wake_at
                on_wake(_ARMED)
            env._now = t
            req = Request(rid, in_tokens, out_tokens, server=server)
            req.arrival_s = t
            if not submit(req):
                self.num_rejected += 1

    def _feed_queued(self, times: list[float], ids: list[int], ins: list[int],
                     outs: list[int]) -> None:
        env = self.env
        queue = env._queue
        submit = self.replica.submit
        server = self.server
        for t, rid, in_tokens, out_tokens in zip(times, ids, ins, outs, strict=True):
            while queue:
                head = queue[0]
                if head[0] > t or (head[0] == t and head[1] > NORMAL):
                    break
                heappop(queue)
                env._now = head[0]
                ev = head[3]
                callbacks, ev.callbacks = ev.callbacks, None
                for callback in callbacks:
                    callback(ev)
            env._now = t
            req = Request(rid, in_tokens, out_tokens, server=server)
            req.arrival_s = t
            if not submit(req):
                self.num_rejected += 1

    def drain(self) -> None:
        """Run the replica until nothing is left to happen."""
        env = self.env
        rep = self.replica
        while rep._wake is not None and self._slot:
            env._now = self.wake_at
            rep._on_wake(_ARMED)
        queue = env._queue
        while queue:
            now, _, _, ev = heappop(queue)
            env._now = now
            callbacks, ev.callbacks = ev.callbacks, None
            for callback in callbacks:
                callback(ev)


_ARMED = object()
"""The wake-up token of a slotted replica."""


def simpy_arrival_times(times: np.ndarray, previous_s: float) -> np.ndarray:
    """The times SimPy's arrival process reaches: ``a_k = a_{k-1} + (t_k − a_{k-1})``, from
    ``a_0 = previous_s`` (the previous arrival, or 0)."""
    out = times.copy()
    if out.size == 0:
        return out
    prev = np.empty_like(out)
    prev[0] = previous_s
    prev[1:] = out[:-1]
    bad = np.flatnonzero(prev + (out - prev) != out)
    if bad.size:  # rare: recompute sequentially from the first rounding on
        a = float(prev[bad[0]]) if bad[0] == 0 else float(out[bad[0] - 1])
        tail = out[bad[0]:].tolist()
        for i, t in enumerate(tail):
            a = a + (t - a)
            tail[i] = a
        out[bad[0]:] = tail
    return out


@dataclass(slots=True)
class Streams:
    """The open-loop traffic of a benchmark: arrival times (s, increasing) and (input, output)
    lengths, cut at ``until_s`` or after ``max_requests`` arrivals."""

    times: Iterator[float]
    lengths: Iterator[tuple[int, int]]
    until_s: float = math.inf
    max_requests: int | None = None

    def chunks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(first request id, arrival times, input lengths, output lengths) per chunk: the
        arrivals of one `WINDOW_S` window, at most `CHUNK` of them."""
        first = 0
        last_s = 0.0
        limit = self.max_requests if self.max_requests is not None else math.inf
        buffer = np.empty(0)
        while first < limit:
            if buffer.size == 0:
                buffer = np.fromiter(islice(self.times, CHUNK), float)
                if buffer.size == 0:
                    return
            end_s = min((math.floor(buffer[0] / WINDOW_S) + 1.0) * WINDOW_S, self.until_s)
            cut = int(min(np.searchsorted(buffer, end_s, side="left"), limit - first))
            if cut == 0:
                return  # at or past until_s
            raw, buffer = buffer[:cut], buffer[cut:]
            pairs = np.fromiter(islice(self.lengths, cut), np.dtype((np.int64, 2)), cut)
            times = simpy_arrival_times(raw, last_s)
            yield first, times, pairs[:, 0], pairs[:, 1]
            first += cut
            last_s = float(times[-1])


def is_sorted(times: np.ndarray) -> bool:
    return bool(np.all(times[1:] >= times[:-1])) and (times.size == 0 or times[0] >= 0.0)


def _simulate(group: list[OpenLoopReplica], first_index: int, num_replicas: int,
              streams: Streams) -> tuple[StreamedStats, list[float], int, int]:
    """Run the replicas ``group`` (fleet positions ``first_index``…) over the whole traffic:
    their statistics, ∫running dt of each, preemptions and rejections."""
    kept = StreamedStats()
    for first, times, ins, outs in streams.chunks():
        ids = np.arange(first, first + times.size)
        finished: list[Request] = []
        for j, rep in enumerate(group):
            start = (first_index + j - first) % num_replicas
            rep.feed(times[start::num_replicas].tolist(), ids[start::num_replicas].tolist(),
                     ins[start::num_replicas].tolist(), outs[start::num_replicas].tolist())
            if rep.replica.finished:
                finished.extend(rep.replica.hand_off())
        kept.add(finished)
    finished = []
    for rep in group:
        rep.drain()
        finished.extend(rep.replica.hand_off())
    kept.add(finished)
    areas = [rep.replica.area_running for rep in group]
    return (kept, areas, sum(r.replica.num_preemptions for r in group),
            sum(r.num_rejected for r in group))


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    kept: StreamedStats
    area_running: float
    """∫running dt summed over the replicas in fleet order (all are idle at the end)."""
    num_preemptions: int
    num_rejected: int
    workers: int


def default_workers(num_replicas: int, expected_requests: float) -> int:
    """2 processes on 2 cores or more for a big run (≥ 500,000 requests), or for a run of
    ≥ 20,000 requests unless the 1-minute load average says every core is already busy
    (≥ the core count: there a second process cost more than it saved); else 1. A quiet
    machine right after another job still reads 1–2 on 2 cores, and two processes won there
    (1.87 s against 2.93 s for the 20-replica hour at load 1.7). Only the speed depends on
    it: 1 and 2 processes give identical results."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if cores < 2 or num_replicas < 2 or expected_requests < 20_000:
        return 1
    if expected_requests >= 500_000:
        return 2
    return 2 if os.getloadavg()[0] < cores else 1


def run_open_loop(replicas: list[Replica], server: str, streams: Streams, *,
                  workers: int = 1) -> OpenLoopResult:
    """Simulate ``replicas`` (ready, idle, in fleet order) over ``streams``, round robin, in
    ``workers`` processes (the caller's and ``workers − 1`` forked ones)."""
    reps = [OpenLoopReplica(r, server) for r in replicas]
    n = len(reps)
    workers = max(1, min(workers, n))
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        workers = 1
    bounds = [n * w // workers for w in range(workers + 1)]
    if workers == 1:
        kept, areas, preempted, rejected = _simulate(reps, 0, n, streams)
        return OpenLoopResult(kept, sum(areas), preempted, rejected, 1)
    ctx = multiprocessing.get_context("fork")
    children = []
    for w in range(1, workers):
        recv, send = ctx.Pipe(duplex=False)
        lo, hi = bounds[w], bounds[w + 1]
        proc = ctx.Process(target=_worker, args=(send, reps[lo:hi], lo, n, streams),
                           daemon=True)
        proc.start()
        send.close()
        children.append((proc, recv))
    try:
        parts = [_simulate(reps[:bounds[1]], 0, n, streams)]
        for _proc, recv in children:
            status, payload = recv.recv()
            if status != "ok":
                raise RuntimeError(f"open-loop worker failed:\n{payload}")
            parts.append(payload)
    finally:
        for proc, recv in children:
            recv.close()
            proc.join()
    kept = parts[0][0]
    for part in parts[1:]:
        kept.merge(part[0])
    areas = [a for part in parts for a in part[1]]
    return OpenLoopResult(kept, sum(areas), sum(p[2] for p in parts),
                          sum(p[3] for p in parts), workers)


def _worker(send: Any, group: list[OpenLoopReplica], first_index: int, num_replicas: int,
            streams: Streams) -> None:
    try:
        send.send(("ok", _simulate(group, first_index, num_replicas, streams)))
    except BaseException:  # reported to the parent, which raises
        send.send(("error", traceback.format_exc()))
    finally:
        send.close()
