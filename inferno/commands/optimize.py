"""`inferno optimize DATA_DIR`: allocate every server of an upstream data set."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from inferno.io import OutputFile, load_system, solution_to_json
from inferno.model import BatchPolicy, PerfModel, SolverKind, System, statistic_label
from inferno.optimizer import Solution, solve


def _statistic(mean_ms: float | None, stat_ms: float | None, percentile: float,
               target_ms: float, digits: int) -> tuple[str, bool]:
    """(cell, violated): the predicted value of the statistic a target is on against the
    target: "62.26/1000" for a mean target, "p99 812.3/1000" for a percentile one, "…/-"
    without a target; "saturated" (a violation) when the latency is unbounded, "?" when the
    statistic was not predicted. The cell ends in "!" when the target is violated."""
    slo = f"{target_ms:g}" if target_ms else "-"
    value = stat_ms if percentile else mean_ms
    label = f"{statistic_label(percentile)} " if percentile else ""
    if value is None:
        shown, bad = "saturated", True
    elif percentile and not value:
        shown, bad = "?", False
    else:
        shown, bad = f"{value:.{digits}f}", target_ms > 0 and value > target_ms
    return f"{label + shown:>13}/{slo:<6}{'!' if bad else ' '}", bad


def format_table(solution: Solution, system: System) -> str:
    """A readable table: one line per server, then unallocated servers and totals.

    ITL and TTFT are predicted at the allocated replicas; ``!`` marks a violated SLO (or a
    saturated allocation, whose latencies are unbounded) and ``*`` a best-effort server.
    """
    header = (f"{'server':<28} {'class':<9} {'model':<14} {'accelerator':<11} {'repl':>5} "
              f"{'batch':>5} {'cost':>10} {'itl ms/slo':>21} {'ttft ms/slo':>21}")
    violated = False
    lines = [header, "-" * len(header)]
    for server in sorted(system.servers, key=lambda s: s.name):
        alloc = solution.allocations.get(server.name)
        if alloc is None:
            continue
        cls = system.classes.get(server.class_name)
        target = cls.targets.get(server.model) if cls else None
        itl, itl_bad = _statistic(alloc.itl_ms, alloc.itl_stat_ms,
                                  target.slo_itl_percentile if target else 0.0,
                                  target.slo_itl_ms if target else 0.0, 2)
        ttft, ttft_bad = _statistic(alloc.ttft_ms, alloc.ttft_stat_ms,
                                    target.slo_ttft_percentile if target else 0.0,
                                    target.slo_ttft_ms if target else 0.0, 1)
        violated |= itl_bad or ttft_bad
        mark = " *" if server.name in solution.best_effort else ""
        lines.append(
            f"{server.name:<28} {server.class_name:<9} {server.model:<14} "
            f"{alloc.accelerator or '-':<11} {alloc.num_replicas:>5} {alloc.max_batch:>5} "
            f"{alloc.cost:>10.2f} {itl} {ttft}{mark}")
    lines.append("")
    if solution.best_effort:
        lines.append(f"* best effort (fewer replicas than the SLO needs): "
                     f"{', '.join(solution.best_effort)}")
    if any(a.saturated for a in solution.allocations.values()):
        lines.append("saturated: the load per replica exceeds a replica's max rate (latency "
                     "unbounded): " + ", ".join(n for n, a in solution.allocations.items()
                                                if a.saturated))
    if violated:
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
              help="Service-time and latency model (default from optimizer-data.json, else "
                   "vllm; classic/chunked are upstream's).")
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
