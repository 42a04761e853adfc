"""`inferno optimize DATA_DIR`: allocate every server of an upstream data set."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from inferno.io import OutputFile, load_system, solution_to_json
from inferno.model import BatchPolicy, PerfModel, SolverKind, System
from inferno.optimizer import Solution, solve


def _latency(value: float | None, slo: float) -> str:
    """``value/slo`` right-aligned, ``!`` when the SLO is violated or the value is unknown."""
    shown = "saturated" if value is None else f"{value:.2f}"
    target = f"{slo:g}" if slo else "-"
    bad = value is None or (slo > 0 and value > slo)
    return f"{shown:>9}/{target:<6}{'!' if bad else ' '}"


def format_table(solution: Solution, system: System) -> str:
    """A readable table: one line per server, then unallocated servers and totals.

    ITL and TTFT are predicted at the allocated replicas; ``!`` marks a violated SLO (or a
    saturated allocation, whose latencies are unbounded) and ``*`` a best-effort server.
    """
    header = (f"{'server':<28} {'class':<9} {'model':<14} {'accelerator':<11} {'repl':>5} "
              f"{'batch':>5} {'cost':>10} {'itl ms/slo':>17} {'ttft ms/slo':>17}")
    lines = [header, "-" * len(header)]
    for server in sorted(system.servers, key=lambda s: s.name):
        alloc = solution.allocations.get(server.name)
        if alloc is None:
            continue
        cls = system.classes.get(server.class_name)
        target = cls.targets.get(server.model) if cls else None
        mark = " *" if server.name in solution.best_effort else ""
        lines.append(
            f"{server.name:<28} {server.class_name:<9} {server.model:<14} "
            f"{alloc.accelerator or '-':<11} {alloc.num_replicas:>5} {alloc.max_batch:>5} "
            f"{alloc.cost:>10.2f} {_latency(alloc.itl_ms, target.slo_itl_ms if target else 0)} "
            f"{_latency(alloc.ttft_ms, target.slo_ttft_ms if target else 0)}{mark}")
    lines.append("")
    if solution.best_effort:
        lines.append(f"* best effort (fewer replicas than the SLO needs): "
                     f"{', '.join(solution.best_effort)}")
    if any(a.saturated for a in solution.allocations.values()):
        lines.append("saturated: the load per replica exceeds a replica's max rate (latency "
                     "unbounded): " + ", ".join(n for n, a in solution.allocations.items()
                                                if a.saturated))
    if any(line.endswith(("!", "! *")) for line in lines[2:]):
        lines.append("! predicted latency above the SLO")
    if solution.unallocated:
        lines.append(f"unallocated: {', '.join(solution.unallocated)}")
    lines.append(f"status: {solution.status} ({solution.message})")
    lines.append(f"total cost: {solution.cost:.2f}   solve time: {solution.solve_time_ms:.1f} ms")
    return "\n".join(lines)


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the solution JSON here (upstream solution-data.json field names).")
@click.option("--solver", type=click.Choice([k.value for k in SolverKind]),
              help="Override optimizer-data.json: unlimited ignores capacity; greedy or milp "
                   "choose the limited-capacity algorithm (unlimited: true in the data wins).")
@click.option("--perf-model", type=click.Choice([p.value for p in PerfModel]),
              help="Service-time model (default from optimizer-data.json, else chunked).")
@click.option("--batch-policy", type=click.Choice([b.value for b in BatchPolicy]),
              help="Max-batch policy (default from optimizer-data.json, else search).")
@click.option("--json", "as_json", is_flag=True, help="Print the solution JSON instead of a table.")
def optimize(data_dir: Path, output: Path | None, solver: str | None, perf_model: str | None,
             batch_policy: str | None, as_json: bool) -> None:
    """Choose accelerator, replicas and max batch for every server in DATA_DIR.

    DATA_DIR holds the six upstream JSON files (or one system-data.json). A partial solution
    (some servers unallocated) is still a result: exit code 0. The output path is checked
    before anything is loaded or solved.
    """
    out = OutputFile.reserve(output) if output else None
    with out or nullcontext():
        overrides = {"solver": solver, "perf_model": perf_model, "batch_policy": batch_policy}
        system = load_system(data_dir, overrides=overrides, require_servers=True)
        if solver in ("greedy", "milp") and system.settings.unlimited:
            click.echo(f"Warning: optimizer-data sets unlimited: true, so capacity is ignored "
                       f"and --solver {solver} has no effect", err=True)
        solution = solve(system)
        doc = solution_to_json(solution, system)
        if out is not None:
            out.write_json(doc)
    click.echo(json.dumps(doc, indent=1) if as_json else format_table(solution, system))
