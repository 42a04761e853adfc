"""What the tuner sees of one replica, and the model's prediction of it, h(x)
(docs/design/optimizer-model.md §6.2–6.3).

h(x) is the analyzer's open-loop chunked (G7) prediction of mean TTFT and ITL at the replica's
offered rate, vectorised over parameter vectors × observations in one `analyze_batch` call,
together with the load ratio offered / max rate that the saturation guards use. The TTFT is
taken in the observation's first-token convention (`FirstToken`): fitting the analyzer's own
convention to vLLM-style TTFTs biases β by about −30 % (docs/tuner.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np

from inferno.analyzer import QueueBatch, analyze_batch
from inferno.analyzer.service import ServiceParams, instant_prefill_ms
from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfModel, PerfParms
from inferno.model.units import rpm_to_rps


class FirstToken(StrEnum):
    """Which iteration the world's TTFT counts the first output token from (h(x)'s TTFT)."""

    DECODE = "decode"
    """The analyzer's accounting: TTFT = W + prefill + ITL (one decode step after prefill)."""
    PREFILL = "prefill"
    """vLLM (and the twin): the iteration that completes the prefill samples the first token,
    and an arrival that finds the replica busy first waits for the running iteration to end
    (mean residual ≈ ITL/2), so TTFT ≈ W + prefill + P(busy)·ITL/2, with
    P(busy) ≈ 1 − exp(−X̄) (Poisson occupancy at the mean batch X̄). Against the twin: within
    1–3.5 % from 2 % to 60 % of capacity (docs/tuner.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TunerObservation:
    """Mean behaviour of one replica over a collection window."""

    model: str
    accelerator: str
    arrival_rpm: float
    """Offered request rate to this replica."""
    in_tokens: float
    """Average input tokens per request (L)."""
    out_tokens: float
    """Average output tokens per request (m)."""
    max_batch: int
    """Max requests in service (N)."""
    max_queue: int
    """Waiting slots beyond the batch (Q)."""
    ttft_ms: float
    """Observed mean time to first token."""
    itl_ms: float
    """Observed mean inter-token latency."""
    throughput_rpm: float | None = None
    """Completed requests per minute, when the world reports it."""
    waiting_requests: float | None = None
    """Mean requests waiting for a batch slot, when the world reports it."""
    max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS
    """Token budget per iteration of the chunked model."""
    time_s: float = 0.0
    """When the window ended (for logs)."""
    first_token: FirstToken = FirstToken.DECODE
    """How the world that measured ``ttft_ms`` counts the first token."""
    is_transient: bool = False
    """The replica set changed during the window (a replica became ready or left, or the
    accelerator or max batch changed): the per-replica rate divides by a count that did not
    hold for the whole window, and the queue is not stationary."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.accelerator)

    @property
    def rate_rps(self) -> float:
        return rpm_to_rps(self.arrival_rpm)


class SkipReason(StrEnum):
    """Why an observation was not used; each is counted per pair."""

    INVALID = "invalid"
    """Non-positive or missing rate, tokens, batch, TTFT or ITL (§6.2)."""
    TRANSIENT = "transient"
    """The replica set changed during the window (`TunerObservation.is_transient`)."""
    ZERO_THROUGHPUT = "zero_throughput"
    """The replica completed nothing: its latencies describe no finished request."""
    SATURATED = "saturated"
    """Observed overload: throughput short of the offered rate, or a full batch waiting."""
    MODEL_SATURATED = "model_saturated"
    """At the current estimate the model is past `max_load_ratio`: h(x) is not linearisable."""
    JACOBIAN_SATURATED = "jacobian_saturated"
    """Both difference probes of some parameter crossed the saturation boundary."""
    ILL_CONDITIONED = "ill_conditioned"
    """The window cannot identify α, β, γ (condition number above the guard)."""


def check_observation(obs: TunerObservation, min_throughput_ratio: float) -> SkipReason | None:
    """Model-free screening: the reason to drop ``obs``, or None if it may be used.

    Saturation is judged on what was observed, never on the (possibly wrong) estimate:
    completions below ``min_throughput_ratio`` of the offered rate, or a mean queue of at
    least a whole batch (the replica is at or past its capacity, the window is transient).
    """
    values = (obs.arrival_rpm, obs.in_tokens, obs.out_tokens, obs.ttft_ms, obs.itl_ms)
    if not all(np.isfinite(values)) or min(values) <= 0 or obs.max_batch <= 0 or (
            obs.max_queue < 0 or obs.out_tokens < 1):
        return SkipReason.INVALID
    if obs.is_transient:
        return SkipReason.TRANSIENT
    if obs.throughput_rpm is not None:
        if obs.throughput_rpm <= 0:
            return SkipReason.ZERO_THROUGHPUT
        if obs.throughput_rpm < min_throughput_ratio * obs.arrival_rpm:
            return SkipReason.SATURATED
    if obs.waiting_requests is not None and obs.waiting_requests >= obs.max_batch:
        return SkipReason.SATURATED
    return None


MAX_PARAM_MS = 1e9
"""Parameters at or above this (ms) are outside any physical range and not evaluated."""


class Prediction(NamedTuple):
    """h(x) for P parameter vectors × n observations; every array has shape (P, n)."""

    ttft_ms: np.ndarray
    itl_ms: np.ndarray
    load_ratio: np.ndarray
    """Offered rate / the model's max rate; >= 1 means the model cannot carry the load."""


class ObservationSet:
    """Observations fixed as arrays so h(x) costs one analyzer call per set of x."""

    def __init__(self, observations: Sequence[TunerObservation]) -> None:
        self.observations = tuple(observations)
        obs = self.observations
        self.rate_rps = np.array([o.rate_rps for o in obs], dtype=float)
        self.ttft_ms = np.array([o.ttft_ms for o in obs], dtype=float)
        self.itl_ms = np.array([o.itl_ms for o in obs], dtype=float)
        self._max_batch = np.array([o.max_batch for o in obs], dtype=np.int64)
        self._max_queue = np.array([o.max_queue for o in obs], dtype=np.int64)
        self._in_tokens = np.array([o.in_tokens for o in obs], dtype=float)
        self._out_tokens = np.array([o.out_tokens for o in obs], dtype=float)
        self._max_num_tokens = np.array([o.max_num_tokens for o in obs], dtype=np.int64)
        self._is_prefill_token = np.array([o.first_token is FirstToken.PREFILL for o in obs],
                                          dtype=bool)

    def __len__(self) -> int:
        return len(self.observations)

    def measured(self) -> np.ndarray:
        """Observed [TTFT, ITL] per observation (ms), shape (n, 2)."""
        return np.stack([self.ttft_ms, self.itl_ms], axis=1)

    def predict(self, params: np.ndarray) -> Prediction:
        """h(x) at each row of ``params`` (shape (P, 3): α, β, γ in ms) for every observation.

        Non-finite model output (a parameter vector far outside the physical range) is
        returned as inf with load ratio inf, which every caller treats as unusable.
        """
        x = np.atleast_2d(np.asarray(params, dtype=float))
        p, n = x.shape[0], len(self)
        # Rows the analyzer must not see (a search that wandered off) are evaluated at a
        # harmless stand-in and reported as inf.
        is_usable = np.all(np.isfinite(x) & (x > 0) & (x < MAX_PARAM_MS), axis=1)
        x = np.where(is_usable[:, None], x, 1.0)

        def tile(a: np.ndarray) -> np.ndarray:
            return np.tile(a, p)

        batch = QueueBatch(
            max_batch=tile(self._max_batch), max_queue=tile(self._max_queue),
            in_tokens=tile(self._in_tokens), out_tokens=tile(self._out_tokens),
            alpha_ms=np.repeat(x[:, 0], n), beta_ms=np.repeat(x[:, 1], n),
            gamma_ms=np.repeat(x[:, 2], n), max_num_tokens=tile(self._max_num_tokens),
            perf_model=PerfModel.CHUNKED)
        with np.errstate(all="ignore"):
            m = analyze_batch(batch, tile(self.rate_rps))
            itl = np.asarray(m.itl_ms, dtype=float).reshape(p, n)
            ttft = np.asarray(m.ttft_ms, dtype=float).reshape(p, n)
            if self._is_prefill_token.any():
                ttft = np.where(self._is_prefill_token,
                                ttft + _prefill_token_shift(batch, m.num_in_service, itl), ttft)
            ratio = tile(self.rate_rps).reshape(p, n) / np.asarray(
                m.max_rate_rps, dtype=float).reshape(p, n)
        bad = ~(np.isfinite(ttft) & np.isfinite(itl) & np.isfinite(ratio)) | ~is_usable[:, None]
        return Prediction(np.where(bad, np.inf, ttft), np.where(bad, np.inf, itl),
                          np.where(bad, np.inf, ratio))


def _prefill_token_shift(batch: QueueBatch, n_srv: np.ndarray, itl_ms: np.ndarray
                         ) -> np.ndarray:
    """TTFT(`FirstToken.PREFILL`) − the analyzer's TTFT, shaped like ``itl_ms`` (P, n).

    Three terms, each checked against the twin (docs/tuner.md): the analyzer's closing decode
    step goes (−ITL); an arrival that finds the replica busy waits for the running iteration,
    whose mean residual is about ITL/2 (+ITL/2·P(busy), P(busy) ≈ 1 − exp(−X̄)); and its
    prefill iterations carry the X̄ requests it finds in service (PASTA), where the analyzer
    counts X̄ − 1 (+ prefill(X̄ + 1) − prefill(X̄)).
    """
    x = np.asarray(n_srv, dtype=float)
    service = ServiceParams(alpha_ms=batch.alpha_ms, beta_ms=batch.beta_ms,
                            gamma_ms=batch.gamma_ms, in_tokens=batch.in_tokens,
                            out_tokens=batch.out_tokens, max_batch=batch.max_batch,
                            max_num_tokens=batch.max_num_tokens)
    one_more = (instant_prefill_ms(PerfModel.CHUNKED, x + 1.0, service)
                - instant_prefill_ms(PerfModel.CHUNKED, x, service))
    busy = -np.expm1(-x)
    return (one_more.reshape(itl_ms.shape) - itl_ms * (1.0 - 0.5 * busy.reshape(itl_ms.shape)))


def as_array(perf: PerfParms) -> np.ndarray:
    """[α, β, γ] (ms) of ``perf``."""
    return np.array([perf.alpha_ms, perf.beta_ms, perf.gamma_ms], dtype=float)


def as_parms(x: np.ndarray) -> PerfParms:
    """`PerfParms` from [α, β, γ] (ms)."""
    return PerfParms(alpha_ms=float(x[0]), beta_ms=float(x[1]), gamma_ms=float(x[2]))
