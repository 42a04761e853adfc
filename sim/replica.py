"""One vLLM-v1-like serving replica, simulated at iteration level with a decode fast path.

Scheduling (each iteration, vLLM v1 with chunked prefill):

1. every running request in decode gets one token (``max_num_seqs <= max_num_batched_tokens``,
   so decodes always fit the token budget);
2. running requests still in prefill get ``min(remaining prompt, budget left)`` tokens, in
   admission order;
3. the KV cache must hold every scheduled token (16-token blocks); if it cannot, the most
   recently admitted running request is preempted (recompute: its blocks are freed and it goes
   back to the *front* of the waiting queue) until it can, and nothing new is admitted in that
   iteration;
4. otherwise waiting requests are admitted FCFS while ``running < max_num_seqs``, budget is left
   and the KV cache can hold their first chunk (the head of the queue blocks the rest).

An iteration takes ``inferno.model.iteration_time_ms(perf, tokens, kv_tokens, samples)``, the
function the analyzer uses, where ``kv_tokens`` sums each scheduled request's context after the
iteration and ``samples`` counts the output tokens it samples. A request reaches the engine
``inferno.model.frontend_delay_ms(perf, in_tokens)`` after `submit` (the API server's front-end
cost; 0 by default): it is accepted or rejected at once, counted outstanding while ingesting,
and its TTFT and E2E run from the submission.
A prompt of L tokens is computed in chunks; the iteration that completes it samples the first
output token (vLLM); each later iteration samples one more. With
``EngineSettings.prefill_emits_token = False`` the twin uses the analyzer's accounting instead
(the prefill emits nothing visible, the first token comes from the first decode iteration).

The event structure and the decode fast path (runs of iterations in one event, their closed-form
boundaries) are described in `sim.engine`, with the settings and the run arithmetic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import count

import simpy

from inferno.model import PerfParms, frontend_delay_ms, iteration_time_ms
from inferno.model.units import MS_PER_S
from sim.engine import (
    DEFAULT_ENGINE,
    LATE,
    DecodeRun,
    EngineSettings,
    ReplicaState,
    Wake,
    check_perf,
)
from sim.kvcache import KVCache, blocks_for
from sim.request import NAN, Request, RequestStatus

__all__ = ["LATE", "EngineSettings", "Replica", "ReplicaState", "check_perf"]

class Replica(DecodeRun):
    """One engine instance. Deployments create and drive it; clients call `submit`.

    Public read-only state: ``state``, ``num_running``, ``num_waiting``, ``num_outstanding``,
    ``finished`` (terminal requests in completion order, less the ``num_handed_off`` first
    ones that `hand_off` gave away), cumulative counters (``num_finished``, ``num_rejected``,
    ``num_aborted``, ``num_preemptions``, ``prompt_tokens_total``,
    ``generation_tokens_total``, ``ttft_sum_s``, ``itl_sum_s``, ``itl_count``, ``e2e_sum_s``,
    ``num_iterations``, ``num_events``) and time integrals (`areas`).
    """

    __slots__ = (
        "env", "name", "deployment", "revision", "accelerator", "perf", "settings", "max_batch",
        "cost_per_hr", "cards", "state", "created_s", "held_from_s", "ready_s", "released_s",
        "on_gone", "finished", "num_handed_off", "num_finished", "num_rejected", "num_aborted",
        "num_preemptions",
        "prompt_tokens_total", "generation_tokens_total", "ttft_sum_s", "itl_sum_s",
        "itl_count", "e2e_sum_s", "num_iterations", "num_events",
        "area_running", "area_waiting", "area_busy",
        "_kv", "_waiting", "_running", "_prefilling", "_heap", "_seq", "_n", "_extra",
        "_first_idx", "_prefill_emits", "_fast", "_max_tokens", "_max_waiting", "_wake",
        "_wake_t", "_t0",
        "_chunks", "_await_first", "_done",
        "_t_area", "_cancelled", "_ingesting", "_arm",
    )

    def __init__(self, env: simpy.Environment, *, name: str, perf: PerfParms, max_batch: int,
                 settings: EngineSettings = DEFAULT_ENGINE, deployment: str = "",
                 revision: int = 0, accelerator: str = "", cost_per_hr: float = 0.0,
                 cards: int = 0, on_gone: Callable[[Replica], None] | None = None) -> None:
        settings.check(max_batch, where=f"replica '{name}'")
        check_perf(perf, where=f"replica '{name}'")
        self.env = env
        self.name = name
        self.deployment = deployment
        self.revision = revision
        self.accelerator = accelerator
        self.perf = perf
        self.settings = settings
        self.max_batch = max_batch
        self.cost_per_hr = cost_per_hr
        """Cost units per hour while capacity is held (starting, ready, draining)."""
        self.cards = cards
        """Physical accelerator cards held (accCount × multiplicity)."""
        self.state = ReplicaState.PENDING
        self.created_s = env.now
        self.held_from_s = math.nan
        self.ready_s = math.nan
        self.released_s = math.nan
        self.on_gone = on_gone
        self.finished: list[Request] = []
        self.num_handed_off = 0
        """Terminal requests dropped from the front of ``finished`` by `hand_off`."""
        self.num_finished = 0
        self.num_rejected = 0
        self.num_aborted = 0
        self.num_preemptions = 0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.ttft_sum_s = 0.0
        self.itl_sum_s = 0.0
        self.itl_count = 0
        self.e2e_sum_s = 0.0
        self.num_iterations = 0
        self.num_events = 0
        self.area_running = 0.0
        self.area_waiting = 0.0
        self.area_busy = 0.0
        self._kv = KVCache(settings.kv_capacity_tokens, settings.block_size)
        self._waiting: deque[Request] = deque()
        self._running: dict[Request, None] = {}
        self._prefilling: list[Request] = []
        self._heap: list[tuple[int, int, Request]] = []
        self._seq = count()
        self._n = 0
        self._extra = 0 if settings.prefill_emits_token else 1
        self._first_idx = 1 + self._extra
        self._prefill_emits = settings.prefill_emits_token
        self._fast = settings.fast_path
        self._max_tokens = settings.budget_tokens
        self._max_waiting = settings.max_waiting
        self._wake: object | None = None
        """The pending wake-up (at most one live; None: idle)."""
        self._arm: Callable[[float], object] = self._arm_simpy
        """Schedules the wake-up ``delay`` s from now and returns it (`rehome`)."""
        self._wake_t = 0.0
        self._t0 = 0.0
        self._run_k = 0
        self._run_a = 0.0
        self._run_c = 0.0
        self._head = 0
        self._chunks: list[tuple[Request, int]] = []
        self._await_first: list[Request] = []
        self._done: list[Request] = []
        self._cancelled: list[Request] = []
        self._t_area = env.now
        self._ingesting: dict[Request, None] | None = {} if (
            perf.frontend_ms > 0.0 or perf.frontend_per_token_ms > 0.0) else None
        """Requests in the front-end (None: the perf data has no front-end cost)."""

    # ------------------------------------------------------------------ client side
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_outstanding(self) -> int:
        ingesting = len(self._ingesting) if self._ingesting else 0
        return len(self._running) + len(self._waiting) + ingesting

    @property
    def has_frontend(self) -> bool:
        """True when requests spend a front-end delay before reaching the engine."""
        return self._ingesting is not None

    @property
    def kv_capacity_blocks(self) -> int:
        """Blocks in the KV cache (-1 = unlimited)."""
        return self._kv.capacity_blocks

    def submit(self, req: Request) -> bool:
        """Queue ``req`` now; False (and the request REJECTED) if it cannot be accepted."""
        now = self.env.now
        req.replica = self.name
        kv = self._kv
        if ((self._max_waiting is not None and len(self._waiting) >= self._max_waiting)
                or (kv.is_limited and not kv.fits(blocks_for(
                    req.in_tokens + req.out_tokens + self._extra - 1, kv.block_size)))):
            req.status = RequestStatus.REJECTED
            self.num_rejected += 1
            if req.on_done is not None:
                req.on_done(req)
            return False
        if self._ingesting is not None:
            req.status = RequestStatus.WAITING
            self._ingesting[req] = None
            delay_s = frontend_delay_ms(self.perf, req.in_tokens) / MS_PER_S
            self.env.timeout(delay_s).callbacks.append(lambda _ev: self._ingested(req))
            return True
        self._enqueue(req, now)
        return True

    def _ingested(self, req: Request) -> None:
        """The front-end is done with ``req`` (unless it was cancelled or aborted meanwhile)."""
        if self._ingesting is not None and req in self._ingesting:
            del self._ingesting[req]
            self._enqueue(req, self.env.now)

    def _enqueue(self, req: Request, now: float) -> None:
        dt = now - self._t_area
        if dt > 0.0:  # _integrate(now), inlined (once per request)
            self.area_running += len(self._running) * dt
            self.area_waiting += len(self._waiting) * dt
            if self._wake is not None:
                self.area_busy += dt
            self._t_area = now
        req.target = req.out_tokens + self._extra
        req.status = RequestStatus.WAITING
        waiting = self._waiting
        waiting.append(req)
        if self._wake is None:
            # Idle: wake now, after every same-instant arrival (LATE priority).
            self._run_k = 0
            self._wake_t = now
            self._wake = self._arm(0.0)
            self.num_events += 1
        elif self._run_k > 1 and len(waiting) == 1 and len(self._running) < self.max_batch:
            k, tk = self._join(now)
            if k < self._run_k:
                self._run_k = k
                self._wake_t = tk
                delay = tk - now
                self._wake = self._arm(delay if delay > 0.0 else 0.0)
                self.num_events += 1

    def _arm_simpy(self, delay: float) -> object:
        return Wake(self.env, delay, self._on_wake)

    def rehome(self, env: simpy.Environment, arm: Callable[[float], object] | None = None
               ) -> None:
        """Run in ``env`` from now on (an idle replica; `sim.openloop`): wake-ups are SimPy
        events there, or whatever ``arm(delay)`` makes of them (its caller then calls
        `_on_wake` with that token at ``env.now + delay``, after any arrival at that time)."""
        if self._wake is not None or self.num_outstanding:
            raise ValueError(f"replica '{self.name}' must be idle to move")
        self.env = env
        self._arm = arm if arm is not None else self._arm_simpy

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Capacity granted: hold it (and pay for it) from now; the caller times the startup."""
        self.state = ReplicaState.STARTING
        self.held_from_s = self.env.now

    def mark_ready(self) -> None:
        self.state = ReplicaState.READY
        self.ready_s = self.env.now
        self._t_area = self.env.now

    def drain(self) -> None:
        """Stop being routed to; go once everything accepted has finished."""
        if self.state in (ReplicaState.DRAINING, ReplicaState.GONE):
            return
        was_holding = self.state in (ReplicaState.STARTING, ReplicaState.READY)
        self.state = ReplicaState.DRAINING
        if not was_holding or (self._wake is None and not self._running and not self._waiting
                               and not self._ingesting):
            self._go(self.env.now)

    def abort(self) -> None:
        """Kill the replica now: everything it holds is ABORTED (grace period over)."""
        if self.state is ReplicaState.GONE:
            return
        now = self.env.now
        self._integrate(now)
        for req, produced in self.in_flight(now):
            self._abort_one(req, now, produced)
        if self._ingesting:
            self._ingesting.clear()
        self._running.clear()
        self._waiting.clear()
        self._prefilling.clear()
        self._wake = None
        self._go(now)
        self._run_callbacks()

    def cancel(self, req: Request) -> None:
        """The client went away: a waiting `req` leaves the queue now; a running one is
        ABORTED at the end of the iteration in progress (vLLM aborts between engine steps),
        which ends the current run there. Anything else is ignored."""
        now = self.env.now
        if self._ingesting and req in self._ingesting:
            del self._ingesting[req]
            self._abort_one(req, now, 0)
            if (self.state is ReplicaState.DRAINING and self._wake is None
                    and not self._running and not self._waiting and not self._ingesting):
                self._go(now)
            self._run_callbacks()
        elif req.status is RequestStatus.WAITING and req in self._waiting:
            self._integrate(now)
            self._waiting.remove(req)
            self._abort_one(req, now, max(0, req.emitted - self._extra))
            self._run_callbacks()
        elif req.status is RequestStatus.RUNNING and req in self._running:
            if req not in self._cancelled:
                self._cancelled.append(req)
            k = self.steps_done(now) + 1
            if self._wake is not None and k < self._run_k:
                self._run_k = k
                tk = self._boundary(k)
                self._wake_t = tk
                delay = tk - now
                self._wake = self._arm(delay if delay > 0.0 else 0.0)
                self.num_events += 1

    def _abort_one(self, req: Request, t: float, produced: int) -> None:
        # Counters stay monotone: what an aborted request produced was produced.
        self.generation_tokens_total += produced
        if req.first_token_s <= t:
            self.prompt_tokens_total += req.in_tokens
        elif req.first_token_s > t:
            req.first_token_s = NAN  # stamped ahead by a fused run that did not get there
        req.status = RequestStatus.ABORTED
        req.finish_s = t
        req.seq = -1
        self.num_aborted += 1
        self.finished.append(req)
        if req.on_done is not None:
            self._done.append(req)

    def _drop_cancelled(self, t: float) -> None:
        """Remove the cancelled running requests after the iterations that ended at `t`."""
        n = self._n
        for req in self._cancelled:
            if req.status is not RequestStatus.RUNNING or req not in self._running:
                continue  # finished at this boundary
            del self._running[req]
            if req.seq >= 0:
                self._kv.remove_decode(req.cbase)
                req.emitted = req.gbase + n
                if req in self._await_first:
                    self._await_first.remove(req)
            else:
                self._prefilling.remove(req)
            self._abort_one(req, t, max(0, req.emitted - self._extra))
        self._cancelled = []

    def hand_off(self) -> list[Request]:
        """The terminal requests not handed off yet, forgotten here (a bounded hand-off).

        Readers of ``finished`` that keep a cursor (`sim.promview.VllmCounters`) count in
        absolute positions: ``num_handed_off + index``. A hand-off must come after every such
        reader has absorbed (`sim.recorder.RunRecorder.flush` runs after the twin's scrape).
        """
        out = self.finished
        self.finished = []
        self.num_handed_off += len(out)
        return out

    def _go(self, t: float) -> None:
        self.state = ReplicaState.GONE
        self.released_s = t
        if self.on_gone is not None:
            self.on_gone(self)

    # ------------------------------------------------------------------ observation
    def areas(self, now: float) -> tuple[float, float, float]:
        """∫running dt, ∫waiting dt, ∫busy dt (request·s, s) up to ``now``."""
        dt = max(0.0, now - self._t_area)
        busy = dt if self._wake is not None else 0.0
        return (self.area_running + len(self._running) * dt,
                self.area_waiting + len(self._waiting) * dt, self.area_busy + busy)

    # ------------------------------------------------------------------ engine
    def _integrate(self, t: float) -> None:
        dt = t - self._t_area
        if dt > 0.0:
            self.area_running += len(self._running) * dt
            self.area_waiting += len(self._waiting) * dt
            if self._wake is not None:
                self.area_busy += dt
            self._t_area = t

    def _on_wake(self, event: object) -> None:
        if event is not self._wake:
            return  # superseded by an earlier boundary
        t = self._wake_t
        dt = t - self._t_area
        if dt > 0.0:  # _integrate(t), inlined (once or twice per request): busy until now
            self.area_running += len(self._running) * dt
            self.area_waiting += len(self._waiting) * dt
            self.area_busy += dt
            self._t_area = t
        self._wake = None
        if self._run_k:
            self._advance(t, self._run_k)
        if self._cancelled:
            self._drop_cancelled(t)
        self._plan(t)
        if self._done:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        done, self._done = self._done, []
        for req in done:
            req.on_done(req)  # type: ignore[misc]

    def _advance(self, t: float, k: int) -> None:
        """Apply the effects of the k iterations that just ended at ``t``."""
        self.num_iterations += k
        n = self._n + k
        self._n = n
        if self._await_first:
            b1 = self._boundary(1)
            for req in self._await_first:
                req.first_token_s = b1
            self._await_first = []
        heap = self._heap
        kv = self._kv
        while heap and heap[0][0] <= n:
            _, seq, req = heappop(heap)
            if req.seq != seq:
                continue  # preempted since
            kv.remove_decode(req.cbase)
            req.seq = -1
            req.computed = req.cbase + n
            req.emitted = req.gbase + n
            self._finish(req, t)
        if self._chunks:
            for req, chunk in self._chunks:
                req.computed += chunk
                if req.computed == req.in_tokens + req.emitted:
                    req.emitted += 1
                    self._prefilling.remove(req)
                    if req.emitted == self._first_idx:
                        req.first_token_s = t
                    if req.emitted >= req.target:
                        self._finish(req, t)
                    else:
                        req.cbase = req.computed - n
                        req.gbase = req.emitted - n
                        req.seq = seq = next(self._seq)
                        heappush(heap, (req.target - req.gbase, seq, req))
                        kv.add_decode(req.cbase)
                        if req.emitted < self._first_idx:
                            self._await_first.append(req)
            self._chunks = []

    def _finish(self, req: Request, t: float) -> None:
        req.finish_s = t
        req.status = RequestStatus.DONE
        del self._running[req]
        self.finished.append(req)
        self.num_finished += 1
        self.prompt_tokens_total += req.in_tokens
        out = req.out_tokens
        self.generation_tokens_total += out
        self.ttft_sum_s += req.first_token_s - req.arrival_s
        self.e2e_sum_s += t - req.arrival_s
        if out > 1:
            self.itl_sum_s += (t - req.first_token_s) / (out - 1)
            self.itl_count += 1
        if req.on_done is not None:
            self._done.append(req)

    def _prefill_blocks(self) -> tuple[list[tuple[Request, int]], int, int]:
        """Chunks for running prefills, their blocks, and the token budget left."""
        budget = self._max_tokens - self._kv.num_decode
        bs = self._kv.block_size
        chunks = []
        blocks = 0
        for req in self._prefilling:
            if budget > 0:
                chunk = min(req.in_tokens + req.emitted - req.computed, budget)
                budget -= chunk
                chunks.append((req, chunk))
                blocks += -(-(req.computed + chunk) // bs)
            else:
                blocks += -(-req.computed // bs)
        return chunks, blocks, budget

    def _plan(self, t: float) -> None:
        """Schedule the next iteration (or run of iterations) starting at ``t``."""
        running = self._running
        waiting = self._waiting
        if not running and not waiting:
            self._run_k = 0
            if self.state is ReplicaState.DRAINING and not self._ingesting:
                self._go(t)
            return
        kv = self._kv
        n = self._n
        if self._prefilling:
            chunks, pblocks, budget = self._prefill_blocks()
        else:
            chunks, pblocks, budget = [], 0, self._max_tokens - kv.num_decode
        preempted = False
        need = 0
        if kv.is_limited:
            if kv.decode_fits(n + 1, pblocks) and not waiting:
                need = 0  # exact count not needed: nothing to preempt or admit
            else:
                need = kv.decode_blocks(n + 1) + pblocks
                while need > kv.capacity_blocks:
                    self._preempt_last(n)
                    preempted = True
                    chunks, pblocks, budget = self._prefill_blocks()
                    need = kv.decode_blocks(n + 1) + pblocks
        if waiting and budget > 0 and len(running) < self.max_batch and (
                not preempted or not running):
            bs = kv.block_size
            cap = kv.capacity_blocks
            limited = kv.is_limited
            while waiting and budget > 0 and len(running) < self.max_batch:
                req = waiting[0]
                chunk = min(req.in_tokens + req.emitted, budget)
                blocks = -(-chunk // bs)
                if limited and need + blocks > cap:
                    break
                waiting.popleft()
                running[req] = None
                self._prefilling.append(req)
                chunks.append((req, chunk))
                req.status = RequestStatus.RUNNING
                if req.first_scheduled_s != req.first_scheduled_s:  # NaN: first admission
                    req.first_scheduled_s = t
                budget -= chunk
                need += blocks
        nd = kv.num_decode
        self._t0 = t
        self._head = 0
        if chunks:
            kv_tokens = kv.sum_cbase + nd * (n + 1)
            tokens = nd
            samples = nd
            for req, chunk in chunks:
                tokens += chunk
                kv_tokens += req.computed + chunk
                samples += req.computed + chunk == req.in_tokens + req.emitted
            self._run_k = 1
            self._run_a = iteration_time_ms(self.perf, tokens, kv_tokens, samples)
            self._run_c = 0.0
            if waiting or preempted or not self._fuse(chunks, t, n):
                self._chunks = chunks
        else:
            self._plan_decodes(n, t, 0 if preempted else None)
        tk = self._boundary(self._run_k)
        self._wake_t = tk
        delay = tk - self.env.now
        self._wake = self._arm(delay if delay > 0.0 else 0.0)
        self.num_events += 1

    def _fuse(self, chunks: list[tuple[Request, int]], t: float, n: int) -> bool:
        """Plan the prefill iteration just sized (``_run_a``) and the decode run after it as
        one run, when nothing can change in between but an arrival (which truncates the run
        at the prefill's end, as it would join there): every chunk completes its prompt and
        none its output, no prefill is left, no request waits (checked by the caller).

        The prefill's effects are applied now, as of its end ``b1``: the requests join the
        decode group with offsets that make their tokens before ``b1`` what they were, and
        their first tokens are stamped ``b1`` (observers compare stamps with their time).
        Boundaries and stamps are those of two separate runs; False: not fusable."""
        if not self._prefill_emits or len(chunks) != len(self._prefilling):
            return False
        for req, chunk in chunks:
            if (req.computed + chunk != req.in_tokens + req.emitted
                    or req.emitted + 1 >= req.target):
                return False
        b1 = self._boundary(1)
        n1 = n + 1
        kv = self._kv
        heap = self._heap
        for req, chunk in chunks:
            req.computed += chunk
            req.emitted += 1
            if req.emitted == self._first_idx:
                req.first_token_s = b1
            req.cbase = req.computed - n1
            req.gbase = req.emitted - n1
            req.seq = seq = next(self._seq)
            heappush(heap, (req.target - req.gbase, seq, req))
            kv.add_decode(req.cbase)
        self._prefilling.clear()
        self._chunks = []
        # The decode run from b1, exactly as planned there, when nothing completes at b1 and
        # its first iteration fits the KV cache (else, or when stepping, b1 ends the run and
        # plans next).
        while heap[0][1] != heap[0][2].seq:
            heappop(heap)
        if (not self._fast or heap[0][0] <= n1
                or (kv.is_limited and not kv.decode_fits(n1 + 1))):
            return True
        self._plan_decodes(n1, b1, None)
        self._run_k += 1
        self._head = 1
        return True

    def _preempt_last(self, n: int) -> None:
        """Recompute-preempt the most recently admitted running request."""
        req = next(reversed(self._running))
        del self._running[req]
        if req.seq >= 0:
            self._kv.remove_decode(req.cbase)
            req.emitted = req.gbase + n
            req.seq = -1
            if req in self._await_first:
                self._await_first.remove(req)
        else:
            self._prefilling.remove(req)
        req.computed = 0
        req.num_preemptions += 1
        req.status = RequestStatus.WAITING
        self.num_preemptions += 1
        self._waiting.appendleft(req)
