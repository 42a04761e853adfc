"""EKF update: convergence, NIS gate with rollback, positivity, saturation-safe Jacobian."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import brentq
from tuner_helpers import TRUE, load_ratio, observe, ramp, rel_error

from inferno.analyzer import QueueConfig, analyze
from inferno.model import PerfParms
from inferno.tuner import CHI2_2DOF_975, EkfOutcome, SkipReason, check_observation
from inferno.tuner import ekf as kf
from inferno.tuner.observation import ObservationSet, as_array, as_parms

REL_NOISE = 0.2 / 1.96
KW = {"rel_noise": REL_NOISE, "nis_threshold": CHI2_2DOF_975, "step": 0.01,
      "max_load_ratio": 0.95}


def _state(factor: tuple[float, float, float] = (1.0, 1.0, 1.0), pc: float = 0.05
           ) -> kf.EkfState:
    return kf.new_state(as_array(TRUE) * np.array(factor), percent_change=pc, bound_factor=10)


def _h(perf: PerfParms, rate_rpm: float) -> np.ndarray:
    """[TTFT, ITL] of the analyzer (the reference for Jacobian columns)."""
    m = analyze(QueueConfig(max_batch=64, max_queue=640, in_tokens=1024, out_tokens=512,
                            perf=perf), rate_rpm / 60.0)
    return np.array([m.ttft_ms, m.itl_ms])


def test_chi2_gate_is_the_975_percent_quantile_of_two_dof() -> None:
    """χ²(2) 97.5 % = −2·ln(0.025) = 7.3778 (closed form for two degrees of freedom)."""
    assert pytest.approx(-2 * np.log(0.025), abs=1e-3) == CHI2_2DOF_975


def test_new_state_sets_noise_and_ten_fold_bounds() -> None:
    """Q = P0 = diag((pc·x0)²) and the bounds are x0/10 and 10·x0."""
    x0 = np.array([20.0, 0.04, 0.001])
    s = kf.new_state(x0, percent_change=0.1, bound_factor=10)
    np.testing.assert_allclose(np.diag(s.q), [4.0, 1.6e-5, 1e-8])
    np.testing.assert_allclose(s.p, s.q)
    np.testing.assert_allclose(s.x_min, [2.0, 0.004, 0.0001])
    np.testing.assert_allclose(s.x_max, [200.0, 0.4, 0.01])


def test_predict_adds_process_noise_and_clamps() -> None:
    """x⁻ = clamp(x) and P⁻ = P + Q."""
    s = _state()
    s = dataclasses.replace(s, x=s.x_max * 3)
    p = kf.predict(s)
    np.testing.assert_allclose(p.x, s.x_max)
    np.testing.assert_allclose(p.p, s.p + s.q)


def test_updates_converge_from_twenty_percent_off() -> None:
    """Noise-free ramp observations pull a 20 % wrong α to within 1 % in 15 cycles."""
    state = _state((1.2, 1.0, 1.0))
    for cycle in ramp(TRUE, 15, np.random.default_rng(0)):
        state = kf.predict(state)
        for o in cycle:
            u = kf.update(state, o, check_nis=True, **KW)
            state = u.state
    assert rel_error(as_parms(state.x)).max() < 0.01


def test_nis_gate_rejects_and_rolls_back() -> None:
    """After warm-up an observation with TTFT ×5 fails the NIS gate; x and P are unchanged."""
    state = kf.predict(_state())
    o = observe(TRUE, 20.0)
    o = dataclasses.replace(o, ttft_ms=5 * o.ttft_ms)
    u = kf.update(state, o, check_nis=True, **KW)
    assert u.outcome is EkfOutcome.REJECTED_NIS
    assert u.nis >= CHI2_2DOF_975
    assert u.state is state


def test_warm_up_skips_the_nis_gate() -> None:
    """The same observation is accepted while NIS checks are off (warm-up cycles)."""
    state = kf.predict(_state())
    o = observe(TRUE, 20.0)
    o = dataclasses.replace(o, ttft_ms=5 * o.ttft_ms)
    u = kf.update(state, o, check_nis=False, **KW)
    assert u.outcome is EkfOutcome.ACCEPTED
    assert not np.array_equal(u.state.x, state.x)


def test_negative_update_is_rolled_back() -> None:
    """With P0 = x0² an observation at TTFT ×0.1, ITL ×0.5 drives a parameter below zero:
    rejected although its NIS passes the gate."""
    state = _state(pc=1.0)
    o = observe(TRUE, 20.0)
    o = dataclasses.replace(o, ttft_ms=0.1 * o.ttft_ms, itl_ms=0.5 * o.itl_ms)
    u = kf.update(state, o, check_nis=True, **KW)
    assert u.outcome is EkfOutcome.REJECTED_POSITIVITY
    assert u.nis < CHI2_2DOF_975
    assert u.state is state


def test_observation_saturated_at_the_estimate_is_skipped() -> None:
    """At 1.02× the model's max rate the update is skipped and the state kept."""
    rate = brentq(lambda r: load_ratio(TRUE, r) - 1.02, 10, 200)
    state = _state()
    u = kf.update(state, observe(TRUE, rate), check_nis=False, **KW)
    assert u.outcome is EkfOutcome.SKIPPED
    assert u.skip is SkipReason.MODEL_SATURATED
    assert u.state is state


def test_jacobian_does_not_difference_across_the_saturation_boundary() -> None:
    """At load ratio 0.945 the +1 % γ probe is past 0.95: the γ column is the backward
    difference, the α column (both probes stable) the central one."""
    rate = brentq(lambda r: load_ratio(TRUE, r) - 0.945, 10, 200)
    x = as_array(TRUE)
    eps = 0.01 * x
    up_gamma = dataclasses.replace(TRUE, gamma_ms=x[2] + eps[2])
    down_gamma = dataclasses.replace(TRUE, gamma_ms=x[2] - eps[2])
    up_alpha = dataclasses.replace(TRUE, alpha_ms=x[0] + eps[0])
    down_alpha = dataclasses.replace(TRUE, alpha_ms=x[0] - eps[0])
    assert load_ratio(up_gamma, rate) >= 0.95 > load_ratio(up_alpha, rate)
    h, jac = kf.jacobian(ObservationSet([observe(TRUE, rate)]), x, step=0.01,
                         max_load_ratio=0.95)
    np.testing.assert_allclose(h, _h(TRUE, rate), rtol=1e-12)
    np.testing.assert_allclose(jac[:, 2], (_h(TRUE, rate) - _h(down_gamma, rate)) / eps[2],
                               rtol=1e-9)
    np.testing.assert_allclose(jac[:, 0], (_h(up_alpha, rate) - _h(down_alpha, rate))
                               / (2 * eps[0]), rtol=1e-9)


def test_boundary_sweep_never_moves_alpha_away_from_the_truth() -> None:
    """The upstream failure (α 6.48 → 0.30): with α 20 % low, a load sweep across the
    boundary never increases α's error; saturated observations are skipped, not used."""
    state = _state((0.8, 1.0, 1.0))
    skipped = 0
    for rate in np.linspace(48, 75, 10):
        o = observe(TRUE, rate)
        if check_observation(o, 0.95) is not None:
            skipped += 1
            continue
        state = kf.predict(state)
        u = kf.update(state, o, check_nis=False, **KW)
        skipped += u.outcome is EkfOutcome.SKIPPED
        state = u.state
        assert abs(state.x[0] / TRUE.alpha_ms - 1) <= 0.2 + 1e-12
    assert skipped >= 6
    assert np.all(state.x > 0)


def test_update_into_saturation_is_rolled_back() -> None:
    """An update that moves the observation past the boundary is rejected (TTFT, ITL ×10)."""
    state = _state(pc=1.0)
    o = observe(TRUE, 20.0)
    o = dataclasses.replace(o, ttft_ms=10 * o.ttft_ms, itl_ms=10 * o.itl_ms)
    u = kf.update(state, o, check_nis=False, **KW)
    assert u.outcome is EkfOutcome.REJECTED_SATURATION
    assert u.state is state


def test_covariance_stays_symmetric_positive_definite() -> None:
    """After many accepted updates P is symmetric with positive eigenvalues."""
    state = _state((1.2, 0.9, 1.1))
    for cycle in ramp(TRUE, 8, np.random.default_rng(4), noise=0.02):
        state = kf.predict(state)
        for o in cycle:
            state = kf.update(state, o, check_nis=False, **KW).state
    np.testing.assert_allclose(state.p, state.p.T, rtol=0, atol=0)
    assert np.all(np.linalg.eigvalsh(state.p) > 0)
