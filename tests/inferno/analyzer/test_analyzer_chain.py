"""Prepared chains: Taylor continuation, light-load truncation and very large batches."""

from __future__ import annotations

import numpy as np
import pytest

from inferno.analyzer import QueueConfig, Targets, size, size_batch
from inferno.analyzer.batch import QueueBatch, _prepare
from inferno.analyzer.chain import TAYLOR_REACH, ChainTable
from inferno.model import PerfModel, PerfParms


def _table(n: np.ndarray, q: np.ndarray) -> tuple[ChainTable, np.ndarray, np.ndarray]:
    size_c = n.size
    batch = QueueBatch(max_batch=n, max_queue=q, in_tokens=np.full(size_c, 512.0),
                       out_tokens=np.full(size_c, 256.0), alpha_ms=np.full(size_c, 12.0),
                       beta_ms=np.full(size_c, 0.05), gamma_ms=np.full(size_c, 0.0005),
                       max_num_tokens=np.full(size_c, 8192))
    prep = _prepare(batch)
    table = ChainTable(prep.log_mu, prep.num_servers, prep.num_queue, prep.lam_max,
                       prep.monotone)
    return table, prep.lam_min, prep.lam_max


def test_taylor_continuation_matches_direct_solves() -> None:
    """Within D·|h| <= reach, the series solution equals a direct solve to 1e-13."""
    n = np.array([1, 5, 40, 130, 256, 256])
    table, _, lam_max = _table(n, np.full(n.size, 64))
    cand = np.arange(n.size)
    x_c = np.log(lam_max * np.array([0.9, 0.5, 0.2, 0.7, 0.95, 0.3]))
    want = np.ones(n.size, dtype=bool)
    _, _, p_top_c, moments = table.direct(cand, x_c, want)
    coef = np.stack(table.taylor_coefficients(cand, moments), axis=1)
    for frac in (-1.0, -0.37, 0.5, 1.0):
        h = frac * TAYLOR_REACH / table.reach
        z = np.zeros((2, n.size))
        for k in range(coef.shape[0] - 1, -1, -1):
            z = z * h + coef[k]
        p_top = p_top_c * np.exp((table.num_servers - table.center) * h)
        lam = np.exp(x_c + h)
        series = table.solution(cand, lam, z[0], z[1], p_top)
        direct = table.solve(cand, lam)
        for field in ("n_srv", "n_sys", "throughput_rpms", "wait_ms", "p_block"):
            assert np.allclose(getattr(series, field), getattr(direct, field), rtol=1e-13,
                               atol=0), (frac, field)


def test_light_load_truncation_is_exact() -> None:
    """At λ_min the first 16 states carry all the mass: same solution as a full solve."""
    n = np.array([3, 64, 200, 256])
    table, lam_min, _ = _table(n, np.array([0, 10, 64, 500]))
    cand = np.arange(n.size)
    assert table.monotone.all()
    light, full = table.solve_light(cand, lam_min), table.solve(cand, lam_min)
    for field in ("n_srv", "n_sys", "throughput_rpms", "serv_ms", "wait_ms"):
        assert np.allclose(getattr(light, field), getattr(full, field), rtol=1e-15, atol=0)


@pytest.mark.parametrize("model", list(PerfModel))
def test_very_large_batch_matches_scalar(model: PerfModel) -> None:
    """N = 1500 far from saturation (log-terms beyond the fixed-shift range, exact per-solve
    maximum) still sizes like the scalar reference."""
    perf = PerfParms(alpha_ms=50.0, beta_ms=0.001, gamma_ms=0.00001)
    cfg = QueueConfig(max_batch=1500, max_queue=64, in_tokens=64, out_tokens=256, perf=perf,
                      perf_model=model)
    batch = QueueBatch(max_batch=np.array([1500]), max_queue=np.array([64]),
                       in_tokens=np.array([64.0]), out_tokens=np.array([256.0]),
                       alpha_ms=np.array([50.0]), beta_ms=np.array([0.001]),
                       gamma_ms=np.array([0.00001]), max_num_tokens=np.array([8192]),
                       perf_model=model)
    prep = _prepare(batch)
    assert ChainTable(prep.log_mu, prep.num_servers, prep.num_queue,
                      prep.lam_max).buckets[0].exact_max
    ref = size(cfg, Targets(ttft_ms=104.0, itl_ms=52.5))
    got = size_batch(batch, 104.0, 52.5, 0.0)
    assert ref.feasible
    assert got.feasible[0]
    assert ref.rate_rps < 0.99 * ref.metrics.max_rate_rps  # a target binds
    assert got.rate_rps[0] == pytest.approx(ref.rate_rps, rel=1e-12)
    assert got.ttft_ms[0] == pytest.approx(ref.metrics.ttft_ms, rel=1e-12)
