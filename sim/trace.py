"""Trace replay: requests with recorded arrival times and lengths, from CSV or JSONL.

Format (docs/traces.md has the full description and an example):

- **CSV** (``.csv``): a header line naming the columns, then one request per line. Required
  columns ``arrival_s`` (seconds from the start of the trace, float >= 0), ``input_tokens``
  (int >= 1), ``output_tokens`` (int >= 1); optional ``server`` (the deployment that receives
  the request; empty or absent = the replay's default target). Column order is free; blank
  lines and lines starting with ``#`` are skipped.
- **JSONL** (``.jsonl`` or ``.ndjson``): one JSON object per line with the same keys.

Rows are replayed in order of arrival time (a stable sort, so rows with equal times keep the
file's order, and requests at the same instant are all queued before any replica schedules).
Any unreadable line is a ConfigError naming ``file:line`` and the field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy
from simpy.events import URGENT

from inferno.errors import ConfigError
from inferno.io import safe
from inferno.io.yamlbind import describe
from sim.request import Request
from sim.workload import RequestFactory, Tick

REQUIRED = ("arrival_s", "input_tokens", "output_tokens")
OPTIONAL = ("server",)


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceRow:
    arrival_s: float
    input_tokens: int
    output_tokens: int
    server: str = ""


def read_trace(path: str | Path) -> list[TraceRow]:
    """Read a CSV or JSONL trace, sorted by arrival time."""
    path = Path(path)
    try:
        text = safe.read_text(path)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(": cannot read:", ": cannot read trace:", 1)
                          if ": cannot read:" in str(exc) else str(exc)) from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(_csv_rows(path, text))
    elif suffix in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path, text))
    else:
        raise ConfigError(f"{path}: unknown trace format '{suffix}'; use .csv or .jsonl")
    return sorted(rows, key=lambda r: r.arrival_s)


def _csv_rows(path: Path, text: str) -> Iterator[TraceRow]:
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return
    header_no, header = lines[0]
    columns = [c.strip() for c in next(csv.reader([header]))]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise ConfigError(f"{path}:{header_no}: header must name {', '.join(REQUIRED)} "
                          f"(optional: server); missing {missing or 'none'}, "
                          f"unknown {unknown or 'none'}")
    for (no, line), values in zip(lines[1:], csv.reader(line for _, line in lines[1:]),
                                  strict=True):
        if len(values) != len(columns):
            raise ConfigError(f"{path}:{no}: expected {len(columns)} fields, got "
                              f"{len(values)}: {describe(line)}")
        yield _row(path, no, dict(zip(columns, (v.strip() for v in values), strict=True)))


def _jsonl_rows(path: Path, text: str) -> Iterator[TraceRow]:
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = safe.parse_json(line, f"{path}:{no}")
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("invalid JSON at line 1,", "not valid JSON at",
                                               1)) from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{path}:{no}: expected a JSON object, got {type(obj).__name__}")
        unknown = [k for k in obj if k not in REQUIRED + OPTIONAL]
        if unknown:
            raise ConfigError(f"{path}:{no}: unknown key(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(REQUIRED + OPTIONAL)}")
        yield _row(path, no, obj)


def _row(path: Path, no: int, fields: dict) -> TraceRow:
    for key in REQUIRED:
        if key not in fields or fields[key] in ("", None):
            raise ConfigError(f"{path}:{no}: {key} is missing")
    try:
        arrival = float(fields["arrival_s"])
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:{no}: arrival_s must be a number, got "
                          f"{describe(fields['arrival_s'])}") from None
    if not (arrival >= 0 and math.isfinite(arrival)):
        raise ConfigError(f"{path}:{no}: arrival_s must be >= 0, got {arrival}")
    tokens = []
    for key in ("input_tokens", "output_tokens"):
        value = fields[key]
        try:
            n = int(value) if not isinstance(value, float) or value.is_integer() else None
        except (TypeError, ValueError):
            n = None
        if n is None or isinstance(value, bool) or n < 1:
            raise ConfigError(f"{path}:{no}: {key} must be an integer >= 1, got {describe(value)}")
        tokens.append(n)
    server = fields.get("server") or ""
    if not isinstance(server, str):
        raise ConfigError(f"{path}:{no}: server must be a string, got {describe(server)}")
    return TraceRow(arrival_s=arrival, input_tokens=tokens[0], output_tokens=tokens[1],
                    server=server)


def replay(env: simpy.Environment, rows: Sequence[TraceRow], submit: Callable[[Request], object],
           factory: RequestFactory, *, default_server: str = "",
           start_s: float = 0.0) -> simpy.events.Process:
    """Start a process that submits each row at ``start_s + arrival_s``.

    ``submit`` receives requests whose ``server`` is the row's server or ``default_server``
    (a `sim.cluster.Cluster.submit` routes on it; a deployment's own submit ignores it).
    """

    def run() -> Generator[simpy.events.Event, object, None]:
        for row in rows:
            t = start_s + row.arrival_s
            if t > env.now:
                yield env.timeout(t - env.now)
            submit(factory.make(row.input_tokens, row.output_tokens,
                                row.server or default_server))

    return env.process(run())


def replay_columns(env: simpy.Environment, arrival_s: np.ndarray, in_tokens: np.ndarray,
                   out_tokens: np.ndarray, server_index: np.ndarray, servers: Sequence[str],
                   submit: Callable[[Request], object], *, ids: np.ndarray | None = None,
                   block: int = 4096) -> object:
    """`replay` of a trace held as columns (sorted by arrival), converted a block at a time, so
    a long trace is never turned into one Python object per row at once.

    Request ids are ``ids`` (default: the row numbers), so a subset keeps the ids its rows
    have in the whole trace. Each arrival is scheduled *at* its time (not after a delay from
    the previous one, which can round differently), so a replay of any subset of the rows
    submits every request at exactly its trace time: what a sharded run needs to equal a
    single-process one. The events are those of a replay process (its start, one per later
    arrival time), as a chain of callbacks.
    """
    numbers = np.arange(len(arrival_s)) if ids is None else ids
    return _ColumnFeeder(env, _blocks(block, numbers, arrival_s, in_tokens, out_tokens,
                                      server_index), servers, submit)


def _blocks(block: int, *columns: np.ndarray) -> Iterator[tuple]:
    for lo in range(0, len(columns[0]), block):
        yield from zip(*(c[lo:lo + block].tolist() for c in columns), strict=True)


class _ColumnFeeder:
    __slots__ = ("env", "rows", "servers", "submit", "row")

    def __init__(self, env: simpy.Environment, rows: Iterator[tuple], servers: Sequence[str],
                 submit: Callable[[Request], object]) -> None:
        self.env, self.rows, self.servers, self.submit = env, rows, servers, submit
        self.row: tuple | None = None
        Tick(env, self._fire, priority=URGENT)

    def _fire(self, _event: simpy.events.Event) -> None:
        env, submit, servers = self.env, self.submit, self.servers
        row = self.row
        while True:
            if row is None:
                row = next(self.rows, None)
                if row is None:
                    return
            i, t, n_in, n_out, s = row
            if t > env.now:
                self.row = row
                Tick(env, self._fire, at=t)
                return
            row = None
            submit(Request(i, n_in, n_out, server=servers[s]))
