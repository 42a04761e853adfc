"""Scalar analyzer: design reference cases (docs/design/optimizer-model.md §7.1, §7.3), bisection
rules, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inferno.analyzer import (
    QueueConfig,
    Targets,
    analyze,
    bisect,
    config_problem,
    rate_range,
    size,
)
from inferno.analyzer.analyzer import ABOVE, BELOW, WITHIN
from inferno.errors import ConfigError
from inferno.model import PerfModel, PerfParms

REF = 1e-4
"""§7.3: reference values hold to 1e-4 relative."""

EXAMPLE = QueueConfig(max_batch=48, max_queue=128, in_tokens=128, out_tokens=512,
                      perf=PerfParms(alpha_ms=12.0, beta_ms=0.05, gamma_ms=0.0005))
CLASSIC = replace(EXAMPLE, perf_model=PerfModel.CLASSIC)


def _check(obj: object, expected: dict[str, float], rel: float = REF) -> None:
    for name, value in expected.items():
        assert getattr(obj, name) == pytest.approx(value, rel=rel), name


def test_classic_analyze_reference() -> None:
    """§7.3(a): G3 Analyze(3 req/s) of the queue-analysis example."""
    _check(analyze(CLASSIC, 3.0), {
        "throughput_rps": 3.0, "resp_ms": 10568.45, "wait_ms": 28.2754,
        "num_in_service": 31.6205, "ttft_ms": 75.3174, "itl_ms": 20.5345,
        "max_rate_rps": 3.820823})


def test_classic_size_reference() -> None:
    """§7.3(a): G3 Size(TTFT 60, ITL 20): rates, throughput and metrics at λ*."""
    s = size(CLASSIC, Targets(ttft_ms=60.0, itl_ms=20.0))
    assert s.feasible
    assert s.reason == ""
    _check(s, {"rate_ttft_rps": 2.910594, "rate_itl_rps": 2.874110, "rate_rps": 2.874110})
    _check(s.metrics, {"ttft_ms": 56.063, "itl_ms": 19.99998, "wait_ms": 10.094,
                       "num_in_service": 29.5055, "resp_ms": 10276.05})


def test_chunked_size_reference() -> None:
    """§7.3(b): G7 Size(TTFT 60, ITL 20) matches the upstream example solution."""
    s = size(EXAMPLE, Targets(ttft_ms=60.0, itl_ms=20.0))
    _check(s, {"rate_rps": 2.949464, "rate_ttft_rps": 2.949464, "rate_itl_rps": 2.971982})
    _check(s.metrics, {"ttft_ms": 60.000, "itl_ms": 19.9053, "wait_ms": 14.219,
                       "num_in_service": 30.1359, "resp_ms": 10231.63,
                       "max_rate_rps": 3.860929})


def test_chunked_analyze_reference() -> None:
    """§7.3(b): G7 Analyze(3 req/s), derived values."""
    _check(analyze(EXAMPLE, 3.0), {"wait_ms": 21.405, "num_in_service": 30.9809,
                                   "ttft_ms": 67.6148, "itl_ms": 20.1189,
                                   "resp_ms": 10348.37})


@pytest.fixture(scope="module")
def granite_g2(sample_dir: Path) -> QueueConfig:
    """Premium-granite_13b on G2 from sample-data small, G3, N = 38, Q = 10·N (§7.1)."""
    models = json.loads((sample_dir / "small" / "model-data.json").read_text())["models"]
    entry = next(e for e in models if e["name"] == "granite_13b" and e["acc"] == "G2")
    pp = entry["perfParms"]
    n = entry["maxBatchSize"] * entry["atTokens"] // 1024
    return QueueConfig(max_batch=n, max_queue=10 * n, in_tokens=128, out_tokens=1024,
                       perf=PerfParms(alpha_ms=pp["alpha"], beta_ms=pp["beta"],
                                      gamma_ms=pp["gamma"]),
                       perf_model=PerfModel.CLASSIC)


def test_walkthrough_rate_range(granite_g2: QueueConfig) -> None:
    """§7.1 steps 1 and 4: N = 38 and the rate range [5.2492e-5, 0.8201127] req/s."""
    assert granite_g2.max_batch == 38
    lo, hi = rate_range(granite_g2)
    assert lo == pytest.approx(5.2492e-5, rel=1e-4)
    assert hi == pytest.approx(0.8201127, rel=1e-6)


def test_walkthrough_sizing(granite_g2: QueueConfig) -> None:
    """§7.1 steps 5–7: λ_ITL, λ_TTFT (binding) and the metrics at λ*."""
    s = size(granite_g2, Targets(ttft_ms=1000.0, itl_ms=40.0))
    assert s.rate_itl_rps == pytest.approx(0.7331309, rel=1e-6)
    assert s.rate_ttft_rps == pytest.approx(0.6975013, rel=1e-6)
    assert s.rate_rps == pytest.approx(0.6975013, rel=1e-6)
    _check(s.metrics, {"ttft_ms": 1000.0, "itl_ms": 38.03, "wait_ms": 920.8,
                       "num_in_service": 27.19, "rho": 0.7156}, rel=1e-3)


def test_walkthrough_per_replica_metrics(granite_g2: QueueConfig) -> None:
    """§7.1 step 9: Analyze(0.5 req/s) gives ITL 29.4088 and TTFT 62.2606 ms."""
    m = analyze(granite_g2, 0.5)
    assert m.itl_ms == pytest.approx(29.4088, rel=1e-5)
    assert m.ttft_ms == pytest.approx(62.2606, rel=1e-5)
    _check(m, {"wait_ms": 0.388, "num_in_service": 15.07, "prefill_ms": 32.464,
               "rho": 0.3967}, rel=2e-3)


def test_tps_target_caps_rate_at_ninety_percent() -> None:
    """A TPS target alone sizes to 0.9·λ_max (§2.6 step 3)."""
    s = size(EXAMPLE, Targets(tps=100.0))
    _, hi = rate_range(EXAMPLE)
    assert s.rate_tps_rps == pytest.approx(0.9 * hi, rel=1e-15)
    assert s.metrics is not None
    assert s.metrics.offered_rps == pytest.approx(0.9 * hi, rel=1e-15)


def test_no_targets_size_to_max_rate() -> None:
    """All targets 0: λ* = λ_max and every target rate is the max rate."""
    s = size(EXAMPLE, Targets())
    _, hi = rate_range(EXAMPLE)
    assert s.rate_ttft_rps == s.rate_itl_rps == s.rate_tps_rps == pytest.approx(hi)


def test_unreachable_target_is_infeasible() -> None:
    """An ITL target below the ITL at the lowest rate makes the sizing infeasible."""
    s = size(EXAMPLE, Targets(itl_ms=5.0))
    assert not s.feasible
    assert s.metrics is None
    assert s.rate_rps == 0.0
    assert "itl target 5 ms is below" in s.reason


def test_generous_target_yields_max_rate() -> None:
    """A TTFT target above the TTFT at λ_max ('above') yields λ_max."""
    s = size(EXAMPLE, Targets(ttft_ms=1e7))
    assert s.rate_ttft_rps == pytest.approx(rate_range(EXAMPLE)[1])


@pytest.mark.parametrize("model", list(PerfModel))
def test_more_load_never_lowers_ttft_or_utilisation(model: PerfModel) -> None:
    """TTFT, wait, ρ and throughput are non-decreasing in the offered rate."""
    cfg = replace(EXAMPLE, perf_model=model)
    _, hi = rate_range(cfg)
    rows = [analyze(cfg, r) for r in np.linspace(0.01, 1.0, 25) * hi]
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.ttft_ms >= a.ttft_ms, (a.offered_rps, b.offered_rps)
        assert b.wait_ms >= a.wait_ms
        assert b.rho >= a.rho
        assert b.throughput_rps >= a.throughput_rps


def test_chunked_overload_shows_as_blocking() -> None:
    """G7 accepts a rate above the max rate; the excess is lost (throughput < offered)."""
    _, hi = rate_range(EXAMPLE)
    m = analyze(EXAMPLE, 2.0 * hi)
    assert m.throughput_rps < m.offered_rps
    assert m.throughput_rps == pytest.approx(hi / 0.999, rel=1e-3)


@pytest.mark.parametrize(("cfg", "match"), [
    (replace(EXAMPLE, max_batch=0), "max_batch must be >= 1, got 0"),
    (replace(EXAMPLE, max_queue=-1), "max_queue must be >= 0, got -1"),
    (replace(EXAMPLE, in_tokens=-5.0), "in_tokens must be a finite number >= 0, got -5"),
    (replace(EXAMPLE, out_tokens=0.5), "out_tokens must be a finite number >= 1, got 0.5"),
    (replace(EXAMPLE, max_batch=1, max_queue=0), r"max_batch \+ max_queue must be >= 2"),
    (replace(EXAMPLE, max_num_tokens=-1), "max_num_tokens must be >= 0, got -1"),
    (replace(EXAMPLE, perf=PerfParms(alpha_ms=0.0, beta_ms=0.0, gamma_ms=0.0)),
     "service time must be positive"),
    (replace(EXAMPLE, perf=PerfParms(alpha_ms=float("nan"), beta_ms=0.1, gamma_ms=0.0)),
     "perf parameters must be finite"),
], ids=["N=0", "Q<0", "L<0", "m<1", "K=1", "budget<0", "zero-perf", "nan-perf"])
def test_invalid_config(cfg: QueueConfig, match: str) -> None:
    """Unusable configs: analyze raises ConfigError, size is infeasible with the reason."""
    with pytest.raises(ConfigError, match=match):
        analyze(cfg, 1.0)
    with pytest.raises(ConfigError, match=match):
        rate_range(cfg)
    s = size(cfg, Targets(ttft_ms=100.0))
    assert not s.feasible
    assert s.reason
    assert config_problem(cfg) == s.reason or "service time" in s.reason


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("inf")])
def test_analyze_rejects_bad_rate(rate: float) -> None:
    """A rate that is not a finite positive number is a ConfigError naming the value."""
    with pytest.raises(ConfigError, match="rate_rps must be a finite number > 0"):
        analyze(EXAMPLE, rate)


def test_classic_rejects_rate_above_max() -> None:
    """G3 (upstream) rejects a rate above its max rate (§2.5, §8.10)."""
    _, hi = rate_range(CLASSIC)
    analyze(CLASSIC, hi)
    with pytest.raises(ConfigError, match="exceeds the classic model's max rate"):
        analyze(CLASSIC, hi * 1.001)


@pytest.mark.parametrize("field", ["ttft_ms", "itl_ms", "tps"])
def test_negative_target_is_an_error(field: str) -> None:
    """A negative (or NaN) target is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=f"targets: {field} must be a finite number >= 0"):
        size(EXAMPLE, Targets(**{field: -1.0}))
    with pytest.raises(ConfigError, match=field):
        size(EXAMPLE, Targets(**{field: float("nan")}))


def _line(x: float) -> float:
    return 2.0 * x + 1.0


@pytest.mark.parametrize(("f", "target", "expected", "where"), [
    (_line, 2.0, 0.5, WITHIN),                 # increasing, interior root
    (lambda x: -_line(x), -2.0, 0.5, WITHIN),  # decreasing, interior root
    (_line, 0.5, 0.0, BELOW),                  # increasing, target under f(lo)
    (_line, 9.0, 1.0, ABOVE),                  # increasing, target over f(hi)
    (lambda x: -_line(x), -0.5, 0.0, BELOW),   # decreasing, target over f(lo)
    (lambda x: -_line(x), -9.0, 1.0, ABOVE),   # decreasing, target under f(hi)
    (_line, 1.0000001, 0.0, WITHIN),           # f(lo) within tolerance
    (_line, 3.0, 1.0, WITHIN),                 # f(hi) exact
    (lambda x: 5.0, 4.0, 1.0, ABOVE),          # flat counts as decreasing: 4 < f(hi)
    (lambda x: 5.0, 6.0, 0.0, BELOW),          # flat, decreasing: 6 > f(lo)
], ids=["inc", "dec", "inc-below", "inc-above", "dec-below", "dec-above", "at-lo", "at-hi",
        "flat-above", "flat-below"])
def test_bisect_rules(f, target: float, expected: float, where: int) -> None:  # noqa: ANN001
    """§2.7: end-point tests, direction from the ends, below/above, bisection to 1e-6."""
    x, got = bisect(0.0, 1.0, target, f)
    assert got == where
    assert x == pytest.approx(expected, abs=1e-6)
    if where == WITHIN and 0 < x < 1:
        assert abs(f(x) - target) / abs(target) <= 1e-6


def test_bisect_returns_last_midpoint_after_max_iterations() -> None:
    """A target never met within tolerance (a jump) ends after 100 halvings at the jump."""
    calls = []

    def step(x: float) -> float:
        calls.append(x)
        return 0.0 if x < 0.3 else 1.0

    x, where = bisect(0.0, 1.0, 0.5, step)
    assert where == WITHIN
    assert len(calls) == 2 + 100
    assert x == pytest.approx(0.3, abs=1e-15)


def test_bisect_rejects_empty_range() -> None:
    """x_lo > x_hi is an error (§2.7 step 1)."""
    with pytest.raises(ValueError, match="empty range"):
        bisect(1.0, 0.0, 1.0, _line)
