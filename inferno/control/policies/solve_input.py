"""The optimizer's input from static data and one snapshot: servers, loads and free cards.

The inferno policy builds a `System` per cycle from what is observed (`build_system`), then
derives variants of it for its damping rules (servers pinned, left out, reloaded; targets
tightened by a margin).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from inferno.analyzer import QueueBatch, analyze_batch, perf_columns
from inferno.control.decision import (
    cards,
    current_replicas,
    finite,
    held_replicas,
    unit_cost_per_hr,
)
from inferno.control.demand import DemandState, LoadEstimate
from inferno.control.settings import InfernoSettings
from inferno.model import DEFAULT_MAX_NUM_TOKENS, MAX_QUEUE_TO_BATCH_RATIO
from inferno.model.server import Allocation, Load, Server
from inferno.model.service_class import DEFAULT_CLASS
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from inferno.model.system import System
from inferno.model.units import S_PER_MIN, rpm_to_rps

__all__ = ["build_system", "capacity_rpm", "free_cards", "observed_load", "with_loads",
           "with_margin", "with_pinned", "without_servers"]


def observed_load(obs: ServerObservation, state: DemandState | None = None
                  ) -> LoadEstimate | str:
    """The observed load, or why it cannot be used (a reason string).

    Token means missing in this window (nothing finished in it) come from the last window
    that had them when ``state`` remembers one.
    """
    rpm = finite(obs.arrival_rpm)
    in_tokens = finite(obs.avg_in_tokens)
    out_tokens = finite(obs.avg_out_tokens)
    if rpm is None or rpm < 0:
        return "no arrival-rate metrics"
    notes: tuple[str, ...] = ()
    if in_tokens is not None and out_tokens is not None and out_tokens > 0 and in_tokens >= 0:
        if state is not None:
            state.tokens = (in_tokens, out_tokens)
    elif rpm > 0 and state is not None and state.tokens is not None:
        in_tokens, out_tokens = state.tokens
        notes = ("tokens of an earlier window",)
    elif rpm > 0:
        # Tokens read as 0 under saturation upstream (P8 (docs/design/control-loop.md §8)); planning
        # for "zero load" would
        # scale the server down exactly when it is busiest.
        return "no token metrics"
    return LoadEstimate(arrival_rpm=rpm, avg_in_tokens=in_tokens or 0.0,
                        avg_out_tokens=out_tokens or 0.0, notes=notes)


def build_system(static: System, snapshot: ClusterSnapshot,
                 loads: Mapping[str, LoadEstimate | str],
                 settings: InfernoSettings) -> tuple[System, dict[str, str]]:
    """The optimizer input: static data plus one server per observation with a usable load.

    Servers without a usable load or model data are left out (returned with the reason) and
    the cards they hold are taken off the capacity, since they keep running. Cards of replicas
    that are draining count as available: a replica planned on them waits, pending, until the
    drain releases them (it would wait as long for any other card); migrations, which would
    strand replicas that way, are checked against the cards free now (`free_cards`).
    """
    models = {model for model, _ in static.perf}
    capacity = dict(static.capacity)

    def take(obs: ServerObservation, replicas: int) -> None:
        if replicas > 0 and obs.accelerator in static.accelerators:
            acc_type, units = cards(static, obs.model, obs.accelerator, replicas)
            if acc_type in capacity:
                capacity[acc_type] = max(capacity[acc_type] - units, 0)

    servers: list[Server] = []
    excluded: dict[str, str] = {}
    for name in sorted(snapshot.servers):
        obs = snapshot.servers[name]
        load = loads[name]
        replicas = current_replicas(obs)
        if obs.model not in models or isinstance(load, str):
            excluded[name] = (load if isinstance(load, str)
                              else f"model {obs.model!r} has no performance data")
            take(obs, max(held_replicas(obs), replicas))
            continue
        current = Allocation(
            accelerator=obs.accelerator, num_replicas=replicas, max_batch=obs.max_batch,
            cost=unit_cost_per_hr(static, obs.model, obs.accelerator) * replicas,
            itl_ms=finite(obs.itl_ms) or 0.0, ttft_ms=finite(obs.ttft_ms) or 0.0,
            load=Load(arrival_rpm=load.arrival_rpm,
                      avg_in_tokens=round(load.avg_in_tokens),
                      avg_out_tokens=round(load.avg_out_tokens)))
        servers.append(Server(
            name=name, class_name=obs.class_name or DEFAULT_CLASS, model=obs.model,
            keep_accelerator=settings.keep_accelerator, min_num_replicas=obs.min_num_replicas,
            max_batch_size=settings.max_batch, max_queue_size=obs.max_queue_size,
            current=current))
    settings_ = replace(static.settings, accel_penalty_factor=settings.migration_penalty)
    return replace(static, servers=tuple(servers), capacity=capacity,
                   settings=settings_), excluded


def free_cards(static: System, snapshot: ClusterSnapshot) -> dict[str, int]:
    """Cards of each type no replica holds now (capacity minus every server's held ones)."""
    free = dict(static.capacity)
    for obs in snapshot.servers.values():
        if obs.accelerator in static.accelerators:
            acc_type, units = cards(static, obs.model, obs.accelerator, held_replicas(obs))
            if acc_type in free:
                free[acc_type] -= units
    return free


def with_pinned(system: System, names: Iterable[str], *,
                max_batch_size: int | None = None) -> System:
    """`system` with the named servers kept on their accelerator (and at ``max_batch_size``
    when given)."""
    names = set(names)
    if not names:
        return system

    def pin(server: Server) -> Server:
        if max_batch_size is None:
            return replace(server, keep_accelerator=True)
        return replace(server, keep_accelerator=True, max_batch_size=max_batch_size)

    return replace(system, servers=tuple(pin(s) if s.name in names else s
                                         for s in system.servers))


def without_servers(system: System, names: Iterable[str], snapshot: ClusterSnapshot,
             static: System, settings: InfernoSettings) -> System:
    """`system` without the named servers, whose floors' cards leave the capacity."""
    names = set(names)
    capacity = dict(system.capacity)
    for name in names:
        obs = snapshot.servers[name]
        floor = max(obs.min_num_replicas, settings.min_replicas)
        if floor > 0 and obs.accelerator in static.accelerators:
            acc_type, units = cards(static, obs.model, obs.accelerator, floor)
            if acc_type in capacity:
                capacity[acc_type] = max(capacity[acc_type] - units, 0)
    return replace(system, capacity=capacity,
                   servers=tuple(s for s in system.servers if s.name not in names))


def with_loads(system: System, loads: Mapping[str, Load]) -> System:
    """`system` with the named servers' loads replaced."""
    return replace(system, servers=tuple(
        replace(s, current=replace(s.current, load=loads[s.name])) if s.name in loads else s
        for s in system.servers))


def with_margin(static: System, margin: float) -> System:
    """`static` with every class target × (1 − margin) (the policy's SLO margin)."""
    if margin <= 0:
        return static
    scale = 1.0 - margin
    classes = {name: replace(cls, targets={
        model: replace(t, slo_itl_ms=t.slo_itl_ms * scale, slo_ttft_ms=t.slo_ttft_ms * scale)
        for model, t in cls.targets.items()}) for name, cls in static.classes.items()}
    return replace(static, classes=classes)


def capacity_rpm(snapshot: ClusterSnapshot, static: System) -> dict[str, float]:
    """What each server's current replicas sustain at most (model max rate × replicas)."""
    rows = []
    for name, obs in snapshot.servers.items():
        mp = static.perf.get((obs.model, obs.accelerator))
        tokens = (finite(obs.avg_in_tokens), finite(obs.avg_out_tokens))
        if mp is None or obs.max_batch <= 0 or tokens[1] is None or tokens[1] < 1:
            continue
        rows.append((name, obs, mp, tokens))
    if not rows:
        return {}
    batch = QueueBatch(
        max_batch=np.array([o.max_batch for _, o, _, _ in rows]),
        max_queue=np.array([MAX_QUEUE_TO_BATCH_RATIO * o.max_batch for _, o, _, _ in rows]),
        in_tokens=np.array([t[0] or 0.0 for _, _, _, t in rows], float),
        out_tokens=np.array([t[1] for _, _, _, t in rows], float),
        alpha_ms=np.array([m.perf.alpha_ms for _, _, m, _ in rows]),
        beta_ms=np.array([m.perf.beta_ms for _, _, m, _ in rows]),
        gamma_ms=np.array([m.perf.gamma_ms for _, _, m, _ in rows]),
        max_num_tokens=np.array([m.max_num_tokens or DEFAULT_MAX_NUM_TOKENS
                                 for _, _, m, _ in rows]),
        perf_model=static.settings.perf_model,
        **perf_columns([m.perf for _, _, m, _ in rows],
                       np.array([t[0] or 0.0 for _, _, _, t in rows], float)))
    max_rate = analyze_batch(batch, rpm_to_rps(1.0)).max_rate_rps
    return {name: float(max_rate[i]) * S_PER_MIN * max(current_replicas(obs), 1)
            for i, (name, obs, _, _) in enumerate(rows) if math.isfinite(max_rate[i])}
