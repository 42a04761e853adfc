"""Service-time models τ(n) and the metric extraction that goes with them
(docs/design/optimizer-model.md §2.4).

Two generations of the upstream queue-analysis model are implemented, vectorised over
candidates: `PerfModel.CLASSIC` (G3, decode term m/2; reproduces the sample solutions) and
`PerfModel.CHUNKED` (G7: chunked prefill under a per-iteration token budget, the request's own
work counted once). `PerfModel.VLLM` keeps G7's chunked prefill but counts iterations as vLLM
does: the iteration that completes the prefill samples the first token, so a request spends
c + m − 1 iterations in service (c prefill chunks, m − 1 decodes), and a decode iteration
reads the context L + j of the j-th decode (docs/validation.md). The optional terms of the
iteration time (`inferno.model.iteration_time_ms`) enter a request's work: ``stream_ms`` once
per token it samples, and the piecewise shape's excess β on the prompt tokens of a chunk
beyond the knee (a chunk is attributed the excess of its own tokens; the decodes sharing its
iteration are taken to stay below the knee). Every function takes numpy
arrays that broadcast against each other; times are ms, token counts are per request. This
module knows nothing about queues: the upstream models' metrics come from the queue's mean
batch X̄, service time S and wait W here; the vLLM model's latency model is in `latency.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfModel, PerfParms, frontend_delay_ms

__all__ = [
    "PERF_EXTRA_FIELDS",
    "MetricCoefficients",
    "fast_request_metrics",
    "ServiceParams",
    "chunked_iteration_ms",
    "decode_token_work_ms",
    "iterations",
    "excess_work_ms",
    "prefill_work_ms",
    "vllm_prefill_work_ms",
    "instant_itl_ms",
    "instant_lines",
    "instant_prefill_ms",
    "metric_coefficients",
    "num_chunks",
    "perf_columns",
    "request_metrics",
    "service_params",
    "service_time_ms",
    "service_time_table",
]


class ServiceParams(NamedTuple):
    """Per-candidate inputs of the service-time models; fields broadcast against each other.

    alpha_ms, beta_ms, gamma_ms : iteration time α + β·tokens + γ·kv_tokens (ms)
    in_tokens, out_tokens : average input tokens L >= 0 and output tokens m >= 1
    max_batch : N, the largest batch the replica runs (clamps the chunk-count lookup)
    max_num_tokens : per-iteration token budget of the chunked model (0 means 8192)
    stream_ms : cost per sampled token (ms), 0 by default
    knee_tokens, beta_excess_ms : piecewise shape, β_high − β per token beyond the knee
        (0 for the linear shape)
    frontend_ms : front-end cost α0 + α1·L of a request (ms; the vllm model's TTFT)
    """

    alpha_ms: np.ndarray
    beta_ms: np.ndarray
    gamma_ms: np.ndarray
    in_tokens: np.ndarray
    out_tokens: np.ndarray
    max_batch: np.ndarray
    max_num_tokens: np.ndarray
    stream_ms: np.ndarray | float = 0.0
    knee_tokens: np.ndarray | float = 0.0
    beta_excess_ms: np.ndarray | float = 0.0
    frontend_ms: np.ndarray | float = 0.0

    def take(self, idx: np.ndarray | slice) -> ServiceParams:
        """The rows ``idx`` of every (C,)-shaped field (scalar fields stay scalars)."""
        return ServiceParams._make(np.asarray(f)[idx] if np.ndim(f) else f for f in self)

    def arrays(self) -> ServiceParams:
        """Every field as a float array, broadcast to one shape."""
        return ServiceParams(*np.broadcast_arrays(*(np.asarray(f, dtype=float)
                                                    for f in self)))


def excess_work_ms(tokens: np.ndarray, p: ServiceParams) -> np.ndarray:
    """Piecewise shape: the extra cost of an iteration's ``tokens`` beyond the knee (ms)."""
    return p.beta_excess_ms * np.maximum(np.asarray(tokens, dtype=float) - p.knee_tokens, 0.0)


def service_params(perf: PerfParms, in_tokens: float, out_tokens: float, max_batch: float,
                   max_num_tokens: float) -> ServiceParams:
    """One candidate's `ServiceParams` (every field a (1,) array) from its perf data."""
    extras = perf_columns((perf,), np.array([in_tokens], dtype=float))
    return ServiceParams(*(np.array([v], dtype=float) for v in (
        perf.alpha_ms, perf.beta_ms, perf.gamma_ms, in_tokens, out_tokens, max_batch,
        max_num_tokens)), **extras)


PERF_EXTRA_FIELDS = ("stream_ms", "knee_tokens", "beta_excess_ms", "frontend_ms")
"""The `ServiceParams` (and `QueueBatch`) fields beyond upstream's α, β, γ."""


def perf_columns(perfs: Sequence[PerfParms], in_tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The `PERF_EXTRA_FIELDS` of C candidates as (C,) arrays (``in_tokens`` (C,) for the
    front-end's per-token term)."""
    return {
        "stream_ms": np.array([p.stream_ms for p in perfs], dtype=float),
        "knee_tokens": np.array([p.knee_tokens for p in perfs], dtype=float),
        "beta_excess_ms": np.array([p.beta_excess_ms for p in perfs], dtype=float),
        "frontend_ms": np.array([frontend_delay_ms(p, float(n))
                                 for p, n in zip(perfs, np.broadcast_to(in_tokens, len(perfs)),
                                                 strict=True)], dtype=float),
    }


def _budget(max_num_tokens: np.ndarray) -> np.ndarray:
    t = np.asarray(max_num_tokens, dtype=float)
    return np.where(t == 0, float(DEFAULT_MAX_NUM_TOKENS), t)


def _fits(chunks: np.ndarray, batch: np.ndarray, in_tokens: np.ndarray,
          out_tokens: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """b(c) >= B: a batch of B requests prefills within c iterations (§2.4 chunk table)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = (chunks + out_tokens) * (budget - in_tokens / chunks) / (in_tokens + out_tokens)
    return np.floor(np.maximum(b, 0.0)) >= batch


def num_chunks(batch: np.ndarray, in_tokens: np.ndarray, out_tokens: np.ndarray,
               max_num_tokens: np.ndarray) -> np.ndarray:
    """nc(B): prefill iterations per request at batch size B (G7 chunk table), int64.

    Upstream builds a table b(c) = floor(max(0, (c+m)(T − L/c)/(L+m))) for c = 1, 2, … and
    takes the smallest c with b(c) >= B. b is increasing in c, so that c is the ceiling of the
    positive root of T·c² + (mT − L − B(L+m))·c − mL = 0, corrected by one step each way so
    the result equals the table lookup exactly.

    Parameters
    ----------
    batch : ndarray, batch size B >= 1 (any shape broadcasting with the others)
    in_tokens, out_tokens : ndarray, L >= 0 and m >= 1 tokens per request
    max_num_tokens : ndarray, token budget T per iteration (0 means 8192)
    """
    big_b = np.asarray(batch, dtype=float)
    L = np.asarray(in_tokens, dtype=float)
    m = np.asarray(out_tokens, dtype=float)
    T = _budget(max_num_tokens)
    lin = m * T - L - big_b * (L + m)
    root_disc = np.sqrt(lin * lin + 4.0 * T * m * L)
    with np.errstate(divide="ignore", invalid="ignore"):
        # The two forms of the root avoid cancellation on either sign of ``lin``.
        root = np.where(lin > 0, 2.0 * m * L / (lin + root_disc), (root_disc - lin) / (2.0 * T))
    root = np.where(np.isfinite(root), root, 1.0)
    c = np.maximum(np.ceil(root), 1.0)
    c = np.where((c > 1) & _fits(c - 1, big_b, L, m, T), c - 1, c)
    c = np.where(_fits(c, big_b, L, m, T), c, c + 1)
    return c.astype(np.int64)


def prefill_work_ms(chunks: np.ndarray, p: ServiceParams) -> np.ndarray:
    """w_pre(c) = (β + γ·(c+1)/2)·L: one request's prefill work in c chunks (ms), plus the
    piecewise excess of its c chunks of L/c tokens.

    The chunk ending at token i·L/c reads i·L/c KV tokens, (c+1)/2·L summed over the chunks.
    """
    c = np.asarray(chunks, dtype=float)
    work = (p.beta_ms + p.gamma_ms * (c + 1.0) / 2.0) * p.in_tokens
    if np.any(p.beta_excess_ms):
        with np.errstate(divide="ignore", invalid="ignore"):
            work = work + c * excess_work_ms(p.in_tokens / c, p)
    return work


def vllm_prefill_work_ms(chunks: np.ndarray, p: ServiceParams) -> np.ndarray:
    """`prefill_work_ms` in vLLM accounting: the last chunk also samples the first token."""
    return prefill_work_ms(chunks, p) + p.stream_ms


def decode_token_work_ms(p: ServiceParams) -> np.ndarray:
    """w_d = β + s + γ·(L + m/2): one request's work in one vLLM decode iteration, averaged
    over its m − 1 decodes (the j-th reads L + j KV tokens; s the per-sample cost) (ms)."""
    return p.beta_ms + p.stream_ms + p.gamma_ms * (p.in_tokens + p.out_tokens / 2.0)


def _chunk_work(chunks: np.ndarray, p: ServiceParams, vllm: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(w_pre(c), δ(c)): a request's prefill work and its average work per iteration (ms).

    G7 spreads w_pre + m decodes over c + m iterations; vLLM accounting has m − 1 decodes
    (the prefill samples the first token) over c + m − 1 iterations.
    """
    c = np.asarray(chunks, dtype=float)
    L, m = p.in_tokens, p.out_tokens
    if vllm:
        w_pre = vllm_prefill_work_ms(c, p)
        return w_pre, (w_pre + (m - 1.0) * decode_token_work_ms(p)) / (c + m - 1.0)
    w_pre = prefill_work_ms(c, p)
    w_dec = (p.beta_ms + p.stream_ms) * m + p.gamma_ms * m * (L + (m + 1.0) / 2.0)
    return w_pre, (w_pre + w_dec) / (c + m)


def iterations(model: PerfModel, chunks: np.ndarray, p: ServiceParams) -> np.ndarray:
    """Iterations one request spends in service: c + m (G7) or c + m − 1 (vLLM)."""
    extra = -1.0 if model is PerfModel.VLLM else 0.0
    return np.asarray(chunks, dtype=float) + p.out_tokens + extra


def chunked_iteration_ms(batch: np.ndarray, p: ServiceParams,
                         model: PerfModel = PerfModel.CHUNKED) -> np.ndarray:
    """Iteration time α + B·δ(nc(B)) at integer batch size B (ms), G7 or vLLM accounting."""
    c = num_chunks(batch, p.in_tokens, p.out_tokens, p.max_num_tokens)
    _, delta = _chunk_work(c, p, model is PerfModel.VLLM)
    return p.alpha_ms + np.asarray(batch, dtype=float) * delta


def _g7_prefill(x: np.ndarray, chunks: np.ndarray, p: ServiceParams,
                vllm: bool = False) -> np.ndarray:
    w_pre, delta = _chunk_work(chunks, p, vllm)
    return chunks * np.maximum(0.0, p.alpha_ms + (x - 1.0) * delta) + w_pre


def _g3_terms(p: ServiceParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope, prefill extra, decode extra) of the classic model, T_it(n) = α + n·slope."""
    L, m = p.in_tokens, p.out_tokens
    compute_tokens = (L + m) / (m + 1.0)
    kv_tokens = L + m / 2.0
    slope = p.beta_ms * compute_tokens + p.gamma_ms * kv_tokens
    pre_extra = (p.beta_ms + p.gamma_ms) * L + excess_work_ms(L, p)
    return slope, pre_extra, p.beta_ms + p.stream_ms + p.gamma_ms * (L + m / 2.0)


def _g3_prefill(x: np.ndarray, p: ServiceParams) -> np.ndarray:
    slope, pre_extra, _ = _g3_terms(p)
    return np.where(p.in_tokens == 0, 0.0, p.alpha_ms + x * slope + pre_extra)


def _g3_decode(x: np.ndarray, p: ServiceParams) -> np.ndarray:
    slope, _, dec_extra = _g3_terms(p)
    return p.alpha_ms + x * slope + dec_extra


def _g7_tau(b: np.ndarray, chunks: np.ndarray, p: ServiceParams,
            model: PerfModel = PerfModel.CHUNKED) -> np.ndarray:
    _, delta = _chunk_work(chunks, p, model is PerfModel.VLLM)
    return iterations(model, chunks, p) * (p.alpha_ms + b * delta)


def service_time_ms(model: PerfModel, batch: np.ndarray, p: ServiceParams) -> np.ndarray:
    """τ(B): total time one request spends in service when B requests share the batch (ms).

    ``batch`` holds integer batch sizes B >= 1 broadcasting with ``p``.
    """
    b = np.asarray(batch, dtype=float)
    if model is PerfModel.CLASSIC:
        return _g3_prefill(b, p) + p.out_tokens * _g3_decode(b, p)
    return _g7_tau(b, num_chunks(b, p.in_tokens, p.out_tokens, p.max_num_tokens), p, model)


_TABLE_BLOCK = 1 << 16
"""Elements per row block of the chunk-table rows of `service_time_table`."""


def service_time_table(model: PerfModel, width: int, p: ServiceParams,
                       out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(τ(1..width) per candidate, shape (C, width); linear, shape (C,)) for (C,)-shaped ``p``.

    The values of `service_time_ms` on the grid (to rounding): τ is linear in B for the
    classic model and for chunked rows whose whole batch prefills in one chunk (b(1) >= N, the
    common case), so those rows are built as τ(1) + slope·(B − 1) in two passes and flagged
    ``linear`` (positive everywhere iff positive at both ends); other rows take the chunk
    table. ``out`` (C, width) receives τ if given.
    """
    p = p.arrays()
    b = np.arange(1, width + 1, dtype=float)
    L, m = p.in_tokens, p.out_tokens
    if model is PerfModel.CLASSIC:
        slope, pre_extra, dec_extra = _g3_terms(p)
        has_prefill = L != 0
        k = m + has_prefill
        t0 = p.alpha_ms * k + np.where(has_prefill, pre_extra, 0.0) + m * dec_extra
        t1 = slope * k
        linear = np.ones(t0.shape, dtype=bool)
    else:
        one = np.ones_like(L)
        _, delta = _chunk_work(one, p, model is PerfModel.VLLM)
        its = iterations(model, one, p)
        t0, t1 = its * p.alpha_ms, its * delta
        linear = _fits(one, p.max_batch, L, m, _budget(p.max_num_tokens))
    tau = np.multiply(t1[:, None], b[None, :], out=out)
    tau += t0[:, None]
    multi = np.flatnonzero(~linear)
    step = max(1, _TABLE_BLOCK // width)  # the chunk lookup's temporaries stay block-sized
    for r0 in range(0, multi.size, step):
        rows = multi[r0:r0 + step]
        col = ServiceParams._make(np.asarray(f)[rows, None] for f in p)
        tau[rows] = _g7_tau(b[None, :], num_chunks(b[None, :], col.in_tokens, col.out_tokens,
                                                 col.max_num_tokens), col, model)
    return tau, linear


def _mean_batch_chunks(n_srv: np.ndarray, p: ServiceParams) -> np.ndarray:
    """c̄ = nc(clamp(floor(X̄ + 0.5), 1, N)): the chunk count at the rounded mean batch."""
    with np.errstate(invalid="ignore"):
        rounded = np.clip(np.floor(np.nan_to_num(n_srv, nan=1.0) + 0.5), 1.0,
                          np.maximum(np.asarray(p.max_batch, dtype=float), 1.0))
    return num_chunks(rounded, p.in_tokens, p.out_tokens, p.max_num_tokens)


def request_metrics(model: PerfModel, n_srv: np.ndarray, serv_ms: np.ndarray,
                    wait_ms: np.ndarray, p: ServiceParams
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefill_ms, itl_ms, ttft_ms) from the queue's X̄, S and W (§2.4 metric extraction).

    The prefill time is the model's prefill at the fractional mean batch X̄; the remaining
    service time is spread over the m output tokens (ITL), and the first token waits, is
    prefilled and takes one decode step (TTFT = W + prefill + ITL).

    `PerfModel.VLLM` here is only the means-only reading of its accounting (the prefill
    samples the first token: ITL over m − 1 decodes, TTFT = W + prefill); its latency model
    proper needs the queue's state probabilities (`latency.queue_metrics`).
    """
    vllm = model is PerfModel.VLLM
    if model is PerfModel.CLASSIC:
        prefill = _g3_prefill(n_srv, p)
    else:
        prefill = _g7_prefill(n_srv, _mean_batch_chunks(n_srv, p), p, vllm)
    return _split(model, prefill, serv_ms, wait_ms, p.out_tokens)


def _split(model: PerfModel, prefill: np.ndarray, serv_ms: np.ndarray, wait_ms: np.ndarray,
           out_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefill, ITL, TTFT): the service time after the prefill spread over the decodes."""
    if model is PerfModel.VLLM:
        m = np.asarray(out_tokens, dtype=float)
        itl = np.where(m > 1, (serv_ms - prefill) / np.maximum(m - 1.0, 1.0), 0.0)
        return prefill, itl, wait_ms + prefill
    itl = (serv_ms - prefill) / out_tokens
    return prefill, itl, wait_ms + prefill + itl


def _own_token_work(model: PerfModel, p: ServiceParams) -> np.ndarray:
    """A request's own work in one of its decode iterations: G7 β + γ·(L + (m+1)/2), vLLM w_d."""
    if model is PerfModel.VLLM:
        return decode_token_work_ms(p)
    return p.beta_ms + p.stream_ms + p.gamma_ms * (p.in_tokens + (p.out_tokens + 1.0) / 2.0)


def instant_itl_ms(model: PerfModel, batch: np.ndarray, p: ServiceParams) -> np.ndarray:
    """Token time of a full batch of B requests, no queueing (concurrency brackets, §2.9).

    G7: itl(B) = max(0, α + (B−1)·δ(c)) + β + γ·(L + (m+1)/2) with c = nc(B) (vLLM: its δ
    and w_d); G3: decode(B).
    """
    b = np.asarray(batch, dtype=float)
    if model is PerfModel.CLASSIC:
        return _g3_decode(b, p)
    c = num_chunks(b, p.in_tokens, p.out_tokens, p.max_num_tokens)
    _, delta = _chunk_work(c, p, model is PerfModel.VLLM)
    return np.maximum(0.0, p.alpha_ms + (b - 1.0) * delta) + _own_token_work(model, p)


def instant_prefill_ms(model: PerfModel, batch: np.ndarray, p: ServiceParams) -> np.ndarray:
    """Prefill latency of a request in a full batch of B: G7 pre(B, nc(B)); G3 prefill(B)."""
    b = np.asarray(batch, dtype=float)
    if model is PerfModel.CLASSIC:
        return _g3_prefill(b, p)
    c = num_chunks(b, p.in_tokens, p.out_tokens, p.max_num_tokens)
    return _g7_prefill(b, c, p, model is PerfModel.VLLM)


class MetricCoefficients(NamedTuple):
    """Per-candidate constants that make `request_metrics` cheap to repeat, shapes (C,).

    For the classic model, and for chunked rows whose every batch prefills in one chunk
    (``one_chunk``), the prefill is linear in X̄ up to a clamp; the other chunked rows need
    the chunk-count lookup and keep going through `request_metrics`.
    """

    base: np.ndarray
    """G3: α; G7: α."""
    slope: np.ndarray
    """G3: β·c + γ·M; G7: δ(1)."""
    extra: np.ndarray
    """G3: (β+γ)·L; G7: w_pre(1)."""
    has_prefill: np.ndarray
    """G3: L > 0 (otherwise the prefill is 0)."""
    one_chunk: np.ndarray
    """G7: nc(B) = 1 for every B <= N (always True for G3)."""
    out_tokens: np.ndarray
    params: ServiceParams

    def take(self, idx: np.ndarray) -> MetricCoefficients:
        return MetricCoefficients._make([*(np.asarray(f)[idx] for f in self[:-1]),
                                         self.params.take(idx)])


def metric_coefficients(model: PerfModel, p: ServiceParams) -> MetricCoefficients:
    """Precompute `MetricCoefficients` for (C,)-shaped ``p``."""
    p = p.arrays()
    if model is PerfModel.CLASSIC:
        slope, pre_extra, _ = _g3_terms(p)
        one = np.ones(p.alpha_ms.shape, dtype=bool)
        return MetricCoefficients(p.alpha_ms, slope, pre_extra, p.in_tokens != 0, one,
                                  p.out_tokens, p)
    w_pre, delta = _chunk_work(np.ones_like(p.alpha_ms), p, model is PerfModel.VLLM)
    one = _fits(np.ones_like(p.alpha_ms), p.max_batch, p.in_tokens, p.out_tokens,
                _budget(p.max_num_tokens))
    return MetricCoefficients(p.alpha_ms, delta, w_pre, np.ones(one.shape, dtype=bool), one,
                              p.out_tokens, p)


def fast_request_metrics(model: PerfModel, n_srv: np.ndarray, serv_ms: np.ndarray,
                         wait_ms: np.ndarray, coef: MetricCoefficients
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`request_metrics` for rows described by ``coef`` (same values, fewer array passes)."""
    if model is PerfModel.CLASSIC:
        prefill = np.where(coef.has_prefill, coef.base + n_srv * coef.slope + coef.extra, 0.0)
    else:
        prefill = np.maximum(0.0, coef.base + (n_srv - 1.0) * coef.slope) + coef.extra
        multi = np.flatnonzero(~coef.one_chunk)
        if multi.size:
            prefill[multi] = request_metrics(model, n_srv[multi], serv_ms[multi],
                                             wait_ms[multi], coef.params.take(multi))[0]
    return _split(model, prefill, serv_ms, wait_ms, coef.out_tokens)


def instant_lines(model: PerfModel, p: ServiceParams) -> tuple[np.ndarray, ...]:
    """(itl0, prefill0, itl slope, prefill slope, monotone): `instant_itl_ms` and
    `instant_prefill_ms` as lines a + b·B (used to solve the concurrency brackets).

    Exact for the classic model and for chunked rows that prefill in one chunk up to M_max;
    ``monotone`` marks the rows where that holds and the slope and α are >= 0 (so each
    metric is non-decreasing in B and the set of qualifying B is 1..B̂).
    """
    coef = metric_coefficients(model, p)
    if model is PerfModel.CLASSIC:
        _, _, dec_extra = _g3_terms(p)
        itl0 = p.alpha_ms + dec_extra
        pre0 = np.where(coef.has_prefill, p.alpha_ms + coef.extra, 0.0)
        pre_slope = np.where(coef.has_prefill, coef.slope, 0.0)
    else:
        itl0 = p.alpha_ms - coef.slope + _own_token_work(model, p)
        pre0 = p.alpha_ms - coef.slope + coef.extra
        pre_slope = coef.slope
    monotone = coef.one_chunk & (coef.slope >= 0) & (p.alpha_ms >= 0)
    return itl0, pre0, coef.slope, pre_slope, monotone
