"""What an operator reads in the controller's log: one line per decision, one per cycle.

A changed server gets one INFO line, e.g. ``Premium-llama_13b: 2 -> 3 replicas on H100,
batch 64: arrival 410 rpm, waiting 12, predicted ITL 31/40 ms, TTFT 180/1000 ms`` (predicted /
target); a kept one a DEBUG line; every successful cycle one INFO summary; an actuation that
failed for a server one WARNING line. Skipped and failed cycles are logged by the controller
itself. `inferno live` shows INFO lines of this logger at default verbosity.
"""

from __future__ import annotations

import logging

from inferno.control.cyclelog import CycleRecord, CycleStatus, ServerRecord
from live.metrics import changes

log = logging.getLogger(__name__)


def _number(value: float | None, digits: int = 0) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def _latency(name: str, predicted: float | None, target: float) -> str | None:
    if predicted is None:
        return None
    return f"{name} {predicted:.0f}/{target:.0f} ms" if target > 0 else f"{name} {predicted:.0f} ms"


def decision_line(server: ServerRecord) -> str:
    """One server's decision in words (module example)."""
    if server.accelerator != server.current_accelerator and server.current_accelerator:
        move = (f"{server.current_replicas} on {server.current_accelerator} -> "
                f"{server.num_replicas} replicas on {server.accelerator}")
    elif server.num_replicas != server.current_replicas:
        move = (f"{server.current_replicas} -> {server.num_replicas} replicas on "
                f"{server.accelerator or '?'}")
    else:
        move = f"keep {server.num_replicas} replicas on {server.accelerator or '?'}"
    batch = (f"batch {server.current_max_batch} -> {server.max_batch}"
             if server.max_batch > 0 and server.current_max_batch not in (0, server.max_batch)
             else f"batch {server.max_batch}")
    facts = [f"arrival {_number(server.arrival_rpm)} rpm",
             f"waiting {_number(server.waiting_requests)}"]
    latencies = [x for x in (_latency("ITL", server.predicted_itl_ms, server.slo_itl_ms),
                             _latency("TTFT", server.predicted_ttft_ms, server.slo_ttft_ms))
                 if x is not None]
    if latencies:
        facts.append("predicted " + ", ".join(latencies))
    note = f" ({server.note})" if server.note else ""
    return f"{server.name}: {move}, {batch}: {', '.join(facts)}{note}"


def report_cycle(record: CycleRecord, *, dry_run: bool = False) -> None:
    """Log a cycle's decisions and summary (module notes); skipped cycles log nothing here."""
    if record.status is CycleStatus.SKIPPED:
        return
    num_changed = 0
    for server in record.servers:
        if changes(server):
            num_changed += 1
            log.info("%s%s", "dry run: " if dry_run else "", decision_line(server))
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s", decision_line(server))
    for name, reason in record.actuation_failed.items():
        log.warning("%s: actuation failed: %s", name, reason)
    if record.is_ok:
        log.info("cycle %d ok%s in %.0f ms: %d servers, %d changed, %d not actuated, "
                 "%d unreadable, cost %.2f/h", record.cycle, " (dry run)" if dry_run else "",
                 record.timing.total_ms, len(record.servers), num_changed,
                 len(record.actuation_failed), len(record.skipped_servers),
                 record.total_cost_per_hr)
