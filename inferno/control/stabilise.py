"""Stabilisation of replica recommendations: pure functions over (recommendation, history, now).

The arithmetic of the Kubernetes HPA's `stabilizeRecommendationWithBehaviors` and its rate
limits, with the clock passed in (the HPA reads `time.Now()` inside; we do not). No I/O, no
state: the controller keeps the history and hands it back every cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inferno.control.settings import StabilisationSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    """A raw (unstabilised) recommendation made at `time_s`."""

    time_s: float
    replicas: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stabilised:
    replicas: int
    """Replicas to actuate."""
    recommended: int
    """The recommendation after the tolerance band, as stored in the history."""
    history: tuple[Recommendation, ...]
    """Recommendations still inside the longer window, this cycle's last."""


def apply_tolerance(current: int, desired: int, tolerance: float) -> int:
    """Keep `current` when the change is at most ``tolerance × current`` replicas."""
    if desired != current and abs(desired - current) <= tolerance * current:
        return current
    return desired


def window_limits(history: Sequence[Recommendation], now_s: float, recommended: int,
                  settings: StabilisationSettings) -> tuple[int, int]:
    """(up_limit, down_limit): min over the scale-up window, max over the scale-down window.

    Both include `recommended`; a past recommendation counts when strictly newer than
    ``now_s − window`` (HPA's `After(cutoff)`).
    """
    up_cutoff = now_s - settings.scale_up_window_s
    down_cutoff = now_s - settings.scale_down_window_s
    up_limit = recommended
    down_limit = recommended
    for rec in history:
        if rec.time_s > up_cutoff:
            up_limit = min(up_limit, rec.replicas)
        if rec.time_s > down_cutoff:
            down_limit = max(down_limit, rec.replicas)
    return up_limit, down_limit


def limit_step(current: int, desired: int, settings: StabilisationSettings) -> int:
    """Clip the change of one cycle to the configured maximum steps."""
    if settings.max_step_up is not None:
        desired = min(desired, current + settings.max_step_up)
    if settings.max_step_down is not None:
        desired = max(desired, current - settings.max_step_down)
    return desired


def stabilise(current: int, desired: int, history: Sequence[Recommendation], now_s: float,
              settings: StabilisationSettings) -> Stabilised:
    """Damp one server's raw recommendation `desired` given its `current` replicas.

    Order: tolerance band, then the window (the result stays at `current` when it lies
    between the scale-up and scale-down limits, HPA semantics), then the step limits.
    """
    recommended = apply_tolerance(current, desired, settings.tolerance)
    up_limit, down_limit = window_limits(history, now_s, recommended, settings)
    replicas = min(max(current, up_limit), down_limit)
    replicas = limit_step(current, replicas, settings)
    keep_after = now_s - settings.history_s
    kept = tuple(rec for rec in history if rec.time_s > keep_after)
    return Stabilised(replicas=replicas, recommended=recommended,
                      history=(*kept, Recommendation(time_s=now_s, replicas=recommended)))


def _ceil(value: float) -> int:
    """Ceiling that ignores float noise (1.2 × 5 = 6.000000000000001 must give 6)."""
    return math.ceil(round(value, 9))


def hpa_desired(current: int, ready: int, metric: float, target: float, tolerance: float) -> int:
    """The HPA replica calculator for one per-pod average metric (no missing pods).

    `metric` is the mean over the `ready` replicas; the `current − ready` pods that are not
    ready count as zero usage when scaling up, which holds a scale-up while pods start
    (HPA `calcPlainMetricReplicas`). Returns `current` inside the tolerance band.
    """
    ratio = metric / target
    num_unready = max(current - ready, 0)
    if num_unready == 0 or ratio <= 1.0:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return _ceil(ratio * ready)
    new_ratio = ratio * ready / (ready + num_unready)
    if abs(1.0 - new_ratio) <= tolerance or new_ratio < 1.0:
        return current
    new = _ceil(new_ratio * (ready + num_unready))
    return max(new, current)
