"""One replica's queue analyzer: `analyze` at a rate, `size` to SLO targets
(docs/design/optimizer-model.md §2.3–2.7).

This is the scalar API, written to follow the upstream rules literally (it doubles as the
reference the batched API in `batch.py` is tested against). Rates at this interface are
requests per second, the queue kernels work in requests per millisecond, times are ms.

A config that cannot be analysed (N <= 0, Q < 0, L < 0, m < 1, K = N + Q <= 1, …) makes
`analyze` raise `ConfigError`, while `size` returns an infeasible `Sizing` with the reason:
upstream silently drops such candidates, and the optimizer does the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inferno.analyzer.latency import (
    LatencyCoefficients,
    LatencyDistribution,
    latency_coefficients,
    queue_metrics,
)
from inferno.analyzer.percentile import percentile_search
from inferno.analyzer.queueing import QueueSolution, solve_birth_death, state_probabilities
from inferno.analyzer.service import ServiceParams, service_params, service_time_table
from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfModel, PerfParms
from inferno.model.units import MS_PER_S

__all__ = [
    "EPSILON",
    "LatencyStats",
    "SEARCH_MAX_ITERATIONS",
    "SEARCH_TOLERANCE",
    "STABILITY_SAFETY_FRACTION",
    "Metrics",
    "QueueConfig",
    "Sizing",
    "Targets",
    "analyze",
    "bisect",
    "config_problem",
    "latency_stats",
    "rate_range",
    "size",
    "within_tolerance",
]

EPSILON = 0.001
"""Rate range [ε·μ(1), (1−ε)·μ(N)] (§1.9)."""
STABILITY_SAFETY_FRACTION = 0.1
"""A TPS target sizes to (1 − 0.1)·λ_max."""
SEARCH_TOLERANCE = 1e-6
"""Relative tolerance on the metric in the rate bisection (§2.7)."""
SEARCH_MAX_ITERATIONS = 100

BELOW, WITHIN, ABOVE = -1, 0, 1
"""Bisection outcome: target below the attainable region, found, or above it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """One replica: batch N, queue Q, request shape, iteration-time parameters, model.

    Not validated on construction: an unusable config is an infeasible sizing (see
    `config_problem`), not an error, because candidates are built before they are judged.
    """

    max_batch: int
    """N: requests served concurrently (continuous batching)."""
    max_queue: int
    """Q: requests that may wait; arrivals beyond N + Q are lost."""
    in_tokens: float
    """L: average input tokens per request (>= 0)."""
    out_tokens: float
    """m: average output tokens per request (>= 1)."""
    perf: PerfParms
    perf_model: PerfModel = PerfModel.CHUNKED
    max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS
    """Per-iteration token budget of the chunked model (0 means 8192)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metrics:
    """Steady-state metrics of one replica at an offered rate (§2.5)."""

    offered_rps: float
    throughput_rps: float
    """Completed requests per second: offered minus the share lost when the queue is full."""
    resp_ms: float
    wait_ms: float
    num_in_service: float
    """X̄: mean batch occupancy."""
    prefill_ms: float
    itl_ms: float
    ttft_ms: float
    max_rate_rps: float
    """(1 − ε)·μ(N) in req/s: the top of the sizing range."""
    rho: float
    """Utilisation X̄/N, clamped to [0, 1]."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Targets:
    """SLO targets; 0 means the target is ignored, negative is an error."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tps: float = 0.0
    """Output tokens per second; only adds a 10% stability margin to the rate (§2.6)."""
    ttft_percentile: float = 0.0
    """Percentile (0 < p < 100) the TTFT target is on; 0 means the mean."""
    itl_percentile: float = 0.0
    """Percentile (0 < p < 100) the ITL target is on; 0 means the mean."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyStats:
    """Mean and percentiles of one latency (ms) at one operating point."""

    mean: float
    p50: float
    p90: float
    p99: float
    extra: tuple[tuple[float, float], ...] = ()
    """(percentile, value) pairs asked for beyond 50/90/99."""

    def at(self, percentile: float) -> float:
        """The value at ``percentile`` (0 for the mean)."""
        table = {0.0: self.mean, 50.0: self.p50, 90.0: self.p90, 99.0: self.p99,
                 **dict(self.extra)}
        return table[float(percentile)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizing:
    """Result of `size`: the largest rate one replica sustains within the targets.

    The sustainable rate is ``metrics.throughput_rps`` (the throughput at λ*, §2.6); it is
    0 when ``feasible`` is False, ``reason`` says why, and ``metrics`` is None.
    """

    feasible: bool
    reason: str
    rate_ttft_rps: float
    rate_itl_rps: float
    rate_tps_rps: float
    metrics: Metrics | None

    @property
    def rate_rps(self) -> float:
        """Sustainable request rate of one replica (req/s), 0 when infeasible."""
        return self.metrics.throughput_rps if self.metrics is not None else 0.0


def config_problem(cfg: QueueConfig) -> str:
    """Why ``cfg`` cannot be analysed, or '' (field checks; service time checked later)."""
    n, q, L, m = cfg.max_batch, cfg.max_queue, cfg.in_tokens, cfg.out_tokens
    perf = cfg.perf
    if n < 1:
        return f"max_batch must be >= 1, got {n}"
    if q < 0:
        return f"max_queue must be >= 0, got {q}"
    if not (math.isfinite(L) and L >= 0):
        return f"in_tokens must be a finite number >= 0, got {L}"
    if not (math.isfinite(m) and m >= 1):
        return f"out_tokens must be a finite number >= 1, got {m}"
    if n + q < 2:
        return f"max_batch + max_queue must be >= 2 (one-state queue), got {n + q}"
    if cfg.max_num_tokens < 0:
        return f"max_num_tokens must be >= 0, got {cfg.max_num_tokens}"
    if not all(math.isfinite(v) for v in (perf.alpha_ms, perf.beta_ms, perf.gamma_ms)):
        return (f"perf parameters must be finite, got alpha_ms={perf.alpha_ms}, "
                f"beta_ms={perf.beta_ms}, gamma_ms={perf.gamma_ms}")
    return ""


@dataclass(frozen=True, slots=True)
class _Replica:
    """A valid config with its service rates: the scalar analyzer's working state."""

    cfg: QueueConfig
    params: ServiceParams
    log_mu: np.ndarray
    lam_min: float
    lam_max: float
    coef: LatencyCoefficients

    @property
    def max_rate_rps(self) -> float:
        return self.lam_max * MS_PER_S

    def _args(self, lam_rpms: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (np.array([lam_rpms]), self.log_mu[None, :], np.array([self.cfg.max_batch]),
                np.array([self.cfg.max_queue]))

    def solve(self, lam_rpms: float) -> QueueSolution:
        return solve_birth_death(*self._args(lam_rpms))

    def metrics(self, rate_rps: float) -> Metrics:
        sol = self.solve(rate_rps / MS_PER_S)
        lat = queue_metrics(self.cfg.perf_model, sol, self.coef)
        n_srv = float(sol.n_srv[0])
        return Metrics(offered_rps=rate_rps,
                       throughput_rps=float(sol.throughput_rpms[0]) * MS_PER_S,
                       resp_ms=float(lat.resp_ms[0]), wait_ms=float(lat.wait_ms[0]),
                       num_in_service=n_srv, prefill_ms=float(lat.prefill_ms[0]),
                       itl_ms=float(lat.itl_ms[0]), ttft_ms=float(lat.ttft_ms[0]),
                       max_rate_rps=self.max_rate_rps,
                       rho=min(max(n_srv / self.cfg.max_batch, 0.0), 1.0))

    def ttft_itl(self, lam_rpms: float) -> tuple[float, float]:
        lat = queue_metrics(self.cfg.perf_model, self.solve(lam_rpms), self.coef)
        return float(lat.ttft_ms[0]), float(lat.itl_ms[0])

    def distribution(self, lam_rpms: float) -> LatencyDistribution:
        args = self._args(lam_rpms)
        return LatencyDistribution(self.cfg.perf_model, solve_birth_death(*args),
                                   state_probabilities(*args, self.cfg.max_batch + 1),
                                   self.coef)

    def exceedance(self, lam_rpms: float, target_ms: float, kind: str) -> float:
        """P(TTFT > target) (``kind`` "ttft") or P(ITL > target) at ``lam_rpms``."""
        dist = self.distribution(lam_rpms)
        cdf = dist.ttft_cdf if kind == "ttft" else dist.itl_cdf
        return 1.0 - float(cdf(np.array([target_ms]))[0])


def _replica(cfg: QueueConfig) -> tuple[_Replica | None, str]:
    problem = config_problem(cfg)
    if problem:
        return None, problem
    p = cfg.perf
    params = service_params(p, cfg.in_tokens, cfg.out_tokens, cfg.max_batch, cfg.max_num_tokens)
    n = np.arange(1, cfg.max_batch + 1, dtype=float)
    tau = service_time_table(cfg.perf_model, cfg.max_batch, params)[0][0]
    if not np.all(np.isfinite(tau) & (tau > 0)):
        return None, ("service time must be positive and finite for every batch size "
                      f"1..{cfg.max_batch}, got min {float(np.min(tau)):g} ms")
    mu = n / tau
    lam_min, lam_max = EPSILON * float(mu[0]), (1.0 - EPSILON) * float(mu[-1])
    if not lam_min <= lam_max:
        return None, f"empty rate range [{lam_min * MS_PER_S:g}, {lam_max * MS_PER_S:g}] req/s"
    coef = latency_coefficients(cfg.perf_model, params, np.array([cfg.max_queue]))
    return _Replica(cfg, params, np.log(mu), lam_min, lam_max, coef), ""


def _require(cfg: QueueConfig) -> _Replica:
    rep, problem = _replica(cfg)
    if rep is None:
        raise ConfigError(f"queue config: {problem}")
    return rep


def rate_range(cfg: QueueConfig) -> tuple[float, float]:
    """(min, max) request rate (req/s) of the sizing range, [ε·μ(1), (1−ε)·μ(N)]."""
    rep = _require(cfg)
    return rep.lam_min * MS_PER_S, rep.lam_max * MS_PER_S


def analyze(cfg: QueueConfig, rate_rps: float) -> Metrics:
    """Metrics of one replica offered ``rate_rps`` requests per second (§2.5).

    The classic model rejects rates above its max rate (upstream G3); the chunked and vllm
    models accept any rate and show overload as blocking (throughput below the offered rate).
    """
    return _checked(cfg, rate_rps, "analyze").metrics(rate_rps)


def _checked(cfg: QueueConfig, rate_rps: float, what: str) -> _Replica:
    rep = _require(cfg)
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ConfigError(f"{what}: rate_rps must be a finite number > 0, got {rate_rps}")
    if cfg.perf_model is PerfModel.CLASSIC and rate_rps > rep.max_rate_rps:
        raise ConfigError(f"{what}: rate_rps {rate_rps:g} exceeds the classic model's max "
                          f"rate {rep.max_rate_rps:g} req/s")
    return rep


def latency_stats(cfg: QueueConfig, rate_rps: float, extra: tuple[float, ...] = ()
                  ) -> tuple[LatencyStats, LatencyStats]:
    """(TTFT, ITL) mean and p50/p90/p99 (plus ``extra`` percentiles) of one replica offered
    ``rate_rps`` req/s, from `latency.LatencyDistribution` (same checks as `analyze`)."""
    rep = _checked(cfg, rate_rps, "latency_stats")
    for p in extra:
        if not 0.0 < p < 100.0:
            raise ConfigError(f"latency_stats: percentiles must lie in (0, 100), got {p}")
    dist = rep.distribution(rate_rps / MS_PER_S)
    out = []
    for mean, quantile in ((dist.mean.ttft_ms, dist.ttft_quantile),
                           (dist.mean.itl_ms, dist.itl_quantile)):
        values = {p: float(quantile(p / 100.0)[0]) for p in (50.0, 90.0, 99.0, *extra)}
        out.append(LatencyStats(mean=float(mean[0]), p50=values[50.0], p90=values[90.0],
                                p99=values[99.0],
                                extra=tuple((float(p), values[float(p)]) for p in extra)))
    return out[0], out[1]


def within_tolerance(y: float, target: float, tol: float = SEARCH_TOLERANCE) -> bool:
    """y equals the target, or lies within ``tol`` of it relatively (§2.7)."""
    return y == target or (target != 0 and abs(y - target) / abs(target) <= tol)


def bisect(x_lo: float, x_hi: float, target: float, f: Callable[[float], float], *,
           tol: float = SEARCH_TOLERANCE, max_iter: int = SEARCH_MAX_ITERATIONS
           ) -> tuple[float, int]:
    """Upstream's monotone bisection (§2.7): (x, BELOW | WITHIN | ABOVE).

    The direction comes from the end values alone (a flat metric counts as decreasing); a
    target outside the end values returns that end with BELOW or ABOVE; otherwise the
    bracket is halved until f(mid) is within ``tol`` or ``max_iter`` halvings were made, and
    the last midpoint is returned.
    """
    if x_lo > x_hi:
        raise ValueError(f"bisect: empty range [{x_lo}, {x_hi}]")
    y_lo = f(x_lo)
    if within_tolerance(y_lo, target, tol):
        return x_lo, WITHIN
    y_hi = f(x_hi)
    if within_tolerance(y_hi, target, tol):
        return x_hi, WITHIN
    increasing = y_lo < y_hi
    if (increasing and target < y_lo) or (not increasing and target > y_lo):
        return x_lo, BELOW
    if (increasing and target > y_hi) or (not increasing and target < y_hi):
        return x_hi, ABOVE
    x = x_lo
    for _ in range(max_iter):
        x = 0.5 * (x_lo + x_hi)
        y = f(x)
        if within_tolerance(y, target, tol):
            break
        if (increasing and target < y) or (not increasing and target > y):
            x_hi = x
        else:
            x_lo = x
    return x, WITHIN


def _check_targets(targets: Targets) -> None:
    for name in ("ttft_ms", "itl_ms", "tps"):
        v = getattr(targets, name)
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"targets: {name} must be a finite number >= 0, got {v}")
    for name in ("ttft_percentile", "itl_percentile"):
        v = getattr(targets, name)
        if not (v == 0 or 0 < v < 100):
            raise ConfigError(f"targets: {name} must be 0 (mean) or in (0, 100), got {v}")


def _infeasible(reason: str) -> Sizing:
    return Sizing(feasible=False, reason=reason, rate_ttft_rps=0.0, rate_itl_rps=0.0,
                  rate_tps_rps=0.0, metrics=None)


def size(cfg: QueueConfig, targets: Targets) -> Sizing:
    """The largest rate one replica sustains within ``targets`` (§2.6).

    Each non-zero TTFT/ITL target is met by bisection over [λ_min, λ_max]; a target the
    replica misses even at λ_min makes the sizing infeasible, one it meets even at λ_max
    yields λ_max. A target on a percentile bounds the exceedance probability instead
    (`percentile.percentile_search`). A TPS target caps the rate at 0.9·λ_max. The metrics
    are taken at λ* = min of the three rates.
    """
    _check_targets(targets)
    rep, problem = _replica(cfg)
    if rep is None:
        return _infeasible(problem)
    lam = {}
    for name, target, pick in (("ttft", targets.ttft_ms, 0), ("itl", targets.itl_ms, 1)):
        lam[name] = rep.lam_max
        percentile = getattr(targets, f"{name}_percentile")
        if target > 0 and percentile > 0:

            def exceed(_: np.ndarray, x: np.ndarray, k: str = name, t: float = target
                       ) -> np.ndarray:
                return np.array([rep.exceedance(float(x[0]), t, k)])

            found, below = percentile_search(
                exceed, np.array([rep.lam_min]), np.array([rep.lam_max]),
                np.array([1.0 - percentile / 100.0]))
            if below[0]:
                tail = rep.exceedance(rep.lam_min, target, name)
                return _infeasible(f"{name} p{percentile:g} target {target:g} ms is below the "
                                   f"attainable region (P({name} > target) = {tail:.3g} at "
                                   f"the lowest rate)")
            lam[name] = float(found[0])
        elif target > 0:
            def metric(x: float, k: int = pick) -> float:
                return rep.ttft_itl(x)[k]

            x, where = bisect(rep.lam_min, rep.lam_max, target, metric)
            if where == BELOW:
                y = rep.ttft_itl(rep.lam_min)[pick]
                return _infeasible(f"{name} target {target:g} ms is below the attainable "
                                   f"region ({name} {y:g} ms at the lowest rate)")
            lam[name] = x
    lam_tps = rep.lam_max * (1.0 - STABILITY_SAFETY_FRACTION) if targets.tps > 0 \
        else rep.lam_max
    lam_star = min(lam["ttft"], lam["itl"], lam_tps)
    return Sizing(feasible=True, reason="", rate_ttft_rps=lam["ttft"] * MS_PER_S,
                  rate_itl_rps=lam["itl"] * MS_PER_S, rate_tps_rps=lam_tps * MS_PER_S,
                  metrics=rep.metrics(lam_star * MS_PER_S))
