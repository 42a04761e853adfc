"""Optimal-concurrency search (docs/design/optimizer-model.md §2.9): the smallest max batch with
near-peak throughput.

f(M) is the SLO-feasible throughput of one replica whose max batch is M (`size`, 0 when the
sizing fails). Closed-form brackets from the no-queueing service model (M_ITL: largest B whose
full-batch token time meets the ITL target; M_TPF: largest B whose full-batch prefill meets
the TTFT target) seed a bisection of at most ``max_probes`` probes for the smallest M with
f(M) >= (1 − ε/2)·f(M_max), anchored by f(M_max) and confirmed by a last f(M*).

`optimal_concurrency` is the scalar reference (one `size` per probe); the batched variant
runs the probes of all candidates in lockstep, one `size_batch` per probe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inferno.analyzer.analyzer import EPSILON, Metrics, QueueConfig, Targets, size
from inferno.analyzer.batch import QueueBatch, SizingBatch, size_batch
from inferno.analyzer.service import (
    ServiceParams,
    instant_itl_ms,
    instant_lines,
    instant_prefill_ms,
    service_params,
    service_time_ms,
)
from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_BATCH, PerfModel, PerfParms
from inferno.model.units import MS_PER_S

__all__ = [
    "DEFAULT_CONCURRENCY_CEILING",
    "DEFAULT_ONSET_EPSILON",
    "DEFAULT_ONSET_PROBES",
    "ConcurrencyBatch",
    "ConcurrencyResult",
    "concurrency_brackets",
    "nominal_zero_load",
    "optimal_concurrency",
    "optimal_concurrency_batch",
    "optimal_concurrency_sizing",
    "search_concurrency_batch",
]

DEFAULT_CONCURRENCY_CEILING = DEFAULT_MAX_BATCH
"""M_max when the model's max batch size is unknown (0)."""
DEFAULT_ONSET_EPSILON = 0.02
DEFAULT_ONSET_PROBES = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencyResult:
    """Outcome of `optimal_concurrency` (upstream's ConcurrencyResult)."""

    max_batch: int
    """M*: the smallest max batch within ε of the peak throughput (1 when infeasible)."""
    throughput_rps: float
    """f(M*) from the confirming probe (req/s)."""
    m_itl: int
    m_tpf: int
    oracle_calls: int
    """Probes that returned a feasible (positive) throughput, anchor and confirmation included."""
    feasible: bool
    probes: tuple[int, ...]
    """Every M probed, in order: anchor, bisection, confirmation."""
    metrics: Metrics | None
    """Sizing metrics at M* (None when infeasible)."""


def _queue_for(max_batch: np.ndarray, fixed_queue: np.ndarray,
               queue_ratio: np.ndarray | None) -> np.ndarray:
    """Q for each probed N: fixed, or ratio·N where ``queue_ratio`` is negative (−ratio)."""
    if queue_ratio is None:
        return fixed_queue
    r = np.asarray(queue_ratio, dtype=np.int64)
    return np.where(r >= 0, r, -r * max_batch)


def _largest_on_grid(metric: np.ndarray, target: np.ndarray, m_max: np.ndarray) -> np.ndarray:
    top = metric.shape[1]
    ok = (np.arange(1, top + 1)[None, :] <= m_max[:, None]) & (metric <= target[:, None])
    return np.where(ok.any(axis=1), top - np.argmax(ok[:, ::-1], axis=1), 1)


def concurrency_brackets(model: PerfModel, p: ServiceParams, m_max: np.ndarray,
                         ttft_ms: np.ndarray, itl_ms: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(M_ITL, M_TPF) per candidate: the largest B <= M_max whose full-batch ITL (prefill)
    is within the ITL (TTFT) target, 1 if none is (§2.9 step 1). Shapes (C,).

    Rows where both metrics are non-decreasing lines in B are solved in closed form and the
    answer is confirmed against the exact metric (B̂ qualifies, B̂ + 1 does not); the other
    rows are evaluated on the grid 1..M_max. A zero target qualifies no B (upstream).
    """
    p = p.arrays()
    m_max = np.asarray(m_max, dtype=np.int64)
    targets = (np.asarray(itl_ms, dtype=float), np.asarray(ttft_ms, dtype=float))
    metrics = (instant_itl_ms, instant_prefill_ms)
    itl0, pre0, itl_slope, pre_slope, monotone = instant_lines(model, p)
    out = []
    for metric, target, base, slope in zip(metrics, targets, (itl0, pre0),
                                           (itl_slope, pre_slope), strict=True):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            guess = np.where(slope > 0, np.floor((target - base) / slope),
                             np.where(base <= target, m_max, 0))
        best = np.clip(np.nan_to_num(guess, nan=0.0), 0, m_max).astype(np.int64)
        for _ in range(2):  # rounding of the guess: settle on the exact metric
            best = np.where((best >= 1) & (metric(model, np.maximum(best, 1), p) > target),
                            best - 1, best)
            best = np.where((best < m_max) & (metric(model, best + 1, p) <= target),
                            best + 1, best)
        settled = (((best < 1) | (metric(model, np.maximum(best, 1), p) <= target))
                   & ((best >= m_max) | (metric(model, best + 1, p) > target)))
        result = np.maximum(best, 1)
        grid_rows = np.flatnonzero(~(monotone & settled))
        if grid_rows.size:
            sub = ServiceParams._make(np.asarray(f)[grid_rows, None] for f in p)
            top = int(m_max[grid_rows].max())
            grid = np.arange(1, top + 1, dtype=float)[None, :]
            result[grid_rows] = _largest_on_grid(metric(model, grid, sub), target[grid_rows],
                                                 m_max[grid_rows])
        out.append(result.astype(np.int64))
    return out[0], out[1]


def optimal_concurrency(cfg: QueueConfig, targets: Targets, eps: float = DEFAULT_ONSET_EPSILON,
                        max_probes: int = DEFAULT_ONSET_PROBES, *,
                        queue_ratio: int | None = None) -> ConcurrencyResult:
    """The optimal-concurrency search for one replica (§2.9); ``cfg.max_batch`` is M_max.

    ``cfg.max_batch`` <= 0 means `DEFAULT_CONCURRENCY_CEILING`. Each probe sizes ``cfg`` with
    max batch M and queue ``cfg.max_queue`` (or ratio·M when ``queue_ratio`` = −ratio < 0, or
    ``queue_ratio`` itself when >= 0).
    """
    if not (0 < eps < 2) or max_probes < 0:
        raise ConfigError(f"optimal_concurrency: eps must be in (0, 2) and max_probes >= 0, "
                          f"got eps={eps}, max_probes={max_probes}")
    m_max = cfg.max_batch if cfg.max_batch > 0 else DEFAULT_CONCURRENCY_CEILING
    p = cfg.perf
    params = service_params(p, cfg.in_tokens, cfg.out_tokens, m_max, cfg.max_num_tokens)
    m_itl, m_tpf = (int(v[0]) for v in concurrency_brackets(
        cfg.perf_model, params, np.array([m_max]), np.array([targets.ttft_ms]),
        np.array([targets.itl_ms])))
    probes: list[int] = []
    sizings = {}

    def oracle(m: int) -> float:
        q = int(_queue_for(np.array([m]), np.array([cfg.max_queue]),
                           None if queue_ratio is None else np.array([queue_ratio]))[0])
        sizing = size(replace(cfg, max_batch=m, max_queue=q), targets)
        probes.append(m)
        sizings[m] = sizing
        return sizing.rate_rps

    anchor = oracle(m_max)
    if anchor <= 0:
        return ConcurrencyResult(max_batch=1, throughput_rps=0.0, m_itl=m_itl, m_tpf=m_tpf,
                                 oracle_calls=0, feasible=False, probes=tuple(probes),
                                 metrics=None)
    threshold = (1.0 - eps / 2.0) * anchor
    lo = max(1, min(m_itl, m_tpf))
    upper = max(m_itl, m_tpf)
    hi = max(lo, min(m_max, max(3 * upper, lo + 1)))
    for _ in range(max_probes):
        if lo >= hi:
            break
        mid = (lo + hi) // 2
        if oracle(mid) >= threshold:
            hi = mid
        else:
            lo = mid + 1
    m_star = min(max(hi, 1), m_max)
    throughput = oracle(m_star)
    calls = sum(1 for m in probes if sizings[m].rate_rps > 0)
    return ConcurrencyResult(max_batch=m_star, throughput_rps=throughput, m_itl=m_itl,
                             m_tpf=m_tpf, oracle_calls=calls, feasible=throughput > 0,
                             probes=tuple(probes), metrics=sizings[m_star].metrics)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencyBatch:
    """Outcome of `search_concurrency_batch`, (C,) arrays."""

    max_batch: np.ndarray
    feasible: np.ndarray
    throughput_rps: np.ndarray
    m_itl: np.ndarray
    m_tpf: np.ndarray
    oracle_calls: np.ndarray
    sizing: SizingBatch
    """`size_batch` at N = M* (the confirming probe)."""


_CAPACITY_MARGIN = 1e-9
"""Relative margin of the capacity shortcut: f(M) is a throughput at some λ <= λ_max(M), so
1000·λ_max(M) below the threshold by more than rounding decides the probe without it."""


class _Bisection:
    """The lockstep §2.9 bisection of C candidates up to (not including) the confirmation.

    ``confirmed`` marks rows whose M* is known to have f(M*) > 0 without a confirming probe:
    M* was probed with f >= threshold (> 0), or M* = M_max with a positive anchor; for those
    ``rate_at_star`` holds f(M*) from that probe (NaN for the other rows).

    With ``capacity_shortcut`` a bisection probe is skipped for rows whose max rate λ_max(M)
    (a bound on f(M)) is already below the threshold: the decision is the same, but such a
    probe is not counted in ``calls`` (so the diagnostics variant does not use it). The
    other rows are sized with the threshold as their floor (`size_batch`'s ``floor_rps``):
    a row whose brackets already put f(M) below it stops there, decided the same way.
    """

    def __init__(self, batch: QueueBatch, ttft_ms: np.ndarray | float,
                 itl_ms: np.ndarray | float, tps: np.ndarray | float, *, eps: float,
                 max_probes: int, queue_ratio: np.ndarray | None,
                 exact_anchor: bool, capacity_shortcut: bool = False,
                 percentiles: tuple[np.ndarray | float, ...] = (0.0, 0.0)) -> None:
        if not (0 < eps < 2) or max_probes < 0:
            raise ConfigError(f"optimal_concurrency_batch: eps must be in (0, 2) and "
                              f"max_probes >= 0, got eps={eps}, max_probes={max_probes}")
        size_c = len(batch)
        self.batch, self.queue_ratio = batch, queue_ratio
        self.targets = [np.broadcast_to(np.asarray(t, dtype=float), (size_c,)) for t in
                        (ttft_ms, itl_ms, tps)]
        self.percentiles = [np.broadcast_to(np.asarray(q, dtype=float), (size_c,))
                            for q in percentiles]
        m_max = np.where(batch.max_batch > 0, batch.max_batch, DEFAULT_CONCURRENCY_CEILING)
        params = batch.params._replace(max_batch=m_max)
        self.m_itl, self.m_tpf = concurrency_brackets(batch.perf_model, params, m_max,
                                                      self.targets[0], self.targets[1])
        self.calls = np.zeros(size_c, dtype=np.int64)
        self.anchored = self.probe(np.arange(size_c), m_max, exact_anchor)
        anchor = self.anchored.rate_rps
        self.alive = alive = anchor > 0
        threshold = (1.0 - eps / 2.0) * anchor
        lo = np.maximum(1, np.minimum(self.m_itl, self.m_tpf))
        upper = np.maximum(self.m_itl, self.m_tpf)
        hi = np.maximum(lo, np.minimum(m_max, np.maximum(3 * upper, lo + 1)))
        self.confirmed = alive & (hi == m_max)
        self.rate_at_star = np.where(self.confirmed, anchor, np.nan)
        for _ in range(max_probes):
            rows = np.flatnonzero(alive & (lo < hi))
            if rows.size == 0:
                break
            mid = (lo[rows] + hi[rows]) // 2
            rate = np.zeros(rows.size)
            todo = np.arange(rows.size)
            floor = None
            if capacity_shortcut:
                bound = self._max_rate_rps(rows, mid) * (1.0 + _CAPACITY_MARGIN)
                todo = np.flatnonzero(bound >= threshold[rows])
                # only f(M) >= threshold matters: a row's sizing stops once it falls short
                floor = threshold[rows[todo]]
            rate[todo] = self.probe(rows[todo], mid[todo], floor_rps=floor).rate_rps
            up = rate >= threshold[rows]
            hi[rows] = np.where(up, mid, hi[rows])
            lo[rows] = np.where(up, lo[rows], mid + 1)
            self.confirmed[rows] |= up
            self.rate_at_star[rows[up]] = rate[up]
        self.m_star = np.where(alive, np.clip(hi, 1, m_max), 1)

    def _max_rate_rps(self, rows: np.ndarray, m: np.ndarray) -> np.ndarray:
        """λ_max at max batch ``m`` (req/s): (1 − ε)·μ(m), μ(m) = m/τ(m) (§2.3)."""
        params = self.batch.params.take(rows)._replace(max_batch=m)
        tau = service_time_ms(self.batch.perf_model, m, params)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(tau > 0, (1.0 - EPSILON) * m / tau * MS_PER_S, np.inf)

    def probe(self, rows: np.ndarray, m: np.ndarray, exact_rates: bool = False, *,
              latencies: bool = False, floor_rps: np.ndarray | None = None) -> SizingBatch:
        """`size_batch` of the candidates ``rows`` at max batch ``m``, counting oracle calls
        (the latencies at λ* only with ``latencies``: the search reads only rates; a row
        certainly below ``floor_rps`` may come back infeasible)."""
        sub = self.batch.take(rows)
        q = _queue_for(m, sub.max_queue, None if self.queue_ratio is None
                       else np.asarray(self.queue_ratio)[rows])
        sized = size_batch(sub.with_sizes(m, q), *(t[rows] for t in self.targets),
                           exact_rates=exact_rates, ttft_percentile=self.percentiles[0][rows],
                           itl_percentile=self.percentiles[1][rows], latencies=latencies,
                           floor_rps=floor_rps)
        self.calls[rows] += sized.rate_rps > 0
        return sized


def search_concurrency_batch(batch: QueueBatch, ttft_ms: np.ndarray | float,
                             itl_ms: np.ndarray | float, tps: np.ndarray | float, *,
                             eps: float = DEFAULT_ONSET_EPSILON,
                             max_probes: int = DEFAULT_ONSET_PROBES,
                             queue_ratio: np.ndarray | None = None,
                             ttft_percentile: np.ndarray | float = 0.0,
                             itl_percentile: np.ndarray | float = 0.0) -> ConcurrencyBatch:
    """`optimal_concurrency` for C candidates in lockstep; ``batch.max_batch`` holds M_max.

    Every row follows the scalar rules exactly; each probe round is one `size_batch` over the
    rows still bisecting. ``queue_ratio`` (C,), optional: per row a fixed Q (>= 0) or −ratio
    (< 0) for Q = ratio·N; without it Q is ``batch.max_queue``. The percentiles are those
    of `size_batch` (0: the target is on the mean).
    """
    run = _Bisection(batch, ttft_ms, itl_ms, tps, eps=eps, max_probes=max_probes,
                     queue_ratio=queue_ratio, exact_anchor=True,
                     percentiles=(ttft_percentile, itl_percentile))
    alive, m_star = run.alive, run.m_star
    # Rows whose anchor failed stop there (scalar: no confirmation probe); N = 0 makes
    # `size_batch` skip them, and they keep the anchor's reason.
    confirm = run.probe(np.arange(len(batch)), np.where(alive, m_star, 0), exact_rates=True,
                        latencies=True)
    confirm = replace(confirm, reason=np.where(alive, confirm.reason, run.anchored.reason))
    throughput = confirm.rate_rps
    return ConcurrencyBatch(max_batch=m_star, feasible=throughput > 0,
                            throughput_rps=throughput, m_itl=run.m_itl, m_tpf=run.m_tpf,
                            oracle_calls=run.calls, sizing=confirm)


def optimal_concurrency_sizing(batch: QueueBatch, ttft_ms: np.ndarray | float,
                               itl_ms: np.ndarray | float, tps: np.ndarray | float, *,
                               eps: float = DEFAULT_ONSET_EPSILON,
                               max_probes: int = DEFAULT_ONSET_PROBES,
                               queue_ratio: np.ndarray | None = None,
                               ttft_percentile: np.ndarray | float = 0.0,
                               itl_percentile: np.ndarray | float = 0.0
                               ) -> tuple[np.ndarray, np.ndarray]:
    """(M*, f(M*)) per candidate: `search_concurrency_batch` without the diagnostics.

    f(M*) (req/s, 0 when infeasible) is the sustainable rate `size_batch` gives at max batch
    M* (and its queue), so it serves as the candidate's sizing: it comes from the probe that
    established M* (the anchor when M* = M_max, the bisection probe that set M*, or else the
    confirmation), never from a repeated solve. The anchor needs only f(M_max), so its
    per-target rates are not refined, and bisection probes whose λ_max already rules them
    out are skipped (the decisions are the scalar search's). The percentiles are those of
    `size_batch` (0: the target is on the mean).
    """
    run = _Bisection(batch, ttft_ms, itl_ms, tps, eps=eps, max_probes=max_probes,
                     queue_ratio=queue_ratio, exact_anchor=False, capacity_shortcut=True,
                     percentiles=(ttft_percentile, itl_percentile))
    rate = np.where(run.alive, run.rate_at_star, 0.0)
    rows = np.flatnonzero(run.alive & ~run.confirmed)
    if rows.size:
        rate[rows] = run.probe(rows, run.m_star[rows]).rate_rps
    return run.m_star, rate


def optimal_concurrency_batch(batch: QueueBatch, ttft_ms: np.ndarray | float,
                              itl_ms: np.ndarray | float, tps: np.ndarray | float,
                              **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """(M*, feasible) per candidate: `optimal_concurrency_sizing` (same keyword options) with
    f(M*) > 0 only."""
    m_star, rate = optimal_concurrency_sizing(batch, ttft_ms, itl_ms, tps, **options)
    return m_star, rate > 0


def nominal_zero_load(perf: PerfParms, batch: int, perf_model: PerfModel = PerfModel.CHUNKED
                      ) -> tuple[float, float, float]:
    """(itl_ms, ttft_ms, max_rate_rpms) quoted for a server with no load (§3.5).

    Not a queue result: ITL = α + β and TTFT = ITL + γ·batch (both G3 and G7), and the rate
    is batch/(TTFT + α + β·batch) req/ms, 0 when that denominator is not positive (upstream
    marks this rate as meaningless).
    """
    PerfModel(perf_model)
    itl = perf.alpha_ms + perf.beta_ms
    ttft = itl + perf.gamma_ms * batch
    denom = ttft + perf.alpha_ms + perf.beta_ms * batch
    return itl, ttft, (batch / denom if denom > 0 else 0.0)
