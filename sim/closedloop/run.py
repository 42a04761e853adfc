"""Closed-loop twin runs: a Scenario in, a `RunResult` out.

`run_scenario` builds a SimPy environment from a `inferno.scenario.Scenario`: the cluster and
its deployments (`sim.cluster`), the `ClusterTwin` adapter, the workload, and the unchanged
`inferno.control.Controller` driven by a SimPy process every control period (the first cycle
one period after the start, as upstream). The model writes nothing to disk; `write_run` is
called by the CLI to store a result.

Workload. The requests of a run are materialised before it starts, as a trace (arrival time,
tokens, server), and replayed by `sim.trace.replay`; a recorded run therefore replays exactly
(`inferno sim replay`), and the oracle policy reads the true load of the next period from the
same trace. Synthetic requests come from each server's nominal load moved by the profile and,
optionally, by the load emulator (`inferno.control.emulator`, stepped every `interval_s` from
t = 0 as upstream's emulator loop does; its steps depend only on its seed, never on the twin,
so stepping it ahead of the run is the same as stepping it in a process). Arrival times are
exact (thinning of the piecewise-linear rate, `sim.workload`); token lengths are the step's
mean times a unit-mean draw of the configured shape, rounded, at least 1.

Random streams: ``SeedSequence(seed).spawn(4)`` → cluster (startup delays, routers), emulator,
workload (two streams per server: arrivals, lengths), random routers (one per server). The
workload streams do not depend on the policy, so every policy of a scenario sees the same
requests.

End of a run: arrivals stop at ``duration_s``, so does the controller; requests in flight get
``drain_s`` more seconds with the allocation frozen. Summary cost and GPU-hours are accrued over
[0, duration_s]; requests rejected, aborted or unfinished after the drain are `dropped` and
count as SLO misses.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from inferno.control import (
    Controller,
    ControllerSettings,
    CycleRecord,
    EmulatorSettings,
    LoadEmulator,
    LoadPoint,
    PolicyDeps,
    make_policy,
    phase_multiplier,
    read_cycle_log,
    write_cycle_log,
)
from inferno.control.decision import cards
from inferno.control.settings import HpaMetric, HpaSettings
from inferno.control.tuning import TunerHook, make_tuner
from inferno.errors import ConfigError
from inferno.model import PerfParms, System, statistic_label
from inferno.model.units import MS_PER_S, S_PER_MIN
from inferno.scenario import (
    LengthKind,
    RouterKind,
    Scenario,
    ServerSpec,
    TraceSpec,
    dump_scenario,
    load_scenario,
    profile_phases,
    scaled_perf,
    scaled_targets,
    scenario_system,
)
from sim import workload as wl
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, RolloutSettings, StartupDelay
from sim.loadtest import LoadTest, hpa_target
from sim.metrics import Stats
from sim.recorder import RequestTable, RunRecorder, ServerTally, SloTargets, statistic
from sim.replica import EngineSettings
from sim.request import RequestStatus
from sim.router import UniformRandom
from sim.trace import TraceRow, read_trace, replay_columns
from sim.twin import ClusterTwin, ServerInfo, TwinSettings

Progress = Callable[[float, float], None]
"""progress(simulated_s, end_s), called between chunks of simulation."""

TERMINAL = (RequestStatus.DONE, RequestStatus.REJECTED, RequestStatus.ABORTED)
TRACE_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "server")
SUMMARY_KEYS = ("policy", "requests", "dropped", "slo_attainment", "ttft_ms", "itl_ms", "cost",
                "gpu_hours", "replica_changes", "replica_reversals", "servers")


# ------------------------------------------------------------------------------ workload
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Workload:
    """Every request of a run, sorted by arrival time (ties in server order)."""

    servers: tuple[str, ...]
    arrival_s: np.ndarray
    in_tokens: np.ndarray
    out_tokens: np.ndarray
    server_index: np.ndarray
    """Index into `servers`, per request."""

    def rows(self) -> list[TraceRow]:
        names = self.servers
        return [TraceRow(arrival_s=t, input_tokens=i, output_tokens=o, server=names[s])
                for t, i, o, s in zip(self.arrival_s.tolist(), self.in_tokens.tolist(),
                                      self.out_tokens.tolist(), self.server_index.tolist(),
                                      strict=True)]

    def frame(self) -> pd.DataFrame:
        """The trace table (docs/traces.md columns)."""
        return pd.DataFrame({"arrival_s": self.arrival_s, "input_tokens": self.in_tokens,
                             "output_tokens": self.out_tokens,
                             "server": np.asarray(self.servers, dtype=object)[
                                 self.server_index]})

    def future_load(self) -> Callable[[str, float, float], tuple[float, float, float]]:
        """The oracle's view: true (arrival_rpm, avg_in_tokens, avg_out_tokens) in [t0, t1)."""
        per: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for i, name in enumerate(self.servers):
            mask = self.server_index == i
            cum_in = np.concatenate([[0], np.cumsum(self.in_tokens[mask])])
            cum_out = np.concatenate([[0], np.cumsum(self.out_tokens[mask])])
            per[name] = (self.arrival_s[mask], cum_in, cum_out)

        def future(name: str, t0: float, t1: float) -> tuple[float, float, float]:
            times, cum_in, cum_out = per[name]
            i0, i1 = np.searchsorted(times, [t0, t1], side="left")
            n = int(i1 - i0)
            if n == 0 or t1 <= t0:
                return 0.0, 0.0, 0.0
            return (n / (t1 - t0) * S_PER_MIN, float(cum_in[i1] - cum_in[i0]) / n,
                    float(cum_out[i1] - cum_out[i0]) / n)

        return future


def _unit_lengths(kind: LengthKind, cv: float, rng: np.random.Generator,
                  size: int) -> np.ndarray:
    """Unit-mean draws of the length shape."""
    if kind is LengthKind.FIXED:
        return np.ones(size)
    if kind is LengthKind.EXPONENTIAL:
        return rng.exponential(1.0, size)
    sigma2 = math.log1p(cv * cv)
    return rng.lognormal(-sigma2 / 2.0, math.sqrt(sigma2), size)


def _lengths(spec: ServerSpec, in_mean: np.ndarray, out_mean: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    load = spec.load

    def draw(size: int, mean_in: np.ndarray, mean_out: np.ndarray) -> tuple[np.ndarray, ...]:
        ins = np.maximum(1, np.rint(mean_in * _unit_lengths(load.lengths, load.length_cv,
                                                            rng, size)))
        outs = np.maximum(1, np.rint(mean_out * _unit_lengths(load.lengths, load.length_cv,
                                                              rng, size)))
        return ins.astype(np.int64), outs.astype(np.int64)

    ins, outs = draw(len(in_mean), in_mean, out_mean)
    if load.max_model_len is not None:
        for _ in range(1000):
            bad = np.flatnonzero(ins + outs > load.max_model_len)
            if bad.size == 0:
                break
            ins[bad], outs[bad] = draw(bad.size, in_mean[bad], out_mean[bad])
        else:
            raise ConfigError(f"servers.{spec.name}.load.max_model_len: "
                              f"{load.max_model_len} is too small for the token means")
    return ins, outs


def _schedules(scenario: Scenario, rng: np.random.Generator
               ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per server: (knot times s, rates req/s at the knots, in-token means, out-token means);
    the rate is linear between knots; token means are per step (knot pairs) or constant."""
    duration = scenario.duration_s
    phases = profile_phases(scenario.profile, duration)
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    em = scenario.emulator
    if em is None:
        bounds = [0.0]
        for phase in phases:
            if phase.duration_s == 0 or bounds[-1] + phase.duration_s >= duration:
                break
            bounds.append(bounds[-1] + phase.duration_s)
        bounds.append(duration)
        times = np.asarray(bounds)
        mult = np.asarray([phase_multiplier(phases, t) for t in bounds])
        for s in scenario.servers:
            n = len(times)
            out[s.name] = (times, mult * s.load.rate_rpm / S_PER_MIN,
                           np.full(n, s.load.in_tokens), np.full(n, s.load.out_tokens))
        return out
    emulator = LoadEmulator(EmulatorSettings(interval_s=em.interval_s, alpha=em.alpha,
                                             theta=em.theta, phases=phases,
                                             range_factor=em.range_factor), rng)
    current = {s.name: LoadPoint(arrival_rpm=s.load.rate_rpm, avg_in_tokens=s.load.in_tokens,
                                 avg_out_tokens=s.load.out_tokens) for s in scenario.servers}
    num_steps = max(1, math.ceil(duration / em.interval_s))
    steps: list[dict[str, LoadPoint]] = []
    for k in range(num_steps):
        current = emulator.step(current, k * em.interval_s)
        steps.append(current)
    # A step function: knots (t_k, x_k), (t_{k+1}, x_k), (t_{k+1}, x_{k+1}), ...
    starts = np.arange(num_steps) * em.interval_s
    ends = np.minimum(starts + em.interval_s, duration)
    times = np.column_stack([starts, ends]).ravel()
    for s in scenario.servers:
        pts = [step[s.name] for step in steps]
        rate = np.repeat([p.arrival_rpm / S_PER_MIN for p in pts], 2)
        ins = np.repeat([p.avg_in_tokens for p in pts], 2)
        outs = np.repeat([p.avg_out_tokens for p in pts], 2)
        out[s.name] = (times, rate, ins, outs)
    return out


def synthesize(scenario: Scenario, emulator_seed: np.random.SeedSequence,
               workload_seed: np.random.SeedSequence) -> Workload:
    """The scenario's requests from its servers' loads, profile and emulator."""
    duration = scenario.duration_s
    schedules = _schedules(scenario, np.random.default_rng(emulator_seed))
    parts: list[tuple[np.ndarray, ...]] = []
    for index, (spec, seed) in enumerate(zip(scenario.servers,
                                             workload_seed.spawn(len(scenario.servers)),
                                             strict=True)):
        rng_arrivals, rng_lengths = (np.random.default_rng(s) for s in seed.spawn(2))
        times, rates, ins, outs = schedules[spec.name]
        profile = wl.PiecewiseLinear(knots=tuple(zip(times.tolist(), rates.tolist(),
                                                     strict=True)))
        process = wl.ArrivalProcess(rate=profile, kind=spec.load.arrivals.value,
                                    cv=spec.load.arrival_cv)
        arrivals = np.fromiter(_until(process.times(rng_arrivals), duration), dtype=float)
        # token means of the step each arrival falls in (constant without an emulator)
        step = np.clip(np.searchsorted(times[::2], arrivals, side="right") - 1, 0,
                       max(len(times) // 2 - 1, 0))
        if scenario.emulator is None:
            mean_in = np.full(arrivals.size, spec.load.in_tokens)
            mean_out = np.full(arrivals.size, spec.load.out_tokens)
        else:
            mean_in, mean_out = ins[::2][step], outs[::2][step]
        n_in, n_out = _lengths(spec, mean_in, mean_out, rng_lengths)
        parts.append((arrivals, n_in, n_out, np.full(arrivals.size, index)))
    return _merge(scenario.server_names, parts)


def _until(times: Iterator[float], end_s: float) -> Iterator[float]:
    for t in times:
        if t >= end_s:
            return
        yield t


def _merge(servers: tuple[str, ...], parts: Sequence[tuple[np.ndarray, ...]]) -> Workload:
    arrival = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
    ins = np.concatenate([p[1] for p in parts]).astype(np.int64)
    outs = np.concatenate([p[2] for p in parts]).astype(np.int64)
    index = np.concatenate([p[3] for p in parts]).astype(np.int64)
    order = np.lexsort((index, arrival))
    return Workload(servers=servers, arrival_s=arrival[order], in_tokens=ins[order],
                    out_tokens=outs[order], server_index=index[order])


def trace_workload(scenario: Scenario, trace: TraceSpec) -> Workload:
    """The rows of a trace file that arrive before duration_s, mapped to the servers."""
    rows = read_trace(trace.path)
    names = scenario.server_names
    default = trace.default_server or names[0]
    position = {name: i for i, name in enumerate(names)}
    kept = [r for r in rows if r.arrival_s < scenario.duration_s]
    index = np.empty(len(kept), dtype=np.int64)
    for i, row in enumerate(kept):
        server = row.server or default
        if server not in position:
            raise ConfigError(f"{trace.path}: server {server!r} of a row at "
                              f"{row.arrival_s} s is not a server of the scenario; "
                              f"servers: {', '.join(names)}")
        index[i] = position[server]
    # read_trace sorts stably by time; keep that order (it is the replay order)
    return Workload(servers=names, arrival_s=np.asarray([r.arrival_s for r in kept]),
                    in_tokens=np.asarray([r.input_tokens for r in kept], dtype=np.int64),
                    out_tokens=np.asarray([r.output_tokens for r in kept], dtype=np.int64),
                    server_index=index)


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True, slots=True, kw_only=True)
class TargetAttainment:
    """How a server met one class target in the statistic the target is on."""

    latency: str
    """"ttft" or "itl"."""
    statistic: str
    """"mean" or "p99"-style."""
    target_ms: float
    value_ms: float
    """The statistic over all completed requests of the run."""
    cycles: int
    """Control cycles whose window completed requests of the server."""
    cycles_met: int
    """Of those, cycles whose window statistic met the target (the cycle log's
    ``ttft_stat_ms`` / ``itl_stat_ms``)."""

    @property
    def met(self) -> bool:
        return self.value_ms <= self.target_ms

    def label(self) -> str:
        """E.g. "p99 TTFT 812 ms / 1000"."""
        return (f"{self.statistic} {self.latency.upper()} {_fmt(self.value_ms, 0)} ms / "
                f"{self.target_ms:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "target_ms": self.target_ms,
                "value_ms": _num(self.value_ms), "met": self.met, "cycles": self.cycles,
                "cycles_met": self.cycles_met}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSummary:
    requests: int
    dropped: int
    slo_attainment: float
    """Fraction of requests whose TTFT and mean ITL both met their class SLO (NaN: none)."""
    ttft_ms: Stats
    itl_ms: Stats
    cost: float
    """Accelerator cost units × hours accrued over [0, duration_s]."""
    gpu_hours: float
    """Physical accelerator card-hours over [0, duration_s]."""
    replica_changes: int
    """Actuations that changed the replica count, accelerator or max batch."""
    replica_reversals: int = 0
    """Changes of a replica count in the direction opposite to the server's previous one
    (up after down or down after up): churn under noise."""
    targets: tuple[TargetAttainment, ...] = ()
    """The class's TTFT and ITL targets in their statistic (servers only, not the total)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TunerSummary:
    """How close the tuner got to the twin's true α, β, γ for one (model, accelerator)."""

    model: str
    accelerator: str
    final: Mapping[str, float]
    """alpha, beta, gamma in force after the last cycle (model data if nothing was learned)."""
    true: Mapping[str, float]
    """The twin's parameters."""
    rel_error: Mapping[str, float]
    """|final − true| / true per parameter."""
    cycles_to_5pct: int | None
    """First cycle (1-based) from which all three stay within 5 % of the truth; None if never."""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "accelerator": self.accelerator,
                "final": dict(self.final), "true": dict(self.true),
                "rel_error": dict(self.rel_error), "cycles_to_5pct": self.cycles_to_5pct}


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary(ServerSummary):
    policy: str
    servers: Mapping[str, ServerSummary] = field(default_factory=dict)
    tuner: tuple[TunerSummary, ...] | None = None
    """Per (model, accelerator) tuning outcome; None when no tuner ran."""

    def to_dict(self) -> dict[str, Any]:
        """summary.json: SUMMARY_KEYS, plus `tuner` when a tuner ran; non-finite numbers
        become null."""
        doc = {"policy": self.policy, **_summary_dict(self),
               "servers": {name: _summary_dict(s) for name, s in self.servers.items()}}
        out = {key: doc[key] for key in SUMMARY_KEYS}
        if self.tuner is not None:
            out["tuner"] = [t.to_dict() for t in self.tuner]
        return out


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary_dict(s: ServerSummary) -> dict[str, Any]:
    def stats(st: Stats) -> dict[str, float | None]:
        return {"mean": _num(st.mean), "p50": _num(st.p50), "p90": _num(st.p90),
                "p99": _num(st.p99)}

    doc = {"requests": s.requests, "dropped": s.dropped,
           "slo_attainment": _num(s.slo_attainment), "ttft_ms": stats(s.ttft_ms),
           "itl_ms": stats(s.itl_ms), "cost": s.cost, "gpu_hours": s.gpu_hours,
           "replica_changes": s.replica_changes, "replica_reversals": s.replica_reversals}
    if any(t.statistic != "mean" for t in s.targets):
        # Written when the class targets a percentile (for mean targets ttft_ms.mean and
        # itl_ms.mean are the statistic, and earlier summaries keep their keys).
        doc["slo"] = {t.latency: t.to_dict() for t in s.targets}
    return doc


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class RunResult:
    scenario: Scenario
    """The scenario as run (policy name set to the policy used)."""
    policy: str
    summary: Summary
    requests: pd.DataFrame | None
    """One row per request (sim.metrics columns plus class, SLOs, ttft_ms, itl_ms, meets_slo);
    None unless the run kept its request table in memory."""
    workload: Workload
    cycles: tuple[CycleRecord, ...]
    timeseries: pd.DataFrame
    """Twin scrapes: one row per server and scrape (see sim.twin.TIMESERIES_COLUMNS)."""
    actuations: pd.DataFrame
    end_s: float
    """Simulated time at the end of the drain."""
    wall_s: float
    requests_path: Path | None = None
    """Where the request table was streamed to (a path ``requests_table``), else None."""


def slo_targets(scenario: Scenario, system: System) -> dict[str, SloTargets]:
    """Per server: its class's TTFT/ITL SLOs for this model and the statistics they are on."""
    out = {}
    for spec in scenario.servers:
        target = system.classes[spec.class_name].targets[spec.model]
        out[spec.name] = SloTargets(ttft_ms=target.slo_ttft_ms, itl_ms=target.slo_itl_ms,
                                    ttft_percentile=target.slo_ttft_percentile,
                                    itl_percentile=target.slo_itl_percentile)
    return out


def _slo_columns(requests: pd.DataFrame, scenario: Scenario, system: System) -> pd.DataFrame:
    classes = {s.name: s.class_name for s in scenario.servers}
    models = {s.name: s.model for s in scenario.servers}
    ttft = {n: system.classes[c].targets[models[n]].slo_ttft_ms for n, c in classes.items()}
    itl = {n: system.classes[c].targets[models[n]].slo_itl_ms for n, c in classes.items()}
    df = requests.copy()
    df["class"] = df["server"].map(classes)
    df["slo_ttft_ms"] = df["server"].map(ttft).astype(float)
    df["slo_itl_ms"] = df["server"].map(itl).astype(float)
    df["ttft_ms"] = df["ttft_s"] * MS_PER_S
    df["itl_ms"] = df["itl_s"] * MS_PER_S
    done = df["status"] == RequestStatus.DONE.value
    ttft_ok = (df["slo_ttft_ms"] <= 0) | (df["ttft_ms"] <= df["slo_ttft_ms"])
    itl_ok = (df["slo_itl_ms"] <= 0) | df["itl_ms"].isna() | (df["itl_ms"] <= df["slo_itl_ms"])
    df["meets_slo"] = done & ttft_ok & itl_ok
    return df


def _server_summary(requests: int, tally: ServerTally, cost: float, gpu_hours: float,
                    changes: int, reversals: int = 0) -> ServerSummary:
    return ServerSummary(
        requests=requests, dropped=requests - tally.num_done,
        slo_attainment=tally.num_meets_slo / requests if requests else math.nan,
        ttft_ms=tally.ttft_ms.stats(), itl_ms=tally.itl_ms.stats(), cost=cost,
        gpu_hours=gpu_hours, replica_changes=changes, replica_reversals=reversals)


TUNER_TOLERANCE = 0.05
"""Relative error within which a learned parameter counts as converged (issue 6 item 3)."""
PARAM_NAMES = ("alpha", "beta", "gamma")


def _params(p: PerfParms) -> dict[str, float]:
    return {"alpha": p.alpha_ms, "beta": p.beta_ms, "gamma": p.gamma_ms}


def tuner_summary(cycles: Sequence[CycleRecord], true_system: System,
                  controller_system: System) -> tuple[TunerSummary, ...]:
    """Per pair in the cycle logs' tuner state: final and true parameters, relative errors,
    and the first cycle from which every later cycle is within `TUNER_TOLERANCE`.

    A cycle in which the pair has no learned parameters yet counts with the controller's
    model data (what the optimizer used), so a run that never learns keeps its initial error.
    """
    keys = sorted({(p["model"], p["accelerator"]) for c in cycles
                   for p in c.tuner.get("pairs", ())} & set(true_system.perf))
    out = []
    for key in keys:
        true = _params(true_system.perf[key].perf)
        prior = (_params(controller_system.perf[key].perf) if key in controller_system.perf
                 else dict.fromkeys(PARAM_NAMES, math.nan))
        in_force = []
        for c in cycles:
            pair = next((p for p in c.tuner.get("pairs", ())
                         if (p["model"], p["accelerator"]) == key), None)
            learned = pair is not None and all(pair.get(n) is not None for n in PARAM_NAMES)
            in_force.append({n: float(pair[n]) for n in PARAM_NAMES} if learned else prior)
        final = in_force[-1] if in_force else prior
        errors = [max(abs(p[n] / true[n] - 1.0) for n in PARAM_NAMES) for p in in_force]
        converged = None
        for i in range(len(errors), 0, -1):
            if not errors[i - 1] <= TUNER_TOLERANCE:
                break
            converged = cycles[i - 1].cycle
        out.append(TunerSummary(
            model=key[0], accelerator=key[1], final=final, true=true,
            rel_error={n: abs(final[n] / true[n] - 1.0) for n in PARAM_NAMES},
            cycles_to_5pct=converged))
    return tuple(out)


def reversals(actuations: pd.DataFrame) -> dict[str, int]:
    """Per server, replica-count changes opposite in direction to its previous one."""
    out: dict[str, int] = {}
    for name, rows in actuations.groupby("server", sort=False):
        steps = (rows["to_replicas"] - rows["from_replicas"]).to_numpy()
        signs = [1 if d > 0 else -1 for d in steps if d != 0]
        out[str(name)] = sum(a != b for a, b in zip(signs, signs[1:], strict=False))
    return out


def _window(requests: pd.DataFrame, server: str, stamp: str, t0: float, t1: float
            ) -> pd.DataFrame:
    """Completed requests of ``server`` whose ``stamp`` (first_token_s for TTFT, finish_s
    for ITL, as vLLM observes them) falls in [t0, t1)."""
    rows = requests[(requests["server"] == server)
                    & (requests["status"] == RequestStatus.DONE.value)]
    return rows[(rows[stamp] >= t0) & (rows[stamp] < t1)]


_STAMPS = {"ttft": ("first_token_s", "ttft_ms"), "itl": ("finish_s", "itl_ms")}


def window_statistic(requests: pd.DataFrame, server: str, latency: str, percentile: float,
                     t0: float, t1: float) -> float:
    """The mean (``percentile`` 0) or a percentile of ``latency`` ("ttft", "itl", ms) over
    the completed requests of ``server`` observed in [t0, t1) (TTFT at the first token, ITL
    at completion, as vLLM observes them) of a request table; NaN when there are none.
    A run computes the same while it runs (`sim.recorder.RunRecorder.window_stats`)."""
    stamp, column = _STAMPS[latency]
    rows = _window(requests, server, stamp, t0, t1)
    return statistic(rows[column].to_numpy(dtype=float), percentile)


def with_window_statistics(cycles: Sequence[CycleRecord],
                           stats: Mapping[tuple[str, float], tuple[float, float]]
                           ) -> tuple[CycleRecord, ...]:
    """The cycle log with each server's observed ``ttft_stat_ms`` / ``itl_stat_ms`` for a
    percentile target: that percentile over the requests of the collection window before
    the cycle (``stats``: (server, cycle time) → (TTFT, ITL) from the run's recorder; mean
    targets already carry the collector's window mean)."""
    out = []
    for c in cycles:
        servers = []
        for s in c.servers:
            changes = {}
            for i, latency in enumerate(_STAMPS):
                if getattr(s, f"slo_{latency}_percentile"):
                    value = stats.get((s.name, c.time_s), (math.nan, math.nan))[i]
                    changes[f"{latency}_stat_ms"] = None if math.isnan(value) else value
            servers.append(replace(s, **changes) if changes else s)
        out.append(replace(c, servers=tuple(servers)))
    return tuple(out)


def _attainment(tally: ServerTally, name: str, system: System, class_name: str,
                model: str, cycles: Sequence[CycleRecord]) -> tuple[TargetAttainment, ...]:
    cls = system.classes.get(class_name)
    target = cls.targets.get(model) if cls is not None else None
    if target is None:
        return ()
    digests = {"ttft": tally.ttft_ms, "itl": tally.itl_ms}
    out = []
    for latency in _STAMPS:
        target_ms = getattr(target, f"slo_{latency}_ms")
        if target_ms <= 0:
            continue
        pct = getattr(target, f"slo_{latency}_percentile")
        window = [getattr(s, f"{latency}_stat_ms") for c in cycles for s in c.servers
                  if s.name == name]
        seen = [v for v in window if v is not None and math.isfinite(v)]
        out.append(TargetAttainment(
            latency=latency, statistic=statistic_label(pct), target_ms=target_ms,
            value_ms=digests[latency].statistic(pct), cycles=len(seen),
            cycles_met=sum(v <= target_ms for v in seen)))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOutcome:
    """What a run (or one shard of it) reports per server at the end."""

    requests: int
    tally: ServerTally
    cost: float
    gpu_hours: float


def summarise(outcomes: Mapping[str, ServerOutcome], actuations: pd.DataFrame,
              num_changes: Mapping[str, int], policy: str, *, system: System | None = None,
              classes: Mapping[str, tuple[str, str]] | None = None,
              cycles: Sequence[CycleRecord] = ()) -> Summary:
    """Per-server and total summaries (servers in ``outcomes`` order; the total merges their
    tallies in that order); with ``system`` and ``classes`` (server → (class, model)) each
    server also reports its class targets in their statistic."""
    servers = {}
    flips = reversals(actuations)
    total = None
    for name, o in outcomes.items():
        summary = _server_summary(o.requests, o.tally, o.cost, o.gpu_hours, num_changes[name],
                                  flips.get(name, 0))
        if system is not None and classes is not None and name in classes:
            summary = replace(summary, targets=_attainment(o.tally, name, system,
                                                           *classes[name], cycles))
        servers[name] = summary
        if total is None:
            total = ServerTally(ttft_ms=type(o.tally.ttft_ms)(), itl_ms=type(o.tally.itl_ms)())
        total.merge(o.tally)
    total = total or ServerTally.empty(exact=True)
    whole = _server_summary(sum(o.requests for o in outcomes.values()), total,
                            sum(s.cost for s in servers.values()),
                            sum(s.gpu_hours for s in servers.values()),
                            sum(num_changes.values()), sum(flips.values()))
    return Summary(policy=policy, servers=servers, **{
        f: getattr(whole, f) for f in ServerSummary.__dataclass_fields__})


# ------------------------------------------------------------------------------ running
def _deployment_spec(spec: ServerSpec, scenario: Scenario, system: System) -> DeploymentSpec:
    twin = scenario.twin
    perf = system.perf[(spec.model, spec.accelerator)]
    engine = twin.engine
    startup = twin.startup
    return DeploymentSpec(
        name=spec.name, model=spec.model, accelerator=spec.accelerator,
        max_batch=spec.max_batch or perf.max_batch_size or 256, num_replicas=spec.replicas,
        router=(RouterKind.ROUND_ROBIN if twin.router is RouterKind.RANDOM
                else twin.router).value,  # the random router is seeded by run_scenario
        engine=EngineSettings(
            max_num_batched_tokens=engine.max_num_batched_tokens or perf.max_num_tokens,
            block_size=engine.block_size,
            kv_capacity_tokens=(spec.kv_capacity_tokens if spec.kv_capacity_tokens is not None
                                else engine.kv_capacity_tokens),
            max_waiting=engine.max_waiting),
        startup=StartupDelay(kind=startup.kind.value, mean_s=startup.mean_s,
                             spread=startup.spread),
        rollout=RolloutSettings(max_surge=twin.rollout.max_surge,
                                max_unavailable=twin.rollout.max_unavailable),
        drain_grace_s=twin.drain_grace_s, start_ready=True)


RequestsTable = bool | Path
"""A run's request table: True keeps it in memory (`RunResult.requests`), False keeps no
request once it is terminal (summary percentiles from sketches), a path streams it to that
file (``.csv`` or ``.parquet``) as the run goes."""


def cycle_times(period_s: float, end_s: float) -> list[float]:
    """The control cycles' times, accumulated as the driver's timeouts accumulate them."""
    out, t = [], 0.0
    while True:
        t = t + period_s
        if t >= end_s:
            return out
        out.append(t)


@dataclass(eq=False)
class World:
    """One simulated cluster of (some of) a scenario's servers, its twin and its recorder."""

    env: simpy.Environment
    cluster: Cluster
    twin: ClusterTwin
    recorder: RunRecorder
    servers: tuple[str, ...]

    def outcomes(self, horizon_s: float) -> dict[str, ServerOutcome]:
        deps = self.cluster.deployments
        return {name: ServerOutcome(requests=deps[name].num_arrivals,
                                    tally=self.recorder.tallies[name],
                                    cost=deps[name].cost(horizon_s),
                                    gpu_hours=deps[name].gpu_hours(horizon_s))
                for name in self.servers}

    def num_pending(self) -> int:
        return sum(d.num_pending() for d in self.cluster.deployments.values())


def build_world(scenario: Scenario, system: System, work: Workload, servers: Sequence[str],
                *, requests_table: RequestsTable, period_s: float) -> World:
    """The cluster of ``servers`` with the scenario's seeds (each server's streams are the ones
    it has in the whole scenario, whichever servers are built with it), its twin scraping from
    t = 0, the workload rows of those servers replayed, and the recorder."""
    ss_cluster, _, _, ss_router = np.random.SeedSequence(scenario.seed).spawn(4)
    position = {spec.name: i for i, spec in enumerate(scenario.servers)}
    cluster_seeds = ss_cluster.spawn(len(scenario.servers))
    router_seeds = ss_router.spawn(len(scenario.servers))
    env = simpy.Environment()
    cluster = Cluster(env, system, capacity=dict(system.capacity), seed=ss_cluster,
                      sample_period_s=None, retain_requests=requests_table is True)
    specs = [spec for spec in scenario.servers if spec.name in set(servers)]
    infos = {}
    for spec in specs:
        i = position[spec.name]
        try:
            dep = cluster.add_deployment(_deployment_spec(spec, scenario, system),
                                         seed=cluster_seeds[i])
        except ConfigError as exc:
            raise ConfigError(f"{scenario.source}: servers.{spec.name}: {exc}") from None
        if scenario.twin.router is RouterKind.RANDOM:
            # one stream per server from the scenario seed, independent of the cluster's
            dep.router = UniformRandom(np.random.default_rng(router_seeds[i]))
        infos[spec.name] = ServerInfo(name=spec.name, model=spec.model,
                                      class_name=spec.class_name,
                                      min_num_replicas=spec.min_replicas,
                                      max_queue_size=scenario.twin.engine.max_waiting)
    table = (RequestTable(requests_table, lambda df: _slo_columns(df, scenario, system))
             if isinstance(requests_table, Path) else None)
    names = tuple(spec.name for spec in specs)
    recorder = RunRecorder({n: cluster.deployments[n] for n in names},
                           {n: t for n, t in slo_targets(scenario, system).items() if n in names},
                           exact=requests_table is True, window_s=scenario.twin.window_s,
                           table=table)
    for name in names:
        for t in cycle_times(period_s, scenario.duration_s):
            recorder.request_window(name, t)
    twin = ClusterTwin(env, cluster, infos, TwinSettings(
        window_s=scenario.twin.window_s, scrape_interval_s=scenario.twin.scrape_interval_s,
        arrival_signal=scenario.twin.arrival_signal.value), on_scrape=recorder.flush)
    twin.start()
    mine = np.isin(work.server_index, [position[n] for n in names])
    replay_columns(env, work.arrival_s[mine], work.in_tokens[mine], work.out_tokens[mine],
                   work.server_index[mine], work.servers, cluster.submit,
                   ids=np.flatnonzero(mine))
    return World(env=env, cluster=cluster, twin=twin, recorder=recorder, servers=names)


def prepare(scenario: Scenario, policy: str | None) -> tuple[Scenario, System, Workload]:
    """The scenario under ``policy``, its system and its workload."""
    if policy is not None:
        scenario = scenario.with_policy(policy)
    system = scenario_system(scenario)
    _, ss_emulator, ss_workload, _ = np.random.SeedSequence(scenario.seed).spawn(4)
    work = (trace_workload(scenario, scenario.trace) if scenario.trace is not None
            else synthesize(scenario, ss_emulator, ss_workload))
    return scenario, system, work


def make_controller(scenario: Scenario, system: System, work: Workload, ports: Any
                    ) -> tuple[Controller, float, System, TunerHook | None]:
    """The controller over ``ports`` (collector, actuator and clock), its period, the system
    it plans with and its tuner."""
    policy_name = scenario.policy.name
    settings = _policy_settings(scenario, policy_name, system)
    period = scenario.controller.period_s
    if isinstance(settings, HpaSettings) and settings.sync_period_s is not None:
        period = settings.sync_period_s  # the HPA controller's own sync period
    controller_system = scaled_perf(scaled_targets(system, scenario.controller.slo_scale),
                                    scenario.controller.perf_scale)
    tuner = _tuner_hook(scenario)
    controller = Controller(
        collector=ports, actuator=ports, clock=ports,
        policy=make_policy(policy_name, settings,
                           PolicyDeps(future_load=work.future_load(),
                                      horizon_s=scenario.controller.period_s,
                                      lead_s=scenario.twin.startup.mean_s)),
        settings=ControllerSettings(period_s=period,
                                    min_replicas=scenario.controller.min_replicas,
                                    metrics_window_s=scenario.twin.window_s),
        static_data=lambda: controller_system, tune=tuner)
    return controller, period, controller_system, tuner


def control_period(scenario: Scenario, system: System) -> float:
    settings = _policy_settings(scenario, scenario.policy.name, system)
    if isinstance(settings, HpaSettings) and settings.sync_period_s is not None:
        return settings.sync_period_s
    return scenario.controller.period_s


def finish_result(scenario: Scenario, system: System, work: Workload,
                  records: Sequence[CycleRecord], outcomes: Mapping[str, ServerOutcome],
                  window_stats: Mapping[tuple[str, float], tuple[float, float]], *,
                  actuations: pd.DataFrame, num_changes: Mapping[str, int],
                  timeseries: pd.DataFrame, requests: pd.DataFrame | None,
                  controller_system: System, tuned: bool, end_s: float, wall0: float,
                  requests_path: Path | None = None) -> RunResult:
    """The run's result from what its world (or its shards) reported."""
    cycles = list(with_window_statistics(records, window_stats))
    summary = summarise(outcomes, actuations, num_changes, scenario.policy.name, system=system,
                        classes={s.name: (s.class_name, s.model) for s in scenario.servers},
                        cycles=cycles)
    if tuned:
        summary = replace(summary, tuner=tuner_summary(cycles, system, controller_system))
    return RunResult(scenario=scenario, policy=scenario.policy.name, summary=summary,
                     requests=requests, workload=work, cycles=tuple(cycles),
                     timeseries=timeseries, actuations=actuations, end_s=end_s,
                     wall_s=time.perf_counter() - wall0, requests_path=requests_path)


def run_scenario(scenario: Scenario, *, policy: str | None = None,
                 progress: Progress | None = None, requests_table: RequestsTable = True,
                 shards: int = 1, scheduler: str | None = None) -> RunResult:
    """Run the closed loop of `scenario` (under `policy`, default the scenario's).

    ``requests_table``: see `RequestsTable`. ``shards`` > 1 (or a Dask ``scheduler``
    address) splits the servers over worker processes that advance in lock-step control
    periods (`sim.shard`); the result is the single-process one.
    """
    if shards > 1 or scheduler is not None:
        from sim.shard import run_sharded

        return run_sharded(scenario, policy=policy, shards=shards, scheduler=scheduler,
                           requests_table=requests_table, progress=progress)
    wall0 = time.perf_counter()
    scenario, system, work = prepare(scenario, policy)
    period = control_period(scenario, system)
    world = build_world(scenario, system, work, scenario.server_names,
                        requests_table=requests_table, period_s=period)
    env, twin = world.env, world.twin
    controller, period, controller_system, tuner = make_controller(scenario, system, work, twin)
    records: list[CycleRecord] = []
    env.process(_control(env, controller, period, scenario.duration_s, records))

    end = scenario.duration_s
    chunk = max(period, end / 100.0)
    while env.now < end:
        env.run(until=min(end, env.now + chunk))
        if progress is not None:
            progress(float(env.now), end)
    _drain(env, world, end + scenario.drain_s)
    world.recorder.finish(float(env.now))
    requests = (_slo_columns(world.cluster.requests(), scenario, system)
                if requests_table is True else None)
    return finish_result(
        scenario, system, work, records, world.outcomes(end), world.recorder.window_stats,
        actuations=twin.actuations(), num_changes=twin.num_changes,
        timeseries=twin.timeseries(), requests=requests, controller_system=controller_system,
        tuned=tuner is not None, end_s=float(env.now), wall0=wall0,
        requests_path=requests_table if isinstance(requests_table, Path) else None)


def _policy_settings(scenario: Scenario, name: str, system: System) -> object:
    """The policy's settings; an HPA on requests per pod without a shared target gets, per
    server, what a load test of one replica gives (`sim.loadtest`), and a maxReplicas of
    what the cluster's cards of its accelerator type allow."""
    settings = scenario.policy.settings_for(name)
    if not isinstance(settings, HpaSettings):
        return settings
    targets = dict(settings.targets)
    maxima = dict(settings.max_replicas_for)
    for spec in scenario.servers:
        if (settings.metric is HpaMetric.REQUESTS and settings.target is None
                and spec.name not in targets):
            cls = system.classes[spec.class_name]
            target = cls.targets[spec.model]
            perf = system.perf[(spec.model, spec.accelerator)]
            test = LoadTest(model=spec.model, accelerator=spec.accelerator,
                            max_batch=spec.max_batch or perf.max_batch_size or 256,
                            in_tokens=round(spec.load.in_tokens),
                            out_tokens=round(spec.load.out_tokens),
                            slo_itl_ms=target.slo_itl_ms, slo_ttft_ms=target.slo_ttft_ms,
                            kv_tokens=(spec.kv_capacity_tokens
                                       if spec.kv_capacity_tokens is not None
                                       else scenario.twin.engine.kv_capacity_tokens))
            targets[spec.name] = hpa_target(system, test, settings.target_utilisation)
        acc = system.accelerators[spec.accelerator]
        if spec.name not in maxima and acc.type in system.capacity:
            _, per_replica = cards(system, spec.model, spec.accelerator, 1)
            allowed = system.capacity[acc.type] // max(per_replica, 1)
            maxima[spec.name] = max(min(allowed, settings.max_replicas),
                                    settings.min_replicas, 1)
    return replace(settings, targets=targets, max_replicas_for=maxima)


def _tuner_hook(scenario: Scenario) -> TunerHook | None:
    """The controller's tune stage (`controller.tuner`), None when off."""
    return make_tuner(scenario.controller.tuner.value, scenario.controller.tuner_config)


def _control(env: simpy.Environment, controller: Controller, period_s: float, end_s: float,
             records: list[CycleRecord]) -> Iterator[simpy.events.Event]:
    """The driver: one cycle every period (the first one period in) until end_s."""
    while True:
        yield env.timeout(period_s)
        if env.now >= end_s:
            return
        records.append(controller.step())


def _drain(env: simpy.Environment, world: World, until_s: float, step_s: float = 10.0
           ) -> None:
    while world.num_pending() and env.now < until_s:
        env.run(until=min(until_s, env.now + step_s))


# ------------------------------------------------------------------------------ recording
RUN_FILES = {
    "scenario": "scenario.yaml", "summary": "summary.json", "requests": "requests.csv",
    "trace": "trace.csv", "cycles": "cycles.jsonl", "timeseries": "timeseries.csv",
    "actuations": "actuations.csv", "load_replicas": "load_replicas.png",
    "latency": "latency.png", "cost": "cost.png",
}
"""What `write_run` writes into a run directory (the plots last); the request table only when
the run kept it in memory or streamed it (`REQUESTS_FILES`: requests.parquet in that format)."""
REQUESTS_FILES = {"csv": "requests.csv", "parquet": "requests.parquet"}
"""The request table's file in a run directory, by format."""


def write_run(result: RunResult, out_dir: Path | str, *, plots: bool = True) -> dict[str, Path]:
    """Store a run: tables, cycle log, summary, resolved scenario, trace and PNG plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in RUN_FILES.items()}
    recorded = replace(result.scenario, trace=None)
    dump_scenario(recorded, paths["scenario"])
    paths["summary"].write_text(json.dumps(result.summary.to_dict(), indent=2) + "\n",
                                encoding="utf-8")
    if result.requests is not None:
        result.requests.to_csv(paths["requests"], index=False)
    elif result.requests_path is not None:
        paths["requests"] = result.requests_path  # streamed while the run went
    else:
        paths.pop("requests")
    result.workload.frame().to_csv(paths["trace"], index=False)
    write_cycle_log(paths["cycles"], result.cycles)
    result.timeseries.to_csv(paths["timeseries"], index=False)
    result.actuations.to_csv(paths["actuations"], index=False)
    if plots:
        from sim.closedloop.plots import plot_cost, plot_latency, plot_load_replicas

        plot_load_replicas(result, paths["load_replicas"])
        plot_latency(result, paths["latency"])
        plot_cost(result, paths["cost"])
    else:
        for key in ("load_replicas", "latency", "cost"):
            paths.pop(key)
    return paths


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRun:
    scenario: Scenario
    """With its trace set to the recorded trace.csv."""
    cycles: list[dict[str, Any]]
    summary: dict[str, Any] | None


def load_run(run_dir: Path | str) -> RecordedRun:
    """A run directory written by `write_run`, ready to be replayed."""
    run_dir = Path(run_dir)
    for key in ("scenario", "trace", "cycles"):
        if not (run_dir / RUN_FILES[key]).is_file():
            raise ConfigError(f"{run_dir}: not a run directory (missing {RUN_FILES[key]})")
    scenario = load_scenario(run_dir / RUN_FILES["scenario"])
    scenario = replace(scenario, trace=TraceSpec(path=(run_dir / RUN_FILES["trace"]).resolve()))
    summary_path = run_dir / RUN_FILES["summary"]
    summary = (json.loads(summary_path.read_text(encoding="utf-8"))
               if summary_path.is_file() else None)
    return RecordedRun(scenario=scenario, cycles=read_cycle_log(run_dir / RUN_FILES["cycles"]),
                       summary=summary)


def decisions(cycles: Sequence[Mapping[str, Any]] | Sequence[CycleRecord]
              ) -> list[tuple[float, str, str, str, int, int]]:
    """(time_s, status, server, accelerator, replicas, max_batch) per cycle and server."""
    out = []
    for cycle in cycles:
        doc = cycle.to_dict() if isinstance(cycle, CycleRecord) else cycle
        out.extend((float(doc["time_s"]), str(doc["status"]), s["name"], s["accelerator"],
                    int(s["num_replicas"]), int(s["max_batch"])) for s in doc["servers"])
    return out


def decision_diff(recorded: Sequence[Mapping[str, Any]], replayed: Sequence[CycleRecord],
                  limit: int = 10) -> list[str]:
    """Differences between recorded and replayed decisions, first ones first (empty: same)."""
    old, new = decisions(recorded), decisions(replayed)
    lines = [f"t={a[0]:g} s {a[2]}: recorded {a[1]} {a[3]} x{a[4]} batch {a[5]}, "
             f"replayed {b[1]} {b[3]} x{b[4]} batch {b[5]}"
             for a, b in zip(old, new, strict=False) if a != b]
    if len(old) != len(new):
        lines.append(f"recorded {len(old)} server decisions, replayed {len(new)}")
    return lines[:limit]


# ------------------------------------------------------------------------------ reporting
def format_summary(summary: Summary) -> str:
    """A fixed-width table: one row per server and a total row."""
    head = (f"{'server':<26} {'requests':>8} {'dropped':>7} {'SLO %':>6} {'TTFT ms':>8} "
            f"{'p90':>8} {'ITL ms':>7} {'p90':>7} {'cost':>9} {'GPU-h':>7} {'changes':>7}")
    rows = [head, "-" * len(head)]

    def row(name: str, s: ServerSummary) -> str:
        slo = "-" if math.isnan(s.slo_attainment) else f"{100 * s.slo_attainment:.1f}"
        return (f"{name:<26} {s.requests:>8d} {s.dropped:>7d} {slo:>6} "
                f"{_fmt(s.ttft_ms.mean, 0):>8} {_fmt(s.ttft_ms.p90, 0):>8} "
                f"{_fmt(s.itl_ms.mean, 1):>7} {_fmt(s.itl_ms.p90, 1):>7} {s.cost:>9.1f} "
                f"{s.gpu_hours:>7.2f} {s.replica_changes:>7d}")

    rows.extend(row(name, s) for name, s in summary.servers.items())
    rows.append("-" * len(head))
    rows.append(row(f"total ({summary.policy})", summary))
    targeted = [(name, t) for name, s in summary.servers.items() for t in s.targets]
    if targeted:
        rows.append("")
        rows.append("targets, in their statistic (cycles met / cycles with data):")
        rows.extend(f"  {name:<24} {t.label():<28} {'met' if t.met else 'MISSED':<6} "
                    f"cycles {t.cycles_met}/{t.cycles}" for name, t in targeted)
    return "\n".join(rows)


def _fmt(value: float, digits: int) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def cycles_frame(cycles: Sequence[CycleRecord]) -> pd.DataFrame:
    """One row per cycle and server: observed load and latency, decided allocation."""
    rows = [(c.cycle, c.time_s, str(c.status), s.name, s.arrival_rpm, s.ttft_ms, s.itl_ms,
             s.ready_replicas, s.current_replicas, s.recommended_replicas, s.num_replicas,
             s.accelerator, s.max_batch, s.cost_per_hr)
            for c in cycles for s in c.servers]
    return pd.DataFrame.from_records(rows, columns=[
        "cycle", "time_s", "status", "server", "arrival_rpm", "ttft_ms", "itl_ms",
        "ready_replicas", "current_replicas", "recommended_replicas", "num_replicas",
        "accelerator", "max_batch", "cost_per_hr"])
