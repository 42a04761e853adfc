"""The engine's settings and the arithmetic of a decode run (`sim.replica.Replica`'s core).

Event structure. A replica is a callback-driven state machine: at most one pending *wake* event,
processed with priority `LATE` so that, at the same instant, arrivals (SimPy ``NORMAL``) are
queued before the iteration boundary that may admit them. Between an admission and the next
completion a pure-decode batch is fixed, so the fast path runs K decode iterations in one event:
iteration i of the run reads ``S0 + B·i`` KV tokens, hence the run's boundaries
``b_k = t0 + k·A + c·k(k−1)/2`` (A the first iteration's time, c its growth per iteration) are a
closed form. K stops at the first completion or at the first iteration whose KV blocks would not
fit. An arrival that could be admitted lands on the first boundary ``b_k >= t_arrival`` (k >= 1,
solved from the quadratic) and truncates the run there; the result equals stepping every
iteration (tests/sim/test_sim_replica.py checks per-request stamps to 1e-9 s). Completion callbacks
(`Request.on_done`) run after the next iteration has been planned, so a closed-loop user's next
request joins the iteration after.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from heapq import heappop, heappush

import simpy
from simpy.events import Event

from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfParms, StepShape, iteration_time_ms
from inferno.model.units import MS_PER_S
from sim.kvcache import KVCache
from sim.request import Request

LATE = 2
"""SimPy priority of replica wake-ups: after NORMAL (1) events at the same instant."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """vLLM engine arguments of a replica (the max batch comes from the deployment).

    Also a scenario's ``twin.engine`` section (`sim.scenario`): its keys are the fields
    below but for the engine's semantics (`prefill_emits_token`, `fast_path`), which are
    not YAML keys; there the token budget defaults to None, the model data's value, which
    `for_server` resolves per server."""

    max_num_batched_tokens: int | None = DEFAULT_MAX_NUM_TOKENS
    """Token budget per iteration (vLLM default with chunked prefill is 8192); None = the
    model data's maxNumTokens, resolved by `for_server` (which also reads 0 so, as scenarios
    always have); a replica given None uses the data's default, 8192."""
    block_size: int = 16
    """KV-cache block size in tokens (vLLM default)."""
    kv_capacity_tokens: int | None = None
    """KV-cache size in tokens; None = unlimited, like the analyzer's queue model.
    See `sim.kvcache.kv_tokens_from_memory` to derive it from accelerator memory."""
    max_waiting: int | None = None
    """Waiting-queue bound (the analyzer's Q); arrivals beyond it are rejected. None = none,
    as in vLLM."""
    prefill_emits_token: bool = field(default=True, metadata={"internal": True})
    """True: vLLM semantics (prefill samples the first token). False: analyzer accounting."""
    fast_path: bool = field(default=True, metadata={"internal": True})
    """Advance pure-decode runs in one event; False steps every iteration (for tests)."""

    @property
    def budget_tokens(self) -> int:
        """The token budget per iteration, None resolved to the model data's default."""
        tokens = self.max_num_batched_tokens
        return DEFAULT_MAX_NUM_TOKENS if tokens is None else tokens

    def for_server(self, max_num_tokens: int, kv_capacity_tokens: int | None = None
                   ) -> EngineSettings:
        """These settings for one server: a None (or 0) token budget becomes the model data's
        `max_num_tokens`, and the server's own `kv_capacity_tokens`, when given, replaces
        the shared one."""
        return replace(
            self, max_num_batched_tokens=self.max_num_batched_tokens or max_num_tokens,
            kv_capacity_tokens=(kv_capacity_tokens if kv_capacity_tokens is not None
                                else self.kv_capacity_tokens))

    def check(self, max_batch: int, where: str = "engine") -> None:
        """Raise ConfigError naming the field when a setting is out of range."""
        if max_batch < 1:
            raise ConfigError(f"{where}.max_batch must be >= 1, got {max_batch}")
        if self.budget_tokens < max_batch:
            raise ConfigError(f"{where}.max_num_batched_tokens must be >= max_batch "
                              f"({max_batch}), got {self.budget_tokens}")
        if self.block_size < 1:
            raise ConfigError(f"{where}.block_size must be >= 1, got {self.block_size}")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size:
            raise ConfigError(f"{where}.kv_capacity_tokens must be >= block_size, got "
                              f"{self.kv_capacity_tokens}")
        if self.max_waiting is not None and self.max_waiting < 0:
            raise ConfigError(f"{where}.max_waiting must be >= 0, got {self.max_waiting}")


DEFAULT_ENGINE = EngineSettings()


def check_perf(perf: PerfParms, where: str) -> None:
    """Raise ConfigError unless every iteration takes a positive time."""
    if perf.is_zero:
        raise ConfigError(f"{where}: perfParms missing (alpha = beta = gamma = 0)")
    for name in ("alpha_ms", "beta_ms", "gamma_ms", "frontend_ms", "frontend_per_token_ms",
                 "stream_ms", "knee_tokens", "beta_high_ms"):
        value = getattr(perf, name)
        if not value >= 0.0 or math.isinf(value):
            raise ConfigError(f"{where}: perfParms.{name} must be finite and >= 0, got {value}")
    if perf.shape is StepShape.PIECEWISE and perf.beta_high_ms <= 0.0:
        raise ConfigError(f"{where}: perfParms.beta_high_ms must be > 0 with the piecewise "
                          f"shape, got {perf.beta_high_ms}")
    if perf.alpha_ms + perf.beta_ms <= 0.0:
        raise ConfigError(f"{where}: perfParms alpha + beta must be > 0, got "
                          f"{perf.alpha_ms} + {perf.beta_ms}")


class ReplicaState(StrEnum):
    PENDING = "pending"
    """Created, waiting for accelerator capacity."""
    STARTING = "starting"
    """Holding accelerators, loading (startup delay)."""
    READY = "ready"
    DRAINING = "draining"
    """Removed from the router; finishes what it holds, then goes."""
    GONE = "gone"


class Wake(Event):
    """A pre-triggered event processed after ``delay`` with priority `LATE`.

    Same initialisation as `simpy.events.Timeout`, which hard-codes NORMAL priority.
    """

    def __init__(self, env: simpy.Environment, delay: float,
                 callback: Callable[[Event], None]) -> None:
        self.env = env
        self.callbacks = [callback]
        self._value = None
        self._ok = True
        # env.schedule(self, LATE, delay), inlined: one wake-up per iteration run is the
        # engine's most frequent allocation (same queue entry, same event id order).
        heappush(env._queue,  # type: ignore[misc]
                 (env._now + delay, LATE, next(env._eid), self))


class DecodeRun:
    """The current run of a replica: ``_run_k`` iterations from ``_t0``, the first taking
    ``_run_a`` ms and each next one ``_run_c`` ms more (after a fused prefill head when
    ``_head`` is 1); its boundaries, where an arrival joins it, how far it has got, and what
    an observer reads of it at any time (tokens produced, KV blocks in use)."""

    __slots__ = ("_t0", "_run_k", "_run_a", "_run_c", "_head")
    _t0: float
    _run_k: int
    _run_a: float
    _run_c: float
    _head: int
    """1 when the run opens with a prefill iteration ending at ``_t0`` (its decode
    iterations follow from there), else 0."""
    _wake: object | None
    _wake_t: float
    _kv: KVCache
    _heap: list[tuple[int, int, Request]]
    _fast: bool
    perf: PerfParms
    _n: int
    _extra: int
    _chunks: list[tuple[Request, int]]
    _prefilling: list[Request]
    _running: dict[Request, None]
    _waiting: deque[Request]
    _ingesting: dict[Request, None] | None

    def _boundary(self, k: int) -> float:
        """End time of iteration k (1-based) of the current run."""
        k -= self._head  # a head (prefill) iteration ends at _t0, where the decodes start
        return self._t0 + (k * self._run_a + self._run_c * (k * (k - 1) * 0.5)) / MS_PER_S

    def _join_index(self, t: float) -> int:
        """Smallest k >= 1 with b_k >= t in the current run (an arrival at t joins there)."""
        return self._join(t)[0]

    def _join(self, t: float) -> tuple[int, float]:
        """`_join_index` and that boundary (`_boundary`'s arithmetic, inlined: once per
        arrival)."""
        head = self._head
        t0, a, c = self._t0, self._run_a, self._run_c
        if head and t <= t0:
            return 1, self._boundary(1)
        target_ms = (t - t0) * MS_PER_S
        if c > 0.0:
            h = a - 0.5 * c
            kf = (-h + math.sqrt(h * h + 2.0 * c * target_ms)) / c
        else:
            kf = target_ms / a if a > 0.0 else 1.0
        k = max(1, math.ceil(kf)) + head
        while k > 1 + head:
            j = k - 1 - head
            if t0 + (j * a + c * (j * (j - 1) * 0.5)) / MS_PER_S < t:
                break
            k -= 1
        while True:
            j = k - head
            b = t0 + (j * a + c * (j * (j - 1) * 0.5)) / MS_PER_S
            if b >= t:
                return k, b
            k += 1

    def steps_done(self, t: float) -> int:
        """Iterations of the current run completed by time ``t``."""
        k_max = self._run_k
        if self._wake is None or k_max == 0 or t < self._boundary(1):
            return 0
        k = min(k_max, max(1, self._join_index(t)))
        while k > 0 and self._boundary(k) > t:
            k -= 1
        return k

    def next_boundary(self, t: float) -> float:
        """End of the iteration in progress at ``t``: when tokens may next appear (inf: idle).

        Valid once every event before ``t`` is processed; the end of the iteration in progress
        never moves (an arrival joins at a boundary), so a streaming observer can sleep until it.
        """
        if self._wake is None:
            return math.inf
        k = self.steps_done(t) + 1
        return self._boundary(k) if k <= self._run_k else self._wake_t

    def _plan_decodes(self, n: int, t0: float, k: int | None) -> None:
        """A run of decode iterations from ``t0`` at decode counter ``n``: until the first
        completion or the KV limit on the fast path (``k`` None), else ``k or 1`` of them."""
        kv = self._kv
        nd = kv.num_decode
        s0 = kv.sum_cbase + nd * (n + 1)
        a = iteration_time_ms(self.perf, nd, s0, nd)
        if k is None:
            k = 1
            if self._fast:
                heap = self._heap
                while heap[0][1] != heap[0][2].seq:
                    heappop(heap)
                k = heap[0][0] - n
                if k > 1 and kv.is_limited:
                    k = kv.max_decode_steps(n, k)
        k = k or 1
        self._t0 = t0
        self._run_k = k
        self._run_a = a
        # The run's iteration times are affine in kv_tokens (which grows by nd per
        # iteration), so the growth per iteration comes from the same shared function.
        self._run_c = iteration_time_ms(self.perf, nd, s0 + nd, nd) - a if k > 1 else 0.0

    def kv_blocks_used(self, t: float) -> int:
        """KV blocks allocated at time ``t`` (for the iteration in progress)."""
        if self._wake is None or self._run_k == 0:
            return 0
        kv = self._kv
        if self._chunks:
            bs = kv.block_size
            chunk_of = {id(req): c for req, c in self._chunks}
            return kv.decode_blocks(self._n + 1) + sum(
                -(-(req.computed + chunk_of.get(id(req), 0)) // bs) for req in self._prefilling)
        j = self.steps_done(t)
        return kv.decode_blocks(self._n + min(j + 1, self._run_k))

    def kv_usage(self, t: float) -> float:
        """Fraction of KV blocks in use at ``t`` (0 when the cache is unlimited)."""
        cap = self._kv.capacity_blocks
        return self.kv_blocks_used(t) / cap if cap > 0 else 0.0

    def in_flight(self, t: float) -> list[tuple[Request, int]]:
        """Unfinished requests with the output tokens they have produced by time ``t``."""
        j = self.steps_done(t) if (self._wake is not None and not self._chunks) else 0
        x = self._n + j
        out = []
        for req in self._running:
            emitted = req.gbase + x if req.seq >= 0 else req.emitted
            out.append((req, max(0, emitted - self._extra)))
        out.extend((req, max(0, req.emitted - self._extra)) for req in self._waiting)
        if self._ingesting:
            out.extend((req, 0) for req in self._ingesting)
        return out
