"""Best-effort allocations report the latencies of the replicas they get, or `saturated`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from inferno.analyzer import QueueConfig, analyze, latency_stats
from inferno.commands.optimize import format_table
from inferno.io import load_system, solution_to_json
from inferno.model import BatchPolicy, PerfModel, SaturationPolicy, System
from inferno.optimizer import compute_candidates, solve
from inferno.optimizer.candidates import demand_rps

SMALL = Path(__file__).resolve().parents[3] / "sample-data" / "small"
NAME = "Premium-granite_34b"  # needs G2 x 7 (docs/design/optimizer-model.md §7.4)


def _system(g2_cards: int) -> System:
    system = load_system(SMALL, overrides={
        "perf_model": PerfModel.CLASSIC, "batch_policy": BatchPolicy.SCALED,
        "saturation_policy": SaturationPolicy.PRIORITY_EXHAUSTIVE})
    servers = tuple(s for s in system.servers if s.name == NAME)
    return dataclasses.replace(system, servers=servers, capacity={"G2": g2_cards})


def _reference(system: System, replicas: int) -> tuple[float, float, float]:
    """(ITL, TTFT, max rate) of one G2 replica at demand/replicas: the scalar analyzer."""
    server = system.servers[0]
    full = next(c for c in compute_candidates(system)[NAME] if c.accelerator == "G2")
    cfg = QueueConfig(max_batch=full.max_batch, max_queue=full.max_queue,
                      in_tokens=server.load.avg_in_tokens,
                      out_tokens=server.load.avg_out_tokens,
                      perf=system.perf[(server.model, "G2")].perf,
                      perf_model=PerfModel.CLASSIC)
    max_rate = analyze(cfg, 1e-3).max_rate_rps
    rate = demand_rps(system, server) / replicas
    if rate > max_rate:  # the classic model refuses rates above its max rate
        return float("inf"), float("inf"), max_rate
    m = analyze(cfg, rate)
    return m.itl_ms, m.ttft_ms, max_rate


def test_best_effort_latencies_are_those_of_the_replicas_given() -> None:
    """G2 x 6 of the 7 needed: latencies at 1/6 of the demand per replica, above the SLO."""
    system = _system(12)  # two G2 cards per replica
    solution = solve(system)
    alloc = solution.allocations[NAME]
    assert solution.best_effort == (NAME,)
    assert (alloc.accelerator, alloc.num_replicas, alloc.saturated) == ("G2", 6, False)
    itl, ttft, _ = _reference(system, 6)
    assert alloc.itl_ms == pytest.approx(itl, rel=1e-9)
    assert alloc.ttft_ms == pytest.approx(ttft, rel=1e-9)
    full_itl, full_ttft, _ = _reference(system, 7)
    assert alloc.itl_ms > full_itl
    assert alloc.ttft_ms > full_ttft
    target = system.classes["Premium"].targets["granite_34b"]
    assert alloc.itl_ms > target.slo_itl_ms or alloc.ttft_ms > target.slo_ttft_ms
    table = format_table(solution, system)
    line = next(row for row in table.splitlines() if row.startswith(NAME))
    assert "!" in line
    assert line.endswith("*")
    assert "! predicted latency above the SLO" in table


def test_saturated_best_effort_has_no_latency() -> None:
    """G2 x 2 of 7: each replica is offered more than its max rate, so no finite latency:
    null + saturated in the JSON, 'saturated' and '!' in the table."""
    system = _system(4)
    solution = solve(system)
    alloc = solution.allocations[NAME]
    assert alloc.num_replicas == 2
    assert demand_rps(system, system.servers[0]) / 2 > _reference(system, 2)[2]
    assert (alloc.saturated, alloc.itl_ms, alloc.ttft_ms) == (True, None, None)
    doc = json.loads(json.dumps(solution_to_json(solution, system), allow_nan=False))
    entry = doc["allocations"][NAME]
    assert (entry["itlAverage"], entry["ttftAverage"], entry["saturated"]) == (None, None, True)
    line = next(row for row in format_table(solution, system).splitlines()
                if row.startswith(NAME))
    assert line.count("saturated") == 2
    assert line.count("!") == 2


def test_fully_served_allocation_is_not_saturated() -> None:
    """With the 7 replicas the SLO needs: within the SLO, saturated false in the JSON."""
    system = _system(14)
    solution = solve(system)
    alloc = solution.allocations[NAME]
    target = system.classes["Premium"].targets["granite_34b"]
    assert solution.best_effort == ()
    assert alloc.saturated is False
    assert alloc.itl_ms is not None
    assert alloc.ttft_ms is not None
    assert alloc.itl_ms <= target.slo_itl_ms
    assert alloc.ttft_ms <= target.slo_ttft_ms
    assert solution_to_json(solution, system)["allocations"][NAME]["saturated"] is False
    assert "!" not in format_table(solution, system)


def _p99_system(g2_cards: int) -> System:
    """The server under the vllm model with its TTFT target (1000 ms) on the p99: needs
    G2 x 9 (two cards per replica)."""
    system = load_system(SMALL, overrides={
        "perf_model": PerfModel.VLLM, "batch_policy": BatchPolicy.SCALED,
        "saturation_policy": SaturationPolicy.PRIORITY_EXHAUSTIVE})
    premium = system.classes["Premium"]
    target = dataclasses.replace(premium.targets["granite_34b"], slo_ttft_percentile=99.0)
    premium = dataclasses.replace(premium, targets={**premium.targets, "granite_34b": target})
    servers = tuple(s for s in system.servers if s.name == NAME)
    return dataclasses.replace(system, servers=servers, capacity={"G2": g2_cards},
                               classes={**system.classes, "Premium": premium})


def test_best_effort_percentile_is_that_of_the_replicas_given() -> None:
    """A p99 target: the best-effort allocation's predicted p99 TTFT is the scalar
    `latency_stats` p99 at its own replicas' load, above the target, and the table marks it."""
    full = _p99_system(100)
    need = next(c for c in compute_candidates(full)[NAME] if c.accelerator == "G2")
    system = _p99_system(2 * (need.num_replicas - 1))
    solution = solve(system)
    alloc = solution.allocations[NAME]
    assert solution.best_effort == (NAME,)
    assert (alloc.num_replicas, alloc.saturated) == (need.num_replicas - 1, False)
    server = system.servers[0]
    cfg = QueueConfig(max_batch=alloc.max_batch, max_queue=need.max_queue,
                      in_tokens=server.load.avg_in_tokens,
                      out_tokens=server.load.avg_out_tokens,
                      perf=system.perf[(server.model, "G2")].perf, perf_model=PerfModel.VLLM)
    ttft, _ = latency_stats(cfg, demand_rps(system, server) / alloc.num_replicas, (99.0,))
    assert alloc.ttft_stat_ms == pytest.approx(ttft.p99, rel=1e-9)
    assert alloc.ttft_stat_ms > 1000.0
    line = next(row for row in format_table(solution, system).splitlines()
                if row.startswith(NAME))
    assert f"p99 {alloc.ttft_stat_ms:.1f}/1000  !" in line


def test_saturated_percentile_statistic_is_null() -> None:
    """Saturated under a p99 target: no predicted statistic either (None, ``null`` in the
    ``slo`` block), 'p99 saturated' in the table."""
    solution = solve(system := _p99_system(4))
    alloc = solution.allocations[NAME]
    assert (alloc.num_replicas, alloc.saturated) == (2, True)
    assert (alloc.ttft_stat_ms, alloc.itl_stat_ms) == (None, None)
    doc = json.loads(json.dumps(solution_to_json(solution, system), allow_nan=False))
    slo = doc["allocations"][NAME]["slo"]
    assert (slo["ttft"]["statistic"], slo["ttft"]["predictedMs"]) == ("p99", None)
    assert (slo["itl"]["statistic"], slo["itl"]["predictedMs"]) == ("mean", None)
    line = next(row for row in format_table(solution, system).splitlines()
                if row.startswith(NAME))
    assert "p99 saturated/1000  !" in line
