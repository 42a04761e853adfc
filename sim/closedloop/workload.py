"""The requests of a closed-loop run, materialised before it starts (see `sim.closedloop.run`):
synthetic from the scenario's servers, profile and load emulator, or read from a trace."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from inferno.control import (
    LoadNoise,
    LoadPoint,
    phase_multiplier,
)
from inferno.errors import ConfigError
from inferno.io.yamlbind import describe, file_prefix
from inferno.model.units import S_PER_MIN
from sim import workload as wl
from sim.scenario import (
    LengthKind,
    Scenario,
    ServerSpec,
    TraceSpec,
    profile_phases,
)
from sim.trace import TraceRow, read_trace

TRACE_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "server")


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
             rng: np.random.Generator, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Token lengths around the means; `where` (file and server) names the server in errors."""
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
            raise ConfigError(f"{where}.load.max_model_len: {load.max_model_len} is too small "
                              "for the token means (no draw of lengths fits)")
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
    emulator = LoadNoise(replace(em, phases=phases), rng)
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
        n_in, n_out = _lengths(spec, mean_in, mean_out, rng_lengths,
                               f"{file_prefix(scenario.source)}servers[{index}]")
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
    if not trace.path.exists():  # named as the scenario's key, not only as a file
        raise ConfigError(f"{file_prefix(scenario.source)}trace.path: "
                          f"{trace.path}: no such file")
    rows = read_trace(trace.path)
    names = scenario.server_names
    default = trace.default_server or names[0]
    position = {name: i for i, name in enumerate(names)}
    kept = [r for r in rows if r.arrival_s < scenario.duration_s]
    index = np.empty(len(kept), dtype=np.int64)
    for i, row in enumerate(kept):
        server = row.server or default
        if server not in position:
            raise ConfigError(f"{trace.path}: server {describe(server)} of a row at "
                              f"{row.arrival_s} s is not a server of the scenario; "
                              f"servers: {', '.join(names)}")
        index[i] = position[server]
    # read_trace sorts stably by time; keep that order (it is the replay order)
    return Workload(servers=names, arrival_s=np.asarray([r.arrival_s for r in kept]),
                    in_tokens=np.asarray([r.input_tokens for r in kept], dtype=np.int64),
                    out_tokens=np.asarray([r.output_tokens for r in kept], dtype=np.int64),
                    server_index=index)
