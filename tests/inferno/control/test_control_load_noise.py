"""Load emulator: phases, closed-form statistics of the perturbation, determinism, bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from inferno.control.load_noise import (
    LoadNoise,
    LoadNoiseSettings,
    LoadPhase,
    LoadPoint,
    phase_multiplier,
)
from inferno.errors import ConfigError

RAMP = (LoadPhase(duration_s=300, ratio=1.0), LoadPhase(duration_s=300, ratio=5.0),
        LoadPhase(duration_s=300, ratio=0.2), LoadPhase(duration_s=0))


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


@pytest.mark.parametrize(
    ("elapsed_s", "expected"),
    [(0, 1.0), (150, 1.0), (450, 3.0), (600, 5.0), (750, 3.0), (900, 1.0), (1e6, 1.0)],
    ids=["start", "hold", "mid-ramp-up", "top", "mid-ramp-down", "end", "hold-forever"],
)
def test_phase_multiplier_ramp(elapsed_s: float, expected: float) -> None:
    """Chained ratios with linear interpolation: 1 -> 5 -> 1 over 300 s phases."""
    assert phase_multiplier(RAMP, elapsed_s) == pytest.approx(expected, rel=1e-12)


def test_phase_multiplier_after_last_finite_phase_holds() -> None:
    """Past the last phase the multiplier holds the chained product (2 x 3 = 6)."""
    phases = (LoadPhase(duration_s=10, ratio=2.0), LoadPhase(duration_s=10, ratio=3.0))
    assert phase_multiplier(phases, 25.0) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"alpha": 1.5}, "alpha"), ({"theta": -0.1}, "theta"), ({"interval_s": 0}, "interval_s"),
     ({"range_factor": 0.5}, "range_factor"),
     ({"phases": (LoadPhase(duration_s=0), LoadPhase(duration_s=5))}, r"phases\[0\]"),
     ({"phases": (LoadPhase(duration_s=5, ratio=0.0),)}, r"phases\[0\].ratio")],
    ids=["alpha", "theta", "interval", "range", "zero-not-last", "zero-ratio"],
)
def test_emulator_settings_reject_bad_values(kwargs: dict[str, object], match: str) -> None:
    """Bad emulator settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        LoadNoiseSettings(**kwargs)  # type: ignore[arg-type]


N = 40_000


def many(point: LoadPoint, n: int = N) -> dict[str, LoadPoint]:
    return {f"s{i:05d}": point for i in range(n)}


def column(points: dict[str, LoadPoint], attr: str) -> np.ndarray:
    return np.array([getattr(p, attr) for p in points.values()])


def censored_mean(mu: float, sigma: float, floor: float) -> float:
    """E[max(floor, X)] for X ~ N(mu, sigma^2)."""
    a = (floor - mu) / sigma
    return floor * norm.cdf(a) + mu * norm.sf(a) + sigma * norm.pdf(a)


def test_one_step_matches_censored_normal_mean() -> None:
    """Seed walk (theta 0, alpha 0.5): E[max(0, x + N(0, (0.5 x)^2))] in closed form."""
    start = LoadPoint(arrival_rpm=100.0, avg_in_tokens=200.0, avg_out_tokens=2.0)
    out = LoadNoise(LoadNoiseSettings(), rng()).step(many(start), 60.0)
    rpm = column(out, "arrival_rpm")
    assert rpm.min() == 0.0  # the floor is hit: P(Z < -2) = 2.3 %
    # standard error 50 / sqrt(N) = 0.25; allow 4 of them
    assert rpm.mean() == pytest.approx(censored_mean(100.0, 50.0, 0.0), abs=1.0)
    out_tokens = column(out, "avg_out_tokens")
    assert out_tokens.min() == 1.0  # tokens floor at 1
    assert out_tokens.mean() == pytest.approx(censored_mean(2.0, 1.0, 1.0), abs=0.02)


def test_one_step_sigma_is_alpha_times_value() -> None:
    """alpha 0.1, no censoring in reach: sample std = 0.1 x original, per quantity."""
    start = LoadPoint(arrival_rpm=60.0, avg_in_tokens=1000.0, avg_out_tokens=300.0)
    out = LoadNoise(LoadNoiseSettings(alpha=0.1), rng()).step(many(start), 60.0)
    for attr, value in (("arrival_rpm", 60.0), ("avg_in_tokens", 1000.0),
                        ("avg_out_tokens", 300.0)):
        x = column(out, attr)
        # std error of the std ~ sigma / sqrt(2N) = 0.35 %; allow 2 %
        assert x.std(ddof=1) == pytest.approx(0.1 * value, rel=0.02), attr
        assert x.mean() == pytest.approx(value, abs=4 * 0.1 * value / math.sqrt(N)), attr


def test_mean_reverting_variance_after_k_steps() -> None:
    """OU steps from the nominal value: Var_K = s^2 (1 - (1-t)^(2K)) / (1 - (1-t)^2)."""
    theta, alpha, k = 0.5, 0.1, 5
    start = LoadPoint(arrival_rpm=100.0, avg_in_tokens=100.0, avg_out_tokens=100.0)
    emulator = LoadNoise(LoadNoiseSettings(alpha=alpha, theta=theta), rng())
    points = many(start, 20_000)
    for i in range(k):
        points = emulator.step(points, 60.0 * (i + 1))
    x = column(points, "arrival_rpm")
    sigma2 = (alpha * 100.0) ** 2
    expected = sigma2 * (1 - (1 - theta) ** (2 * k)) / (1 - (1 - theta) ** 2)
    assert x.var(ddof=1) == pytest.approx(expected, rel=0.04)
    assert x.mean() == pytest.approx(100.0, abs=0.2)


def test_full_reversion_without_noise_lands_on_phased_nominal() -> None:
    """theta 1, alpha 0: the next rate is original x phase multiplier; tokens are not scaled."""
    settings = LoadNoiseSettings(alpha=0.0, theta=1.0, phases=RAMP)
    emulator = LoadNoise(settings, rng(), start_s=100.0)
    first = {"a": LoadPoint(arrival_rpm=60.0, avg_in_tokens=500.0, avg_out_tokens=200.0)}
    emulator.step(first, 100.0)
    later = emulator.step({"a": LoadPoint(arrival_rpm=1.0, avg_in_tokens=1.0,
                                          avg_out_tokens=1.0)}, 100.0 + 450.0)
    assert later["a"] == LoadPoint(arrival_rpm=180.0, avg_in_tokens=500.0, avg_out_tokens=200.0)


def test_explicit_nominal_overrides_first_seen() -> None:
    """Live mode passes nominal labels: theta 1, alpha 0 lands on them."""
    emulator = LoadNoise(LoadNoiseSettings(alpha=0.0, theta=1.0), rng())
    current = {"a": LoadPoint(arrival_rpm=10.0, avg_in_tokens=10.0, avg_out_tokens=10.0)}
    nominal = {"a": LoadPoint(arrival_rpm=90.0, avg_in_tokens=80.0, avg_out_tokens=70.0)}
    assert emulator.step(current, 0.0, nominal) == nominal


def test_range_factor_bounds_every_value() -> None:
    """range_factor 2: every value stays in [nominal / 2, 2 x nominal]."""
    start = LoadPoint(arrival_rpm=50.0, avg_in_tokens=400.0, avg_out_tokens=100.0)
    emulator = LoadNoise(LoadNoiseSettings(alpha=1.0, range_factor=2.0), rng())
    points = many(start, 2000)
    for i in range(10):
        points = emulator.step(points, 60.0 * (i + 1))
    for attr, value in (("arrival_rpm", 50.0), ("avg_in_tokens", 400.0),
                        ("avg_out_tokens", 100.0)):
        x = column(points, attr)
        assert x.min() >= value / 2, attr
        assert x.max() <= value * 2, attr


def test_walk_never_negative() -> None:
    """alpha 1 random walk over 50 steps: rates >= 0 and tokens >= 1 throughout."""
    emulator = LoadNoise(LoadNoiseSettings(alpha=1.0), rng())
    points = many(LoadPoint(arrival_rpm=5.0, avg_in_tokens=3.0, avg_out_tokens=3.0), 500)
    lowest = [math.inf, math.inf, math.inf]
    for i in range(50):
        points = emulator.step(points, 60.0 * (i + 1))
        for j, attr in enumerate(("arrival_rpm", "avg_in_tokens", "avg_out_tokens")):
            lowest[j] = min(lowest[j], column(points, attr).min())
    assert lowest[0] >= 0.0
    assert lowest[1] >= 1.0
    assert lowest[2] >= 1.0


def test_same_seed_same_walk_regardless_of_mapping_order() -> None:
    """Draws follow server names, not mapping order; another seed gives another walk."""
    a = LoadPoint(arrival_rpm=60.0, avg_in_tokens=100.0, avg_out_tokens=50.0)
    b = LoadPoint(arrival_rpm=30.0, avg_in_tokens=300.0, avg_out_tokens=80.0)
    forward = LoadNoise(LoadNoiseSettings(), rng(1)).step({"a": a, "b": b}, 60.0)
    backward = LoadNoise(LoadNoiseSettings(), rng(1)).step({"b": b, "a": a}, 60.0)
    other = LoadNoise(LoadNoiseSettings(), rng(2)).step({"a": a, "b": b}, 60.0)
    assert forward == backward
    assert forward != other
