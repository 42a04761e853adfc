"""The cycle record and its log: one JSON object per line, one line per cycle.

Unlike upstream (P15 (docs/design/control-loop.md §8), P27), skipped and failed cycles are recorded
too, with their reason, and
each server's record keeps what was observed apart from what was decided. Non-finite numbers
are written as null so every line is strict JSON.

A long-running controller rotates its log by size (the standard library's
`RotatingFileHandler`: ``cycles.jsonl`` → ``cycles.jsonl.1`` … ``.N``), since 500 servers
write about 400 MB a day. A process killed in the middle of a write leaves a partial last
line: the writer cuts it off before appending, and `read_cycle_log` ignores it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from inferno.errors import ConfigError

logger = logging.getLogger(__name__)


class CycleStatus(StrEnum):
    OK = "ok"
    """Decided and actuated (or dry run)."""
    SKIPPED = "skipped"
    """Nothing was actuated: static data, collect or decide failed (see `reason`)."""
    FAILED = "failed"
    """Decided, but the actuator failed (see `reason`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    static_ms: float = 0.0
    """Reading static data and capacity."""
    collect_ms: float = 0.0
    tune_ms: float = 0.0
    decide_ms: float = 0.0
    """The policy, solves included."""
    solve_ms: float = 0.0
    """The optimizer alone, as it reports."""
    actuate_ms: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRecord:
    """One server in one cycle: observed state (before) and decided state (after)."""

    name: str
    class_name: str
    model: str
    namespace: str = ""
    # observed, under the allocation in force during the collection window
    arrival_rpm: float | None = None
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    itl_ms: float | None = None
    ttft_ms: float | None = None
    running_requests: float | None = None
    waiting_requests: float | None = None
    kv_usage: float | None = None
    throughput_rpm: float | None = None
    """Completions per minute over the window."""
    recent_arrival_rpm: float | None = None
    """Offered load over the last couple of scrapes."""
    waiting_now: float | None = None
    """Requests waiting at the end of the window, all replicas."""
    held_replicas: int | None = None
    """Replicas holding accelerators (starting, ready, draining)."""
    ready_replicas: int = 0
    current_replicas: int = 0
    current_accelerator: str = ""
    current_max_batch: int = 0
    slo_itl_ms: float = 0.0
    """Target of the server's class for its model; 0 when unknown."""
    slo_ttft_ms: float = 0.0
    slo_itl_percentile: float = 0.0
    """The percentile the ITL target is on; 0: the mean."""
    slo_ttft_percentile: float = 0.0
    """The percentile the TTFT target is on; 0: the mean."""
    itl_stat_ms: float | None = None
    """Observed ITL in the statistic the target is on (the window mean for a mean target, the
    window's percentile where the world measures it); None when unknown."""
    ttft_stat_ms: float | None = None
    # decided
    recommended_replicas: int | None = None
    """The policy's raw recommendation; None when the policy could not decide."""
    accelerator: str = ""
    num_replicas: int = 0
    max_batch: int = 0
    cost_per_hr: float = 0.0
    """num_replicas × accelerator cost × accelerators per replica; 0 when unknown."""
    predicted_itl_ms: float | None = None
    predicted_ttft_ms: float | None = None
    predicted_itl_stat_ms: float | None = None
    """Predicted ITL in the statistic the target is on."""
    predicted_ttft_stat_ms: float | None = None
    planned_rpm: float | None = None
    """The load the policy sized for (forecast, backlog and caps applied)."""
    itl_ratio: float | None = None
    """Observed / predicted mean ITL at the current allocation this cycle (model error)."""
    ttft_ratio: float | None = None
    itl_factor: float | None = None
    """Correction in force on the server's step time (1 = the model data as is)."""
    ttft_factor: float | None = None
    """Correction in force on the server's TTFT target (divides it)."""
    note: str = ""
    """Why the server was kept, floored or damped, or how it was decided."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleRecord:
    cycle: int
    """Attempted cycles so far, this one included (skipped cycles count)."""
    time_s: float
    """Clock time at the start of the cycle."""
    policy: str
    status: CycleStatus
    reason: str = ""
    """Why the cycle was skipped or failed; empty when OK."""
    stage: str = ""
    """Where a skipped or failed cycle stopped: static, collect, decide or actuate."""
    servers: tuple[ServerRecord, ...] = ()
    skipped_servers: Mapping[str, str] = field(default_factory=dict)
    """Servers the collector could not read, with its reason."""
    actuation_failed: Mapping[str, str] = field(default_factory=dict)
    solve_status: str = ""
    solve_message: str = ""
    total_cost_per_hr: float = 0.0
    timing: Timing = Timing()
    tuner: Mapping[str, Any] = field(default_factory=dict)
    """Learned parameters, NIS, update and skip counts (empty without a tuner)."""

    @property
    def is_ok(self) -> bool:
        return self.status is CycleStatus.OK

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; non-finite floats become None."""
        return _plain(self)

    def to_json(self) -> str:
        """One line of strict JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


class _Handler(RotatingFileHandler):
    """Raises write errors to the caller instead of printing them (logging's default)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        raise  # re-raises the write error: logging calls this inside its except block


class CycleLog:
    """Appends records to a JSONL file, rotated by size; thread safe. Path "-" disables it.

    `max_bytes` 0 never rotates; otherwise a record that would take the file past it first
    moves the file to ``.1`` (and ``.1`` to ``.2`` …), keeping `backups` old files. The file
    is opened for each record and closed after it (one record per period): nothing to close,
    and a file moved or deleted from outside is simply created again.
    """

    def __init__(self, path: Path | str, *, max_bytes: int = 0, backups: int = 0) -> None:
        if max_bytes < 0 or backups < 0:
            raise ConfigError(f"cycle log {path}: max_bytes and backups must be >= 0, got "
                              f"{max_bytes}, {backups}")
        if max_bytes > 0 and backups < 1:
            raise ConfigError(f"cycle log {path}: rotation (max_bytes {max_bytes}) needs at "
                              "least one backup")
        self.path = None if str(path) == "-" else Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._handler: _Handler | None = None

    def append(self, record: CycleRecord, *, timeout_s: float = -1) -> bool:
        """Write one record; False if the lock was not had within `timeout_s` (-1: wait).

        Raises OSError when the file cannot be written.
        """
        if self.path is None:
            return True
        line = record.to_json()
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            if self._handler is None:
                drop_partial_line(self.path)
                self._handler = _Handler(self.path, maxBytes=self.max_bytes,
                                         backupCount=self.backups, encoding="utf-8",
                                         delay=True)
                self._handler.setFormatter(logging.Formatter("%(message)s"))
            try:
                self._handler.emit(logging.makeLogRecord({"msg": line}))
            finally:
                if self._handler.stream is not None:
                    self._handler.stream.close()
                    self._handler.stream = None
        finally:
            self._lock.release()
        return True


def drop_partial_line(path: Path) -> int:
    """Cut an unterminated last line off `path` (a killed writer's); returns bytes dropped."""
    try:
        with path.open("rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            keep = 0
            block = 1 << 16
            pos = size
            while pos > 0:
                start = max(pos - block, 0)
                f.seek(start)
                chunk = f.read(pos - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                pos = start
            f.truncate(keep)
    except FileNotFoundError:
        return 0
    logger.warning("cycle log %s: dropped a partial last line (%d bytes) left by an "
                   "interrupted write", path, size - keep)
    return size - keep


def write_cycle_log(path: Path | str, records: Iterable[CycleRecord]) -> None:
    """Write all records at once (the twin keeps them in memory during a run)."""
    with Path(path).open("w", encoding="utf-8") as out:
        out.writelines(record.to_json() + "\n" for record in records)


def read_cycle_log(path: Path | str) -> list[dict[str, Any]]:
    """Parse a cycle log back to dicts, one per line; blank lines are ignored.

    An unterminated last line that is not valid JSON (a write cut short by a kill, or one in
    progress) is ignored; any other malformed line raises ConfigError naming file and line.
    """
    records: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8", errors="replace") as src:
        for number, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if not line.endswith("\n"):
                    logger.info("cycle log %s: ignoring a partial last line %d", path, number)
                    break
                raise ConfigError(f"cycle log {path}: line {number}: not JSON: {exc}") from exc
    return records
