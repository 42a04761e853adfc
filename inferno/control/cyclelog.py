"""The cycle record and its log: one JSON object per line, one line per cycle.

Unlike upstream (P15, P27), skipped and failed cycles are recorded too, with their reason, and
each server's record keeps what was observed apart from what was decided. Non-finite numbers
are written as null so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any


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


class CycleLog:
    """Appends records to a JSONL file; thread safe. Path "-" disables it (upstream)."""

    def __init__(self, path: Path | str) -> None:
        self.path = None if str(path) == "-" else Path(path)
        self._lock = threading.Lock()

    def append(self, record: CycleRecord) -> None:
        if self.path is None:
            return
        line = record.to_json() + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line)


def write_cycle_log(path: Path | str, records: Iterable[CycleRecord]) -> None:
    """Write all records at once (the twin keeps them in memory during a run)."""
    with Path(path).open("w", encoding="utf-8") as out:
        out.writelines(record.to_json() + "\n" for record in records)


def read_cycle_log(path: Path | str) -> list[dict[str, Any]]:
    """Parse a cycle log back to dicts, one per line; blank lines are ignored."""
    with Path(path).open(encoding="utf-8") as src:
        return [json.loads(line) for line in src if line.strip()]
