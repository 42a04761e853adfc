"""The scenario schema: frozen specs of what a closed-loop twin run simulates.

A scenario names an upstream data directory (accelerators, models, service classes, optimizer
settings, capacity), lists the servers with their nominal load, and adds a load profile, an
optional load emulator, the twin's settings, the controller's and the policies' settings and a
seed. The schema is documented in docs/scenarios.md; `sim.scenario.files` reads and writes it
with the YAML binder (`inferno.io.yamlbind`). Every value is checked where it is built; cross
references (a server naming an unknown model, accelerator or class) are checked once, by
`sim.scenario.system.scenario_system`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from inferno.control.load_noise import LoadNoiseSettings, LoadPhase, validate_phases
from inferno.control.policies import POLICY_NAMES
from inferno.control.settings import (
    HpaSettings,
    InfernoSettings,
    SaturationSettings,
    StaticSettings,
)
from inferno.errors import ConfigError
from inferno.io import safe
from inferno.io.yamlbind import file_prefix, wrap, yaml_key
from inferno.model import DEFAULT_CLASS
from inferno.tuner import FirstToken, TunerMode, TunerSettings
from sim.twin import TwinSettings


class ArrivalKind(StrEnum):
    POISSON = "poisson"
    GAMMA = "gamma"
    """Renewal process with gamma gaps of coefficient of variation `arrival_cv`."""


class LengthKind(StrEnum):
    """Shape of the per-request token lengths around the (possibly emulated) mean."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    LOGNORMAL = "lognormal"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


MAX_CV = 100.0
"""Largest coefficient of variation of token lengths and arrival gaps, far past any measured
workload: beyond it lognormal lengths overflow to NaN (cv ~1e154) and gamma gaps of shape
1/cv² collapse to zero (a run that never ends, or a division by zero)."""


MAX_PERF_SCALE = 1e6
"""Largest factor (and smallest, its inverse) of controller.perf_scale: a million-fold error
is past any calibration; far beyond it the analyzer's rates underflow to zero."""


# ------------------------------------------------------------------------------ schema
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSpec:
    """Nominal load of one server; the profile and the emulator move it over time."""

    rate_rpm: float = 0.0
    """Nominal request rate, requests per minute (the control loop's unit)."""
    in_tokens: float = 512.0
    """Mean input tokens per request."""
    out_tokens: float = 256.0
    """Mean output tokens per request."""
    lengths: LengthKind = LengthKind.LOGNORMAL
    """Shape of the token lengths around their mean (integers >= 1)."""
    length_cv: float = 0.5
    """Coefficient of variation of lognormal lengths."""
    arrivals: ArrivalKind = ArrivalKind.POISSON
    arrival_cv: float = 1.0
    """Coefficient of variation of gamma inter-arrival gaps (> 1 is burstier than Poisson)."""
    max_model_len: int | None = None
    """Requests with input + output above this are redrawn (a client respecting the context
    limit); None = no limit."""

    def __post_init__(self) -> None:
        _check(math.isfinite(self.rate_rpm) and self.rate_rpm >= 0,
               f"rate_rpm must be >= 0, got {self.rate_rpm!r}")
        _check(self.rate_rpm <= safe.MAX_RATE_RPM,
               f"rate_rpm must be <= {safe.MAX_RATE_RPM:,} (MAX_RATE_RPM), got {self.rate_rpm!r}")
        for name in ("in_tokens", "out_tokens"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 1, f"{name} must be >= 1, got {value!r}")
            _check(value <= safe.MAX_TOKENS,
                   f"{name} must be <= {safe.MAX_TOKENS:,} (MAX_TOKENS), got {value!r}")
        for name in ("length_cv", "arrival_cv"):
            value = getattr(self, name)
            _check(math.isfinite(value) and 0 < value <= MAX_CV,
                   f"{name} must be in (0, {MAX_CV:g}], got {value!r}")
        _check(self.max_model_len is None or self.max_model_len >= 2,
               f"max_model_len must be >= 2, got {self.max_model_len!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    """One managed server (a Deployment of one model for one service class)."""

    name: str
    class_name: str = field(default=DEFAULT_CLASS, metadata=yaml_key("class"))
    """Service class (serviceclass-data.json); gives the SLO and the priority."""
    model: str
    accelerator: str
    """Initial accelerator (a name from accelerator-data.json)."""
    replicas: int = 1
    """Initial replicas, ready at t = 0 (a running cluster)."""
    max_batch: int = 0
    """Initial max batch (vLLM max_num_seqs); 0 = model-data maxBatchSize (256 if 0)."""
    min_replicas: int = 0
    """The server's own floor (upstream minNumReplicas)."""
    kv_capacity_tokens: int | None = None
    """KV-cache tokens per replica; None = `twin.engine.kv_capacity_tokens`
    (`EngineSettings.for_server`)."""
    load: WorkloadSpec = WorkloadSpec()

    def __post_init__(self) -> None:
        _check(bool(self.name), "name must not be empty")
        _check(0 <= self.replicas <= safe.MAX_REPLICAS, f"replicas must be in [0, "
               f"{safe.MAX_REPLICAS:,}] (MAX_REPLICAS), got {self.replicas!r}")
        _check(0 <= self.max_batch <= safe.MAX_BATCH, f"max_batch must be in [0, "
               f"{safe.MAX_BATCH:,}] (MAX_BATCH), got {self.max_batch!r}")
        _check(0 <= self.min_replicas <= safe.MAX_REPLICAS, f"min_replicas must be in [0, "
               f"{safe.MAX_REPLICAS:,}] (MAX_REPLICAS), got {self.min_replicas!r}")
        _check(self.kv_capacity_tokens is None or self.kv_capacity_tokens >= 16,
               f"kv_capacity_tokens must be >= 16, got {self.kv_capacity_tokens!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DiurnalSpec:
    """Rate multiplier 1 + amplitude·sin(2πt/period_s), as `pieces` linear phases per period."""

    amplitude: float = 0.5
    period_s: float = 86400.0
    pieces: int = 24
    """Linear pieces per period (the load emulator's phases are linear)."""

    def __post_init__(self) -> None:
        _check(0 <= self.amplitude < 1, f"amplitude must be in [0, 1), got {self.amplitude!r}")
        _check(math.isfinite(self.period_s) and 0 < self.period_s <= safe.MAX_SIM_DURATION_S,
               f"period_s must be in (0, {safe.MAX_SIM_DURATION_S:,.0f}] (MAX_SIM_DURATION_S), "
               f"got {self.period_s!r}")
        _check(self.pieces >= 4, f"pieces must be >= 4, got {self.pieces!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSpec:
    """How every server's nominal rate moves over time (token means do not move)."""

    phases: tuple[LoadPhase, ...] = ()
    """Load-emulator phases: chained ratios, linear inside a phase, hold after the last."""
    diurnal: DiurnalSpec | None = None

    def __post_init__(self) -> None:
        _check(not (self.phases and self.diurnal is not None),
               "give phases or diurnal, not both")
        validate_phases(self.phases)
        for i, phase in enumerate(self.phases):
            _check(phase.duration_s <= safe.MAX_SIM_DURATION_S,
                   f"phases[{i}].duration_s must be <= {safe.MAX_SIM_DURATION_S:,.0f} "
                   f"(MAX_SIM_DURATION_S), got {phase.duration_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PerfScaleSpec:
    """Factors on α, β, γ of the model data the controller sees (the twin keeps the true
    ones): a controller that starts from wrong parameters, for the tuner to correct."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            _check(math.isfinite(value) and 1 / MAX_PERF_SCALE <= value <= MAX_PERF_SCALE,
                   f"{name} must be in [{1 / MAX_PERF_SCALE:g}, {MAX_PERF_SCALE:g}], "
                   f"got {value!r}")

    @property
    def is_identity(self) -> bool:
        return (self.alpha, self.beta, self.gamma) == (1.0, 1.0, 1.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSpec:
    period_s: float = 60.0
    """s between control cycles (upstream default); the first cycle runs one period in."""
    min_replicas: int = 1
    """Safety floor of every decided server (ControllerSettings.min_replicas)."""
    slo_scale: float = 1.0
    """The controller's static data carries the class targets × slo_scale. The optimizer
    plans for *mean* latency; < 1 leaves headroom for the spread of per-request latency
    around that mean. Summaries always score the unscaled targets."""
    tuner: TunerMode = TunerMode.OFF
    """Online tuning of α, β, γ (inferno.tuner) in the controller: off, ekf or window."""
    tuner_settings: TunerSettings = TunerSettings(mode=TunerMode.OFF,
                                                  first_token=FirstToken.PREFILL)
    """The tuner's other settings by field name (docs/tuner.md). The mode comes from
    `tuner`; first_token defaults to prefill, the twin's (and vLLM's) TTFT convention."""
    perf_scale: PerfScaleSpec = PerfScaleSpec()
    """Factors on the α, β, γ of every (model, accelerator) of the controller's model data;
    the twin always runs on the unscaled (true) parameters."""

    def __post_init__(self) -> None:
        _check(math.isfinite(self.period_s) and self.period_s > 0,
               f"period_s must be > 0 in the twin, got {self.period_s!r}")
        _check(0 <= self.min_replicas <= safe.MAX_REPLICAS, f"min_replicas must be in [0, "
               f"{safe.MAX_REPLICAS:,}] (MAX_REPLICAS), got {self.min_replicas!r}")
        _check(0 < self.slo_scale <= 1, f"slo_scale must be in (0, 1], got {self.slo_scale!r}")
        mode = self.tuner_settings.mode
        _check(mode in (TunerMode.OFF, self.tuner),
               f"tuner_settings.mode: {mode.value!r} contradicts tuner {self.tuner.value!r}; "
               "set the mode with tuner")

    @property
    def tuner_config(self) -> TunerSettings:
        """The tuner's settings with the mode of `tuner`."""
        return dataclasses.replace(self.tuner_settings, mode=self.tuner)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpec:
    """The policy to run and every policy's settings (a sweep switches between them)."""

    name: str = "inferno"
    inferno: InfernoSettings = InfernoSettings()
    oracle: InfernoSettings = InfernoSettings()
    hpa: HpaSettings = HpaSettings()
    saturation: SaturationSettings = SaturationSettings()
    static: StaticSettings = StaticSettings()

    def __post_init__(self) -> None:
        _check(self.name in POLICY_NAMES,
               f"name: unknown policy {self.name!r}; choose one of {', '.join(POLICY_NAMES)}")

    def settings_for(self, name: str) -> object:
        """The settings object of policy `name`."""
        return getattr(self, name)




@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """One model's targets in a scenario class (ms; 0 = no target)."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tps: float = 0.0
    """Output tokens per second (replaces the measured load when > 0)."""
    ttft_percentile: float = 0.0
    """The percentile the TTFT target is on (0 < p < 100); 0 = the mean."""
    itl_percentile: float = 0.0
    """The percentile the ITL target is on; 0 = the mean."""

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "itl_ms", "tps"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value!r}")
        for name in ("ttft_percentile", "itl_percentile"):
            value = getattr(self, name)
            _check(value == 0 or 0 < value < 100,
                   f"{name} must be 0 (the mean) or in (0, 100), got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClassSpec:
    """A service class added or changed by the scenario (over serviceclass-data.json)."""

    priority: int | None = None
    """1 (highest) .. 100; None keeps the data file's (100 for a new class)."""
    targets: Mapping[str, TargetSpec] = field(default_factory=dict)
    """Per model; a model given here replaces the data file's target for it."""

    def __post_init__(self) -> None:
        if self.priority is not None:
            _check(1 <= self.priority <= 100,
                   f"priority must be in 1..100, got {self.priority!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceSpec:
    """Replay recorded requests instead of generating them (format: docs/traces.md)."""

    path: Path
    default_server: str = ""
    """Server of rows without one; empty = the first server."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    """Root of every random stream (numpy SeedSequence)."""
    duration_s: float
    """s of arrivals; summary cost and GPU-hours are accrued over [0, duration_s]."""
    drain_s: float = 600.0
    """s after duration_s for requests in flight to finish (controller stopped); requests
    still unfinished then count as dropped."""
    data: Path
    """Upstream data directory: accelerator, model, service-class, optimizer and capacity
    data (server-data.json, if present, is ignored: servers come from `servers`)."""
    accelerators: tuple[str, ...] = ()
    """Accelerator names the cluster offers; empty = every one in the data."""
    capacity: Mapping[str, int] | None = None
    """Cards per accelerator type, replacing capacity-data.json; None keeps the file."""
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of optimizer-data.json by OptimizerSettings field name."""
    classes: Mapping[str, ClassSpec] = field(default_factory=dict)
    """Service classes to add or change: their targets replace the data file's per model
    (e.g. a Premium p99 TTFT target)."""
    controller: ControllerSpec = ControllerSpec()
    policy: PolicySpec = PolicySpec()
    profile: ProfileSpec = ProfileSpec()
    emulator: LoadNoiseSettings | None = None
    """The seed's load emulator applied to every server (interval_s, alpha, theta,
    range_factor; its phases are the profile's). None: the rate follows the profile exactly."""
    twin: TwinSettings = TwinSettings()
    """The twin's settings (`sim.twin.TwinSettings`): observation, router, startup, engine,
    rollout, drain grace."""
    servers: tuple[ServerSpec, ...]
    trace: TraceSpec | None = None
    """Replay this trace; the servers' `load` sections are then ignored."""
    source: str = field(default="", metadata={"internal": True})
    """File the scenario was read from (for messages); not a YAML key."""

    def __post_init__(self) -> None:
        safe.safe_name(self.name, "name")
        _check(0 <= self.seed <= safe.MAX_SEED,
               f"seed must be in [0, 2**63 - 1] (MAX_SEED), got {self.seed!r:.40}")
        _check(math.isfinite(self.duration_s) and self.duration_s > 0,
               f"duration_s must be > 0, got {self.duration_s!r}")
        _check(math.isfinite(self.drain_s) and self.drain_s >= 0,
               f"drain_s must be >= 0, got {self.drain_s!r}")
        _check(len(self.servers) > 0, "servers: at least one server is required")
        names = [s.name for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        _check(not dupes, f"servers: duplicate name(s) {', '.join(dupes)}")
        for name in self.policy.static.replicas:
            _check(name in names, f"policy.static.replicas.{name}: no such server; "
                                  f"servers: {', '.join(names)}")
        if self.trace is not None and self.trace.default_server:
            _check(self.trace.default_server in names,
                   f"trace.default_server: no server {self.trace.default_server!r}; "
                   f"servers: {', '.join(names)}")
        if self.capacity is not None:
            for acc_type, cards in self.capacity.items():
                _check(cards >= 0, f"capacity.{acc_type} must be >= 0, got {cards!r}")

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)

    def with_tuner(self, mode: str) -> Scenario:
        """The same scenario with `controller.tuner` set to `mode` (ConfigError if unknown)."""
        modes = [m.value for m in TunerMode]
        if mode not in modes:
            raise ConfigError(f"{file_prefix(self.source)}controller.tuner: unknown mode {mode!r}; "
                              f"choose one of {', '.join(modes)}")
        controller = self.controller
        return dataclasses.replace(self, controller=dataclasses.replace(
            controller, tuner=TunerMode(mode),
            tuner_settings=dataclasses.replace(controller.tuner_settings, mode=TunerMode.OFF)))

    def with_policy(self, name: str) -> Scenario:
        """The same scenario under another policy (ConfigError if unknown)."""
        return dataclasses.replace(self, policy=wrap(
            lambda: dataclasses.replace(self.policy, name=name), self.source, "policy"))


def check_run_size(scenario: Scenario, *, force: bool = False) -> None:
    """A ConfigError naming the limit when a run of ``scenario`` would simulate more than
    `safe.MAX_SIM_DURATION_S` seconds, `safe.MAX_SIM_REQUESTS` requests (at the peak of the
    profile) or `safe.MAX_SIM_STEPS` control cycles, metric scrapes or emulator steps;
    ``force`` lifts them."""
    at = file_prefix(scenario.source)
    span_s = scenario.duration_s + scenario.drain_s
    safe.check_limit(span_s, safe.MAX_SIM_DURATION_S,
                     f"{at}duration_s + drain_s: simulated seconds (MAX_SIM_DURATION_S)",
                     force=force)
    peak = 1.0
    ratio = 1.0
    for phase in scenario.profile.phases:
        ratio *= phase.ratio if phase.ratio > 0 else 1.0
        peak = max(peak, ratio)
    if scenario.profile.diurnal is not None:
        peak = 1.0 + scenario.profile.diurnal.amplitude
    rate_rpm = sum(s.load.rate_rpm for s in scenario.servers) * peak
    if scenario.emulator is not None and scenario.emulator.range_factor:
        rate_rpm *= scenario.emulator.range_factor
    safe.check_limit(rate_rpm * scenario.duration_s / 60.0, safe.MAX_SIM_REQUESTS,
                     f"{at}servers[*].load.rate_rpm x duration_s: simulated requests "
                     "(MAX_SIM_REQUESTS)", force=force)
    diurnal = scenario.profile.diurnal
    if diurnal is not None:
        safe.check_limit(scenario.duration_s / diurnal.period_s * diurnal.pieces,
                         safe.MAX_SIM_STEPS, f"{at}profile.diurnal: load phases (duration_s / "
                         "period_s x pieces) (MAX_SIM_STEPS)", force=force)
    steps = [("controller.period_s", scenario.controller.period_s),
             ("twin.scrape_interval_s", scenario.twin.scrape_interval_s)]
    hpa_sync_s = scenario.policy.hpa.sync_period_s
    if scenario.policy.name == "hpa" and hpa_sync_s is not None:  # its own control period
        steps.append(("policy.hpa.sync_period_s", hpa_sync_s))
    if scenario.emulator is not None:
        steps.append(("emulator.interval_s", scenario.emulator.interval_s))
    for key, every_s in steps:
        count = span_s / every_s if every_s > 0 else math.inf
        safe.check_limit(count, safe.MAX_SIM_STEPS,
                         f"{at}duration_s / {key}: simulated steps (MAX_SIM_STEPS)", force=force)

