"""What a closed-loop run reports: per-server and total summaries, SLO attainment in each
target's statistic, tuner accuracy, and the fixed-width table of `inferno sim run`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from inferno.control import (
    CycleRecord,
)
from inferno.model import PerfParms, System, statistic_label
from inferno.model.units import MS_PER_S
from sim.closedloop.workload import Workload
from sim.metrics import Stats
from sim.recorder import ServerTally, SloTargets, statistic
from sim.request import RequestStatus
from sim.scenario import (
    Scenario,
)

SUMMARY_KEYS = ("policy", "requests", "dropped", "slo_attainment", "ttft_ms", "itl_ms", "cost",
                "gpu_hours", "replica_changes", "replica_reversals", "servers")

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

    doc: dict[str, Any] = {
        "requests": s.requests, "dropped": s.dropped, "slo_attainment": _num(s.slo_attainment),
        "ttft_ms": stats(s.ttft_ms), "itl_ms": stats(s.itl_ms), "cost": s.cost,
        "gpu_hours": s.gpu_hours, "replica_changes": s.replica_changes,
        "replica_reversals": s.replica_reversals}
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


def slo_columns(requests: pd.DataFrame, scenario: Scenario, system: System) -> pd.DataFrame:
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
"""Relative error within which a learned parameter counts as converged (the tuner's convergence
target, docs/tuner.md)."""
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
            in_force.append({n: float(pair[n]) for n in PARAM_NAMES}
                            if pair is not None and learned else prior)
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
            changes: dict[str, Any] = {}
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
