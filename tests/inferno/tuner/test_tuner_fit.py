"""Multi-observation fits: exact recovery, noise, identifiability guard, GuessInitState."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tuner_helpers import OFF, TRUE, observe, ramp, rel_error

from inferno.tuner import ObservationSet, TunerObservation, condition_number, fit, guess_init_state
from inferno.tuner.fit import fit_from_starts, refit_window
from inferno.tuner.observation import as_array

DIVERSE = [(12.0, 1024, 512), (30.0, 1024, 512), (45.0, 900, 400), (20.0, 2048, 256),
           (60.0, 512, 700)]
"""(rate RPM, L, m): loads and token shapes spread like the replicas of a ramp."""


def _diverse(noise: float = 0.0, seed: int = 0) -> list[TunerObservation]:
    rng = np.random.default_rng(seed)
    return [observe(TRUE, r, big_l, m, noise=noise, rng=rng) for r, big_l, m in DIVERSE]


def test_noise_free_fit_recovers_exact_parameters_from_2x_off() -> None:
    """Noise-free observations at the true parameters give them back to 1e-6 relative."""
    result = fit(ObservationSet(_diverse()), as_array(OFF))
    assert result.success
    assert rel_error(result.params).max() < 1e-6
    assert result.fun < 1e-12


@pytest.mark.parametrize("seed", [1, 2, 3], ids=["seed1", "seed2", "seed3"])
def test_noisy_fit_stays_within_a_few_percent(seed: int) -> None:
    """With 2 % noise on TTFT and ITL over 15 replica observations each parameter is within 5 %."""
    rng = np.random.default_rng(seed)
    obs = [o for cycle in ramp(TRUE, 5, rng, noise=0.02) for o in cycle]
    result = fit(ObservationSet(obs), as_array(OFF))
    assert result.success
    assert rel_error(result.params).max() < 0.05


def test_single_operating_point_is_flagged_unidentifiable() -> None:
    """Five copies of one operating point: κ is far above the 1000 guard."""
    obs = [observe(TRUE, 30.0)] * 5
    assert condition_number(ObservationSet(obs), as_array(TRUE)) > 1e6


def test_one_observation_has_infinite_condition_number() -> None:
    """Two residuals cannot determine three parameters: κ = inf."""
    assert condition_number(ObservationSet([observe(TRUE, 30.0)]), as_array(TRUE)) == np.inf


def test_diverse_operating_points_are_well_conditioned() -> None:
    """Spread loads and token shapes give κ well below the guard."""
    assert condition_number(ObservationSet(_diverse()), as_array(TRUE)) < 100


def test_guess_init_state_inverts_the_low_load_approximations() -> None:
    """With a seed γ, α and β solve TTFT = α + (β+γ)L and ITL = α + β + γ(L + (m+1)/2)."""
    alpha, beta, gamma, big_l, m = 10.0, 0.02, 1e-4, 1000.0, 199.0
    ttft = alpha + (beta + gamma) * big_l  # 30.1
    itl = alpha + beta + gamma * (big_l + (m + 1) / 2)  # 10.13
    obs = dataclasses.replace(observe(TRUE, 10.0), in_tokens=big_l, out_tokens=m,
                              ttft_ms=ttft, itl_ms=itl)
    np.testing.assert_allclose(guess_init_state(obs, (5.0, 0.05, gamma)), [alpha, beta, gamma],
                               rtol=1e-12)


def test_guess_init_state_without_seed_uses_ninety_percent_of_itl() -> None:
    """Without a seed: α = 0.9·ITL, s = (TTFT − α)/L, γ = (ITL − α − s)/(L + (m+1)/2 − 1)."""
    obs = dataclasses.replace(observe(TRUE, 10.0), in_tokens=100.0, out_tokens=19.0,
                              ttft_ms=30.0, itl_ms=10.0)
    # α = 9, s = 0.21, γ = 0.79/109 , β = s − γ
    np.testing.assert_allclose(guess_init_state(obs), [9.0, 0.21 - 0.79 / 109, 0.79 / 109],
                               rtol=1e-12)


def test_guess_init_state_without_seed_rejects_non_positive_states() -> None:
    """TTFT below 0.9·ITL makes β negative: no guess."""
    obs = dataclasses.replace(observe(TRUE, 10.0), ttft_ms=5.0, itl_ms=10.0)
    assert guess_init_state(obs) is None


def test_fit_from_starts_picks_the_better_start() -> None:
    """A start 100× off next to one 2× off still ends at the truth."""
    far = as_array(TRUE) * np.array([100.0, 0.01, 100.0])
    result = fit_from_starts(ObservationSet(_diverse()), [far, as_array(OFF)])
    assert rel_error(result.params).max() < 1e-6


def test_fit_without_observations_fails_as_a_result() -> None:
    """An empty window is a failed result, not an exception."""
    result = fit(ObservationSet([]), as_array(TRUE))
    assert not result.success
    assert result.kappa == np.inf


def test_window_refit_drops_the_single_outlier() -> None:
    """One observation with TTFT ×3 is dropped and the rest fit the truth exactly."""
    obs = _diverse() + [observe(TRUE, r, 1024, 512) for r in (15.0, 25.0)]
    bad = 2
    obs[bad] = dataclasses.replace(obs[bad], ttft_ms=3 * obs[bad].ttft_ms)
    result = refit_window(obs, as_array(TRUE) * 1.05, residual_threshold=0.5)
    assert result.dropped == (bad,)
    assert rel_error(result.params).max() < 1e-6


def test_window_refit_keeps_every_consistent_observation() -> None:
    """Without an outlier nothing is dropped."""
    result = refit_window(_diverse(), as_array(TRUE) * 1.05, residual_threshold=0.5)
    assert result.dropped == ()
    assert rel_error(result.params).max() < 1e-6
