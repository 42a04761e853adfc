"""Extended Kalman filter over x = [α, β, γ] with saturation-safe Jacobians
(docs/design/optimizer-model.md §6.4).

The process is a random walk (F = I). One observation z = [TTFT, ITL] updates the state through
h(x), the analyzer's prediction, linearised by differences. Two things differ from upstream, both
because of its documented failures (P17 (docs/design/control-loop.md §8)):

* Saturation. Past ``max_load_ratio`` of the model's max rate the queue wait dominates TTFT and
  its parameter sensitivity grows like 1/(1 − ρ)²; a 1 % probe can cross into that region and
  flip the sign of a Jacobian column (upstream: α 6.48 → 0.30 in one cycle). An observation that
  is saturated at the current estimate is not used; a probe beyond the boundary is replaced by
  the one-sided difference on the stable side, and if both probes of a parameter cross, the
  update is skipped. An update that would move the observation into saturation is rolled back.
* Noise. R is relative to the observation (σ = ``rel_noise`` × z) instead of upstream's fixed
  absolute values, which over a TTFT range of 75–4351 ms caused both NIS storms and lockout.

Functions are pure: they return a new `EkfState`; a rejected update returns the old one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from inferno.tuner.observation import ObservationSet, SkipReason, TunerObservation

MIN_STATE = 1e-9
"""Floor of the lower bounds (upstream)."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class EkfState:
    """Filter state: estimate, covariance, process noise and clamping bounds."""

    x: np.ndarray
    """[α, β, γ] (ms), shape (3,)."""
    p: np.ndarray
    """Covariance of ``x``, shape (3, 3)."""
    q: np.ndarray
    """Process noise added per predict, shape (3, 3)."""
    x_min: np.ndarray
    x_max: np.ndarray

    def clamp(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, self.x_min, self.x_max)


def new_state(x0: np.ndarray, *, percent_change: float, bound_factor: float,
              p: np.ndarray | None = None) -> EkfState:
    """Filter (re)built around ``x0``: Q = P0 = diag((pc·x0)²), bounds [x0/f, f·x0]."""
    x0 = np.asarray(x0, dtype=float)
    q = np.diag((percent_change * x0) ** 2)
    x_min = np.maximum(x0 / bound_factor, MIN_STATE)
    x_max = bound_factor * x0
    return EkfState(x=np.clip(x0, x_min, x_max), p=q.copy() if p is None else np.asarray(p),
                    q=q, x_min=x_min, x_max=x_max)


def predict(state: EkfState) -> EkfState:
    """Random-walk predict: x⁻ = clamp(x), P⁻ = P + Q."""
    return EkfState(x=state.clamp(state.x), p=state.p + state.q, q=state.q,
                    x_min=state.x_min, x_max=state.x_max)


class EkfOutcome(StrEnum):
    """What became of one EKF update (`EkfUpdate.outcome`)."""

    ACCEPTED = "accepted"
    REJECTED_NIS = "rejected_nis"
    """NIS at or above the gate: the observation disagrees with the filter's own uncertainty."""
    REJECTED_POSITIVITY = "rejected_positivity"
    """The unclamped update made a parameter non-positive."""
    REJECTED_SATURATION = "rejected_saturation"
    """The update would put the observation past the model's saturation boundary."""
    SKIPPED = "skipped"
    """Not used; `EkfUpdate.skip` says why."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class EkfUpdate:
    state: EkfState
    """The new state if accepted, else the input state."""
    outcome: EkfOutcome
    nis: float | None = None
    """Normalised innovation squared yᵀS⁻¹y (None when skipped before it was computed)."""
    skip: SkipReason | None = None

    @property
    def is_accepted(self) -> bool:
        return self.outcome is EkfOutcome.ACCEPTED


def jacobian(obs: ObservationSet, x: np.ndarray, *, step: float,
             max_load_ratio: float) -> tuple[np.ndarray, np.ndarray] | SkipReason:
    """h(x) and its Jacobian for a single observation, never differencing across saturation.

    Returns (h, H) with h shape (2,) and H shape (2, 3), or the reason the observation
    cannot be linearised at x. Step ε_j = step·|x_j| (step if x_j = 0).
    """
    eps = np.where(x != 0, step * np.abs(x), step)
    probes = np.vstack([x, x + np.diag(eps), x - np.diag(eps)])
    pred = obs.predict(probes)
    h_all = np.stack([pred.ttft_ms[:, 0], pred.itl_ms[:, 0]], axis=1)
    stable = (pred.load_ratio[:, 0] < max_load_ratio) & np.all(np.isfinite(h_all), axis=1)
    if not stable[0]:
        return SkipReason.MODEL_SATURATED
    h = h_all[0]
    cols = []
    for j in range(3):
        up, down = stable[1 + j], stable[4 + j]
        if up and down:
            cols.append((h_all[1 + j] - h_all[4 + j]) / (2 * eps[j]))
        elif down:
            cols.append((h - h_all[4 + j]) / eps[j])
        elif up:
            cols.append((h_all[1 + j] - h) / eps[j])
        else:
            return SkipReason.JACOBIAN_SATURATED
    return h, np.stack(cols, axis=1)


def update(state: EkfState, observation: TunerObservation, *, rel_noise: float,
           check_nis: bool, nis_threshold: float, step: float,
           max_load_ratio: float) -> EkfUpdate:
    """One measurement update with validation and rollback (§6.4).

    Rejected (state unchanged) if the unclamped estimate has a non-positive component, if
    ``check_nis`` and NIS >= ``nis_threshold``, or if the new estimate puts the observation
    past ``max_load_ratio``. The covariance uses the Joseph form, which stays symmetric and
    positive definite in float64 although the parameters differ by four orders of magnitude.
    """
    obs = ObservationSet([observation])
    lin = jacobian(obs, state.x, step=step, max_load_ratio=max_load_ratio)
    if isinstance(lin, SkipReason):
        return EkfUpdate(state=state, outcome=EkfOutcome.SKIPPED, skip=lin)
    h, hj = lin
    z = obs.measured()[0]
    r = np.diag((rel_noise * z) ** 2)
    y = z - h
    s = hj @ state.p @ hj.T + r
    s_inv = np.linalg.inv(s)
    nis = float(y @ s_inv @ y)
    gain = state.p @ hj.T @ s_inv
    raw = state.x + gain @ y
    if np.any(raw <= 0) or not np.all(np.isfinite(raw)):
        return EkfUpdate(state=state, outcome=EkfOutcome.REJECTED_POSITIVITY, nis=nis)
    if check_nis and nis >= nis_threshold:
        return EkfUpdate(state=state, outcome=EkfOutcome.REJECTED_NIS, nis=nis)
    x_new = state.clamp(raw)
    if obs.predict(x_new).load_ratio[0, 0] >= max_load_ratio:
        return EkfUpdate(state=state, outcome=EkfOutcome.REJECTED_SATURATION, nis=nis)
    i_kh = np.eye(3) - gain @ hj
    p_new = i_kh @ state.p @ i_kh.T + gain @ r @ gain.T
    p_new = (p_new + p_new.T) / 2
    return EkfUpdate(state=EkfState(x=x_new, p=p_new, q=state.q, x_min=state.x_min,
                                    x_max=state.x_max),
                     outcome=EkfOutcome.ACCEPTED, nis=nis)
