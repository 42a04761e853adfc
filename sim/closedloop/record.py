"""A closed-loop run on disk: `write_run` stores it (tables, cycle log, summary, resolved
scenario, trace, plots), `load_run` reads it back for `inferno sim replay`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from inferno.control import (
    CycleRecord,
    read_cycle_log,
    write_cycle_log,
)
from inferno.errors import ConfigError
from sim.closedloop.summary import RunResult
from sim.scenario import (
    Scenario,
    TraceSpec,
    dump_scenario,
    load_scenario,
)

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
    out: list[tuple[float, str, str, str, int, int]] = []
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
