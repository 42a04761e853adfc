"""`inferno sweep SWEEP.yaml`: a grid of twin runs, in local processes or on a Dask cluster.

Writes into `--out` (default runs/sweep-<name>): results.csv (one row per run × server, plus a
`server = "*"` total row per run), cycles.csv (run × server × cycle), manifest.json (the sweep,
the resolved base scenario, every run's policy, seed and grid point) and cost_vs_slo.png.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click


@click.command("sweep")
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1),
              help="Local worker processes (default: CPU count).")
@click.option("--dask-scheduler", "scheduler", metavar="ADDR",
              help="Run on the Dask cluster at ADDR (e.g. tcp://127.0.0.1:8786).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output directory (default: runs/sweep-<name>).")
@click.option("--force", is_flag=True, help="Run even beyond the size limits (runs of the "
              "sweep; simulated seconds, requests and control cycles of each run).")
def sweep(sweep_file: Path, workers: int | None, scheduler: str | None,
          out: Path | None, force: bool) -> None:
    """Run every scenario variant × policy × seed of SWEEP and tabulate the results."""
    from inferno.io import safe
    from inferno.io.output import write_text_atomic
    from sim import sweep_spec as sw
    from sim.scenario import check_run_size, load_scenario, scenario_system, scenario_to_dict
    from sim.sweep import Job, execute

    if workers is not None and scheduler is not None:
        raise click.UsageError("--workers and --dask-scheduler are mutually exclusive")
    spec = sw.load_sweep(sweep_file)
    safe.safe_name(spec.name, f"{sweep_file}: name")
    count = len(spec.policies or ("-",)) * spec.seeds * math.prod(len(v) for _, v in spec.grid)
    safe.check_limit(count, safe.MAX_SWEEP_RUNS,
                     f"{sweep_file}: grid x policies x seeds: runs (MAX_SWEEP_RUNS)", force=force)
    base = load_scenario(spec.scenario, overrides=spec.fixed)
    scenario_system(base)  # cross references checked once, before any worker starts
    out = safe.check_output_dir(out or Path("runs") / f"sweep-{spec.name}", "--out")
    runs = sw.expand(spec, default_policy=base.policy.name)
    jobs = [Job(run_id=r.run_id, scenario=sw.scenario_for(spec, r)) for r in runs]
    for job in jobs:
        check_run_size(job.scenario, force=force)
    outcomes = execute(jobs, workers=workers, scheduler=scheduler, on_done=_progress)
    out.mkdir(parents=True, exist_ok=True)
    table = sw.results_table(runs, [o.summary for o in outcomes])
    # Each file replaced whole (a failure mid-write keeps the previous sweep's, not half).
    write_text_atomic(out / "results.csv", table.to_csv(index=False))
    write_text_atomic(out / "cycles.csv", sw.cycles_table(
        runs, [o.cycles for o in outcomes]).to_csv(index=False))
    write_text_atomic(out / "manifest.json", json.dumps(sw.manifest(
        spec, scenario_to_dict(base), runs, [o.wall_s for o in outcomes]), indent=2) + "\n")
    sw.plot_cost_vs_slo(table, out / "cost_vs_slo.png", title=f"sweep {spec.name}")
    params = [key for key, _ in spec.grid]
    click.echo(sw.policy_means(table, params).to_string(index=False, float_format="%.4g"))
    click.echo(f"\n{len(runs)} runs; outputs in {out}/ (results.csv, cycles.csv, "
               f"manifest.json, cost_vs_slo.png)")


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rsweep: {done}/{total} runs done" + ("\n" if done == total else ""))
        sys.stderr.flush()
