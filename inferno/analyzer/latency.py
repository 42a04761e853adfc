"""Latency of one replica as vLLM (and the twin) measure it: mean and distribution of TTFT/ITL.

The upstream models (`PerfModel.CLASSIC`, `PerfModel.CHUNKED`) turn the queue's means into
TTFT = W + prefill + ITL (`service.request_metrics`). `PerfModel.VLLM` models what a request
goes through in a continuous-batching engine that schedules between iterations
(docs/validation.md has the derivation and the checks against the twin):

* an arrival that finds n < N requests in the replica waits for the iteration in progress
  (length-biased: a prefill iteration is long), then its prefill iteration runs with the n
  others decoding, together with the prompts that arrived in the same iteration; the
  iteration that completes the prefill samples the first token;
* an arrival that finds all N slots busy waits for a slot. With fixed lengths a slot's
  service is near-deterministic (D = τ(N)), so the wait for the k-th free slot is the k-th
  order statistic of N uniform residuals on [0, D] (Crommelin's M/D/c structure); the
  number ahead is geometric with the chain's mean scaled by Cosmetatos' M/D/c correction;
* the birth–death chain gives the batch-size distribution; a first-order correction for the
  shape of a request's work over its life (a prefill lump up front widens the batch-size
  distribution, a KV read growing with the context narrows it) scales the probability of a
  full batch as P^(1/v);
* a request's ITL is the mean of its decode iterations: one decode per request in the
  batch it finds (the batch is persistent over a request's life: averaging over the life
  narrows the distribution less than an M/D/∞ count's √(2/3), docs/validation.md), plus the
  prefill iterations of the requests that arrive while it decodes (Poisson).

Pure numpy over (C,) candidate arrays, no Python loops over states; times ms, rates req/ms.
Nothing here depends on the optimizer or on the queue kernels' internals: the inputs are a
`QueueSolution` and, for distributions, the in-service state probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from inferno.analyzer.queueing import QueueSolution
from inferno.analyzer.service import (
    MetricCoefficients,
    ServiceParams,
    decode_token_work_ms,
    excess_work_ms,
    fast_request_metrics,
    metric_coefficients,
    num_chunks,
    service_time_ms,
    vllm_prefill_work_ms,
)
from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfModel

__all__ = [
    "Latency",
    "LatencyCoefficients",
    "LatencyDistribution",
    "latency_coefficients",
    "queue_metrics",
]

CO_ADMITTED_TERMS = 4
"""Prompts admitted with an arrival's are Poisson; 0..2 exactly, 3 or more lumped at 3."""


_COLUMNS = (
    ("alpha_ms", "α (ms)."),
    ("out_tokens", "m."),
    ("num_servers", "N."),
    ("num_queue", "Q."),
    ("decode_ms", "w_d: a request's work in one decode iteration."),
    ("prefill_ms", "w_pre(1): a one-chunk prefill's work."),
    ("delta_ms", "δ: mean work per request per iteration (one-chunk prefill)."),
    ("full_prefill_ms", "Prefill latency when admitted into a full batch (N − 1 decoding)."),
    ("full_service_ms", "D = τ(N): time in service at a full batch."),
    ("spread_profile", "E_t/λ: first-order dispersion excess of the batch size per unit rate "
                       "for the request's real work profile (prefill lump first, then KV reads "
                       "growing with the context)."),
    ("spread_flat", "E_f/λ = the request's total work: the same for the chain's flat profile."),
    ("cosmetatos", "(N−1)(√(4+5N) − 2)/(16N): Cosmetatos' M/D/c term without (1−ρ)/ρ."),
    ("one_chunk", "1 where every batch size up to N prefills in one chunk, else 0."),
    ("frontend_ms", "Front-end cost α0 + α1·L before the engine sees the request."),
)


class LatencyCoefficients:
    """Per-candidate constants of the latency model (see `latency_coefficients`).

    The vllm model's constants are one (F, C) array, so `take` (done on every search step)
    is a single indexing; the upstream models keep their `MetricCoefficients`.
    """

    __slots__ = ("_base", "_multi", "_rows", "cols", "model", "upstream")

    # the rows of ``cols`` (`_COLUMNS`), attached as properties below the class
    alpha_ms: np.ndarray
    out_tokens: np.ndarray
    num_servers: np.ndarray
    num_queue: np.ndarray
    decode_ms: np.ndarray
    prefill_ms: np.ndarray
    delta_ms: np.ndarray
    full_prefill_ms: np.ndarray
    full_service_ms: np.ndarray
    spread_profile: np.ndarray
    spread_flat: np.ndarray
    cosmetatos: np.ndarray
    one_chunk: np.ndarray
    frontend_ms: np.ndarray

    def __init__(self, model: PerfModel, upstream: MetricCoefficients | None,
                 cols: np.ndarray, base: ServiceParams, rows: np.ndarray | None) -> None:
        self.model = model
        self.upstream = upstream
        self.cols = cols
        self._base = base
        self._rows = rows
        self._multi: tuple[np.ndarray, ServiceParams] | None = None

    def __len__(self) -> int:
        return int(self.cols.shape[1])

    @property
    def params(self) -> ServiceParams:
        """The candidates' `ServiceParams` (materialised on demand: only multi-chunk rows
        and distributions need them)."""
        return self._base if self._rows is None else self._base.take(self._rows)

    def multi_chunk(self) -> tuple[np.ndarray, ServiceParams]:
        """(rows whose prefill may take several chunks, their `ServiceParams`), kept: the
        search's series phase evaluates the same candidates some 20 times."""
        if self._multi is None:
            idx = (self.one_chunk == 0).nonzero()[0]
            self._multi = idx, self._base.take(idx if self._rows is None else self._rows[idx])
        return self._multi

    def take(self, idx: np.ndarray) -> LatencyCoefficients:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = idx.nonzero()[0]
        rows = idx if self._rows is None else self._rows[idx]
        upstream = None if self.upstream is None else self.upstream.take(idx)
        return LatencyCoefficients(self.model, upstream, self.cols[:, idx], self._base, rows)


def _column(i: int, doc: str) -> property:
    """Row ``i`` of ``cols`` as a read-only attribute."""

    def get(self: LatencyCoefficients) -> np.ndarray:
        return self.cols[i]

    return property(get, doc=doc)


for _i, (_name, _doc) in enumerate(_COLUMNS):
    setattr(LatencyCoefficients, _name, _column(_i, _doc))


def latency_coefficients(model: PerfModel, p: ServiceParams, num_queue: np.ndarray
                         ) -> LatencyCoefficients:
    """Precompute `LatencyCoefficients` for (C,)-shaped ``p`` and queue slots Q."""
    p = p.arrays()
    if model is not PerfModel.VLLM:  # the upstream extraction needs no columns
        return LatencyCoefficients(model, metric_coefficients(model, p),
                                   np.zeros((0, p.alpha_ms.size)), p, None)
    n = np.maximum(p.max_batch, 1.0)
    m = p.out_tokens
    w_d = decode_token_work_ms(p)
    w_pre = vllm_prefill_work_ms(np.ones_like(n), p)
    decodes = m - 1.0
    # Decode x (1..m−1) reads L + x KV tokens and comes x iterations after the prefill, in a
    # window of m iterations: first-order count covariance weights (1 − x/m), the prefill 1.
    s0 = decodes - decodes * m / (2.0 * m)
    s1 = decodes * m / 2.0 - decodes * m * (2.0 * decodes + 1.0) / (6.0 * m)
    spread_profile = 2.0 * w_pre + 2.0 * ((p.beta_ms + p.stream_ms + p.gamma_ms * p.in_tokens)
                                          * s0
                                          + p.gamma_ms * s1)
    c_n = num_chunks(n, p.in_tokens, m, p.max_num_tokens).astype(float)
    full_prefill = c_n * (p.alpha_ms + (n - 1.0) * w_d) + vllm_prefill_work_ms(c_n, p)
    one_chunk = metric_coefficients(model, p).one_chunk
    values = {
        "alpha_ms": p.alpha_ms, "out_tokens": m, "num_servers": n,
        "num_queue": np.asarray(num_queue, dtype=float) + 0.0 * n, "decode_ms": w_d,
        "prefill_ms": w_pre, "delta_ms": (w_pre + decodes * w_d) / m,
        "full_prefill_ms": full_prefill,
        "full_service_ms": service_time_ms(PerfModel.VLLM, n, p),
        "spread_profile": spread_profile, "spread_flat": w_pre + decodes * w_d,
        "cosmetatos": (n - 1.0) * (np.sqrt(4.0 + 5.0 * n) - 2.0) / (16.0 * n),
        "one_chunk": np.asarray(one_chunk, dtype=float), "frontend_ms": p.frontend_ms,
    }
    cols = np.stack([np.broadcast_to(values[name], n.shape) for name, _ in _COLUMNS])
    return LatencyCoefficients(model, None, cols, p, None)


class Latency(NamedTuple):
    """Mean request latencies of C candidates, (C,) arrays (ms)."""

    prefill_ms: np.ndarray
    """Admission to first token."""
    itl_ms: np.ndarray
    ttft_ms: np.ndarray
    wait_ms: np.ndarray
    """Arrival to admission (TTFT − prefill)."""
    resp_ms: np.ndarray
    """Arrival to last token."""


class _Arrival(NamedTuple):
    """What an accepted arrival finds, (C,) arrays."""

    idle: np.ndarray
    """P(replica empty)."""
    busy: np.ndarray
    """P(1 <= n < N): admitted at the end of the running iteration."""
    n_busy: np.ndarray
    """E[n; n < N]."""
    wait: np.ndarray
    """P(all N busy), corrected for the work profile: the arrival waits for a slot."""
    scale: np.ndarray
    """Factor from the chain's (time-stationary) mass below N to the arrivals' mass."""
    lam: np.ndarray
    """Offered rate (req/ms)."""
    ratio: np.ndarray
    """v: batch-size variance of the real work profile over the chain's."""


def _arrival(sol: QueueSolution, coef: LatencyCoefficients) -> _Arrival:
    """PASTA: accepted arrivals see the time-stationary state, except that P(all N busy) is
    taken to the power 1/v (a Gaussian-tail probability whose variance is scaled by v).

    v is computed only where waiting is possible (elsewhere it is 1 and unused). The
    caller ignores floating-point warnings (`_quiet`)."""
    accepted = 1.0 - sol.p_block
    lam = sol.throughput_rpms / accepted
    scale = 1.0 / accepted
    size = lam.size
    wait = np.zeros(size)
    v = np.ones(size)
    rows = _rows_or_all(sol.p_wait > WAIT_NEGLIGIBLE * accepted)
    if rows is not None:
        w = np.minimum(sol.p_wait[rows] / accepted[rows], 1.0)
        x = lam[rows]
        v[rows] = v_rows = ((1.0 + x * coef.spread_profile[rows])
                            / (1.0 + x * coef.spread_flat[rows]))
        w_v = np.exp(np.log(w) / v_rows)
        wait[rows] = w_v
        scale[rows] *= np.where(w < 1, (1.0 - w_v) / (1.0 - w), 0.0)
    below = 1.0 - sol.p_wait - sol.p_block
    full = coef.num_servers * (sol.p_wait + sol.p_block)
    return _Arrival(idle=sol.p_idle * scale,
                    busy=np.maximum(below - sol.p_idle, 0.0) * scale,
                    n_busy=np.maximum(sol.n_srv - full, 0.0) * scale,
                    wait=wait, scale=scale, lam=lam, ratio=v)


def _rows_or_all(mask: np.ndarray) -> np.ndarray | slice | None:
    """The rows of ``mask``: None if none, a full slice if all (no gathers then)."""
    rows = mask.nonzero()[0]
    if rows.size == 0:
        return None
    return slice(None) if rows.size == mask.size else rows


def _quiet() -> np.errstate:
    """The floating-point state the vllm metric's helpers run in (one context per
    evaluation, not one per helper): rows that cannot be solved carry inf/NaN through."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore")


WAIT_NEGLIGIBLE = 1e-12
"""Below this probability of waiting for a slot a row skips the queue terms (their
contribution is below 1e-12 of a service time)."""


class _Terms(NamedTuple):
    """Prefill quantities per row, (C,) arrays (ms)."""

    chunks: np.ndarray | None
    """Prefill chunks of an arrival: nc at the rounded mean batch (1 for most rows; None:
    1 for every row)."""
    w_pre: np.ndarray
    """Own prefill work in ``chunks`` chunks."""
    w_chunk: np.ndarray
    """Work of one prefill chunk: what a prompt admitted in the same iteration adds."""
    delta: np.ndarray
    """Mean work per request per iteration (the chain's slope at this chunk count)."""
    gap: np.ndarray
    """(w_chunk − w_d)⁺: how much longer a prefill iteration is than a decode one."""
    share: np.ndarray
    """s_p: the time share of a request's service spent in its prefill iterations, c·T_p/S
    (T_p a prefill iteration at the mean busy batch, S the chain's mean service time). An
    arrival that finds n in service lands in a prefill iteration with probability n·s_p."""


def _terms(coef: LatencyCoefficients, sol: QueueSolution, arr: _Arrival) -> _Terms:
    """The prefill quantities; ``chunks`` is None where every row prefills in one chunk
    (the common case: the products by it are then skipped, 1·x being x)."""
    chunks = None
    w_pre = coef.prefill_ms
    delta = coef.delta_ms
    w_chunk = w_pre
    multi, p = coef.multi_chunk()
    if multi.size:
        chunks = np.ones(len(coef))
        w_pre, delta = w_pre.copy(), delta.copy()
        n_srv = sol.n_srv[multi]
        # NaN counts as 1 (np.nan_to_num's cost is a dozen passes)
        rounded = np.clip(np.floor(np.where(np.isnan(n_srv), 1.0, n_srv) + 0.5), 1.0,
                          coef.num_servers[multi])
        c = num_chunks(rounded, p.in_tokens, p.out_tokens, p.max_num_tokens).astype(float)
        chunks[multi] = c
        w_pre[multi] = vllm_prefill_work_ms(c, p)
        delta[multi] = (w_pre[multi] + (p.out_tokens - 1.0) * coef.decode_ms[multi]) / (
            c + p.out_tokens - 1.0)
        w_chunk = w_pre / chunks
        # vLLM fills the token budget left by the decodes: the chunks before the last are
        # full, so a prefill iteration holds min(L, budget − decodes) prompt tokens, not L/c.
        budget = np.where(p.max_num_tokens == 0, DEFAULT_MAX_NUM_TOKENS, p.max_num_tokens)
        tokens = np.clip(budget - rounded, 1.0, p.in_tokens)
        w_chunk[multi] = (p.beta_ms + p.gamma_ms) * tokens + excess_work_ms(tokens, p)
    others = np.where(arr.busy > 0, arr.n_busy / arr.busy, 1.0) - 1.0
    t_pre = coef.alpha_ms + others * coef.decode_ms + w_chunk
    share = (t_pre if chunks is None else chunks * t_pre) / sol.serv_ms
    # clip to [0, 1], NaN -> 0
    share = np.where(share > 0.0, np.minimum(share, 1.0), 0.0)
    return _Terms(chunks, w_pre, w_chunk, delta, np.maximum(w_chunk - coef.decode_ms, 0.0),
                  share)


def _queue_shape(coef: LatencyCoefficients, arr: _Arrival, rows: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(σ, E[wait | wait]) of an arrival that finds all N slots busy.

    The number of slots it waits for, k, is geometric, P(k) = (1−σ)σ^{k−1}, whose mean
    queue length is the chain's (its geometric tail at temperature v, truncated at Q) times
    Cosmetatos' M/D/c factor; the wait for slot k = qN + r is q·D plus the r-th order
    statistic of N uniform residuals on [0, D], of mean r·D/(N+1). Under `_quiet`.
    """
    sigma = np.zeros(len(coef))
    queued = np.zeros(len(coef))
    wanted = arr.wait > 0.0 if rows is None else rows & (arr.wait > 0.0)
    sel = _rows_or_all(wanted)
    if sel is None:
        return sigma, queued
    n, q = coef.num_servers[sel], coef.num_queue[sel]
    d_full = coef.full_service_ms[sel]
    rho = arr.lam[sel] * d_full / n
    log_ratio = np.log(rho) / arr.ratio[sel]
    ratio = np.exp(log_ratio)
    # Mean of k − 1 for a geometric tail ratio r on 0..Q−1 (arrivals at K are lost).
    r_q = np.exp(q * log_ratio)
    length = np.where(np.abs(1.0 - ratio) > 1e-9,
                      ratio / (1.0 - ratio) - q * r_q / (1.0 - r_q), (q - 1.0) / 2.0)
    # NaN, +inf and negatives -> 0
    length = np.where((length > 0.0) & (length < np.inf), length, 0.0)
    factor = np.where(rho < 1.0, np.minimum(1.0, 0.5 + 0.5 * (1.0 - rho)
                                            * coef.cosmetatos[sel] / rho), 0.5)
    ahead = factor * length
    s = ahead / (1.0 + ahead)
    s_n = s ** n
    cycles = s_n / (1.0 - s_n)
    slot = np.where(s > 0, (1.0 - (n + 1.0) * s_n + n * s_n * s)
                    / ((1.0 - s) * (1.0 - s_n)), 1.0)
    sigma[sel] = s
    queued[sel] = d_full * (cycles + slot / (n + 1.0))
    return sigma, queued


def _vllm_metrics(sol: QueueSolution, coef: LatencyCoefficients,
                  ttft_rows: np.ndarray | None = None) -> Latency:
    """Mean latencies of the vLLM model from the chain's aggregates (derivation: module
    docstring). An arrival that finds n < N (n >= 1) waits half the iteration in progress,
    whose time-average length is α + n·w_d + n·s_p·(w_chunk − w_d), and its prefill iteration
    adds the n decodes, its own prompt and λ·(that length) co-admitted prompts."""
    with _quiet():
        arr = _arrival(sol, coef)
        t = _terms(coef, sol, arr)
        alpha, c = coef.alpha_ms, t.chunks
        # Σ_{1<=n<N} p_n·E[iteration in progress | n], the time-average (length-biased)
        # length: a decode iteration α + n·w_d, or with probability n·s_p a prefill one,
        # gap longer.
        covering = arr.busy * alpha + arr.n_busy * (coef.decode_ms + t.share * t.gap)
        if c is None:  # one chunk everywhere: c·x = x
            own = (arr.idle + arr.busy) * (alpha + t.w_pre) + arr.n_busy * coef.decode_ms
        else:
            own = ((arr.idle + arr.busy) * (c * alpha + t.w_pre)
                   + arr.n_busy * c * coef.decode_ms)
        _, queued = _queue_shape(coef, arr, ttft_rows)
        prefill = own + arr.lam * t.w_chunk * covering + arr.wait * coef.full_prefill_ms
        # The front-end delays the request before the engine (a pure delay, open loop).
        ttft = prefill + 0.5 * covering + arr.wait * queued + coef.frontend_ms
        m = coef.out_tokens
        itl = np.where(m > 1, (sol.serv_ms - prefill) / np.maximum(m - 1.0, 1.0),
                       alpha + sol.n_srv * t.delta)
    return Latency(prefill, itl, ttft, ttft - prefill, ttft + (m - 1.0) * itl)


def queue_metrics(model: PerfModel, sol: QueueSolution, coef: LatencyCoefficients,
                  ttft_rows: np.ndarray | None = None) -> Latency:
    """Mean latencies of C candidates from their queue solution (the metric extraction of
    every model: upstream's, docs/design/optimizer-model.md §2.4, for classic/chunked, this module's
    model for vllm).

    ``ttft_rows`` (bool, (C,)), optional: the rows whose TTFT is needed; the others' TTFT
    (and wait, E2E) may leave out the wait for a slot (a search for ITL does not need it).
    """
    if model is PerfModel.VLLM:
        return _vllm_metrics(sol, coef, ttft_rows)
    assert coef.upstream is not None  # built for an upstream model
    prefill, itl, ttft = fast_request_metrics(model, sol.n_srv, sol.serv_ms, sol.wait_ms,
                                              coef.upstream)
    return Latency(prefill, itl, ttft, sol.wait_ms, sol.resp_ms)


# ------------------------------------------------------------------------ distributions
class LatencyDistribution:
    """TTFT and ITL distributions of C candidates at their offered rates.

    Parameters
    ----------
    model : the service-time model (classic/chunked: exponential queue wait after a
        constant prefill + ITL and a constant ITL, the upstream models' implied shape;
        vllm: the mixture of this module's docstring)
    sol : QueueSolution, (C,) fields
    states : ndarray, shape (C, W)
        p_j, j = 0..W−1, the chain's time-stationary state probabilities (normalised over
        all states), 0 past N (W >= max N).
    coef : LatencyCoefficients, (C,)
    """

    def __init__(self, model: PerfModel, sol: QueueSolution, states: np.ndarray,
                 coef: LatencyCoefficients) -> None:
        self.model = model
        self.mean = queue_metrics(model, sol, coef)
        self.coef = coef
        if model is not PerfModel.VLLM:
            accepted = 1.0 - sol.p_block
            self._wait = np.clip(sol.p_wait / accepted, 0.0, 1.0)
            self._base = self.mean.prefill_ms + self.mean.itl_ms
            return
        with _quiet():
            arr = _arrival(sol, coef)
            t = _terms(coef, sol, arr)
            self.sigma, _ = _queue_shape(coef, arr)
        chunks = np.ones(len(coef)) if t.chunks is None else t.chunks
        t = t._replace(chunks=chunks)
        self.arr, self.t = arr, t
        width = states.shape[1]
        n = np.arange(width, dtype=float)[None, :]
        inside = n < coef.num_servers[:, None]
        lam = arr.lam[:, None]
        alpha = coef.alpha_ms[:, None]
        w_d = coef.decode_ms[:, None]
        probs = np.where(inside, states, 0.0) * arr.scale[:, None]
        self.probs = probs
        """(C, W): an accepted arrival finds n < N (the no-wait part)."""
        t_dec = alpha + n * w_d
        t_pre = t_dec + t.gap[:, None]
        share = np.clip(n * t.share[:, None], 0.0, 1.0)
        self._lengths = np.stack([t_dec, t_pre])            # (2, C, W)
        self._weights = np.stack([1.0 - share, share])
        self._base_n = (chunks[:, None] * (alpha + n * w_d) + t.w_pre[:, None])
        k = np.arange(CO_ADMITTED_TERMS, dtype=float)[:, None, None, None]
        mean_k = lam[None] * self._lengths                   # (2, C, W)
        pk = np.exp(-mean_k[None] + k * np.log(np.maximum(mean_k[None], 1e-300))
                    - _log_factorial(k))
        pk[-1] = np.maximum(1.0 - pk[:-1].sum(axis=0), 0.0)
        self._co = pk                                        # (K, 2, C, W)
        self._k = k
        self._itl_setup(probs)

    # ------------------------------------------------------------------------ TTFT
    def ttft_cdf(self, t_ms: np.ndarray) -> np.ndarray:
        """P(TTFT <= t) per candidate; ``t_ms`` shape (C,)."""
        t = np.asarray(t_ms, dtype=float)
        if self.model is not PerfModel.VLLM:
            mean_wait = self.mean.wait_ms
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tail = self._wait * np.exp(-(t - self._base) * self._wait / mean_wait)
            tail = np.where(mean_wait > 0, tail, 0.0)
            return np.where(t >= self._base, 1.0 - np.minimum(tail, self._wait + 0.0), 0.0)
        t = t - self.coef.frontend_ms
        x = t[:, None] - self._base_n                         # (C, W)
        lengths = self._lengths[None]                         # (1, 2, C, W)
        shift = x[None, None] - self._k * self.t.w_chunk[None, None, :, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(lengths > 0, shift / np.where(lengths > 0, lengths, 1.0),
                            (shift >= 0).astype(float))
        frac = np.clip(frac, 0.0, 1.0)
        # n = 0 starts at once: no iteration in progress, nothing co-admitted.
        frac[..., 0] = (x[:, 0] >= 0)[None, None].astype(float)
        within = (self._co * self._weights[None] * frac).sum(axis=(0, 1))
        cdf = (self.probs * within).sum(axis=1)
        return cdf + self.arr.wait * self._queued_cdf(t - self.coef.full_prefill_ms)

    def _queued_cdf(self, x: np.ndarray) -> np.ndarray:
        """P(wait <= x | wait): 1 − σ^{qN}·(1 − y(1−σ))^N at x = (q + y)·D."""
        n, d_full, sigma = self.coef.num_servers, self.coef.full_service_ms, self.sigma
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
            u = np.maximum(x, 0.0) / d_full
            cycles = np.floor(u)
            y = u - cycles
            tail = sigma ** (cycles * n) * (1.0 - y * (1.0 - sigma)) ** n
        return np.where(x > 0, 1.0 - tail, 0.0)

    # ------------------------------------------------------------------------ ITL
    def _itl_setup(self, probs: np.ndarray) -> None:
        """ITL_i = a + w_d·(b_i − 1) + K_i·w_chunk/(m−1): the batch b found at admission
        plus K ~ Poisson(λ·(m−1)·ITL) prompts prefilled during the decodes; ``a`` makes the
        mean exact."""
        coef, arr = self.coef, self.arr
        n_max = coef.num_servers[:, None]
        width = probs.shape[1]
        batch = np.minimum(np.arange(width, dtype=float)[None, :] + 1.0, n_max)
        weights = np.concatenate([probs, arr.wait[:, None]], axis=1)
        batch = np.concatenate([batch, n_max], axis=1)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total > 0, total, 1.0)
        decodes = np.maximum(coef.out_tokens - 1.0, 1.0)
        itl = self.mean.itl_ms
        self._lump = self.t.w_chunk / decodes
        self._lumps = np.maximum(arr.lam * decodes * itl, 0.0)
        level = coef.decode_ms[:, None] * (batch - 1.0)
        offset = itl - (weights * level).sum(axis=1) - self._lumps * self._lump
        self._itl_values = offset[:, None] + level
        self._itl_weights = weights

    def itl_cdf(self, t_ms: np.ndarray) -> np.ndarray:
        """P(ITL <= t) per candidate; ``t_ms`` shape (C,)."""
        t = np.asarray(t_ms, dtype=float)
        if self.model is not PerfModel.VLLM:
            return (t >= self.mean.itl_ms).astype(float)
        # scipy is imported here, not at module level: `inferno optimize` without ITL
        # percentile targets must not pay its ~0.3 s import
        from scipy.special import pdtr

        room = t[:, None] - self._itl_values
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.floor(room / self._lump[:, None])
        cdf = np.where(room < 0, 0.0, np.where(self._lump[:, None] > 0,
                                                pdtr(np.clip(k, 0, 1e9), self._lumps[:, None]),
                                                1.0))
        return (self._itl_weights * cdf).sum(axis=1)

    # ------------------------------------------------------------------------ quantiles
    def ttft_quantile(self, q: float) -> np.ndarray:
        """The q-quantile (0 < q < 1) of TTFT per candidate (ms)."""
        return _quantile(self.ttft_cdf, q, self.mean.ttft_ms)

    def itl_quantile(self, q: float) -> np.ndarray:
        """The q-quantile (0 < q < 1) of ITL per candidate (ms)."""
        return _quantile(self.itl_cdf, q, self.mean.itl_ms)


_LOG_FACT = np.log(np.array([1.0, 1.0, 2.0, 6.0, 24.0, 120.0]))


def _log_factorial(k: np.ndarray) -> np.ndarray:
    return _LOG_FACT[k.astype(np.int64)]


QUANTILE_ITERATIONS = 60
"""Bisection steps of a quantile: the bracket shrinks to 2^-60 of its width."""


def _quantile(cdf: Callable[[np.ndarray], np.ndarray], q: float, scale: np.ndarray
              ) -> np.ndarray:
    """Smallest t with cdf(t) >= q, per row, by bisection on [0, hi]."""
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    lo = np.zeros_like(scale)
    hi = 2.0 * scale
    for _ in range(200):
        short = cdf(hi) < q
        if not short.any():
            break
        hi = np.where(short, 2.0 * hi, hi)
    for _ in range(QUANTILE_ITERATIONS):
        mid = 0.5 * (lo + hi)
        below = cdf(mid) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return hi
