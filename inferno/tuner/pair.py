"""One cycle of one (model, accelerator) pair: screen, collect, fit, filter or refit.

Lifecycle (docs/design/optimizer-model.md §6.4–6.7, docs/design/control-loop.md §1.7), as a pure
function of the previous
`PairState`:

1. Every observation is screened (`check_observation`); the rejects are counted, never used.
2. COLLECTING: valid observations fill the window. From ``init_obs`` on, a multi-start
   Nelder–Mead fit runs every cycle; it is adopted only if the identifiability guard passes
   (κ ≤ ``max_condition_number``), otherwise the model-data parameters are held. Unlike
   upstream there is no fallback to GuessInitState, which inflated γ ~20× (P18
   (docs/design/control-loop.md §8)); it only
   provides a start point.
3. EKF mode: if the window is ill-conditioned the parameters are held for the cycle;
   otherwise one predict, then one update per observation. After ``max_rejected_cycles``
   consecutive cycles with usable data but no accepted update (NIS lockout, or an estimate
   so slow that every observation looks saturated) the refused observations are refitted
   and the filter rebuilt, instead of staying locked out (P17).
4. Window mode: refit over the window every cycle, warm-started, one outlier pass; an
   ill-conditioned or failed refit keeps the last fit.
5. Held-back gate (every mode): the estimator's parameters are a *candidate*. Each cycle's
   valid observations are first scored, before any estimator sees them, for the candidate
   and for the parameters in force (the last published, else the prior); the candidate is
   published only when over the last ``validation_cycles`` its summed squared relative error
   is below (1 − ``min_improvement``) × that of the parameters in force, and of the
   parameters in force rescaled by the common factor that best fits the earlier window
   (`_score`); failing that, the rescaled parameters in force may be published. Otherwise
   the optimizer keeps what it had: the tuner moves nothing that does not predict unseen
   observations better.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from inferno.model import PerfParms
from inferno.tuner import ekf
from inferno.tuner.fit import (
    BAD_RESIDUAL,
    FitResult,
    condition_number,
    fit_covariance,
    fit_from_starts,
    guess_init_state,
    refit_window,
    relative_residuals,
)
from inferno.tuner.observation import (
    ObservationSet,
    SkipReason,
    TunerObservation,
    as_array,
    as_parms,
    check_observation,
)
from inferno.tuner.settings import TunerMode, TunerSettings
from inferno.tuner.store import PairState, TunerPhase

FIT_FAILED = "fit_failed"
REFIT = "refit"


def tune_pair(state: PairState, observations: Sequence[TunerObservation], *,
              prior: PerfParms | None, settings: TunerSettings, now_s: float) -> PairState:
    """The pair's state after this cycle's ``observations`` (all of this pair)."""
    counts = dict(state.counts)
    valid: list[TunerObservation] = []
    for o in observations:
        reason = check_observation(o, settings.min_throughput_ratio)
        if reason is None:
            valid.append(o)
        else:
            counts[reason.value] = counts.get(reason.value, 0) + 1
    window = (*state.window, *valid)[-settings.window_size:]
    state = dataclasses.replace(state, counts=counts, window=window, last_error=None)
    if not valid:
        return state
    state = _score(state, valid, prior, settings)
    if state.phase is TunerPhase.COLLECTING or state.params is None:
        return _initial_fit(state, prior, settings, now_s)
    if settings.mode is TunerMode.WINDOW:
        return _window_cycle(state, settings, now_s)
    return _ekf_cycle(state, valid, settings, now_s)


def held_back_error(observations: Sequence[TunerObservation], params: PerfParms) -> float:
    """Mean squared relative TTFT and ITL error of ``params`` on ``observations``."""
    r = relative_residuals(ObservationSet(observations), as_array(params)[None, :])[0]
    return float(np.mean(np.minimum(r * r, BAD_RESIDUAL)))


SCALE_GRID = np.exp(np.linspace(np.log(0.5), np.log(2.0), 57))
"""Common factors on α, β, γ tried for the rescaled model in force (±1.25 % steps)."""


def _best_scale(observations: Sequence[TunerObservation], params: PerfParms) -> float:
    """The common factor on α, β, γ that best predicts ``observations`` (1 without any)."""
    if not observations:
        return 1.0
    x = as_array(params)[None, :] * SCALE_GRID[:, None]
    r = relative_residuals(ObservationSet(observations), x)
    return float(SCALE_GRID[int(np.argmin(np.einsum("pk,pk->p", r, r)))])


def _rescaled(params: PerfParms, factor: float) -> PerfParms:
    return as_parms(as_array(params) * factor)


def _score(state: PairState, valid: Sequence[TunerObservation], prior: PerfParms | None,
           settings: TunerSettings) -> PairState:
    """Score, on ``valid`` (unseen by the estimator), the candidate, the parameters in force
    and the parameters in force times the common factor that best fits the earlier window
    (a pure scale error: what a step-time correction fixes); publish when one has
    out-predicted the parameters in force for long enough.

    The candidate is published only if it also beats the rescaled parameters in force: its
    *shape* (the split between α, β and γ) must predict better, not only its scale. Failing
    that, the rescaled parameters in force are published if they predict better. A wrong
    split extrapolates badly to loads the window did not see; a wrong scale does not.
    """
    in_force = state.published or (prior if prior is not None and not prior.is_zero else None)
    candidate = state.params
    if candidate is None:
        return state
    if in_force is None:  # no model data: anything fitted beats nothing
        return dataclasses.replace(state, published=candidate)
    earlier = state.window[:len(state.window) - len(valid)]
    factor = _best_scale(earlier, in_force)
    rescaled = _rescaled(in_force, factor)
    scores = (*state.scores, (held_back_error(valid, candidate), held_back_error(valid, in_force),
                              held_back_error(valid, rescaled)))[-settings.validation_cycles:]
    state = dataclasses.replace(state, scores=scores)
    if len(scores) < settings.validation_cycles:
        return state
    err_candidate, err_in_force, err_rescaled = np.sum(np.asarray(scores), axis=0)
    keep = 1.0 - settings.min_improvement
    if err_candidate < keep * min(err_in_force, err_rescaled):
        return dataclasses.replace(state, published=candidate, scores=(),
                                   counts=state.counted("published"))
    if err_rescaled < keep * err_in_force and factor != 1.0:
        return dataclasses.replace(state, published=rescaled, scores=(),
                                   counts=state.counted("published_scale"))
    return state


def _initial_fit(state: PairState, prior: PerfParms | None, settings: TunerSettings,
                 now_s: float) -> PairState:
    if len(state.window) < settings.init_obs:
        return state
    starts = []
    seed = np.asarray(settings.seed)
    if prior is not None and not prior.is_zero:
        seed = as_array(prior)
        starts.append(seed)
    guess = guess_init_state(state.window[0], seed)
    if guess is not None:
        starts.append(guess)
    starts.append(np.asarray(settings.seed))
    result = fit_from_starts(ObservationSet(state.window), starts, max_fev=settings.max_fev)
    held = _guard(state, result, settings)
    if held is not None:
        return held
    state = _adopt(state, result, settings, now_s)
    if prior is None or prior.is_zero:
        state = dataclasses.replace(state, published=state.params)
    return state


def _guard(state: PairState, result: FitResult, settings: TunerSettings) -> PairState | None:
    """The held state if ``result`` must not be used, else None."""
    if not result.success:
        return dataclasses.replace(state, counts=state.counted(FIT_FAILED), fit_value=None)
    if not result.is_identifiable(settings.max_condition_number):
        return dataclasses.replace(state, counts=state.counted(SkipReason.ILL_CONDITIONED),
                                   kappa=result.kappa, fit_value=result.fun)
    return None


def _adopt(state: PairState, result: FitResult, settings: TunerSettings,
           now_s: float) -> PairState:
    """Take a fit: rebuild the filter around it and restart the NIS-free warm-up.

    The filter's initial covariance is the fit's own (`fit_covariance` over the fitted
    window) plus the process noise, not upstream's diag((pc·x0)²): a fit from a few noisy
    low-load points can be 50 % off along a poorly determined direction, and a filter that
    believes otherwise compensates with the wrong parameter (α drifting up while γ stays low).
    """
    x = np.asarray(result.x)
    filt = ekf.new_state(x, percent_change=settings.percent_change,
                         bound_factor=settings.bound_factor)
    cov = fit_covariance(ObservationSet(state.window), x, settings.rel_noise)
    if np.all(np.isfinite(cov)):
        filt = dataclasses.replace(filt, p=filt.q + cov)
    is_warming = settings.mode is TunerMode.EKF and settings.warm_up_cycles > 0
    return dataclasses.replace(
        state, phase=TunerPhase.WARMING if is_warming else TunerPhase.TUNED, params=as_parms(x),
        ekf=filt, kappa=result.kappa, fit_value=result.fun, update_count=0,
        stalled_cycles=0, stalled_obs=0, counts=state.counted(REFIT), last_updated_s=now_s)


def _window_cycle(state: PairState, settings: TunerSettings, now_s: float) -> PairState:
    assert state.params is not None
    result = refit_window(state.window, as_array(state.params),
                          residual_threshold=settings.residual_threshold,
                          max_fev=settings.max_fev)
    held = _guard(state, result, settings)
    if held is not None:
        return held
    window = tuple(o for i, o in enumerate(state.window) if i not in result.dropped)
    return dataclasses.replace(
        state, phase=TunerPhase.TUNED, params=result.params, window=window, kappa=result.kappa,
        fit_value=result.fun, update_count=state.update_count + 1,
        counts=state.counted(REFIT, *(["outlier"] if result.dropped else [])),
        last_updated_s=now_s)


def _ekf_cycle(state: PairState, valid: Sequence[TunerObservation], settings: TunerSettings,
               now_s: float) -> PairState:
    params = state.params
    assert params is not None
    prior = state.ekf
    if prior is None:  # a store loaded without covariance
        prior = ekf.new_state(as_array(params), percent_change=settings.percent_change,
                              bound_factor=settings.bound_factor)
        state = dataclasses.replace(state, ekf=prior)
    if settings.max_condition_number > 0:
        kappa = condition_number(ObservationSet(state.window), prior.x)
        state = dataclasses.replace(state, kappa=kappa)
        if kappa > settings.max_condition_number:
            return dataclasses.replace(state, counts=state.counted(SkipReason.ILL_CONDITIONED))
    filt = ekf.predict(prior)
    check_nis = state.update_count >= settings.warm_up_cycles
    counts = dict(state.counts)
    num_accepted, nis = 0, state.nis
    for o in valid:
        u = ekf.update(filt, o, rel_noise=settings.rel_noise, check_nis=check_nis,
                       nis_threshold=settings.nis_threshold, step=settings.jacobian_step,
                       max_load_ratio=settings.max_load_ratio)
        name = u.skip.value if u.skip is not None else u.outcome.value
        counts[name] = counts.get(name, 0) + 1
        nis = u.nis if u.nis is not None else nis
        if u.is_accepted:
            filt, num_accepted = u.state, num_accepted + 1
    state = dataclasses.replace(state, ekf=filt, counts=counts, nis=nis)
    if num_accepted:
        update_count = state.update_count + 1
        return dataclasses.replace(
            state, params=as_parms(filt.x), update_count=update_count, stalled_cycles=0,
            stalled_obs=0,
            phase=(TunerPhase.TUNED if update_count >= settings.warm_up_cycles
                   else TunerPhase.WARMING),
            last_updated_s=now_s)
    stalled = state.stalled_cycles + 1
    stalled_obs = min(state.stalled_obs + len(valid), len(state.window))
    state = dataclasses.replace(state, stalled_cycles=stalled, stalled_obs=stalled_obs)
    if stalled < settings.max_rejected_cycles or stalled_obs < settings.init_obs:
        return state
    # Refit on the observations the filter refused only: the older ones describe the
    # regime before the change and would pull the fit halfway back.
    recent = state.window[-stalled_obs:]
    result = fit_from_starts(ObservationSet(recent), [filt.x, as_array(params)],
                             max_fev=settings.max_fev)
    held = _guard(state, result, settings)
    if held is not None:
        return held
    return _adopt(dataclasses.replace(state, window=recent), result, settings, now_s)
