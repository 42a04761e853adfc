"""Model-error correction: per server, what it observes versus what the model predicted.

Each cycle, for a server in a steady window (replicas ready as desired, none starting or
draining, enough completions, the model not saturated at the observed load), the analyzer
predicts its mean ITL and TTFT at its current allocation and observed per-replica load; the
observed / predicted ratios drive two bounded, decaying factors (`Correction`):

* ``itl`` multiplies α, β, γ of the server's model on its current accelerator: a model that
  is 25 % optimistic on step time becomes right, queueing consequences included. Being inside
  the model, it is updated as a fixed point, itl ← itl · ratio^gain (gain 0.6: a 25 % error is
  within 2 % after three cycles).
* ``ttft`` divides the server's TTFT target: what the analyzer misses of the queue (bursty
  arrivals, heavy-tailed prompts) tightens the target the optimizer sizes for. It is a
  smoothed ratio, log ttft ← (1 − gain)·log ttft + gain·log ratio, bounded below by 1 by
  default: the model's pessimism is kept as headroom, its optimism corrected.

Both learn only from steady windows, two in a row: the replica set unchanged for `steady_s`
(after a migration too: until then the window holds the old pods' latencies),
arrivals and completions within `max_imbalance` of each other and no backlog at the end of
this window and of the one before (the first calm window still finishes requests that queued
in a backlog). A queue
building or draining (a burst, a backlog stuck on one replica while new ones idle) makes the
observed means a transient that no parameter of the model explains.

Without fresh evidence both decay towards 1 (in log, ``decay`` per cycle). The corrected
system gives each corrected server its own model (``model@server``) and class
(``class@server``), so the correction stays per server whatever the optimizer shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from inferno.analyzer import QueueBatch, analyze_batch, perf_columns
from inferno.control.decision import held_replicas
from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_NUM_TOKENS, MAX_QUEUE_TO_BATCH_RATIO, PerfParms
from inferno.model.service_class import DEFAULT_CLASS, ServiceClass
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from inferno.model.system import System
from inferno.model.units import rpm_to_rps


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrectionSettings:
    is_enabled: bool = True
    gain: float = 0.6
    """Share of the observed log-error taken per cycle."""
    itl_bounds: tuple[float, float] = (0.67, 3.0)
    """Range of the step-time factor."""
    ttft_bounds: tuple[float, float] = (1.0, 3.0)
    """Range of the TTFT-target divisor; 1 below keeps a pessimistic model's headroom."""
    decay: float = 0.05
    """Per-cycle pull of each factor's log towards 0 without an update."""
    min_completed_rpm: float = 6.0
    """Fewer completions per minute make the observed means too noisy to learn from."""
    max_load_ratio: float = 0.95
    """No update when the model puts the replicas past this share of their max rate."""
    waiting_allowance: float = 2.0
    """Waiting requests per replica beyond which TTFT is a transient, not a model error."""
    max_imbalance: float = 0.25
    """Learn only when arrivals and completions agree within this share (a steady state:
    a queue building or draining makes latencies a transient, not a model error)."""
    steady_s: float = 60.0
    """s the replica set (count, accelerator, max batch) must have held before its window
    is learned from: the metrics window, so that no sample mixes two replica sets."""

    def __post_init__(self) -> None:
        lo, hi = self.itl_bounds
        lo2, hi2 = self.ttft_bounds
        if not (0 < lo <= 1 <= hi and 0 < lo2 <= 1 <= hi2):
            raise ConfigError("correction: itl_bounds and ttft_bounds must bracket 1 and be "
                              f"> 0, got {self.itl_bounds}, {self.ttft_bounds}")
        if not (0 < self.gain <= 1 and 0 <= self.decay < 1):
            raise ConfigError(f"correction: gain must be in (0, 1] and decay in [0, 1), got "
                              f"{self.gain}, {self.decay}")


@dataclass(slots=True)
class Correction:
    """One server's factors and what the last cycle measured."""

    itl: float = 1.0
    ttft: float = 1.0
    itl_ratio: float | None = None
    """Observed / predicted mean ITL this cycle (None: no update)."""
    ttft_ratio: float | None = None
    accelerator: str = ""
    """The accelerator the factors were learned on (a migration resets them)."""
    shape: tuple[int, int, int, int] = (-1, -1, -1, -1)
    """(desired, ready, held, max batch) last seen."""
    steady_since_s: float = math.inf
    was_calm: bool = False
    """The previous window was steady too: this one holds no requests of a past backlog."""


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _decayed(value: float, decay: float) -> float:
    return math.exp((1.0 - decay) * math.log(value))


@dataclass(slots=True)
class ModelCorrection:
    """The per-server correction state of a policy."""

    settings: CorrectionSettings = field(default_factory=CorrectionSettings)
    servers: dict[str, Correction] = field(default_factory=dict)

    def update(self, snapshot: ClusterSnapshot, static: System) -> None:
        """Learn from this cycle's observations (module notes)."""
        s = self.settings
        rows: list[tuple[Correction, ServerObservation, PerfParms, int, _Steady]] = []
        for name, obs in snapshot.servers.items():
            shape = (obs.desired_replicas, obs.ready_replicas, held_replicas(obs), obs.max_batch)
            corr = self.servers.setdefault(name, Correction(accelerator=obs.accelerator))
            if corr.accelerator != obs.accelerator:
                # a migration: the window still holds the old pods' latencies
                self.servers[name] = corr = Correction(
                    accelerator=obs.accelerator, shape=shape, steady_since_s=snapshot.time_s)
            corr.itl_ratio = corr.ttft_ratio = None
            first_sight = corr.shape == (-1, -1, -1, -1)
            if shape != corr.shape:  # first sight counts as steady (nothing known before)
                corr.shape = shape
                corr.steady_since_s = -math.inf if first_sight else snapshot.time_s
            is_steady = snapshot.time_s - corr.steady_since_s >= s.steady_s
            corr.itl = _decayed(corr.itl, s.decay)
            corr.ttft = _decayed(corr.ttft, s.decay)
            mp = static.perf.get((obs.model, obs.accelerator))
            window = _steady_window(obs, s)
            calm = window is not None
            was_calm = corr.was_calm or corr.shape == shape and first_sight
            corr.was_calm = calm
            if not s.is_enabled or mp is None or not is_steady or window is None or not was_calm:
                continue
            rows.append((corr, obs, _scaled(mp.perf, corr.itl), mp.max_num_tokens, window))
        if not rows:
            return
        batch = QueueBatch(
            max_batch=np.array([o.max_batch for _, o, _, _, _ in rows]),
            max_queue=np.array([MAX_QUEUE_TO_BATCH_RATIO * o.max_batch if o.max_queue_size is None
                                else o.max_queue_size for _, o, _, _, _ in rows]),
            in_tokens=np.array([w.in_tokens for _, _, _, _, w in rows]),
            out_tokens=np.array([w.out_tokens for _, _, _, _, w in rows]),
            alpha_ms=np.array([p.alpha_ms for _, _, p, _, _ in rows]),
            beta_ms=np.array([p.beta_ms for _, _, p, _, _ in rows]),
            gamma_ms=np.array([p.gamma_ms for _, _, p, _, _ in rows]),
            max_num_tokens=np.array([n or DEFAULT_MAX_NUM_TOKENS for _, _, _, n, _ in rows]),
            perf_model=static.settings.perf_model,
            **perf_columns([p for _, _, p, _, _ in rows],
                           np.array([w.in_tokens for _, _, _, _, w in rows])))
        rate = np.array([rpm_to_rps(w.arrival_rpm) / max(o.ready_replicas, 1)
                         for _, o, _, _, w in rows])
        metrics = analyze_batch(batch, rate)
        for i, (corr, _, _, _, window) in enumerate(rows):
            itl_pred, ttft_pred = float(metrics.itl_ms[i]), float(metrics.ttft_ms[i])
            if not (metrics.valid[i] and metrics.rho[i] <= s.max_load_ratio
                    and math.isfinite(itl_pred) and itl_pred > 0):
                continue
            corr.itl_ratio = window.itl_ms / itl_pred
            corr.itl = _clamp(corr.itl * corr.itl_ratio ** s.gain, s.itl_bounds)
            if math.isfinite(ttft_pred) and ttft_pred > 0:
                corr.ttft_ratio = window.ttft_ms / ttft_pred
                log_ttft = ((1 - s.gain) * math.log(corr.ttft)
                            + s.gain * math.log(corr.ttft_ratio))
                corr.ttft = _clamp(math.exp(log_ttft), s.ttft_bounds)

    def apply(self, system: System) -> System:
        """`system` with each corrected server on its own model and class (module notes).

        The factors are applied on a geometric grid of 2 % steps: learning noise then leaves
        the sizing keys of the optimizer (and the policy's memoised max batch) unchanged.
        """
        servers = []
        perf = dict(system.perf)
        classes = dict(system.classes)
        changed = False
        for server in system.servers:
            corr = self.servers.get(server.name)
            itl = _on_grid(corr.itl) if corr is not None else 1.0
            ttft = _on_grid(corr.ttft) if corr is not None else 1.0
            if corr is None or (itl == 1.0 and ttft == 1.0):
                servers.append(server)
                continue
            model = f"{server.model}@{server.name}"
            for (m, acc), mp in system.perf.items():
                if m == server.model:
                    factor = itl if acc == corr.accelerator else 1.0
                    perf[(model, acc)] = replace(mp, model=model,
                                                 perf=_scaled(mp.perf, factor))
            cls = system.classes.get(server.class_name or DEFAULT_CLASS)
            class_name = f"{server.class_name}@{server.name}"
            targets = dict(cls.targets) if cls is not None else {}
            target = targets.get(server.model)
            if target is not None:
                targets = {model: replace(target, model=model,
                                          slo_ttft_ms=target.slo_ttft_ms / ttft)}
            classes[class_name] = ServiceClass(
                name=class_name, priority=cls.priority if cls is not None else 100,
                targets=targets)
            servers.append(replace(server, model=model, class_name=class_name))
            changed = True
        if not changed:
            return system
        return replace(system, servers=tuple(servers), perf=perf, classes=classes)

    def state(self, name: str) -> Mapping[str, float | None]:
        """The cycle log's view of one server's correction."""
        corr = self.servers.get(name)
        if corr is None:
            return {}
        return {"itl_ratio": corr.itl_ratio, "ttft_ratio": corr.ttft_ratio,
                "itl_factor": corr.itl, "ttft_factor": corr.ttft}


GRID = 1.02
"""Steps of the applied factors."""


def _on_grid(factor: float) -> float:
    return GRID ** round(math.log(factor) / math.log(GRID))


def _scaled(perf: PerfParms, factor: float) -> PerfParms:
    if factor == 1.0:
        return perf
    return replace(perf, alpha_ms=perf.alpha_ms * factor,
                   beta_ms=perf.beta_ms * factor, gamma_ms=perf.gamma_ms * factor)


@dataclass(frozen=True, slots=True)
class _Steady:
    """What a steady window measured (every value present, finite and positive)."""

    arrival_rpm: float
    itl_ms: float
    ttft_ms: float
    in_tokens: float
    out_tokens: float


def _measured(value: float | None) -> float | None:
    """The value if present, finite and positive, else None."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _steady_window(obs: ServerObservation, s: CorrectionSettings) -> _Steady | None:
    """The window's measurements if it is steady: enough completions, arrivals matching
    completions, no backlog at the end of the window, and a replica set that held (the
    caller checks how long); None otherwise."""
    arrival, done = _measured(obs.arrival_rpm), _measured(obs.throughput_rpm)
    itl, ttft = _measured(obs.itl_ms), _measured(obs.ttft_ms)
    in_tokens, out_tokens = _measured(obs.avg_in_tokens), _measured(obs.avg_out_tokens)
    if (arrival is None or done is None or itl is None or ttft is None or in_tokens is None
            or out_tokens is None):
        return None
    waiting = obs.waiting_now if obs.waiting_now is not None else obs.waiting_requests
    steady = (obs.ready_replicas >= 1 and obs.desired_replicas == obs.ready_replicas
              and held_replicas(obs) == obs.ready_replicas  # no pod starting or draining
              and obs.max_batch > 0 and done >= s.min_completed_rpm
              and abs(arrival - done) <= s.max_imbalance * max(arrival, done)
              and (waiting is None or waiting <= s.waiting_allowance * obs.ready_replicas)
              and out_tokens >= 1)
    return _Steady(arrival, itl, ttft, in_tokens, out_tokens) if steady else None

