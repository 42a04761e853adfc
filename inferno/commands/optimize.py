"""`inferno optimize DATA_DIR`: allocate every server of an upstream data set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from inferno.io import load_system, solution_to_json, write_json_atomic
from inferno.model import BatchPolicy, PerfModel, SolverKind, System, statistic_label
from inferno.optimizer import Solution, solve


def _statistic(mean_ms: float, stat_ms: float, percentile: float, target_ms: float,
               digits: int) -> str:
    """The predicted value of the statistic a target is on, against the target: "62.26/1000"
    for a mean target, "p99 812.3/1000" for a percentile one, "-" for no target."""
    slo = f"{target_ms:g}" if target_ms else "-"
    if percentile:
        value = f"{stat_ms:.{digits}f}" if stat_ms else "?"
        return f"{statistic_label(percentile)} {value}/{slo}"
    return f"{mean_ms:.{digits}f}/{slo}"


def format_table(solution: Solution, system: System) -> str:
    """A readable table: one line per server, then unallocated servers and totals."""
    header = (f"{'server':<28} {'class':<9} {'model':<14} {'accelerator':<11} {'repl':>5} "
              f"{'batch':>5} {'cost':>10} {'itl ms/slo':>16} {'ttft ms/slo':>19}")
    lines = [header, "-" * len(header)]
    for server in sorted(system.servers, key=lambda s: s.name):
        alloc = solution.allocations.get(server.name)
        if alloc is None:
            continue
        cls = system.classes.get(server.class_name)
        target = cls.targets.get(server.model) if cls else None
        itl = _statistic(alloc.itl_ms, alloc.itl_stat_ms,
                         target.slo_itl_percentile if target else 0.0,
                         target.slo_itl_ms if target else 0.0, 2)
        ttft = _statistic(alloc.ttft_ms, alloc.ttft_stat_ms,
                          target.slo_ttft_percentile if target else 0.0,
                          target.slo_ttft_ms if target else 0.0, 1)
        mark = " *" if server.name in solution.best_effort else ""
        lines.append(
            f"{server.name:<28} {server.class_name:<9} {server.model:<14} "
            f"{alloc.accelerator or '-':<11} {alloc.num_replicas:>5} {alloc.max_batch:>5} "
            f"{alloc.cost:>10.2f} {itl:>16} {ttft:>19}{mark}")
    lines.append("")
    if solution.best_effort:
        lines.append(f"* best effort (fewer replicas than the SLO needs): "
                     f"{', '.join(solution.best_effort)}")
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
              help="Override optimizer-data.json (unlimited / greedy / milp).")
@click.option("--perf-model", type=click.Choice([p.value for p in PerfModel]),
              help="Service-time and latency model (default from optimizer-data.json, else "
                   "vllm; classic/chunked are upstream's).")
@click.option("--batch-policy", type=click.Choice([b.value for b in BatchPolicy]),
              help="Max-batch policy (default from optimizer-data.json, else search).")
@click.option("--json", "as_json", is_flag=True, help="Print the solution JSON instead of a table.")
def optimize(data_dir: Path, output: Path | None, solver: str | None, perf_model: str | None,
             batch_policy: str | None, as_json: bool) -> None:
    """Choose accelerator, replicas and max batch for every server in DATA_DIR.

    DATA_DIR holds the six upstream JSON files (or one system-data.json). A partial solution
    (some servers unallocated) is still a result: exit code 0.
    """
    overrides = {"solver": solver, "perf_model": perf_model, "batch_policy": batch_policy}
    system = load_system(data_dir, overrides=overrides)  # None values are not overrides
    solution = solve(system)
    doc = solution_to_json(solution, system)
    if output:
        write_json_atomic(output, doc)
    click.echo(json.dumps(doc, indent=1) if as_json else format_table(solution, system))
