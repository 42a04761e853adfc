"""Batched analyzer for the optimizer: many candidate replicas analysed or sized at once.

`size_batch` runs the docs/design/optimizer-model.md §2.7 bisection for every candidate's TTFT and
ITL target in lockstep:
each row follows exactly the scalar rules of `analyzer.size` (same end-point tests, same
midpoints, same tolerance test) and freezes when it converges, so a row's result equals the
scalar one up to floating-point summation order. The speed comes from `chain.ChainTable`
(service rates prepared once, closed-form queue tail, Taylor continuation of narrow brackets)
and from evaluating a candidate's TTFT and ITL searches once while their brackets coincide.

Rows that cannot be analysed never raise: `size_batch` reports them infeasible with a reason,
`analyze_batch` returns ``inf`` metrics with ``valid == False``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from inferno.analyzer.analyzer import (
    EPSILON,
    STABILITY_SAFETY_FRACTION,
    Metrics,
)
from inferno.analyzer.chain import BUCKET_QUANTUM, ChainTable, bucket_layout
from inferno.analyzer.latency import (
    LatencyCoefficients,
    LatencyDistribution,
    latency_coefficients,
    queue_metrics,
)
from inferno.analyzer.percentile import percentile_search
from inferno.analyzer.queueing import QueueSolution, solve_birth_death, state_probabilities
from inferno.analyzer.search import LockstepSearch
from inferno.analyzer.service import PERF_EXTRA_FIELDS, ServiceParams, service_time_table
from inferno.errors import ConfigError
from inferno.model import PerfModel
from inferno.model.units import MS_PER_S

__all__ = [
    "DEFAULT_PERCENTILES",
    "MetricsBatch",
    "PercentilesBatch",
    "QueueBatch",
    "SizingBatch",
    "analyze_batch",
    "latency_percentiles_batch",
    "size_batch",
]

_INT_FIELDS = ("max_batch", "max_queue", "max_num_tokens")
_FLOAT_FIELDS = ("in_tokens", "out_tokens", "alpha_ms", "beta_ms", "gamma_ms")

_CONFIG_REASONS = (
    "",
    "invalid config: max_batch < 1",
    "invalid config: max_queue < 0",
    "invalid config: in_tokens < 0 or not finite",
    "invalid config: out_tokens < 1 or not finite",
    "invalid config: max_batch + max_queue < 2",
    "invalid config: max_num_tokens < 0",
    "invalid config: perf parameters not finite",
    "invalid config: service time not positive and finite",
    "invalid config: empty rate range",
)
_SERVICE_TIME, _RATE_RANGE = 8, 9


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueBatch:
    """C candidate replicas as (C,) arrays (the fields of `QueueConfig`, α/β/γ split out).

    Arrays are copied and made read-only on construction; a length mismatch or a non-1-D
    field is a `ConfigError`. Values are not judged here (see `size_batch`).
    """

    max_batch: np.ndarray
    max_queue: np.ndarray
    in_tokens: np.ndarray
    out_tokens: np.ndarray
    alpha_ms: np.ndarray
    beta_ms: np.ndarray
    gamma_ms: np.ndarray
    max_num_tokens: np.ndarray
    """Per-iteration token budget of the chunked model (0 means 8192)."""
    perf_model: PerfModel = PerfModel.CHUNKED
    stream_ms: np.ndarray | None = None
    """Cost per sampled token (ms); None: 0 (as every field below)."""
    knee_tokens: np.ndarray | None = None
    """Piecewise shape: the knee (tokens per iteration)."""
    beta_excess_ms: np.ndarray | None = None
    """Piecewise shape: β_high − β (ms/token); 0 for the linear shape."""
    frontend_ms: np.ndarray | None = None
    """Front-end cost α0 + α1·L per request (ms)."""

    def __post_init__(self) -> None:
        for name in PERF_EXTRA_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(np.shape(self.max_batch)))
        size = None
        for name in _INT_FIELDS + _FLOAT_FIELDS + PERF_EXTRA_FIELDS:
            raw = np.asarray(getattr(self, name))
            if raw.ndim != 1:
                raise ConfigError(f"queue batch: {name} must be 1-D, got shape {raw.shape}")
            size = raw.size if size is None else size
            if raw.size != size:
                raise ConfigError(f"queue batch: {name} has {raw.size} rows, expected {size}")
            dtype = np.int64 if name in _INT_FIELDS else float
            if name in _INT_FIELDS and raw.size and not np.all(np.mod(raw, 1) == 0):
                raise ConfigError(f"queue batch: {name} must hold integers")
            object.__setattr__(self, name, _frozen(np.array(raw, dtype=dtype)))
        object.__setattr__(self, "perf_model", PerfModel(self.perf_model))

    def __len__(self) -> int:
        return int(self.max_batch.size)

    def take(self, idx: np.ndarray) -> QueueBatch:
        """The candidates ``idx`` (an index array or boolean mask)."""
        return QueueBatch(**{n: getattr(self, n)[idx]
                             for n in _INT_FIELDS + _FLOAT_FIELDS + PERF_EXTRA_FIELDS},
                          perf_model=self.perf_model)

    def with_sizes(self, max_batch: np.ndarray, max_queue: np.ndarray) -> QueueBatch:
        """The same candidates with other N and Q."""
        kw = {n: getattr(self, n) for n in _INT_FIELDS + _FLOAT_FIELDS + PERF_EXTRA_FIELDS}
        kw.update(max_batch=max_batch, max_queue=max_queue)
        return QueueBatch(**kw, perf_model=self.perf_model)

    @property
    def params(self) -> ServiceParams:
        return ServiceParams(self.alpha_ms, self.beta_ms, self.gamma_ms, self.in_tokens,
                             self.out_tokens, self.max_batch, self.max_num_tokens,
                             **{n: getattr(self, n) for n in PERF_EXTRA_FIELDS})


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsBatch:
    """`Metrics` of C candidates as (C,) arrays; rows with ``valid == False`` are ``inf``."""

    offered_rps: np.ndarray
    throughput_rps: np.ndarray
    resp_ms: np.ndarray
    wait_ms: np.ndarray
    num_in_service: np.ndarray
    prefill_ms: np.ndarray
    itl_ms: np.ndarray
    ttft_ms: np.ndarray
    max_rate_rps: np.ndarray
    rho: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return int(self.valid.size)

    def row(self, i: int) -> Metrics:
        """Candidate ``i`` as a scalar `Metrics`."""
        return Metrics(**{f.name: float(getattr(self, f.name)[i]) for f in fields(Metrics)})


@dataclass(frozen=True, slots=True, kw_only=True)
class SizingBatch:
    """`Sizing` of C candidates as (C,) arrays.

    ``rate_rps`` (the sustainable rate, throughput at λ*) and the rates per target are 0
    where ``feasible`` is False; ``reason`` says why ('' when feasible).
    """

    feasible: np.ndarray
    reason: np.ndarray
    rate_ttft_rps: np.ndarray
    rate_itl_rps: np.ndarray
    rate_tps_rps: np.ndarray
    metrics: MetricsBatch
    """Metrics at λ* (``inf`` where infeasible)."""

    def __len__(self) -> int:
        return int(self.feasible.size)

    @property
    def rate_rps(self) -> np.ndarray:
        """Sustainable request rate per replica (req/s): throughput at λ*, 0 if infeasible."""
        return np.where(self.feasible, self.metrics.throughput_rps, 0.0)

    @property
    def itl_ms(self) -> np.ndarray:
        return self.metrics.itl_ms

    @property
    def ttft_ms(self) -> np.ndarray:
        return self.metrics.ttft_ms

    @property
    def rho(self) -> np.ndarray:
        return self.metrics.rho


def _config_codes(batch: QueueBatch) -> np.ndarray:
    """Index into `_CONFIG_REASONS` of the first problem of each row (0: none)."""
    n, q = batch.max_batch, batch.max_queue
    L, m = batch.in_tokens, batch.out_tokens
    perf_ok = (np.isfinite(batch.alpha_ms) & np.isfinite(batch.beta_ms)
               & np.isfinite(batch.gamma_ms))
    checks = (n < 1, q < 0, ~(np.isfinite(L) & (L >= 0)), ~(np.isfinite(m) & (m >= 1)),
              n + q < 2, batch.max_num_tokens < 0, ~perf_ok)
    code = np.zeros(len(batch), dtype=np.int64)
    for k, bad in reversed(list(enumerate(checks, start=1))):
        code[bad] = k
    return code


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Valid candidates of a batch, sorted into buckets, with their service rates."""

    code: np.ndarray
    """(C,) config problem code per candidate (see `_CONFIG_REASONS`)."""
    index: np.ndarray
    """(V,) batch rows of the valid candidates, in bucket order."""
    starts: np.ndarray
    log_mu: list[np.ndarray]
    """Per bucket: (R_b, S_b + 1) arrays, column 0 spare (0), then log μ(n), n = 1..S_b
    (req/ms), +inf past N."""
    params: ServiceParams
    num_servers: np.ndarray
    num_queue: np.ndarray
    lam_min: np.ndarray
    lam_max: np.ndarray
    monotone: np.ndarray
    """(V,) μ(n) non-decreasing (τ linear with τ(0) >= 0)."""


def _prepare(batch: QueueBatch) -> _Prepared:
    """Check every row, compute τ(1..N) and the rate range of the valid ones, bucketed by N
    as `chain.bucket_layout` does."""
    code = _config_codes(batch)
    while True:
        idx = np.flatnonzero(code == 0)
        order, starts, widths = bucket_layout(batch.max_batch[idx])
        index = idx[order]
        params = batch.params.take(index)
        n = batch.max_batch[index]
        log_mu, lam_min, lam_max = [], np.empty(index.size), np.empty(index.size)
        monotone = np.zeros(index.size, dtype=bool)
        bad = np.zeros(index.size, dtype=np.int64)
        for s0, s1, w in zip(starts[:-1], starts[1:], widths, strict=True):
            nb = n[s0:s1]
            width = int(w) - 1
            # Column 0 is a spare slot so `ChainTable` can turn the rows into prefix sums
            # in place; columns 1..width hold τ, then μ = B/τ, then log μ (no copies).
            ext = np.empty((s1 - s0, width + 1))
            ext[:, 0] = 0.0
            tau = ext[:, 1:]
            _, linear = service_time_table(batch.perf_model, width,
                                           params.take(slice(s0, s1)), out=tau)
            rows = np.arange(s1 - s0)
            ends = tau[:, 0], tau[rows, nb - 1]
            ok = np.logical_and.reduce([np.isfinite(t) & (t > 0) for t in ends])
            multi = np.flatnonzero(~linear & ok)  # piecewise τ: check every batch size
            step = max(1, (1 << 16) // width)  # in row blocks: no full-size temporaries
            for r0 in range(0, multi.size, step):
                rows_b = multi[r0:r0 + step]
                t = tau[rows_b]
                beyond = np.arange(width)[None, :] >= nb[rows_b, None]
                ok[rows_b] = np.all((np.isfinite(t) & (t > 0)) | beyond, axis=1)
            bad[s0:s1][~ok] = _SERVICE_TIME
            # Linear τ = t0 + t1·B gives μ = B/τ non-decreasing iff t0 = 2τ(1) − τ(2) >= 0.
            monotone[s0:s1] = linear & ((nb == 1) | (2.0 * tau[:, 0] >= tau[:, min(1, width - 1)]))
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                mu = np.divide(np.arange(1, width + 1, dtype=float)[None, :], tau, out=tau)
                lam_min[s0:s1] = EPSILON * mu[:, 0]
                lam_max[s0:s1] = (1.0 - EPSILON) * mu[rows, nb - 1]
                lm = np.log(mu, out=mu)
            # States past N must carry zero probability: log μ = +inf there.
            tail = lm[:, -BUCKET_QUANTUM:]
            first = lm.shape[1] - tail.shape[1]
            tail[np.arange(first, first + tail.shape[1])[None, :] >= nb[:, None]] = np.inf
            lm[~ok] = 0.0
            log_mu.append(ext)
        empty = (bad == 0) & ~(lam_min <= lam_max)
        bad[empty] = _RATE_RANGE
        if not bad.any():
            return _Prepared(code, index, starts, log_mu, params, n,
                             batch.max_queue[index], lam_min, lam_max, monotone)
        code[index[bad > 0]] = bad[bad > 0]


def _empty_metrics(size: int, offered: np.ndarray) -> dict[str, np.ndarray]:
    out = {f.name: np.full(size, np.inf) for f in fields(MetricsBatch) if f.name != "valid"}
    out["offered_rps"] = np.array(offered, dtype=float)
    return out


def _fill_metrics(out: dict[str, np.ndarray], rows: np.ndarray, model: PerfModel,
                  sol: QueueSolution, coef: LatencyCoefficients, lam_max: np.ndarray,
                  num_servers: np.ndarray, latencies: bool = True) -> None:
    """The metrics of ``rows`` from their solutions; without ``latencies`` the latency
    fields (resp, wait, prefill, ITL, TTFT) stay as they are (inf)."""
    if latencies:
        lat = queue_metrics(model, sol, coef)
        out["resp_ms"][rows] = lat.resp_ms
        out["wait_ms"][rows] = lat.wait_ms
        out["prefill_ms"][rows] = lat.prefill_ms
        out["itl_ms"][rows] = lat.itl_ms
        out["ttft_ms"][rows] = lat.ttft_ms
    out["throughput_rps"][rows] = sol.throughput_rpms * MS_PER_S
    out["num_in_service"][rows] = sol.n_srv
    out["max_rate_rps"][rows] = lam_max * MS_PER_S
    out["rho"][rows] = np.clip(sol.n_srv / num_servers, 0.0, 1.0)


def _batch_rates(rate_rps: np.ndarray | float, size: int, what: str) -> np.ndarray:
    r = np.broadcast_to(np.asarray(rate_rps, dtype=float), (size,)).copy()
    if r.ndim != 1:
        raise ConfigError(f"{what}: expected shape ({size},), got {np.shape(rate_rps)}")
    return r


_ANALYZE_BLOCK = 1 << 16
"""States per row block of the full-state kernel (temporaries stay cache-sized)."""


@dataclass(frozen=True, slots=True)
class _Solved:
    """Queue solutions of some prepared rows (``rows`` index the prepared order)."""

    rows: np.ndarray
    sol: QueueSolution
    states: np.ndarray | None
    """(R, W) state probabilities when asked for."""


def _solve_at(prep: _Prepared, model: PerfModel, lam: np.ndarray, ok: np.ndarray, *,
              states: bool = False) -> list[_Solved]:
    """Solve the prepared rows where ``ok`` at rates ``lam`` (req/ms): rates up to λ_max on
    the prepared chain, higher ones (overload, chunked/vllm) state by state. Consumes
    ``prep.log_mu`` (the chain table turns it into prefix sums in place)."""
    light = ok & (lam <= prep.lam_max)
    heavy = ok & ~light
    out = []
    k = prep.num_servers + prep.num_queue
    width = int(prep.num_servers.max(initial=0)) + 1
    for s0, s1, lm in zip(prep.starts[:-1], prep.starts[1:], prep.log_mu, strict=True):
        sel = s0 + np.flatnonzero(heavy[s0:s1])
        sel = sel[np.argsort(k[sel], kind="stable")]
        block = 0
        while block < sel.size:
            step = max(1, _ANALYZE_BLOCK // int(k[sel[block]] + 1))
            part = sel[block:block + step]
            block += step
            args = (lam[part], lm[part - s0, 1:], prep.num_servers[part],
                    prep.num_queue[part])
            out.append(_Solved(part, solve_birth_death(*args),
                               state_probabilities(*args, width) if states else None))
    sel = np.flatnonzero(light)
    if sel.size:
        table = ChainTable(prep.log_mu, prep.num_servers, prep.num_queue, prep.lam_max,
                           prep.monotone)
        out.append(_Solved(sel, table.solve(sel, lam[sel]),
                           table.state_probabilities(sel, lam[sel]) if states else None))
    return out


def _usable_rates(prep: _Prepared, model: PerfModel, rate: np.ndarray) -> np.ndarray:
    r = rate[prep.index]
    ok = np.isfinite(r) & (r > 0)
    if model is PerfModel.CLASSIC:
        ok &= r <= prep.lam_max * MS_PER_S
    return ok


def analyze_batch(batch: QueueBatch, rate_rps: np.ndarray | float) -> MetricsBatch:
    """Metrics of each candidate at its offered rate (req/s), the batched `analyze`.

    Rows with an unusable config, a rate <= 0 or non-finite, or (classic model) a rate above
    the max rate come back with ``valid == False`` and ``inf`` metrics (``max_rate_rps`` is
    still set where the config is usable). Rates up to the max rate are solved on the
    prepared chain (closed-form queue tail); chunked- and vllm-model rows offered more than
    that are solved state by state (`queueing.solve_birth_death`), which handles any overload.

    Parameters
    ----------
    batch : QueueBatch of C candidates
    rate_rps : ndarray, shape (C,) or scalar, offered request rate per replica (req/s)
    """
    size = len(batch)
    rate = _batch_rates(rate_rps, size, "analyze_batch rate_rps")
    prep = _prepare(batch)
    model = batch.perf_model
    out = _empty_metrics(size, rate)
    valid = np.zeros(size, dtype=bool)
    out["max_rate_rps"][prep.index] = prep.lam_max * MS_PER_S
    coef = latency_coefficients(model, prep.params, prep.num_queue)
    lam = rate[prep.index] / MS_PER_S
    for part in _solve_at(prep, model, lam, _usable_rates(prep, model, rate)):
        rows = prep.index[part.rows]
        _fill_metrics(out, rows, model, part.sol, coef.take(part.rows),
                      prep.lam_max[part.rows], prep.num_servers[part.rows])
        valid[rows] = part.sol.valid
    return MetricsBatch(**out, valid=valid)


DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PercentilesBatch:
    """Latency percentiles of C candidates at their offered rates; NaN where not valid."""

    percentiles: tuple[float, ...]
    """P values in (0, 100), the columns below."""
    ttft_ms: np.ndarray
    """(C, P)."""
    itl_ms: np.ndarray
    """(C, P)."""
    ttft_mean_ms: np.ndarray
    """(C,), the mean of the same distribution (= `analyze_batch`'s)."""
    itl_mean_ms: np.ndarray
    valid: np.ndarray


def _check_percentiles(percentiles: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    out = tuple(float(p) for p in percentiles)
    for p in out:
        if not 0.0 < p < 100.0:
            raise ConfigError(f"percentiles must lie in (0, 100), got {p}")
    return out


def latency_percentiles_batch(batch: QueueBatch, rate_rps: np.ndarray | float,
                              percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
                              ) -> PercentilesBatch:
    """TTFT and ITL percentiles of each candidate at its offered rate (req/s).

    The distributions are `latency.LatencyDistribution`'s: the vllm model's mixture
    (residual iteration, prefill with the batch found, M/D/c-like wait for a slot; ITL from
    the batch-size distribution); for the upstream models an exponential queue wait after a
    constant prefill + ITL, and a constant ITL. Same validity rules as `analyze_batch`.
    """
    pcts = _check_percentiles(percentiles)
    size = len(batch)
    rate = _batch_rates(rate_rps, size, "latency_percentiles_batch rate_rps")
    prep = _prepare(batch)
    model = batch.perf_model
    coef = latency_coefficients(model, prep.params, prep.num_queue)
    ttft = np.full((size, len(pcts)), np.nan)
    itl = np.full((size, len(pcts)), np.nan)
    means = np.full((2, size), np.nan)
    valid = np.zeros(size, dtype=bool)
    lam = rate[prep.index] / MS_PER_S
    for part in _solve_at(prep, model, lam, _usable_rates(prep, model, rate), states=True):
        ok = np.flatnonzero(part.sol.valid)
        if ok.size == 0:
            continue
        sol = QueueSolution._make(f[ok] for f in part.sol)
        assert part.states is not None  # asked for (states=True)
        dist = LatencyDistribution(model, sol, part.states[ok], coef.take(part.rows[ok]))
        rows = prep.index[part.rows[ok]]
        for j, p in enumerate(pcts):
            ttft[rows, j] = dist.ttft_quantile(p / 100.0)
            itl[rows, j] = dist.itl_quantile(p / 100.0)
        means[0, rows], means[1, rows] = dist.mean.ttft_ms, dist.mean.itl_ms
        valid[rows] = True
    return PercentilesBatch(percentiles=pcts, ttft_ms=ttft, itl_ms=itl,
                            ttft_mean_ms=means[0], itl_mean_ms=means[1], valid=valid)


def _targets(value: np.ndarray | float, size: int, name: str) -> np.ndarray:
    t = _batch_rates(value, size, f"size_batch {name}")
    bad = ~(np.isfinite(t) & (t >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"size_batch: {name}[{i}] must be a finite number >= 0, got {t[i]}")
    return t


def _percentiles(value: np.ndarray | float, size: int, name: str) -> np.ndarray:
    q = _batch_rates(value, size, f"size_batch {name}")
    bad = ~(np.isfinite(q) & ((q == 0) | ((q > 0) & (q < 100))))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"size_batch: {name}[{i}] must be 0 (mean) or in (0, 100), "
                          f"got {q[i]}")
    return q


def _percentile_rates(table: ChainTable, model: PerfModel, coef: LatencyCoefficients,
                      prep: _Prepared, rows: np.ndarray, target_ms: np.ndarray,
                      percentile: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(λ, below) of prepared ``rows`` (ascending) for a percentile target of ``kind``."""

    def exceedance(sub: np.ndarray, lam: np.ndarray) -> np.ndarray:
        cand = rows[sub]
        sol = table.solve(cand, lam)
        dist = LatencyDistribution(model, sol, table.state_probabilities(cand, lam),
                                   coef.take(cand))
        cdf = dist.ttft_cdf if kind == "ttft" else dist.itl_cdf
        return 1.0 - cdf(target_ms[sub])

    return percentile_search(exceedance, prep.lam_min[rows], prep.lam_max[rows],
                             1.0 - percentile / 100.0)


def size_batch(batch: QueueBatch, ttft_ms: np.ndarray | float, itl_ms: np.ndarray | float,
               tps: np.ndarray | float, *, exact_rates: bool = True,
               ttft_percentile: np.ndarray | float = 0.0,
               itl_percentile: np.ndarray | float = 0.0,
               latencies: bool = True,
               floor_rps: np.ndarray | None = None) -> SizingBatch:
    """The batched `size`: each candidate's largest rate within its targets.

    Parameters
    ----------
    batch : QueueBatch of C candidates
    ttft_ms, itl_ms : ndarray, shape (C,) or scalar, targets in ms (0: ignored)
    tps : ndarray, shape (C,) or scalar, output tokens/s target (> 0 caps λ at 0.9·λ_max)
    exact_rates : bool
        False stops the TTFT or ITL search of a candidate once it can no longer bind
        (its ``rate_ttft_rps``/``rate_itl_rps`` is then NaN); feasibility, ``rate_rps`` and
        the metrics at λ* are unchanged, at roughly 40% less work.
    ttft_percentile, itl_percentile : ndarray, shape (C,) or scalar
        The percentile (0 < p < 100) a target is on; 0 (default) means the mean. Percentile
        rows are sized by `percentile.percentile_search` on the exceedance probability.
    latencies : bool
        False leaves the latencies at λ* (``metrics`` prefill, ITL, TTFT, wait, resp) inf:
        a caller that reads only the rates skips their evaluation (the rates, throughput
        and ρ are unchanged).
    floor_rps : ndarray, shape (C,), optional (with ``exact_rates=False`` only)
        A candidate whose sustainable rate is certainly below its floor is given up as soon
        as its brackets show it: infeasible, reason "rate below the floor". Every other row
        is sized exactly as without a floor (the concurrency search's bisection only asks
        whether f(M) reaches its threshold).

    Returns
    -------
    SizingBatch; row i equals ``size(config i, Targets(ttft_ms[i], itl_ms[i], tps[i], …))``.
    """
    size = len(batch)
    ttft = _targets(ttft_ms, size, "ttft_ms")
    itl = _targets(itl_ms, size, "itl_ms")
    tps_t = _targets(tps, size, "tps")
    pct = {"ttft": _percentiles(ttft_percentile, size, "ttft_percentile"),
           "itl": _percentiles(itl_percentile, size, "itl_percentile")}
    if floor_rps is not None and exact_rates:
        raise ConfigError("size_batch: floor_rps needs exact_rates=False")
    prep = _prepare(batch)
    model = batch.perf_model
    feasible = prep.code == 0
    reason = np.array(_CONFIG_REASONS, dtype=object)[prep.code]
    rates = {k: np.zeros(size) for k in ("ttft", "itl", "tps")}
    out = _empty_metrics(size, np.zeros(size))
    valid = np.zeros(size, dtype=bool)
    if prep.index.size:
        idx = prep.index
        table = ChainTable(prep.log_mu, prep.num_servers, prep.num_queue, prep.lam_max,
                           prep.monotone)
        coef = latency_coefficients(model, prep.params, prep.num_queue)
        lam_tps = np.where(tps_t[idx] > 0, prep.lam_max * (1.0 - STABILITY_SAFETY_FRACTION),
                           prep.lam_max)
        targets = {"ttft": ttft[idx], "itl": itl[idx]}
        on_pct = {k: (pct[k][idx] > 0) & (targets[k] > 0) for k in targets}
        search = LockstepSearch(table, model, coef, prep.lam_min, prep.lam_max,
                                np.where(on_pct["ttft"], 0.0, targets["ttft"]),
                                np.where(on_pct["itl"], 0.0, targets["itl"]),
                                cap=None if exact_rates else lam_tps,
                                floor=None if floor_rps is None
                                else _batch_rates(floor_rps, size, "size_batch floor_rps")[idx]
                                / MS_PER_S).run()
        v = idx.size
        lam_of = {"ttft": search.result[:v].copy(), "itl": search.result[v:].copy()}
        below = {"ttft": search.below[:v].copy(), "itl": search.below[v:].copy()}
        for kind in ("ttft", "itl"):
            rows = np.flatnonzero(on_pct[kind] & ~search.given_up)
            if rows.size:
                lam_of[kind][rows], below[kind][rows] = _percentile_rates(
                    table, model, coef, prep, rows, targets[kind][rows], pct[kind][idx][rows],
                    kind)
        ok = ~below["ttft"] & ~below["itl"] & ~search.given_up
        # fmin: a search stopped early (NaN) never holds the minimum.
        lam_star = np.fmin(np.fmin(lam_of["ttft"], lam_of["itl"]), lam_tps)
        rate = lam_star * MS_PER_S
        sel = np.flatnonzero(ok)
        sol = table.solve(sel, rate[sel] / MS_PER_S)
        _fill_metrics(out, idx[sel], model, sol, coef.take(sel), prep.lam_max[sel],
                      prep.num_servers[sel], latencies)
        out["offered_rps"][idx[sel]] = rate[sel]
        valid[idx[sel]] = True
        feasible[idx] = ok
        for i in np.flatnonzero(search.given_up):
            reason[idx[i]] = "rate below the floor"
        for kind in ("itl", "ttft"):
            for i in np.flatnonzero(below[kind]):
                stat = f"p{pct[kind][idx[i]]:g} " if on_pct[kind][i] else ""
                reason[idx[i]] = f"{kind} {stat}target below attainable region"
        for name, lam in (("ttft", lam_of["ttft"]), ("itl", lam_of["itl"]), ("tps", lam_tps)):
            rates[name][idx[sel]] = lam[sel] * MS_PER_S
    return SizingBatch(feasible=feasible, reason=reason.astype(str),
                       rate_ttft_rps=rates["ttft"], rate_itl_rps=rates["itl"],
                       rate_tps_rps=rates["tps"], metrics=MetricsBatch(**out, valid=valid))
