"""Settings of the control loop, its policies and its driver (kopf style).

Every field has a typed default and a docstring with its unit and the reason for the default.
Settings are plain frozen values passed explicitly; nothing here reads files. The only reader
of the environment is `resolve_controller_settings`, which takes the mapping as an argument so
that command-line values can override it and tests need no monkeypatching.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TypedDict

from inferno.control.correction import CorrectionSettings
from inferno.control.demand import DemandSettings
from inferno.errors import ConfigError
from inferno.io.flags import parse_bool
from inferno.io.safe import MAX_PENALTY_FACTOR
from inferno.model.system import SaturationPolicy


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class StabilisationSettings:
    """How raw replica recommendations are damped before actuation (Kubernetes HPA behaviour).

    Order per server and cycle: tolerance band → window (min over the scale-up window, max
    over the scale-down window, both including this cycle) → per-cycle step limits.
    """

    scale_up_window_s: float = 0.0
    """s. Scale up only to the lowest recommendation seen in this window; 0 reacts at once
    (HPA default), since late scale-out is what breaks SLOs on ramps."""
    scale_down_window_s: float = 300.0
    """s. Scale down only to the highest recommendation seen in this window; 300 s is the HPA
    default and removes the flapping seen upstream at replica boundaries."""
    max_step_up: int | None = None
    """Replicas added per cycle at most; None = unlimited (a capped ramp breaks SLOs longer)."""
    max_step_down: int | None = None
    """Replicas removed per cycle at most; None = unlimited (the window already damps)."""
    tolerance: float = 0.0
    """Fraction of current replicas. A change of at most ``tolerance × current`` replicas is
    ignored (hysteresis band); 0 because the optimizer's steps are already whole replicas."""

    def __post_init__(self) -> None:
        for name in ("scale_up_window_s", "scale_down_window_s", "tolerance"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0,
                     f"stabilisation: {name} must be a finite number >= 0, got {value!r}")
        for name in ("max_step_up", "max_step_down"):
            value = getattr(self, name)
            _require(value is None or value >= 1,
                     f"stabilisation: {name} must be >= 1 or None, got {value!r}")

    @property
    def history_s(self) -> float:
        """How long recommendations must be remembered."""
        return max(self.scale_up_window_s, self.scale_down_window_s)


NO_STABILISATION = StabilisationSettings(scale_down_window_s=0.0)
"""Act on every recommendation as is (static and oracle policies)."""


class HpaMetric(StrEnum):
    """Per-pod metric the HPA policy tracks."""

    REQUESTS = "requests"
    """Running + waiting requests per ready replica (vLLM num_requests_running + _waiting)."""
    KV_USAGE = "kv_usage"
    """KV-cache usage per ready replica, fraction in [0, 1] (vLLM kv_cache_usage_perc)."""
    WAITING = "waiting"
    """Waiting requests per ready replica (vLLM num_requests_waiting)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InfernoSettings:
    """The optimizer policy (and the oracle, which is the same policy fed the future load)."""

    fallback_saturation_policy: SaturationPolicy = SaturationPolicy.PRIORITY_EXHAUSTIVE
    """When the configured saturation policy is None and the solve leaves servers without an
    allocation, solve again with this one (best effort up to capacity) instead of freezing
    every server (upstream pain point P11 (docs/design/control-loop.md §8)). NONE disables the
    retry."""
    keep_accelerator: bool = False
    """Restrict every server to its current accelerator (no migrations)."""
    max_batch: int = 0
    """> 0 pins the max batch of every server (upstream DEFAULT_MAX_BATCH_SIZE); 0 lets the
    optimizer search it."""
    stabilisation: StabilisationSettings = StabilisationSettings(scale_down_window_s=300.0)
    """Scale down only to the highest recommendation of the last 300 s (the HPA's default):
    a recommendation carries what the load alone does not (the backlog term, the model
    correction), and a burst's capacity is kept through the lulls between bursts, which
    recur on that time scale in real traffic (azure-code: 88 % SLO with it, 66 % without)."""
    scale_down_window_s: float = 120.0
    """s. A scale-down is also sized for the highest rate and token means observed over this
    window (so token-length noise is damped too, which a recommendation window alone does
    not: each window's mean output length scatters by tens of %)."""
    max_batch_tolerance: float = 0.25
    """Keep a server's current max batch (same accelerator) when the optimal one is within
    this fraction of it: a change restarts every replica (rolling replacement), which costs
    far more than the few % of throughput the exact optimum gains; token noise otherwise
    moves the optimum every cycle. Beyond it `max_batch_min_saving` and `max_batch_dwell_s`
    decide."""
    migration_penalty: float = 0.3
    """Transition penalty factor on a change of accelerator (upstream AccelPenaltyFactor
    0.1): a migration is a full rolling replacement, so it must save more than 30% of the
    two allocations' cost; at 0.1 near-equal options (1×H100 vs 2×A100) flip with noise."""

    migration_headroom: float = 2.0
    """A migration saves cost only while the cheaper type stays free: it is taken only if that
    type's cards would hold this many times what the servers on it (the migrated ones
    included) are given. In a full cluster a surge then finds each server on the type it
    started on, not packed onto one type by the quiet hours. 0 disables; a server the
    optimizer can only serve on another type still moves."""
    min_dwell_s: float = 600.0
    """A server that changed accelerator keeps its new one at least this long: a migration
    is a rolling replacement whose new replicas may wait for cards other servers still
    drain, and flipping back before it settles pays it twice. 0 disables."""
    lead_s: float | None = None
    """Plan a rising load this many seconds ahead; None = the control period plus the
    expected replica startup (both learned from what the policy sees), the time by which
    replicas asked for now are ready. The slope is a least-squares fit over the recent
    observations (`inferno.control.demand`). 0 plans for the observed load only."""
    startup_s: float = 60.0
    """Expected replica startup (s) until startups are observed (then the larger of this and
    the median observed one)."""
    demand: DemandSettings = DemandSettings()
    """Sanity cap, forecast bound and backlog drain of the planned load."""
    correction: CorrectionSettings = CorrectionSettings()
    """Model-error correction from observed vs predicted ITL and TTFT."""
    slo_margin: float = 0.15
    """The policy sizes for the class targets × (1 − slo_margin): the analyzer predicts mean
    latencies, while an SLO is met request by request; at the mean exactly, a fifth to a
    third of the requests miss it. 0 sizes for the mean (upstream)."""
    min_replicas: int = 1
    """Replicas every server keeps, reserved in the solve (so priorities see the cards the
    floors hold); the controller's safety floor applies on top."""
    scale_down_margin: float = 0.1
    """Scale down only to what the peak of `scale_down_window_s` (rate and token means)
    × (1 + margin) needs: a band against load noise at a replica boundary (upstream P9); the
    margin covers the next window exceeding the recent peak."""
    reversal_hold_s: float = 120.0
    """No scale-down within this long after a scale-up (unless capacity goes to a higher
    priority): one noisy window must not undo the last one."""
    max_batch_min_saving: float = 0.1
    """A new max batch (a rolling restart) must save at least this share of the server's cost
    over keeping the current one, unless the current one cannot meet the SLO."""
    max_batch_dwell_s: float = 600.0
    """A max batch is kept at least this long before an optimisation may change it."""

    def __post_init__(self) -> None:
        _require(self.max_batch >= 0, f"inferno: max_batch must be >= 0, got {self.max_batch!r}")
        _require(math.isfinite(self.scale_down_window_s) and self.scale_down_window_s >= 0,
                 f"inferno: scale_down_window_s must be >= 0, got {self.scale_down_window_s!r}")
        _require(math.isfinite(self.migration_headroom) and self.migration_headroom >= 0,
                 f"inferno: migration_headroom must be >= 0, got {self.migration_headroom!r}")
        _require(math.isfinite(self.min_dwell_s) and self.min_dwell_s >= 0,
                 f"inferno: min_dwell_s must be >= 0, got {self.min_dwell_s!r}")
        _require(self.lead_s is None or (math.isfinite(self.lead_s) and self.lead_s >= 0),
                 f"inferno: lead_s must be >= 0 or null, got {self.lead_s!r}")
        _require(0 <= self.slo_margin < 1,
                 f"inferno: slo_margin must be in [0, 1), got {self.slo_margin!r}")
        for name in ("startup_s", "scale_down_margin", "reversal_hold_s",
                     "max_batch_min_saving", "max_batch_dwell_s"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value >= 0,
                     f"inferno: {name} must be a finite number >= 0, got {value!r}")
        _require(self.min_replicas >= 0,
                 f"inferno: min_replicas must be >= 0, got {self.min_replicas!r}")
        _require(math.isfinite(self.max_batch_tolerance) and self.max_batch_tolerance >= 0,
                 f"inferno: max_batch_tolerance must be >= 0, got {self.max_batch_tolerance!r}")
        _require(0 <= self.migration_penalty <= MAX_PENALTY_FACTOR,
                 f"inferno: migration_penalty must be in [0, {MAX_PENALTY_FACTOR:,.0f}] "
                 f"(MAX_PENALTY_FACTOR), got {self.migration_penalty!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaSettings:
    """The Kubernetes HPA algorithm on one per-pod metric (autoscaling/v2 Pods metric)."""

    metric: HpaMetric = HpaMetric.REQUESTS
    """Running + waiting requests tracks overload without bound, unlike KV usage."""
    target: float | None = None
    """Target per-pod value of `metric` for every server without its own in `targets`.
    None: 0.8 × the server's max batch for requests, 0.8 for KV usage (WVA's
    kvCacheThreshold), 1 waiting request for waiting."""
    targets: Mapping[str, float] = field(default_factory=dict)
    """Server → its own target, as an operator sets one HPA per Deployment from a load test.
    The twin derives the missing ones (requests metric, no shared `target`): the load test's
    concurrency at the class targets × `target_utilisation` (`sim.loadtest`)."""
    target_utilisation: float = 0.8
    """Share of the load-tested concurrency an HPA targets: headroom for bursts and for the
    reaction lag."""
    tolerance: float = 0.1
    """|1 − metric/target| within this band keeps the replicas (HPA default 10 %)."""
    min_replicas: int = 1
    """HPA minReplicas; 1 because scale to zero needs an alpha feature gate."""
    max_replicas: int = 100
    """HPA maxReplicas of servers without their own in `max_replicas_for`."""
    max_replicas_for: Mapping[str, int] = field(default_factory=dict)
    """Server → its HPA maxReplicas (e.g. what the cluster's cards of its type allow)."""
    sync_period_s: float | None = 15.0
    """s between HPA evaluations: 15 is the Kubernetes controller's default; None = the
    controller period. Honoured by the twin's scenario runner (live mode runs every policy at
    the controller period)."""
    stabilisation: StabilisationSettings = StabilisationSettings(max_step_down=1)
    """HPA defaults (scale up at once, scale down to the highest recommendation of 300 s)
    plus the scale-down rate limit a careful operator adds: one pod per evaluation."""

    def __post_init__(self) -> None:
        _require(self.target is None or (math.isfinite(self.target) and self.target > 0),
                 f"hpa: target must be > 0, got {self.target!r}")
        _require(0 < self.target_utilisation <= 1,
                 f"hpa: target_utilisation must be in (0, 1], got {self.target_utilisation!r}")
        for name, value in self.targets.items():
            _require(math.isfinite(value) and value > 0,
                     f"hpa: targets.{name} must be > 0, got {value!r}")
        for name, value in self.max_replicas_for.items():
            _require(value >= max(self.min_replicas, 1),
                     f"hpa: max_replicas_for.{name} must be >= max(min_replicas, 1), "
                     f"got {value!r}")
        _require(self.sync_period_s is None
                 or (math.isfinite(self.sync_period_s) and self.sync_period_s > 0),
                 f"hpa: sync_period_s must be > 0 or null, got {self.sync_period_s!r}")
        _require(math.isfinite(self.tolerance) and 0 <= self.tolerance < 1,
                 f"hpa: tolerance must be in [0, 1), got {self.tolerance!r}")
        _require(self.min_replicas >= 0,
                 f"hpa: min_replicas must be >= 0, got {self.min_replicas!r}")
        _require(self.max_replicas >= max(self.min_replicas, 1),
                 f"hpa: max_replicas must be >= max(min_replicas, 1), got {self.max_replicas!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SaturationSettings:
    """WVA's capacity-based saturation scaling, V1 (percentage thresholds)."""

    kv_threshold: float = 0.8
    """KV usage fraction above which a replica counts as saturated (WVA kvCacheThreshold)."""
    queue_threshold: float = 5.0
    """Waiting requests above which a replica counts as saturated (WVA queueLengthThreshold)."""
    kv_spare_trigger: float = 0.1
    """Scale up when the spare KV fraction (threshold − usage) falls below this."""
    queue_spare_trigger: float = 3.0
    """Scale up when the spare queue (threshold − waiting) falls below this."""
    min_replicas: int = 1
    """Never go below this many replicas."""
    max_replicas: int = 100
    """Never go above this many replicas."""
    stabilisation: StabilisationSettings = StabilisationSettings(scale_down_window_s=0.0)
    """No extra damping: the policy moves one replica at a time and scales down only when
    the N−1 redistribution keeps the spare above both triggers."""

    def __post_init__(self) -> None:
        _require(0 < self.kv_threshold <= 1,
                 f"saturation: kv_threshold must be in (0, 1], got {self.kv_threshold!r}")
        _require(self.queue_threshold > 0,
                 f"saturation: queue_threshold must be > 0, got {self.queue_threshold!r}")
        _require(0 <= self.kv_spare_trigger < self.kv_threshold,
                 "saturation: kv_spare_trigger must be in [0, kv_threshold), "
                 f"got {self.kv_spare_trigger!r}")
        _require(0 <= self.queue_spare_trigger < self.queue_threshold,
                 "saturation: queue_spare_trigger must be in [0, queue_threshold), "
                 f"got {self.queue_spare_trigger!r}")
        _require(self.min_replicas >= 0,
                 f"saturation: min_replicas must be >= 0, got {self.min_replicas!r}")
        _require(self.max_replicas >= max(self.min_replicas, 1),
                 "saturation: max_replicas must be >= max(min_replicas, 1), "
                 f"got {self.max_replicas!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StaticSettings:
    """Fixed replicas: the baseline every adaptive policy must beat on cost."""

    replicas: Mapping[str, int] = field(default_factory=dict)
    """Server → replicas."""
    default_replicas: int | None = None
    """Replicas of servers not in `replicas`; None keeps their current replicas."""
    stabilisation: StabilisationSettings = NO_STABILISATION
    """Nothing to damp."""

    def __post_init__(self) -> None:
        for name, value in self.replicas.items():
            _require(value >= 0, f"static: replicas.{name} must be >= 0, got {value!r}")
        _require(self.default_replicas is None or self.default_replicas >= 0,
                 f"static: default_replicas must be >= 0, got {self.default_replicas!r}")


DEFAULT_PORT = 3300
ENV_DATA_PATH = "INFERNO_DATA_PATH"
ENV_PERIOD = "INFERNO_CONTROL_PERIOD"
ENV_DYNAMIC = "INFERNO_CONTROL_DYNAMIC"
ENV_HOST = "CONTROLLER_HOST"
ENV_PORT = "CONTROLLER_PORT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """The controller process: what it reads, how often it runs, where it listens."""

    data_path: Path = Path(".")
    """Directory with the static data files and capacity-data.json (upstream default ./)."""
    period_s: float = 60.0
    """s between periodic cycles; 0 = on demand only (GET /invoke). Upstream default."""
    is_dynamic: bool = False
    """Re-read every static data file each cycle (capacity is re-read every cycle anyway)."""
    host: str = "127.0.0.1"
    """Listen address of GET /invoke; loopback so nothing is exposed by default."""
    port: int = DEFAULT_PORT
    """Listen port of GET /invoke (upstream 3300 in the inferno pod); 0 picks a free port."""
    invoke_wait_s: float = 60.0
    """s an /invoke waits for a running cycle to finish before answering 409."""
    min_replicas: int = 1
    """Safety floor for every server and policy; 0 allows scale to zero on observed zero
    load. Never applies to servers the controller leaves untouched."""
    dry_run: bool = False
    """Decide and record, but call no actuator."""
    metrics_window_s: float = 60.0
    """s of the collector's metrics window: after an outage, no scale-down until a whole
    window of fresh data is in (a half window under-reads every rate)."""

    def __post_init__(self) -> None:
        _require(math.isfinite(self.period_s) and self.period_s >= 0,
                 f"controller: period_s must be a finite number >= 0, got {self.period_s!r}")
        _require(0 <= self.port <= 65535,
                 f"controller: port must be in [0, 65535], got {self.port!r}")
        _require(math.isfinite(self.invoke_wait_s) and self.invoke_wait_s >= 0,
                 f"controller: invoke_wait_s must be >= 0, got {self.invoke_wait_s!r}")
        _require(self.min_replicas >= 0,
                 f"controller: min_replicas must be >= 0, got {self.min_replicas!r}")


def parse_period_s(text: str, *, source: str) -> float:
    """Parse a control period in seconds (>= 0)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{source}: expected seconds >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{source}: expected seconds >= 0, got {text!r}")
    return value


def _parse_port(text: str, *, source: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{source}: expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise ConfigError(f"{source}: expected a port in [0, 65535], got {text!r}")
    return value


class _ControllerChanges(TypedDict, total=False):
    data_path: Path
    period_s: float
    is_dynamic: bool
    host: str
    port: int


def resolve_controller_settings(
    env: Mapping[str, str],
    *,
    base: ControllerSettings | None = None,
    data_path: Path | str | None = None,
    period_s: float | str | None = None,
    is_dynamic: bool | str | None = None,
    host: str | None = None,
    port: int | str | None = None,
) -> ControllerSettings:
    """Settings from `base`, overridden by the environment, overridden by arguments.

    Environment: INFERNO_DATA_PATH, INFERNO_CONTROL_PERIOD, INFERNO_CONTROL_DYNAMIC,
    CONTROLLER_HOST, CONTROLLER_PORT; an empty variable counts as unset. Arguments are the
    command line's (`inferno live [CONTROL_PERIOD] [DYNAMIC]`), strings allowed. A bad value
    raises ConfigError naming the variable or argument.
    """
    changes: _ControllerChanges = {}
    if env.get(ENV_DATA_PATH):
        changes["data_path"] = Path(env[ENV_DATA_PATH])
    if env.get(ENV_PERIOD):
        changes["period_s"] = parse_period_s(env[ENV_PERIOD], source=ENV_PERIOD)
    if env.get(ENV_DYNAMIC):
        changes["is_dynamic"] = parse_bool(env[ENV_DYNAMIC], source=ENV_DYNAMIC)
    if env.get(ENV_HOST):
        changes["host"] = env[ENV_HOST]
    if env.get(ENV_PORT):
        changes["port"] = _parse_port(env[ENV_PORT], source=ENV_PORT)

    if data_path is not None:
        changes["data_path"] = Path(data_path)
    if period_s is not None:
        changes["period_s"] = parse_period_s(str(period_s), source="argument CONTROL_PERIOD")
    if is_dynamic is not None:
        changes["is_dynamic"] = (is_dynamic if isinstance(is_dynamic, bool)
                                 else parse_bool(is_dynamic, source="argument DYNAMIC"))
    if host is not None:
        changes["host"] = host
    if port is not None:
        changes["port"] = _parse_port(str(port), source="argument port")
    return replace(base or ControllerSettings(), **changes)
