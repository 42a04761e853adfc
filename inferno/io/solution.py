"""Solutions to and from upstream ``solution-data.json`` form.

Output shape (docs/design/optimizer-model.md §1.8 plus this project's additions)::

    {"allocations": {server: {accelerator, numReplicas, maxBatch, cost, itlAverage,
                              ttftAverage, saturated, load: {arrivalRate, throughput,
                              avgInTokens, avgOutTokens},
                              slo: {ttft: {statistic, predictedMs, targetMs},
                                    itl: {statistic, predictedMs, targetMs}}}},
     "unallocated": [...], "bestEffort": [...], "solveTimeMs": x, "status": "optimal",
     "message": "...", "totalCost": x, "parts": {server: [AllocationData, ...]}}

Allocations are sorted by server name, as Go's encoder sorts map keys, so files diff cleanly
against upstream ones. Readers of upstream files ignore the extra keys.

``itlAverage``/``ttftAverage`` are predicted at the replicas actually allocated: for a
best-effort allocation (fewer replicas than the SLO needs, listed in ``bestEffort``) they are
the latencies those replicas give, usually above the SLO (upstream reports those of the
SLO-sized allocation instead). ``saturated`` is true when the load per replica exceeds a
replica's max rate; both latencies are then ``null``.

``slo`` (inferno) is written for servers whose class targets a percentile
(``slo-ttft-percentile`` / ``slo-itl-percentile``): per latency the statistic the target is
on ("mean" or "p99"-style), the predicted value of that statistic (``null`` when saturated)
and the target (0: none). For mean targets ``ttftAverage`` / ``itlAverage`` already are the
predicted statistic.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferno.errors import ConfigError
from inferno.io.fields import Fields, Problems, read_json
from inferno.io.jsondata import read_allocation
from inferno.model import Allocation, Load, ModelTarget, System

if TYPE_CHECKING:  # a runtime import would load the whole optimizer package for a type name
    from inferno.optimizer.result import Solution


def allocation_to_json(alloc: Allocation, load: Load | None = None) -> dict[str, Any]:
    """One upstream ``AllocationData`` object; ``load`` replaces ``alloc.load`` when given."""
    load = alloc.load if load is None else load
    return {
        "accelerator": alloc.accelerator,
        "numReplicas": alloc.num_replicas,
        "maxBatch": alloc.max_batch,
        "cost": alloc.cost,
        "itlAverage": alloc.itl_ms,
        "ttftAverage": alloc.ttft_ms,
        "saturated": alloc.saturated,
        "load": {
            "arrivalRate": load.arrival_rpm,
            "throughput": load.throughput_rpm,
            "avgInTokens": load.avg_in_tokens,
            "avgOutTokens": load.avg_out_tokens,
        },
    }


def slo_to_json(alloc: Allocation, target: ModelTarget) -> dict[str, Any]:
    """The ``slo`` block: per latency, the targeted statistic, its prediction and the target."""
    return {
        "ttft": {"statistic": target.ttft_statistic(), "predictedMs": alloc.ttft_stat_ms,
                 "targetMs": target.slo_ttft_ms},
        "itl": {"statistic": target.itl_statistic(), "predictedMs": alloc.itl_stat_ms,
                "targetMs": target.slo_itl_ms},
    }


def solution_to_json(solution: Solution, system: System) -> dict[str, Any]:
    """The JSON document for ``solution`` of ``system``.

    ``load`` of each allocation is the server's current load, as upstream copies it (§1.8);
    an allocation for a server not in ``system`` keeps its own load. ``parts`` (heterogeneous
    MILP: per-accelerator pieces of one server, each with its own load share) is written only
    when there are any.
    """
    loads = {s.name: s.load for s in system.servers}
    targets = {}
    for server in system.servers:
        cls = system.classes.get(server.class_name)
        target = cls.targets.get(server.model) if cls else None
        if target is not None:
            targets[server.name] = target
    allocations = {}
    for name in sorted(solution.allocations):
        alloc = solution.allocations[name]
        allocations[name] = allocation_to_json(alloc, loads.get(name))
        target = targets.get(name)
        if target is not None and alloc.accelerator and (
                target.slo_ttft_percentile or target.slo_itl_percentile):
            allocations[name]["slo"] = slo_to_json(alloc, target)
    doc: dict[str, Any] = {
        "allocations": allocations,
        "unallocated": sorted(solution.unallocated),
        "bestEffort": sorted(solution.best_effort),
        "solveTimeMs": solution.solve_time_ms,
        "status": solution.status.value,
        "message": solution.message,
        "totalCost": solution.cost,
    }
    if solution.parts:
        doc["parts"] = {name: [allocation_to_json(part) for part in solution.parts[name]]
                        for name in sorted(solution.parts)}
    return doc


def read_solution(path: str | Path) -> dict[str, Allocation]:
    """Allocations of an upstream ``solution-data.json`` / ``expected-solution.json`` file.

    Keys are case-insensitive; bad content raises ConfigError with every problem found.
    """
    path = Path(path)
    problems = Problems()
    is_read, doc = read_json(path, problems)
    out: dict[str, Allocation] = {}
    if is_read:
        root = Fields.root(doc, file=path.name, problems=problems)
        out = {name: read_allocation(f) for name, f in root.entries("allocations")}
    problems.raise_if_any()
    return out


_UNALLOCATED = re.compile(r"\[(.*)\]", re.DOTALL)


def read_unallocated(path: str | Path) -> tuple[str, ...]:
    """Server names of an upstream ``expected-unallocated.txt`` (sorted).

    The file holds the Go error text ``no feasible allocation for servers: [a, b, c]``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot read: {exc.strerror}") from exc
    match = _UNALLOCATED.search(text)
    if match is None:
        raise ConfigError(f"{path.name}: no '[server, ...]' list found")
    return tuple(sorted(match.group(1).replace(",", " ").split()))
