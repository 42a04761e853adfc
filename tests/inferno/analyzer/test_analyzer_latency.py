"""The vllm latency model: closed forms, consistency of means and distributions, percentile
sizing (scalar and batched), and the queue kernels' idle/wait probabilities it reads."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import poisson

from inferno.analyzer import (
    QueueBatch,
    QueueConfig,
    Targets,
    analyze,
    analyze_batch,
    latency_percentiles_batch,
    latency_stats,
    size,
    size_batch,
)
from inferno.analyzer.analyzer import _replica
from inferno.analyzer.batch import _prepare
from inferno.analyzer.chain import ChainTable
from inferno.analyzer.latency import (
    _COLUMNS,
    LatencyCoefficients,
    _Arrival,
    _queue_shape,
    latency_coefficients,
)
from inferno.analyzer.queueing import solve_birth_death, state_probabilities
from inferno.analyzer.service import ServiceParams
from inferno.errors import ConfigError
from inferno.model import PerfModel, PerfParms

LLAMA_A100 = QueueConfig(max_batch=32, max_queue=320, in_tokens=512, out_tokens=256,
                         perf=PerfParms(alpha_ms=12.93, beta_ms=0.059, gamma_ms=0.00184375),
                         perf_model=PerfModel.VLLM)
"""llama3_8b on A100 (sample-data/large), an example operating point of the vllm model."""


def _mmc_closed_form(lam: float, mu: float, c: int, q: int) -> tuple[float, float]:
    """(p_0, P(c <= n < c+q)) of M/M/c/(c+q) with per-server rate mu."""
    a, rho = lam / mu, lam / (c * mu)
    head = sum(a**n / math.factorial(n) for n in range(c))
    top = a**c / math.factorial(c)
    p0 = 1.0 / (head + top * sum(rho**j for j in range(q + 1)))
    return p0, top * p0 * sum(rho**j for j in range(q))


@pytest.mark.parametrize(("c", "q", "load"), [(1, 50, 0.7), (4, 0, 0.5), (10, 30, 0.9),
                                              (32, 320, 0.85)], ids=str)
def test_idle_and_wait_probabilities_match_erlang(c: int, q: int, load: float) -> None:
    """p_idle and p_wait of the full-state kernel equal the M/M/c/K closed form (1e-9)."""
    mu = 0.02
    log_mu = np.log(mu * np.minimum(np.arange(1, c + 1), c))
    lam = load * c * mu
    sol = solve_birth_death(np.array([lam]), log_mu[None, :], np.array([c]), np.array([q]))
    p0, wait = _mmc_closed_form(lam, mu, c, q)
    assert sol.p_idle[0] == pytest.approx(p0, rel=1e-9)
    assert sol.p_wait[0] == pytest.approx(wait, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("n", [3, 40, 200, 1500])
def test_prepared_chain_probabilities_equal_reference(n: int) -> None:
    """ChainTable state probabilities, p_idle and p_wait equal the full-state kernel's."""
    size_c = 1
    batch = QueueBatch(max_batch=np.array([n]), max_queue=np.array([64]),
                       in_tokens=np.full(size_c, 64.0), out_tokens=np.full(size_c, 256.0),
                       alpha_ms=np.full(size_c, 50.0), beta_ms=np.full(size_c, 0.001),
                       gamma_ms=np.full(size_c, 1e-5), max_num_tokens=np.full(size_c, 8192),
                       perf_model=PerfModel.VLLM)
    prep = _prepare(batch)
    log_mu = prep.log_mu[0][:, 1:].copy()
    table = ChainTable(prep.log_mu, prep.num_servers, prep.num_queue, prep.lam_max,
                       prep.monotone)
    for frac in (1e-3, 0.3, 0.97):
        lam = np.array([frac]) * prep.lam_max
        ref = solve_birth_death(lam, log_mu, prep.num_servers, prep.num_queue)
        got = table.solve(np.array([0]), lam)
        for field in ("p_idle", "p_wait", "n_srv", "p_block"):
            assert getattr(got, field)[0] == pytest.approx(getattr(ref, field)[0], rel=1e-9,
                                                           abs=1e-290), (frac, field)
        width = n + 1
        probs = table.state_probabilities(np.array([0]), lam)[:, :width]
        expect = state_probabilities(lam, log_mu, prep.num_servers, prep.num_queue, width)
        assert np.allclose(probs, expect, rtol=1e-9, atol=1e-200)


def _arrival(rho: float, d_full: float, n: int, ratio: float = 1.0) -> _Arrival:
    one = np.ones(1)
    return _Arrival(idle=0 * one, busy=0 * one, n_busy=0 * one, wait=0.5 * one, scale=one,
                    lam=rho * n / d_full * one, ratio=ratio * one)


def _coef_with(n: int, q: int, d_full: float) -> LatencyCoefficients:
    """Coefficients of an N-slot replica whose full-batch service time is ``d_full``."""
    p = ServiceParams(*(np.array([v], dtype=float) for v in (10.0, 0.05, 1e-4, 128.0, 256.0,
                                                               n, 8192.0)))
    coef = latency_coefficients(PerfModel.VLLM, p, np.array([q]))
    coef.cols[[name for name, _ in _COLUMNS].index("full_service_ms")] = d_full
    return coef


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.95])
def test_single_slot_wait_is_md1(rho: float) -> None:
    """N = 1: the wait given waiting is D/(2(1−ρ)), the M/D/1 value (Pollaczek–Khinchine)."""
    d_full = 1000.0
    coef = _coef_with(1, 100_000, d_full)
    _, queued = _queue_shape(coef, _arrival(rho, d_full, 1))
    assert queued[0] == pytest.approx(d_full / (2.0 * (1.0 - rho)), rel=1e-9)


def _mdc_exact_wait(c: int, rho: float, d_full: float) -> float:
    """Mean M/D/c wait from the D-grid chain n' = (n − c)⁺ + Poisson(λD) (Crommelin)."""
    a = rho * c
    size_k = int(c + 60 * math.sqrt(a) + 400)
    pm = poisson.pmf(np.arange(size_k + 1), a)
    trans = np.zeros((size_k + 1, size_k + 1))
    for n in range(size_k + 1):
        base = max(n - c, 0)
        trans[n, base:] = pm[:size_k + 1 - base]
        trans[n, size_k] += 1.0 - trans[n].sum()
    w, v = np.linalg.eig(trans.T)
    p = np.real(v[:, np.argmin(abs(w - 1))])
    p /= p.sum()
    lq = (np.maximum(np.arange(size_k + 1) - c, 0) * p).sum()
    return lq / (a / d_full)


@pytest.mark.parametrize(("c", "rho"), [(4, 0.7), (10, 0.85), (32, 0.85), (32, 0.7)])
def test_multi_slot_wait_tracks_exact_mdc(c: int, rho: float) -> None:
    """The mean slot wait (Erlang-C probability × the order-statistic wait of the Cosmetatos-
    scaled queue) is within 12% of the exact M/D/c mean wait (Crommelin's D-grid chain); the
    Erlang-C probability of waiting is 5-10% above M/D/c's, the largest part of the gap."""
    d_full, mu = 1000.0, 1.0 / 1000.0
    lam = rho * c * mu
    log_mu = np.log(mu * np.arange(1, c + 1))
    sol = solve_birth_death(np.array([lam]), log_mu[None, :], np.array([c]), np.array([5000]))
    coef = _coef_with(c, 5000, d_full)
    arr = _arrival(rho, d_full, c)._replace(wait=sol.p_wait)
    _, queued = _queue_shape(coef, arr)
    approx = float(sol.p_wait[0] * queued[0])
    assert approx == pytest.approx(_mdc_exact_wait(c, rho, d_full), rel=0.12)


CONFIGS = [
    LLAMA_A100,
    replace(LLAMA_A100, in_tokens=2048, out_tokens=128),
    replace(LLAMA_A100, in_tokens=128, out_tokens=1024, max_batch=10, max_queue=100,
            perf=PerfParms(alpha_ms=13.71, beta_ms=0.354, gamma_ms=0.0110625)),
    replace(LLAMA_A100, in_tokens=12000, out_tokens=64, max_batch=64, max_queue=64),
]
IDS = ["512-256", "2048-128", "70b-128-1024", "multi-chunk"]


def _area_above(cdf, quantile) -> float:
    """∫(1 − F) by the trapezoid rule on a fine grid up to the 0.999-quantile and a second one
    up to the (1 − 1e-12)-quantile (the tail)."""
    q1, q2 = float(quantile(0.999)[0]), float(quantile(1.0 - 1e-12)[0])
    grid = np.concatenate([np.linspace(0.0, q1, 3001), np.linspace(q1, q2, 3001)[1:]])
    tail = 1.0 - np.array([cdf(np.array([t]))[0] for t in grid])
    return float(np.sum(0.5 * (tail[1:] + tail[:-1]) * np.diff(grid)))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("load", [0.3, 0.85])
def test_distribution_mean_equals_the_mean_metrics(cfg: QueueConfig, load: float) -> None:
    """∫(1 − F) of the TTFT and ITL distributions equals `analyze`'s mean (within 1%: the
    co-admitted prompts are truncated at three)."""
    rep, _ = _replica(cfg)
    assert rep is not None
    rate = load * rep.max_rate_rps
    dist = rep.distribution(rate / 1000.0)
    m = analyze(cfg, rate)
    assert _area_above(dist.ttft_cdf, dist.ttft_quantile) == pytest.approx(m.ttft_ms, rel=0.01)
    assert _area_above(dist.itl_cdf, dist.itl_quantile) == pytest.approx(m.itl_ms, rel=0.01)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_quantiles_grow_with_level_and_load(cfg: QueueConfig) -> None:
    """p50 <= p90 <= p99, and every percentile is non-decreasing in the offered rate (within
    1%: near a full batch the ITL offset that keeps the mean exact moves slightly)."""
    rep, _ = _replica(cfg)
    assert rep is not None
    prev = None
    for load in (0.2, 0.5, 0.8, 0.95):
        ttft, itl = latency_stats(cfg, load * rep.max_rate_rps)
        for s in (ttft, itl):
            assert s.p50 <= s.p90 <= s.p99
        now = (ttft.p50, ttft.p90, ttft.p99, itl.p50, itl.p90, itl.p99)
        if prev is not None:
            assert all(b >= a * 0.99 for a, b in zip(prev, now, strict=True)), load
        prev = now


def test_batched_percentiles_equal_scalar() -> None:
    """`latency_percentiles_batch` row i equals `latency_stats` of config i (1e-9)."""
    rates = [1.0, 2.0, 0.05, 0.3]
    cfgs = [CONFIGS[0], CONFIGS[1], CONFIGS[2], CONFIGS[3]]
    batch = QueueBatch(
        max_batch=np.array([c.max_batch for c in cfgs]),
        max_queue=np.array([c.max_queue for c in cfgs]),
        in_tokens=np.array([c.in_tokens for c in cfgs], float),
        out_tokens=np.array([c.out_tokens for c in cfgs], float),
        alpha_ms=np.array([c.perf.alpha_ms for c in cfgs]),
        beta_ms=np.array([c.perf.beta_ms for c in cfgs]),
        gamma_ms=np.array([c.perf.gamma_ms for c in cfgs]),
        max_num_tokens=np.full(4, 8192), perf_model=PerfModel.VLLM)
    got = latency_percentiles_batch(batch, np.array(rates), (50.0, 90.0, 99.0))
    for i, (cfg, rate) in enumerate(zip(cfgs, rates, strict=True)):
        ttft, itl = latency_stats(cfg, rate)
        assert got.ttft_ms[i] == pytest.approx([ttft.p50, ttft.p90, ttft.p99], rel=1e-9)
        assert got.itl_ms[i] == pytest.approx([itl.p50, itl.p90, itl.p99], rel=1e-9)
        assert got.ttft_mean_ms[i] == pytest.approx(ttft.mean, rel=1e-12)


@pytest.mark.parametrize(("percentile", "target"), [(99.0, 1000.0), (90.0, 300.0),
                                                    (50.0, 90.0)])
def test_percentile_sizing_is_tight(percentile: float, target: float) -> None:
    """At the sized rate the percentile meets the target; 0.1% above it, it does not."""
    s = size(LLAMA_A100, Targets(ttft_ms=target, ttft_percentile=percentile))
    assert s.feasible
    assert s.rate_ttft_rps < s.metrics.max_rate_rps
    rep, _ = _replica(LLAMA_A100)
    tail = rep.exceedance(s.rate_ttft_rps / 1000.0, target, "ttft")
    assert tail <= 1.0 - percentile / 100.0
    assert rep.exceedance(s.rate_ttft_rps * 1.001 / 1000.0, target, "ttft") > (
        1.0 - percentile / 100.0)
    ttft, _ = latency_stats(LLAMA_A100, s.rate_ttft_rps, (percentile,))
    assert ttft.at(percentile) <= target * (1 + 1e-6)


def test_percentile_target_is_stricter_than_the_mean() -> None:
    """The same number as a p99 target sustains less than as a mean target (p99 >= mean)."""
    mean = size(LLAMA_A100, Targets(ttft_ms=500.0, itl_ms=50.0))
    p99 = size(LLAMA_A100, Targets(ttft_ms=500.0, itl_ms=50.0, ttft_percentile=99.0,
                                   itl_percentile=99.0))
    assert mean.feasible
    assert p99.feasible
    assert p99.rate_rps < mean.rate_rps


def test_unreachable_percentile_is_infeasible_with_reason() -> None:
    """A p99 TTFT target below the prefill time is below the attainable region."""
    s = size(LLAMA_A100, Targets(ttft_ms=20.0, ttft_percentile=99.0))
    assert not s.feasible
    assert "ttft p99 target 20 ms is below the attainable region" in s.reason
    got = size_batch(_batch_of(LLAMA_A100), 20.0, 0.0, 0.0, ttft_percentile=99.0)
    assert not got.feasible[0]
    assert got.reason[0] == "ttft p99 target below attainable region"


def _batch_of(cfg: QueueConfig, **kw) -> QueueBatch:
    return QueueBatch(max_batch=np.array([cfg.max_batch]), max_queue=np.array([cfg.max_queue]),
                      in_tokens=np.array([float(cfg.in_tokens)]),
                      out_tokens=np.array([float(cfg.out_tokens)]),
                      alpha_ms=np.array([cfg.perf.alpha_ms]),
                      beta_ms=np.array([cfg.perf.beta_ms]),
                      gamma_ms=np.array([cfg.perf.gamma_ms]),
                      max_num_tokens=np.array([cfg.max_num_tokens]),
                      perf_model=kw.get("model", cfg.perf_model))


@pytest.mark.parametrize("model", list(PerfModel))
@pytest.mark.parametrize(("ttft_pct", "itl_pct"), [(99.0, 0.0), (90.0, 99.0), (0.0, 90.0)])
def test_batched_percentile_sizing_equals_scalar(model: PerfModel, ttft_pct: float,
                                                 itl_pct: float) -> None:
    """size_batch with percentile targets gives each row the scalar `size` rates (1e-9)."""
    cfgs = [replace(c, perf_model=model) for c in CONFIGS[:3]]
    targets = [(800.0, 60.0), (600.0, 45.0), (3000.0, 60.0)]
    for cfg, (ttft, itl) in zip(cfgs, targets, strict=True):
        ref = size(cfg, Targets(ttft_ms=ttft, itl_ms=itl, ttft_percentile=ttft_pct,
                                itl_percentile=itl_pct))
        got = size_batch(_batch_of(cfg), ttft, itl, 0.0, ttft_percentile=ttft_pct,
                         itl_percentile=itl_pct)
        assert got.feasible[0] == ref.feasible
        if ref.feasible:
            assert got.rate_rps[0] == pytest.approx(ref.rate_rps, rel=1e-9)
            assert got.rate_ttft_rps[0] == pytest.approx(ref.rate_ttft_rps, rel=1e-9)


@pytest.mark.parametrize("model", [PerfModel.CHUNKED, PerfModel.CLASSIC])
def test_upstream_distribution_keeps_the_upstream_mean(model: PerfModel) -> None:
    """Upstream models: exponential wait after prefill + ITL, whose mean is the upstream TTFT;
    the ITL is constant."""
    cfg = replace(LLAMA_A100, perf_model=model)
    m = analyze(cfg, 1.8)
    ttft, itl = latency_stats(cfg, 1.8)
    assert ttft.mean == m.ttft_ms
    assert itl.p50 == pytest.approx(m.itl_ms, rel=1e-9)
    assert itl.p99 == pytest.approx(m.itl_ms, rel=1e-9)
    base = m.prefill_ms + m.itl_ms
    assert ttft.p50 >= base * (1 - 1e-9)
    assert ttft.p90 >= base * (1 - 1e-9)
    assert ttft.p99 > base


def test_vllm_metrics_per_row_equal_batched() -> None:
    """`analyze_batch` (prepared chain) equals `analyze` (full-state kernel) for vllm rows,
    overloaded rows included."""
    cfg = LLAMA_A100
    rep, _ = _replica(cfg)
    rates = np.array([0.1, 1.0, 2.0, 0.999 * rep.max_rate_rps, 1.3 * rep.max_rate_rps])
    batch = _batch_of(cfg)
    got = analyze_batch(QueueBatch(**{f: np.repeat(getattr(batch, f), rates.size) for f in (
        "max_batch", "max_queue", "in_tokens", "out_tokens", "alpha_ms", "beta_ms",
        "gamma_ms", "max_num_tokens")}, perf_model=PerfModel.VLLM), rates)
    for i, r in enumerate(rates):
        ref = analyze(cfg, float(r))
        for field in ("ttft_ms", "itl_ms", "prefill_ms", "wait_ms", "resp_ms"):
            assert getattr(got, field)[i] == pytest.approx(getattr(ref, field), rel=1e-9), (
                r, field)


def test_bad_percentiles_are_config_errors() -> None:
    """Percentiles outside (0, 100) are ConfigErrors naming the field."""
    with pytest.raises(ConfigError, match="ttft_percentile must be 0 .mean. or in"):
        size(LLAMA_A100, Targets(ttft_ms=100.0, ttft_percentile=100.0))
    with pytest.raises(ConfigError, match=r"itl_percentile\[0\] must be 0 \(mean\)"):
        size_batch(_batch_of(LLAMA_A100), 100.0, 10.0, 0.0, itl_percentile=-1.0)
    with pytest.raises(ConfigError, match="percentiles must lie in"):
        latency_percentiles_batch(_batch_of(LLAMA_A100), 1.0, (0.0,))
    with pytest.raises(ConfigError, match="percentiles must lie in"):
        latency_stats(LLAMA_A100, 1.0, (100.0,))
