"""`inferno sim …`: the SimPy digital twin from the command line.

`sim` is an open click group: `bench` lives here, scenario runs (`run`, `replay`) are added to
the same group. The twin package is imported inside the command bodies, so the core install
never imports SimPy until a sim command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from inferno.commands import limits, simrun
from inferno.errors import ConfigError
from inferno.policy_names import POLICY_NAMES


@click.group()
def sim() -> None:
    """SimPy digital twin of vLLM-style replicas and deployments."""


def _loads(text: str | None, what: str, as_int: bool) -> list[float]:
    if text is None:
        return []
    values: list[float] = []
    for part in text.split(","):
        try:
            values.append(int(part) if as_int else float(part))
        except ValueError:
            raise click.UsageError(f"--{what}: '{part}' is not a number") from None
    return values


@sim.command()
@click.option("--policy", type=click.Choice(POLICY_NAMES),
              help="The schema of this policy's settings file (live's --policy-settings, a "
                   "scenario's policy.<name> section) instead of a scenario's.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the schema to this file instead of standard output.")
def schema(policy: str | None, output: Path | None) -> None:
    """Print the JSON Schema of scenario files (or of a policy's settings file).

    Editors with a YAML language server complete keys and flag unknown ones from it: put
    `# yaml-language-server: $schema=PATH` on a scenario's first line (docs/scenarios.md).
    """
    from inferno.control.policies import POLICY_TABLE
    from inferno.io import safe
    from inferno.io.output import write_json_atomic
    from inferno.io.yamlschema import json_schema

    if output is not None:
        safe.check_output_file(output, "--output")
    if policy is not None:
        doc = json_schema(POLICY_TABLE[policy].settings, title=f"inferno {policy} policy "
                          "settings", over_defaults=True)
    else:
        from sim.scenario import Scenario

        doc = json_schema(Scenario, title="inferno scenario")
    if output is None:
        click.echo(json.dumps(doc, indent=2))
    else:
        write_json_atomic(output, doc)


@sim.command()
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Upstream data directory (model-data.json, accelerator-data.json, …).")
@click.option("--model", required=True, help="Model name, e.g. granite_13b.")
@click.option("--accelerator", required=True, help="Accelerator name, e.g. H100.")
@click.option("--concurrency", help="Closed-loop users (comma list with --sweep).")
@click.option("--rate", help="Poisson arrival rate, req/s (comma list with --sweep).")
@click.option("--arrivals", "arrivals_file", type=click.Path(path_type=Path),
              help="Replay arrival timestamps (s; one or more per line) instead of --rate.")
@click.option("--input-tokens", required=True, help="Input tokens per request: N, "
              "uniform:LOW:HIGH, lognormal:MEAN:CV, exponential:MEAN or file:PATH.")
@click.option("--output-tokens", required=True, help="Output tokens per request (same forms).")
@click.option("--think", help="Closed loop: think time after each response, s: S, "
              "exponential:MEAN, lognormal:MEAN:CV or uniform:LOW:HIGH.")
@click.option("--stagger", type=float, default=0.0, show_default=True,
              help="Closed loop: users start evenly spread over this many seconds.")
@click.option("--max-batch", type=int, help="max_num_seqs (default: model-data maxBatchSize).")
@click.option("--kv-tokens", type=int, help="KV-cache capacity per replica, tokens "
              "(default: unlimited).")
@click.option("--replicas", type=int, default=1, show_default=True)
@click.option("--num-requests", type=int, help="Requests to send (default 1000).")
@click.option("--duration", type=float, help="Send requests for this many seconds instead.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--sweep", is_flag=True, help="Run every value of --concurrency/--rate.")
@click.option("--plot", type=click.Path(path_type=Path), default=Path("sim-bench-sweep.png"),
              show_default=True, help="PNG written by --sweep (latency vs load).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path),
              help="Also write one row per point in `inferno calibrate`'s CSV columns.")
@click.option("--requests-table", "table", type=click.Path(path_type=Path),
              help="Write the per-request table to this .csv or .parquet file as the run goes. "
                   "Without it no request is kept once finished (memory follows the "
                   "replicas, not the duration; percentiles from 0.5 %-accurate sketches).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Processes for a run simulated replica by replica (a rate or --arrivals, "
                   "round robin, no --requests-table); default: 2 for big runs on 2+ cores, "
                   "else 1. Results are identical whatever the count.")
@limits.bench_checks
def bench(data_dir: Path, model: str, accelerator: str, concurrency: str | None,
          rate: str | None, arrivals_file: Path | None, input_tokens: str, output_tokens: str,
          think: str | None, stagger: float, max_batch: int | None, kv_tokens: int | None,
          replicas: int, num_requests: int | None, duration: float | None, seed: int,
          sweep: bool, plot: Path, as_json: bool, csv_path: Path | None,
          table: Path | None, workers: int | None = None, force: bool = False) -> None:
    """Benchmark the twin like `vllm bench serve` (one point, or a sweep with --sweep)."""
    from inferno.io import load_system
    from sim import bench as sim_bench
    from sim import workload

    if sum(v is not None for v in (concurrency, rate, arrivals_file)) != 1:
        raise click.UsageError("give exactly one of --concurrency or --rate (or --arrivals)")
    if (think is not None or stagger) and concurrency is None:
        raise click.UsageError("--think and --stagger apply to --concurrency only")
    if num_requests is not None and duration is not None:
        raise click.UsageError("--num-requests and --duration are mutually exclusive")
    loads = _loads(concurrency, "concurrency", True) + _loads(rate, "rate", False)
    if len(loads) > 1 and not sweep:
        raise click.UsageError("several load values need --sweep")
    system = load_system(data_dir)
    perf = sim_bench.perf_for(system, model, accelerator, data=str(data_dir)).perf
    dist_in = workload.parse_tokens(input_tokens, "--input-tokens")
    dist_out = workload.parse_tokens(output_tokens, "--output-tokens")
    times = None
    if arrivals_file is not None:
        times = tuple(workload.read_timestamps(arrivals_file, "--arrivals").tolist())
        limits.check_arrivals(times, arrivals_file, force=force)
    think_delay = workload.parse_delay(think, "--think") if think is not None else None
    if concurrency is not None:
        think_s = (0.0 if think_delay is None else (think_delay.low_s + think_delay.high_s) / 2
                   if think_delay.kind == "uniform" else think_delay.mean_s)
        limits.check_users_duration(loads, duration, think_s + limits.fastest_request_s(
            perf, dist_in.mean_tokens, dist_out.mean_tokens), force=force)
    try:
        cfg = sim_bench.BenchConfig(
            model=model, accelerator=accelerator, in_tokens=round(dist_in.mean_tokens),
            out_tokens=max(1, round(dist_out.mean_tokens)), input=dist_in, output=dist_out,
            concurrency=int(loads[0]) if concurrency else None,
            rate_rps=loads[0] if rate else None, arrival_times_s=times,
            think=think_delay,
            stagger_s=stagger, max_batch=max_batch, kv_tokens=kv_tokens, replicas=replicas,
            num_requests=num_requests, duration_s=duration, seed=seed)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if table is not None and table.suffix.lower() not in (".csv", ".parquet"):
        raise click.UsageError(f"--requests-table: {table} must end in .csv or .parquet")
    results = sim_bench.sweep(system, cfg, loads or [cfg.load],
                              requests_table=table if table is not None else False,
                              workers=workers)
    if csv_path is not None:
        sim_bench.write_csv(results, csv_path)
    if as_json:
        docs = [r.to_json() for r in results]
        click.echo(json.dumps(docs if sweep else docs[0], indent=2))
    else:
        click.echo(sim_bench.format_table(results))
    if sweep:
        sim_bench.plot_sweep(results, plot, title=f"{model} on {accelerator}, "
                             f"{input_tokens} in / {output_tokens} out")
        if not as_json:
            click.echo(f"plot: {plot}")


# The closed-loop commands live in their own module (light imports: `sim` loads on use).
sim.add_command(simrun.run)
sim.add_command(simrun.replay)
