"""The load a server must be sized for: observed, sanitised, projected and with its backlog.

Pure arithmetic plus a small per-server memory (`DemandState`), owned by the inferno policy.
In order, per server and cycle:

1. **Memory.** Token means missing this window (nothing finished: generations that outlive
   the window) are taken from the last window that had them.
2. **Sanity cap.** An arrival rate above ``max_growth ×`` the server's current demand (the
   last planned rate, the observed throughput, or what its current replicas sustain) is cut
   to that bound and named: a label of 1e12 RPM must not buy the cluster in one cycle, while a
   real 10× spike is followed within two cycles (the cap compounds).
3. **Forecast.** A rising load is planned for the time the replicas asked for now are ready:
   rate + slope × lead, where lead = control period + expected startup and the slope is a
   least-squares fit over the recent observations spanning the lead, taken only while every
   step rose and at most the smallest step (a jump is not extrapolated twice); at most
   ``max_trend_factor ×`` the observed rate, never below it.
4. **Backlog.** Requests waiting beyond a small allowance per replica are planned to drain
   within ``backlog_drain_s``: rate += waiting / drain time, at most ``backlog_cap ×`` the
   arrival rate (a spike's queue is drained by capacity, not by buying the cluster).

The control period and each server's startup delay are learned from what the policy sees:
the time between its decisions, and the time from a rise of desired replicas to the ready
count reaching it (`StartupEstimate`).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field, replace

from inferno.errors import ConfigError
from inferno.model.snapshot import ServerObservation
from inferno.model.units import S_PER_MIN


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadEstimate:
    """The load to plan one server for."""

    arrival_rpm: float
    avg_in_tokens: float
    avg_out_tokens: float
    notes: tuple[str, ...] = ()
    """How the estimate departs from the observation (capped, projected, backlog, memory)."""

    def with_note(self, note: str, **changes: float) -> LoadEstimate:
        return replace(self, notes=(*self.notes, note), **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandSettings:
    """Knobs of `plan_load` (the inferno policy's demand model)."""

    max_growth: float = 4.0
    """Largest factor by which the planned rate may exceed the server's current demand in
    one cycle; 4 follows a 10× spike in two cycles and caps absurd inputs."""
    max_trend_factor: float = 2.0
    """The forecast is at most this factor above the observed rate."""
    backlog_drain_s: float = 120.0
    """s over which waiting requests beyond the allowance are planned to be served."""
    backlog_cap: float = 1.0
    """The backlog term is at most this fraction of the arrival rate."""
    waiting_allowance: float = 2.0
    """Waiting requests per ready replica that are normal (admission at the next iteration)
    and not a backlog."""

    def __post_init__(self) -> None:
        for name in ("max_growth", "max_trend_factor", "backlog_drain_s", "backlog_cap",
                     "waiting_allowance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"demand: {name} must be a finite number >= 0, got {value!r}")
        if self.max_trend_factor < 1:
            raise ConfigError(f"demand: max_trend_factor must be >= 1, got "
                              f"{self.max_trend_factor!r}")


@dataclass(slots=True)
class StartupEstimate:
    """Observed time from a rise of desired replicas to the ready count reaching it."""

    prior_s: float
    pending_since_s: float | None = None
    pending_target: int = 0
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=8))

    def observe(self, now_s: float, desired: int, ready: int) -> None:
        if ready >= desired:
            if self.pending_since_s is not None and ready >= self.pending_target:
                self.samples.append(now_s - self.pending_since_s)
            self.pending_since_s = None
            return
        if self.pending_since_s is None or desired > self.pending_target:
            if self.pending_since_s is None:
                self.pending_since_s = now_s
            self.pending_target = desired

    @property
    def startup_s(self) -> float:
        """The larger of the prior and the median observed delay (an upper bound, since a
        ready count is seen only at a cycle)."""
        if not self.samples:
            return self.prior_s
        return max(self.prior_s, statistics.median(self.samples))


@dataclass(slots=True)
class DemandState:
    """What the policy remembers about one server between cycles."""

    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=32))
    """(time s, observed arrival rpm)."""
    planned_rpm: float | None = None
    tokens: tuple[float, float] | None = None
    startup: StartupEstimate | None = None


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    """Slope of the least-squares line through (t, y) points (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    t_mean = sum(t for t, _ in points) / len(points)
    y_mean = sum(y for _, y in points) / len(points)
    den = sum((t - t_mean) ** 2 for t, _ in points)
    if den <= 0:
        return 0.0
    return sum((t - t_mean) * (y - y_mean) for t, y in points) / den


def forecast(history: list[tuple[float, float]], now_s: float, rate_rpm: float, lead_s: float,
             max_factor: float) -> float:
    """rate + trend × lead, never below the rate, at most max_factor × rate.

    The trend is the least-squares slope of the observations of the last ``lead_s`` (at least
    three), but only while every step between them rose, and at most the smallest of those
    steps' slopes: a ramp is projected, a single jump (a step or a burst, already in the
    rate) is not extrapolated a second time.
    """
    if lead_s <= 0 or rate_rpm <= 0:
        return rate_rpm
    recent = [(t, y) for t, y in history if t >= now_s - lead_s]
    if len(recent) < 3:
        recent = history[-3:]
    steps = [(y1 - y0) / (t1 - t0) for (t0, y0), (t1, y1) in zip(recent, recent[1:],
                                                                  strict=False) if t1 > t0]
    if not steps or min(steps) <= 0:
        return rate_rpm
    slope = min(least_squares_slope(recent), min(steps))
    return min(rate_rpm + slope * lead_s, max_factor * rate_rpm)


def backlog_rpm(obs: ServerObservation, arrival_rpm: float, settings: DemandSettings) -> float:
    """Extra rate that serves the waiting requests beyond the allowance within the drain
    time, at most backlog_cap × the arrival rate."""
    waiting = obs.waiting_now
    if waiting is None or settings.backlog_drain_s <= 0:
        return 0.0
    excess = waiting - settings.waiting_allowance * max(obs.ready_replicas, 1)
    if excess <= 0:
        return 0.0
    return min(excess / settings.backlog_drain_s * S_PER_MIN,
               settings.backlog_cap * arrival_rpm)


def plan_load(load: LoadEstimate, obs: ServerObservation, state: DemandState, *, now_s: float,
              lead_s: float, capacity_rpm: float | None,
              settings: DemandSettings) -> LoadEstimate:
    """The load to size ``obs`` for this cycle (module notes); updates ``state``."""
    observed = load.arrival_rpm
    references = [v for v in (state.planned_rpm, obs.throughput_rpm, capacity_rpm)
                  if v is not None and math.isfinite(v) and v > 0]
    if references and settings.max_growth > 0:
        bound = settings.max_growth * max(references)
        if observed > bound:
            load = load.with_note(f"arrival {observed:.4g} rpm capped at {bound:.4g}",
                                  arrival_rpm=bound)
    state.history.append((now_s, load.arrival_rpm))
    rate = load.arrival_rpm
    ahead = forecast(list(state.history), now_s, rate, lead_s, settings.max_trend_factor)
    if ahead > rate * 1.001:
        load = load.with_note(f"rising: planned {ahead:.4g} rpm {lead_s:.0f} s ahead",
                              arrival_rpm=ahead)
    extra = backlog_rpm(obs, rate, settings)
    if extra > 0:
        load = load.with_note(f"backlog {obs.waiting_now:.0f} waiting: +{extra:.4g} rpm",
                              arrival_rpm=load.arrival_rpm + extra)
    state.planned_rpm = load.arrival_rpm
    return load
