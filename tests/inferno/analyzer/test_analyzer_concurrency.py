"""Optimal-concurrency search (docs/design/optimizer-model.md §2.9, §7.3(c)) and the zero-load
nominal metrics (§3.5)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inferno.analyzer import (
    QueueBatch,
    QueueConfig,
    Targets,
    nominal_zero_load,
    optimal_concurrency,
    optimal_concurrency_batch,
    search_concurrency_batch,
    size,
)
from inferno.analyzer.concurrency import concurrency_brackets
from inferno.analyzer.service import ServiceParams, instant_itl_ms, instant_prefill_ms
from inferno.errors import ConfigError
from inferno.model import PerfModel, PerfParms

EXAMPLE = QueueConfig(max_batch=256, max_queue=128, in_tokens=128, out_tokens=512,
                      perf=PerfParms(alpha_ms=12.0, beta_ms=0.05, gamma_ms=0.0005))
SLO = Targets(ttft_ms=60.0, itl_ms=20.0)


def test_reference_search_ceiling_256() -> None:
    """§7.3(c): M* = 49 after probes 256,143,87,59,45,52,49,49 and 8 oracle calls."""
    r = optimal_concurrency(EXAMPLE, SLO)
    assert (r.max_batch, r.m_itl, r.m_tpf, r.oracle_calls) == (49, 31, 164, 8)
    assert r.probes == (256, 143, 87, 59, 45, 52, 49, 49)
    assert r.feasible
    assert r.throughput_rps == pytest.approx(2.971584, rel=1e-4)
    assert r.metrics is not None
    assert r.metrics.ttft_ms == pytest.approx(57.988, rel=1e-4)
    assert r.metrics.itl_ms == pytest.approx(19.99999, rel=1e-4)
    assert r.metrics.max_rate_rps == pytest.approx(3.900384, rel=1e-4)


def test_reference_search_ceiling_48() -> None:
    """§7.3(c): with M_max = 48 the search keeps 48 (6 oracle calls)."""
    r = optimal_concurrency(replace(EXAMPLE, max_batch=48), SLO)
    assert (r.max_batch, r.m_itl, r.m_tpf, r.oracle_calls) == (48, 31, 48, 6)
    assert r.throughput_rps == pytest.approx(2.949464, rel=1e-4)


def test_unknown_ceiling_defaults_to_256() -> None:
    """max_batch <= 0 means the default ceiling 256 (first probe)."""
    assert optimal_concurrency(replace(EXAMPLE, max_batch=0), SLO).probes[0] == 256


def test_infeasible_anchor_stops_the_search() -> None:
    """An SLO missed even at M_max: M* = 1, infeasible, no counted calls, one probe."""
    r = optimal_concurrency(EXAMPLE, Targets(itl_ms=1.0))
    assert (r.max_batch, r.feasible, r.oracle_calls, r.probes) == (1, False, 0, (256,))
    assert r.metrics is None
    assert r.throughput_rps == 0.0


def test_queue_ratio_scales_queue_with_each_probe() -> None:
    """queue_ratio = −r probes with Q = r·M (equal to fixing Q when M is fixed)."""
    small = replace(EXAMPLE, max_batch=12)
    r = optimal_concurrency(small, SLO, queue_ratio=-10)
    assert r.metrics is not None
    fixed = size(replace(small, max_batch=r.max_batch, max_queue=10 * r.max_batch), SLO)
    assert r.throughput_rps == fixed.rate_rps


def test_bad_search_settings() -> None:
    """eps outside (0, 2) or negative max_probes is a ConfigError."""
    with pytest.raises(ConfigError, match="eps must be in"):
        optimal_concurrency(EXAMPLE, SLO, eps=0.0)
    with pytest.raises(ConfigError, match="max_probes"):
        optimal_concurrency(EXAMPLE, SLO, max_probes=-1)


GRID = [  # (M_max, Q, L, m, α, β, γ, targets (ttft, itl, tps), model)
    (256, 128, 128, 512, 12.0, 0.05, 0.0005, (60.0, 20.0, 0.0), PerfModel.CHUNKED),
    (48, 128, 128, 512, 12.0, 0.05, 0.0005, (60.0, 20.0, 0.0), PerfModel.CHUNKED),
    (256, 64, 1024, 256, 17.15, 0.034, 0.0010625, (1000.0, 40.0, 0.0), PerfModel.CHUNKED),
    (128, 0, 4096, 64, 8.0, 0.033, 0.000333, (4000.0, 0.0, 0.0), PerfModel.CHUNKED),
    (256, 64, 512, 1024, 20.0, 0.04, 0.001, (0.0, 0.0, 100.0), PerfModel.CHUNKED),
    (64, 640, 128, 1024, 17.15, 0.034, 0.0010625, (1000.0, 40.0, 0.0), PerfModel.CLASSIC),
    (256, 64, 128, 512, 12.0, 0.05, 0.0005, (60.0, 1.0, 0.0), PerfModel.CHUNKED),
    (256, 128, 128, 512, 12.0, 0.05, 0.0005, (60.0, 20.0, 0.0), PerfModel.VLLM),
    (48, 480, 512, 256, 12.93, 0.059, 0.00184375, (300.0, 45.0, 0.0), PerfModel.VLLM),
    (128, 0, 4096, 64, 8.0, 0.033, 0.000333, (4000.0, 0.0, 0.0), PerfModel.VLLM),
    (256, 64, 128, 512, 12.0, 0.05, 0.0005, (60.0, 1.0, 0.0), PerfModel.VLLM),
]


def _config(row: tuple) -> QueueConfig:
    n, q, L, m, a, b, g, _, model = row
    return QueueConfig(max_batch=n, max_queue=q, in_tokens=L, out_tokens=m,
                       perf=PerfParms(alpha_ms=a, beta_ms=b, gamma_ms=g), perf_model=model)


def _batch(rows: list[tuple]) -> QueueBatch:
    cols = list(zip(*rows, strict=True))
    return QueueBatch(max_batch=np.array(cols[0]), max_queue=np.array(cols[1]),
                      in_tokens=np.array(cols[2], dtype=float),
                      out_tokens=np.array(cols[3], dtype=float),
                      alpha_ms=np.array(cols[4]), beta_ms=np.array(cols[5]),
                      gamma_ms=np.array(cols[6]), max_num_tokens=np.full(len(rows), 8192),
                      perf_model=rows[0][-1])


@pytest.mark.parametrize("model", list(PerfModel))
def test_batched_search_equals_scalar(model: PerfModel) -> None:
    """Lockstep probes over candidates give each row the scalar search's result."""
    rows = [r for r in GRID if r[-1] is model]
    targets = [np.array([r[7][k] for r in rows]) for k in range(3)]
    got = search_concurrency_batch(_batch(rows), *targets)
    best, feasible = optimal_concurrency_batch(_batch(rows), *targets)
    assert np.array_equal(best, got.max_batch)
    assert np.array_equal(feasible, got.feasible)
    for i, row in enumerate(rows):
        ref = optimal_concurrency(_config(row), Targets(ttft_ms=row[7][0], itl_ms=row[7][1],
                                                        tps=row[7][2]))
        assert (got.max_batch[i], got.feasible[i]) == (ref.max_batch, ref.feasible)
        assert (got.m_itl[i], got.m_tpf[i]) == (ref.m_itl, ref.m_tpf)
        assert got.oracle_calls[i] == ref.oracle_calls
        assert got.throughput_rps[i] == pytest.approx(ref.throughput_rps, rel=1e-12)
        if not ref.feasible:
            assert "below" in got.sizing.reason[i]


def test_batched_queue_ratio_equals_scalar() -> None:
    """Per-row queue rules: fixed Q (>= 0) or Q = r·N (−r) agree with the scalar search."""
    rows = [GRID[2], GRID[2], GRID[0]]
    ratio = np.array([-10, 5, -2])
    targets = [np.array([r[7][k] for r in rows]) for k in range(3)]
    got = search_concurrency_batch(_batch(rows), *targets, queue_ratio=ratio)
    for i, row in enumerate(rows):
        ref = optimal_concurrency(_config(row), Targets(ttft_ms=row[7][0], itl_ms=row[7][1]),
                                  queue_ratio=int(ratio[i]))
        assert got.max_batch[i] == ref.max_batch
        assert got.throughput_rps[i] == pytest.approx(ref.throughput_rps, rel=1e-12)


def _largest(values: np.ndarray, target: float) -> int:
    """Reference: the largest B (1-based) with value <= target, else 1."""
    ok = [b + 1 for b, v in enumerate(values) if v <= target]
    return max(ok) if ok else 1


@pytest.mark.parametrize("model", list(PerfModel))
def test_brackets_equal_exhaustive_scan(model: PerfModel) -> None:
    """Closed-form brackets equal a scan of B = 1..M_max, incl. multi-chunk rows."""
    rng = np.random.default_rng(4)
    c = 60
    m_max = rng.integers(1, 300, c)
    p = ServiceParams(rng.uniform(1, 40, c), rng.uniform(0.001, 0.1, c),
                      rng.uniform(1e-5, 2e-3, c), rng.choice([0.0, 128.0, 2000.0, 9000.0], c),
                      rng.integers(1, 2000, c).astype(float), m_max.astype(float),
                      rng.choice([1024.0, 8192.0], c))
    ttft = rng.uniform(0, 3000, c)
    itl = rng.uniform(0, 150, c)
    m_itl, m_tpf = concurrency_brackets(model, p, m_max, ttft, itl)
    for i in range(c):
        grid = np.arange(1, m_max[i] + 1, dtype=float)
        row = p.arrays().take(np.array([i]))
        assert m_itl[i] == _largest(instant_itl_ms(model, grid, row), itl[i]), i
        assert m_tpf[i] == _largest(instant_prefill_ms(model, grid, row), ttft[i]), i


@pytest.mark.parametrize(("alpha", "beta", "gamma", "batch", "expected"), [
    (12.0, 0.05, 0.0005, 48, (12.05, 12.05 + 0.024, 48 / (12.074 + 12.0 + 2.4))),
    (17.15, 0.034, 0.0010625, 76, (17.184, 17.184 + 0.08075, 76 / (17.26475 + 17.15 + 2.584))),
    (0.0, 0.0, 0.0, 8, (0.0, 0.0, 0.0)),
], ids=["example", "granite-g2", "no-parameters"])
def test_nominal_zero_load(alpha: float, beta: float, gamma: float, batch: int,
                           expected: tuple[float, float, float]) -> None:
    """§3.5: ITL = α+β, TTFT = ITL + γ·batch, rate = batch/(TTFT + α + β·batch) or 0."""
    got = nominal_zero_load(PerfParms(alpha_ms=alpha, beta_ms=beta, gamma_ms=gamma), batch)
    assert got == pytest.approx(expected, rel=1e-12)
