"""Service-time models against the design's golden values and the upstream chunk table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from inferno.analyzer.service import (
    ServiceParams,
    chunked_iteration_ms,
    fast_request_metrics,
    instant_itl_ms,
    instant_prefill_ms,
    metric_coefficients,
    num_chunks,
    request_metrics,
    service_time_ms,
    service_time_table,
)
from inferno.model import PerfModel


def _params(alpha: float, beta: float, gamma: float, in_tokens: float, out_tokens: float,
            max_batch: int, max_num_tokens: int = 8192) -> ServiceParams:
    return ServiceParams(*(np.array([v], dtype=float) for v in (
        alpha, beta, gamma, in_tokens, out_tokens, max_batch, max_num_tokens)))


def _chunk_table(max_batch: int, in_tokens: float, out_tokens: float,
                 budget: int) -> list[int]:
    """Upstream's table, literally: b(c) for c = 1, 2, … until b(c) >= N; then nc(B) is the
    smallest c with b(c) >= B, for B = 1..N."""
    sizes, c = [], 1
    while not sizes or sizes[-1] < max_batch:
        sizes.append(math.floor(max(0.0, (c + out_tokens) * (budget - in_tokens / c)
                                    / (in_tokens + out_tokens))))
        c += 1
    return [next(i + 1 for i, b in enumerate(sizes) if b >= batch)
            for batch in range(1, max_batch + 1)]


GOLDEN = [
    # B, L, m -> nc, α + B·δ, pre(B, nc), itl(B), τ(B)   (docs/design/optimizer-model.md §2.4, α=8,
    # β=.033, γ=.000333)
    ((1, 256, 1024), (1, 8.296954, 16.533249, 8.288911, 8504.378)),
    ((128, 4096, 64), (7, 423.95038, 3085.5293, 422.10855, 30100.477)),
]


@pytest.mark.parametrize(("shape", "gold"), GOLDEN, ids=["B1-L256-m1024", "B128-L4096-m64"])
def test_chunked_golden_primitives(shape: tuple[int, int, int],
                                   gold: tuple[float, ...]) -> None:
    """G7 primitives reproduce the queue-analysis golden values to 1e-7."""
    b, L, m = shape
    p = _params(8.0, 0.033, 0.000333, L, m, b)
    batch = np.array([b])
    assert num_chunks(batch, p.in_tokens, p.out_tokens, p.max_num_tokens)[0] == gold[0]
    got = (chunked_iteration_ms(batch, p)[0],
           instant_prefill_ms(PerfModel.CHUNKED, batch, p)[0],
           instant_itl_ms(PerfModel.CHUNKED, batch, p)[0],
           service_time_ms(PerfModel.CHUNKED, batch, p)[0])
    for value, expected in zip(got, gold[1:], strict=True):
        assert value == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("budget", [8192, 4096, 512, 100])
@pytest.mark.parametrize(("in_tokens", "out_tokens"),
                         [(0, 1), (0, 300), (128, 1), (256, 1024), (4096, 64), (7000, 3),
                          (20000, 200), (1500.5, 17.25)],
                         ids=lambda v: f"{v:g}")
def test_num_chunks_equals_upstream_table(in_tokens: float, out_tokens: float,
                                          budget: int) -> None:
    """The closed-form chunk count equals the upstream table lookup for B = 1..300."""
    batch = np.arange(1, 301)
    got = num_chunks(batch, np.full(300, float(in_tokens)), np.full(300, float(out_tokens)),
                     np.full(300, budget))
    assert got.tolist() == _chunk_table(300, in_tokens, out_tokens, budget)


def test_zero_budget_means_default() -> None:
    """max_num_tokens = 0 selects the 8192-token default."""
    args = (np.arange(1, 200), np.full(199, 4096.0), np.full(199, 64.0))
    assert num_chunks(*args, np.zeros(199)).tolist() == num_chunks(*args, np.full(199, 8192)) \
        .tolist()


def test_classic_walkthrough_service_rates(sample_dir: Path) -> None:
    """G3 τ(1), τ(38) and μ for granite_13b on G2, L=128, m=1024 (§7.1)."""
    models = json.loads((sample_dir / "small" / "model-data.json").read_text())["models"]
    entry = next(e for e in models if e["name"] == "granite_13b" and e["acc"] == "G2")
    pp = entry["perfParms"]
    p = _params(pp["alpha"], pp["beta"], pp["gamma"], 128, 1024, 38)
    tau = service_time_ms(PerfModel.CLASSIC, np.array([1, 38]), p)
    assert tau[0] == pytest.approx(19050.542, rel=1e-7)
    assert tau[1] == pytest.approx(46288.758, rel=1e-7)
    assert 1000.0 / tau[0] == pytest.approx(0.0524919, rel=1e-6)
    assert 38_000.0 / tau[1] == pytest.approx(0.8209337, rel=1e-6)


def test_classic_without_input_has_no_prefill() -> None:
    """G3 with L = 0: prefill is 0 and τ(n) = m·decode(n)."""
    p = _params(10.0, 0.05, 0.001, 0, 100, 8)
    n = np.array([1.0, 4.0])
    assert instant_prefill_ms(PerfModel.CLASSIC, n, p).tolist() == [0.0, 0.0]
    decode = 10.0 + n * (0.05 * 100 / 101 + 0.001 * 50) + 0.05 + 0.001 * 50
    assert service_time_ms(PerfModel.CLASSIC, n, p) == pytest.approx(100 * decode, rel=1e-14)


@pytest.mark.parametrize("model", list(PerfModel))
def test_service_time_table_matches_formula(model: PerfModel) -> None:
    """The table (linear fast path and chunk-table rows) equals τ(B) from the formula."""
    rng = np.random.default_rng(3)
    c = 40
    n = rng.integers(1, 300, c)
    p = ServiceParams(rng.uniform(1, 40, c), rng.uniform(0.001, 0.1, c),
                      rng.uniform(1e-5, 2e-3, c), rng.integers(0, 12000, c).astype(float),
                      rng.integers(1, 2000, c).astype(float), n.astype(float),
                      rng.choice([0, 1024, 8192], c).astype(float))
    table, linear = service_time_table(model, 300, p)
    col = ServiceParams(*(f[:, None] for f in p.arrays()))
    formula = service_time_ms(model, np.arange(1, 301)[None, :], col)
    inside = np.arange(1, 301)[None, :] <= n[:, None]
    assert np.allclose(table[inside], formula[inside], rtol=1e-13, atol=0)
    if model is PerfModel.CHUNKED:
        assert not linear.all()  # the sample includes multi-chunk rows


@pytest.mark.parametrize("model", list(PerfModel))
def test_fast_metrics_equal_reference(model: PerfModel) -> None:
    """Precomputed-coefficient metrics equal `request_metrics` exactly, all row kinds."""
    rng = np.random.default_rng(8)
    c = 60
    p = ServiceParams(rng.uniform(1, 40, c), rng.uniform(0.001, 0.1, c),
                      rng.uniform(1e-5, 2e-3, c), rng.choice([0.0, 64.0, 3000.0, 9000.0], c),
                      rng.integers(1, 2000, c).astype(float),
                      rng.integers(1, 300, c).astype(float), np.full(c, 8192.0))
    n_srv = rng.uniform(0.0, 1.0, c) * p.max_batch
    serv, wait = rng.uniform(1e3, 1e5, c), rng.uniform(0, 100, c)
    ref = request_metrics(model, n_srv, serv, wait, p)
    fast = fast_request_metrics(model, n_srv, serv, wait, metric_coefficients(model, p))
    for a, b in zip(ref, fast, strict=True):
        assert np.array_equal(a, b)
