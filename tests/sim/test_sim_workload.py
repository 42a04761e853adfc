"""Workloads: arrival processes and rate profiles, token lengths, closed-loop users."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import simpy

from inferno.errors import ConfigError
from sim import workload as wl
from sim.request import Request


def _times(proc: wl.ArrivalProcess, seed: int, until_s: float) -> np.ndarray:
    it = proc.times(np.random.default_rng(seed))
    return np.fromiter(itertools.takewhile(lambda t: t < until_s, it), dtype=float)


def test_poisson_constant_rate_count_and_gap_cv():
    """Poisson at 20 req/s over 2,000 s: count within 4σ of λT, gaps with CV ≈ 1."""
    t = _times(wl.ArrivalProcess(rate=wl.constant(20.0)), 1, 2000.0)
    assert abs(len(t) - 40_000) < 4 * math.sqrt(40_000)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)
    assert gaps.min() > 0.0


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_arrivals_have_requested_cv_and_rate(cv):
    """Gamma gaps at a constant rate: mean 1/λ and coefficient of variation cv, no clipping."""
    t = _times(wl.ArrivalProcess(rate=wl.constant(10.0), kind="gamma", cv=cv), 2, 5000.0)
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(0.1, rel=0.03 * cv)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


@pytest.mark.parametrize("kind", ["poisson", "gamma"])
def test_step_profile_counts_follow_the_rate(kind):
    """Rate 5 then 20 req/s: counts per half within 5σ of the integral of λ."""
    proc = wl.ArrivalProcess(rate=wl.step(5.0, 20.0, 1000.0), kind=kind, cv=1.0)
    t = _times(proc, 3, 2000.0)
    first, second = (t < 1000.0).sum(), (t >= 1000.0).sum()
    assert abs(first - 5000) < 5 * math.sqrt(5000)
    assert abs(second - 20000) < 5 * math.sqrt(20000)


@pytest.mark.parametrize("profile", [
    wl.ramp(1.0, 9.0, 100.0, 500.0),
    wl.phases(4.0, ((100.0, 0.5), (50.0, 2.0), (200.0, 1.0))),
    wl.Diurnal(mean_rps=3.0, amplitude=0.8, period_s=300.0, phase_s=40.0),
    wl.constant(2.5),
], ids=["ramp", "phases", "diurnal", "constant"])
def test_cumulative_rate_is_the_integral_of_the_rate(profile):
    """Λ(t) equals a fine trapezoid integral of λ (error <= h·jump/2 = 0.005 at steps)."""
    grid = np.linspace(0.0, 700.0, 700_001)
    lam = profile.rate_rps(grid)
    numeric = np.concatenate([[0.0], np.cumsum((lam[1:] + lam[:-1]) / 2 * np.diff(grid))])
    probe = np.arange(0, 700_001, 35_000)
    np.testing.assert_allclose(profile.cumulative(grid[probe]), numeric[probe], rtol=1e-6,
                               atol=0.005)
    assert profile.max_rps >= lam.max() - 1e-12


def test_phases_follow_the_load_emulator_convention():
    """phases(base, [(duration, ratio), ...]): rate = ratio × base inside each phase."""
    p = wl.phases(10.0, ((60.0, 0.5), (60.0, 3.0)))
    np.testing.assert_allclose(p.rate_rps(np.array([30.0, 90.0, 500.0])), [5.0, 30.0, 30.0])


def test_diurnal_thinning_matches_expected_count():
    """Poisson thinning under a sinusoid: count ≈ Λ(T) within 4σ."""
    prof = wl.Diurnal(mean_rps=8.0, amplitude=0.9, period_s=600.0)
    t = _times(wl.ArrivalProcess(rate=prof), 4, 3000.0)
    expected = float(prof.cumulative(np.array([3000.0]))[0])
    assert abs(len(t) - expected) < 4 * math.sqrt(expected)


@pytest.mark.parametrize(("dist", "mean"), [
    (wl.TokenDist(kind="fixed", mean=300), 300.0),
    (wl.TokenDist(kind="exponential", mean=200), 200.0),
    (wl.TokenDist(kind="lognormal", mean=500, cv=0.7), 500.0),
    (wl.TokenDist(kind="uniform", low=10, high=30), 20.0),
], ids=["fixed", "exponential", "lognormal", "uniform"])
def test_token_distributions_have_their_mean_and_are_positive(dist, mean):
    """Integer lengths >= 1 with the configured mean (within 2%)."""
    x = dist.sample(np.random.default_rng(5), 200_000)
    assert x.dtype.kind == "i"
    assert x.min() >= 1
    assert x.mean() == pytest.approx(mean, rel=0.02)


def test_lengths_are_bounded_by_max_model_len_by_redrawing():
    """input + output <= max_model_len for every pair; redrawing keeps values >= 1."""
    lengths = wl.Lengths(input=wl.TokenDist(kind="exponential", mean=800),
                         output=wl.TokenDist(kind="exponential", mean=400), max_model_len=1500)
    pairs = list(itertools.islice(lengths.pairs(np.random.default_rng(6)), 20_000))
    arr = np.array(pairs)
    assert (arr.sum(axis=1) <= 1500).all()
    assert arr.min() >= 1
    assert arr[:, 0].max() > 1000  # truncated, not capped far below the bound


@pytest.mark.parametrize(("build", "match"), [
    (lambda: wl.ArrivalProcess(rate=wl.constant(1.0), kind="weibull"), "arrivals.kind"),
    (lambda: wl.ArrivalProcess(rate=wl.constant(1.0), kind="gamma", cv=0.0), "arrivals.cv"),
    (lambda: wl.constant(-2.0), "rate_rps"),
    (lambda: wl.ramp(1.0, 2.0, 10.0, 5.0), "end_s"),
    (lambda: wl.phases(1.0, ((0.0, 1.0),)), r"phases\[0\].duration_s"),
    (lambda: wl.Diurnal(mean_rps=1.0, amplitude=1.5), "amplitude"),
    (lambda: wl.TokenDist(kind="zipf", mean=3), "tokens.kind"),
    (lambda: wl.TokenDist(kind="uniform", low=5, high=2), "low <= high"),
    (lambda: wl.Lengths(input=wl.fixed(600), output=wl.fixed(600), max_model_len=1000),
     "max_model_len"),
], ids=["kind", "cv", "negative-rate", "ramp", "phase", "amplitude", "tokens", "uniform",
        "model-len"])
def test_bad_workload_settings_are_config_errors(build, match):
    """Invalid workload parameters raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        build()


def test_closed_loop_keeps_concurrency_and_stops_at_max_requests():
    """N users with instant completion: exactly N in flight until max_requests are sent."""
    env = simpy.Environment()
    in_flight: list[Request] = []
    peak = [0]

    def submit(req: Request) -> None:
        in_flight.append(req)
        peak[0] = max(peak[0], len(in_flight))

        def finish(_ev: object) -> None:
            in_flight.remove(req)
            req.on_done(req)

        env.timeout(1.0).callbacks.append(finish)

    users = wl.ClosedLoop(env=env, num_users=3, lengths=iter(lambda: (5, 5), None),
                          submit=submit, factory=wl.RequestFactory(), max_requests=10)
    users.start()
    env.run()
    assert users.num_sent == 10
    assert peak[0] == 3
    assert env.now == 4.0  # rounds of 3, 3, 3, 1 requests, one second each
