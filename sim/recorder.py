"""What a run keeps of its requests: per-server tallies, window statistics, an optional table.

`RunRecorder.flush` takes the requests that became terminal since the last flush from every
replica of its deployments (a streaming run: `Replica.hand_off` and the deployment's
rejections, after which nothing holds them; a run that keeps its requests: a cursor per
replica) and folds them into per-server `ServerTally`s: completions, SLO hits (per request,
exactly the request table's ``meets_slo``), and latency digests (`sim.digest`). The twin calls
it right after each scrape, so the replicas' vLLM counters have absorbed every request it hands
off, and the batches are the same in a single-process and a sharded run.

Window statistics: for servers whose class targets a percentile, the cycle log carries that
percentile over the completed requests whose TTFT (first token) or ITL (completion) stamp fell
in the collection window before the cycle. The recorder keeps those stamps only until every
window that can still contain them is closed: a window [t − w, t) is closed once no request
that arrived before t is still in flight.

The table (`RequestTable`), when asked for, receives every terminal request at each flush and
the ones still in flight at the end, and writes them in chunks (CSV or Parquet).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inferno.model.units import MS_PER_S
from sim.deployment import Deployment
from sim.digest import Digest, make_digest
from sim.metrics import requests_frame
from sim.replica import Replica
from sim.request import Request, RequestStatus

if TYPE_CHECKING:
    import pandas as pd

_DONE = RequestStatus.DONE


@dataclass(frozen=True, slots=True)
class SloTargets:
    """A server's class SLOs (ms; <= 0: none) and the percentiles its targets are on."""

    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    ttft_percentile: float = 0.0
    itl_percentile: float = 0.0

    @property
    def is_windowed(self) -> bool:
        """True when a target is on a percentile (the cycle log then needs window stats)."""
        return bool(self.ttft_percentile or self.itl_percentile)


@dataclass(slots=True, eq=False)
class ServerTally:
    """Completed requests of one server: counts, SLO hits, TTFT and ITL digests (ms)."""

    ttft_ms: Digest
    itl_ms: Digest
    num_done: int = 0
    num_meets_slo: int = 0

    @classmethod
    def empty(cls, exact: bool) -> ServerTally:
        return cls(ttft_ms=make_digest(exact), itl_ms=make_digest(exact))

    def merge(self, other: ServerTally) -> None:
        self.num_done += other.num_done
        self.num_meets_slo += other.num_meets_slo
        self.ttft_ms.merge(other.ttft_ms)
        self.itl_ms.merge(other.itl_ms)


def latencies_ms(done: list[Request]) -> tuple[np.ndarray, ...]:
    """(first_token_s, finish_s, ttft_ms, itl_ms) of DONE requests, as the table computes them
    (ITL NaN for one-token outputs)."""
    rows = np.array([(r.arrival_s, r.first_token_s, r.finish_s, r.out_tokens) for r in done],
                    dtype=float).reshape(-1, 4)
    return latencies_of(rows)


def latencies_of(rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """`latencies_ms` of rows (arrival_s, first_token_s, finish_s, out_tokens, ...) already
    gathered (one pass over the requests serves several sums)."""
    arrival, first, finish, out = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    decode = out - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        itl_s = np.where(decode > 0, (finish - first) / np.where(decode > 0, decode, 1.0),
                         np.nan)
    return first, finish, (first - arrival) * MS_PER_S, itl_s * MS_PER_S


def meets_slo(ttft_ms: np.ndarray, itl_ms: np.ndarray, targets: SloTargets) -> np.ndarray:
    """Per DONE request: TTFT and mean ITL within the class SLOs (the table's meets_slo)."""
    ttft_ok = (targets.ttft_ms <= 0) | (ttft_ms <= targets.ttft_ms)
    itl_ok = (targets.itl_ms <= 0) | np.isnan(itl_ms) | (itl_ms <= targets.itl_ms)
    return ttft_ok & itl_ok


def statistic(values_ms: np.ndarray, percentile: float) -> float:
    """The mean (percentile 0) or a percentile of ``values_ms``; NaN when empty."""
    v = values_ms[~np.isnan(values_ms)]
    if v.size == 0:
        return math.nan
    return float(v.mean() if percentile == 0 else np.percentile(v, percentile))


@dataclass(slots=True, eq=False)
class _Stamps:
    """Stamped latencies of a windowed server: chunks of (stamp s, value ms)."""

    ttft: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    itl: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    """Cycle times whose window is not closed yet."""


def _in_window(chunks: list[tuple[np.ndarray, np.ndarray]], t0: float, t1: float) -> np.ndarray:
    parts = [v[(s >= t0) & (s < t1)] for s, v in chunks]
    return np.concatenate(parts) if parts else np.empty(0)


def _prune(chunks: list[tuple[np.ndarray, np.ndarray]], horizon_s: float) -> None:
    chunks[:] = [(s, v) for s, v in chunks if s.size and s.max() >= horizon_s]


class RequestTable:
    """Writes request rows in chunks to a CSV or Parquet file (by its suffix)."""

    CHUNK = 50_000

    def __init__(self, path: Path, decorate: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        self.path = Path(path)
        self.is_parquet = self.path.suffix.lower() == ".parquet"
        self.decorate = decorate
        self.num_rows = 0
        self._buffer: list[Request] = []
        self.now: float | None = None
        """Set at the end: first tokens planned after it are not shown (in-flight rows)."""
        self._writer: Any = None  # a pyarrow.parquet.ParquetWriter (pyarrow is untyped)
        self._schema: Any = None
        self._created = False
        """The file exists: created at the first write, so a run that fails while it is
        being set up (bad data, bad trace) leaves nothing behind."""

    def _create(self) -> None:
        if not self._created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.is_parquet:
                self.path.write_text("")
            self._created = True

    def add(self, requests: Iterable[Request]) -> None:
        self._buffer.extend(requests)
        if len(self._buffer) >= self.CHUNK:
            self._write()

    def _write(self) -> None:
        if not self._buffer:
            return
        self._create()
        df = self.decorate(requests_frame(self._buffer, now=self.now))
        self._buffer = []
        if self.is_parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, schema=self._schema, preserve_index=False)
            if self._writer is None:
                self._schema = table.schema
                self._writer = pq.ParquetWriter(self.path, self._schema)
            self._writer.write_table(table)
        else:
            with self.path.open("a", encoding="utf-8", newline="") as f:
                df.to_csv(f, header=self.num_rows == 0, index=False)
        self.num_rows += len(df)

    def close(self) -> None:
        self._write()
        self._create()  # an empty run still has its (empty) table
        if self._writer is not None:
            self._writer.close()


class RunRecorder:
    """Per-server tallies and window statistics of a run, fed at each flush."""

    def __init__(self, deployments: Mapping[str, Deployment], targets: Mapping[str, SloTargets],
                 *, exact: bool, window_s: float, table: RequestTable | None = None) -> None:
        self.deployments = dict(deployments)
        self.targets = dict(targets)
        self.window_s = window_s
        self.table = table
        self.tallies = {name: ServerTally.empty(exact) for name in self.deployments}
        self.window_stats: dict[tuple[str, float], tuple[float, float]] = {}
        """(server, cycle time) → (TTFT, ITL) statistic of the window (NaN: no data)."""
        self._stamps = {name: _Stamps() for name, t in self.targets.items()
                        if t.is_windowed and name in self.deployments}
        self._cursor: dict[Replica, int] = {}

    # ------------------------------------------------------------------ feeding
    def _take(self, dep: Deployment) -> list[Request]:
        out: list[Request] = []
        if dep.retain_requests:
            for rep in dep.replicas:
                seen = self._cursor.get(rep, 0)
                if seen < len(rep.finished):
                    out.extend(rep.finished[seen:])
                    self._cursor[rep] = len(rep.finished)
            return out
        for rep in dep.replicas:
            if rep.finished:
                out.extend(rep.hand_off())
        if dep.rejected:
            out.extend(dep.rejected)
            dep.rejected = []
        return out

    def flush(self, now: float) -> None:
        """Take every request that became terminal since the last flush."""
        for name, dep in self.deployments.items():
            batch = self._take(dep)
            if batch and self.table is not None:
                self.table.add(batch)
            done = [r for r in batch if r.status is _DONE]
            stamps = self._stamps.get(name)
            if done:
                first, finish, ttft, itl = latencies_ms(done)
                tally = self.tallies[name]
                tally.num_done += len(done)
                tally.num_meets_slo += int(meets_slo(ttft, itl, self.targets[name]).sum())
                tally.ttft_ms.add(ttft)
                tally.itl_ms.add(itl)
                if stamps is not None:
                    stamps.ttft.append((first, ttft))
                    stamps.itl.append((finish, itl))
            if stamps is not None and stamps.pending:
                self._close_windows(name, stamps, dep.oldest_pending_arrival_s(), now)

    def request_window(self, name: str, cycle_s: float) -> None:
        """A cycle at ``cycle_s`` (now or later) needs its window statistic (windowed servers
        only); the window is computed once closed."""
        stamps = self._stamps.get(name)
        if stamps is not None:
            stamps.pending.append(cycle_s)

    def _close_windows(self, name: str, stamps: _Stamps, oldest_pending_s: float,
                       now: float) -> None:
        targets = self.targets[name]
        still = []
        for t in stamps.pending:
            if t > now or t > oldest_pending_s:
                still.append(t)
                continue
            t0 = t - self.window_s
            self.window_stats[(name, t)] = (
                statistic(_in_window(stamps.ttft, t0, t), targets.ttft_percentile)
                if targets.ttft_percentile else math.nan,
                statistic(_in_window(stamps.itl, t0, t), targets.itl_percentile)
                if targets.itl_percentile else math.nan)
        stamps.pending = still
        horizon = min([t - self.window_s for t in still] + [now - self.window_s])
        if not math.isfinite(horizon):
            return
        _prune(stamps.ttft, horizon)
        _prune(stamps.itl, horizon)

    def finish(self, now: float) -> None:
        """Last flush: close every window; the table gets the requests still in flight."""
        self.flush(now)
        for name, stamps in self._stamps.items():
            if stamps.pending:
                self._close_windows(name, stamps, math.inf, math.inf)
        if self.table is not None:
            self.table.now = now
            for dep in self.deployments.values():
                self.table.add(dep.backlog)
                for rep in dep.replicas:
                    if rep.num_outstanding:
                        self.table.add(req for req, _ in rep.in_flight(now))
            self.table.close()
