"""The load a server must be sized for: observed, sanitised, projected and with its backlog.

Pure arithmetic plus a small per-server memory (`DemandState`), owned by the inferno policy.
In order, per server and cycle:

1. **Memory.** Token means missing this window (nothing finished: generations that outlive
   the window) are taken from the last window that had them. A load that rose sharply within
   the window (the last couple of scrapes read ``recent_rise`` above the window's mean) is
   taken at its recent value: the window's mean lags a rise by half a window.
2. **Sanity cap.** An arrival rate above ``max_growth ×`` the server's current demand (the
   last planned rate, the observed throughput, or what its current replicas sustain) is cut
   to that bound and named: a label of 1e12 RPM must not buy the cluster in one cycle, while a
   real 10× spike is followed within two cycles (the cap compounds).
3. **Forecast.** A rising load is planned for the time the replicas asked for now are ready:
   rate + slope × lead, where lead = control period + expected startup and the slope is a
   least-squares fit over the recent observations spanning the lead, taken only while every
   step rose and at most the smallest step (a jump is not extrapolated twice); at most
   ``max_trend_factor ×`` the observed rate, never below it.
4. **Recurring bursts.** When the last ``burst_memory_s`` of observations hold two or more
   separate bursts (runs above ``burst_ratio`` × the median), the highest burst is planned
   for through the lulls: they are shorter than the startup and the reaction lag together,
   so releasing the replicas only loses the next burst.
5. **Backlog.** Requests waiting beyond a small allowance per replica are planned to drain
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
    burst_memory_s: float = 900.0
    """s of load history searched for recurring bursts; 0 disables the burst floor."""
    burst_ratio: float = 1.5
    """An observation at least this factor above the history's median is part of a burst."""
    recent_rise: float = 0.25
    """When the load over the last couple of scrapes exceeds the window's by more than this
    share, the recent one is planned for: a rise is acted on a period sooner, while falls
    keep the window's damping."""

    def __post_init__(self) -> None:
        for name in ("max_growth", "max_trend_factor", "backlog_drain_s", "backlog_cap",
                     "waiting_allowance", "recent_rise", "burst_memory_s", "burst_ratio"):
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

    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=256))
    """(time s, observed arrival rpm)."""
    token_history: deque[tuple[float, float, float]] = field(
        default_factory=lambda: deque(maxlen=64))
    """(time s, mean input tokens, mean output tokens) planned for."""
    planned_rpm: float | None = None
    rises: deque[float] = field(default_factory=lambda: deque(maxlen=30))
    """Recent / window load ratios of past cycles: how much the load jitters by itself."""
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


def recurring_peak(history: list[tuple[float, float]], now_s: float, memory_s: float,
                   ratio: float, window_s: float | None = None) -> float | None:
    """The highest load of the bursts in the last ``memory_s``, when bursts recur.

    A burst starts at an observation at least ``ratio`` × the median of the memory and ends
    when the load is back at the median or below; with two or more separate bursts the load
    comes and goes on the time scale of the memory, and the lulls between bursts are shorter
    than the time replicas take to come back. One run (a ramp, a step, a single spike) is
    not a recurrence. With ``window_s``, a burst must also stand three Poisson standard
    deviations above the median's count over the window (at low rates noise alone crosses
    any ratio).
    """
    if memory_s <= 0:
        return None
    recent = [y for t, y in history if t >= now_s - memory_s]
    if len(recent) < 4:
        return None
    median = statistics.median(recent)
    high = ratio * median
    if window_s:
        count = median / S_PER_MIN * window_s
        high = max(high, (count + 3.0 * math.sqrt(max(count, 1.0))) / window_s * S_PER_MIN)
    bursts, inside, peak = 0, False, 0.0
    for y in recent:
        if y >= high > 0:
            bursts += not inside
            inside = True
            peak = max(peak, y)
        elif y <= median:  # hysteresis: noise around the threshold is not a new burst
            inside = False
    return peak if bursts >= 2 else None


def fast_rise(obs: ServerObservation, window_rpm: float, lead_s: float,
              settings: DemandSettings, past: deque[float] | None = None) -> float | None:
    """The load to plan for when it rose significantly within the window, else None.

    The recent window ends where the window ends, so its mean is (window − recent) / 2 later
    than the window's: the slope between the two means, projected over the lead from the
    recent one (at most ``max_trend_factor`` × it), catches a rise still under way. A rise
    counts when the recent load exceeds the window's by ``recent_rise``, by three standard
    deviations of a Poisson count over the recent window (noise at low rates), and by more
    than every recent / window ratio of the last cycles (``past``, which this call extends;
    1.5 while fewer than three are known):
    bursty arrivals jitter far more than Poisson ones, and a rise must stand out of the
    server's own jitter.
    """
    recent, width, short = obs.recent_arrival_rpm, obs.window_s, obs.recent_window_s
    if recent is None or not (width and short) or short >= width or not math.isfinite(recent):
        return None
    ratio = recent / window_rpm if window_rpm > 0 else math.inf
    usual = max(past) if past and len(past) >= 3 else 1.5  # little history: a clear rise only
    if past is not None and math.isfinite(ratio):
        past.append(ratio)
    expected = window_rpm / S_PER_MIN * short
    count = recent / S_PER_MIN * short
    if ratio <= max(1.0 + settings.recent_rise, usual) or (
            count - expected <= 3.0 * math.sqrt(max(expected, 1.0))):
        return None
    slope = (recent - window_rpm) / ((width - short) / 2.0)
    return min(recent + slope * lead_s, settings.max_trend_factor * recent)


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
    """The load to size ``obs`` for this cycle (module notes); updates ``state``.

    The memory (trend, bursts) holds the observed window rates, sanity-capped; what is planned
    on top of them (projections, bursts, backlog) never feeds back into it.
    """
    references = [v for v in (state.planned_rpm, obs.throughput_rpm, capacity_rpm)
                  if v is not None and math.isfinite(v) and v > 0]
    bound = settings.max_growth * max(references) if references and settings.max_growth > 0 \
        else math.inf
    if load.arrival_rpm > bound:
        load = load.with_note(f"arrival {load.arrival_rpm:.4g} rpm capped at {bound:.4g}",
                              arrival_rpm=bound)
    rate = load.arrival_rpm
    state.history.append((now_s, rate))
    state.token_history.append((now_s, load.avg_in_tokens, load.avg_out_tokens))
    history = list(state.history)
    ahead = forecast(history, now_s, rate, lead_s, settings.max_trend_factor)
    fast = fast_rise(obs, rate, lead_s, settings, state.rises)
    peak = recurring_peak(history, now_s, settings.burst_memory_s, settings.burst_ratio,
                          obs.window_s)
    if fast is not None and fast > max(ahead, rate):
        load = load.with_note(f"rising fast: {obs.recent_arrival_rpm:.4g} rpm over the last "
                              f"scrapes, {fast:.4g} planned", arrival_rpm=fast)
    elif ahead > rate * 1.001:
        load = load.with_note(f"rising: planned {ahead:.4g} rpm {lead_s:.0f} s ahead",
                              arrival_rpm=ahead)
    if peak is not None and peak > load.arrival_rpm:
        load = load.with_note(f"recurring bursts: holding {peak:.4g} rpm", arrival_rpm=peak)
    extra = backlog_rpm(obs, rate, settings)
    if extra > 0:
        load = load.with_note(f"backlog {obs.waiting_now:.0f} waiting: +{extra:.4g} rpm",
                              arrival_rpm=load.arrival_rpm + extra)
    if load.arrival_rpm > bound:
        load = load.with_note(f"planned load capped at {bound:.4g} rpm", arrival_rpm=bound)
    state.planned_rpm = load.arrival_rpm
    return load
