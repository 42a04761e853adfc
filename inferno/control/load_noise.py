"""Load noise (upstream's "load emulator"): a seeded random walk of each server's request
rate and token counts.

World independent: it perturbs a mapping server → `LoadPoint` and returns the next one; the
twin applies it to its workload, live mode to the Deployments' load labels. Every step draws
``x_next = x + θ·(nominal − x) + N(0, (α·nominal)²)`` independently for the rate and both
token counts (θ = 0 is the seed's pure random walk, σ = α × the original value). The rate's
nominal value follows the phase multiplier; token nominals do not (upstream).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferno.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPoint:
    arrival_rpm: float
    avg_in_tokens: float
    avg_out_tokens: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadPhase:
    """Move the rate multiplier linearly to `ratio` × its value at the phase start."""

    duration_s: float
    """s; 0 means "hold forever" and is allowed only on the last phase."""
    ratio: float = 1.0
    """Chained: relative to the multiplier at the start of the phase; ignored when terminal."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadNoiseSettings:
    interval_s: float = 60.0
    """s between perturbations (seed default)."""
    alpha: float = 0.5
    """Noise σ as a fraction of the nominal value, in [0, 1] (seed default)."""
    theta: float = 0.0
    """Mean reversion per step toward the nominal value, in [0, 1]; 0 = the seed's random
    walk, 1 = independent draws around the nominal value."""
    phases: tuple[LoadPhase, ...] = field(default=(), metadata={"internal": True})
    """Rate multiplier profile from the emulator's start; empty = 1 forever. Set by code, not
    a key of a settings file (a scenario's phases are its `profile`)."""
    range_factor: float | None = None
    """Clamp each value to [nominal / f, nominal · f] (upstream's current emulator uses 10);
    None clamps only at the physical floor: rate ≥ 0, tokens ≥ 1."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ConfigError(f"emulator: interval_s must be > 0, got {self.interval_s!r}")
        for name in ("alpha", "theta"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"emulator: {name} must be in [0, 1], got {value!r}")
        if self.range_factor is not None and not (
                math.isfinite(self.range_factor) and self.range_factor >= 1.0):
            raise ConfigError(f"emulator: range_factor must be >= 1 or None, "
                              f"got {self.range_factor!r}")
        validate_phases(self.phases)


def validate_phases(phases: Sequence[LoadPhase]) -> None:
    """Upstream rules: durations >= 0; 0 only on the last phase; non-terminal ratios > 0."""
    for i, phase in enumerate(phases):
        is_last = i == len(phases) - 1
        if not (math.isfinite(phase.duration_s) and phase.duration_s >= 0):
            raise ConfigError(f"emulator: phases[{i}].duration_s must be >= 0, "
                              f"got {phase.duration_s!r}")
        if phase.duration_s == 0 and not is_last:
            raise ConfigError(f"emulator: phases[{i}].duration_s is 0 (hold forever) "
                              "but it is not the last phase")
        if phase.duration_s > 0 and not (math.isfinite(phase.ratio) and phase.ratio > 0):
            raise ConfigError(f"emulator: phases[{i}].ratio must be > 0, got {phase.ratio!r}")


def phase_multiplier(phases: Sequence[LoadPhase], elapsed_s: float) -> float:
    """Rate multiplier `elapsed_s` after the start: chained ratios, linear inside a phase."""
    cum = 1.0
    start_s = 0.0
    for phase in phases:
        if phase.duration_s == 0:
            return cum
        if elapsed_s < start_s + phase.duration_s:
            fraction = max(elapsed_s - start_s, 0.0) / phase.duration_s
            return cum * (1.0 + (phase.ratio - 1.0) * fraction)
        cum *= phase.ratio
        start_s += phase.duration_s
    return cum


class LoadNoise:
    """Stateful only in what upstream remembers: each server's original load and the start.

    Servers are perturbed in name order, so the draws do not depend on mapping order; one
    `np.random.Generator` (from the caller's SeedSequence) makes a run reproducible.
    """

    def __init__(self, settings: LoadNoiseSettings, rng: np.random.Generator, *,
                 start_s: float = 0.0) -> None:
        self.settings = settings
        self._rng = rng
        self._start_s = start_s
        self._original: dict[str, LoadPoint] = {}

    def nominal(self, name: str, now_s: float) -> LoadPoint | None:
        """Nominal load of a server at `now_s` (original × phase multiplier for the rate)."""
        original = self._original.get(name)
        if original is None:
            return None
        m = phase_multiplier(self.settings.phases, now_s - self._start_s)
        return LoadPoint(arrival_rpm=original.arrival_rpm * m,
                         avg_in_tokens=original.avg_in_tokens,
                         avg_out_tokens=original.avg_out_tokens)

    def step(self, current: Mapping[str, LoadPoint], now_s: float,
             nominal: Mapping[str, LoadPoint] | None = None) -> dict[str, LoadPoint]:
        """Perturb every server once.

        `nominal` overrides the remembered originals (live: the nominal labels); otherwise a
        server's original is its value the first time it is seen.
        """
        names = sorted(current)
        if not names:
            return {}
        for name in names:
            if nominal is not None and name in nominal:
                self._original[name] = nominal[name]
            else:
                self._original.setdefault(name, current[name])
        s = self.settings
        x = np.array([[current[n].arrival_rpm, current[n].avg_in_tokens,
                       current[n].avg_out_tokens] for n in names], dtype=float)
        nom_points = [self.nominal(n, now_s) for n in names]
        nom = np.array([[p.arrival_rpm, p.avg_in_tokens, p.avg_out_tokens]
                        for p in nom_points if p is not None], dtype=float)
        z = self._rng.standard_normal(x.shape)
        nxt = x + s.theta * (nom - x) + s.alpha * nom * z
        if s.range_factor is None:
            nxt = np.maximum(nxt, np.array([0.0, 1.0, 1.0]))
        else:
            nxt = np.clip(nxt, nom / s.range_factor, nom * s.range_factor)
        return {n: LoadPoint(arrival_rpm=float(row[0]), avg_in_tokens=float(row[1]),
                             avg_out_tokens=float(row[2])) for n, row in zip(names, nxt,
                                                                             strict=True)}


def __getattr__(name: str) -> Any:
    """`Phase`, the deprecated name of `LoadPhase` (before the tuner got its own phases)."""
    if name == "Phase":
        warnings.warn("inferno.control.load_noise.Phase is deprecated: use LoadPhase",
                      DeprecationWarning, stacklevel=2)
        return LoadPhase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
