"""`inferno sim run` and `inferno sim replay`: closed-loop twin runs from the command line.

Both commands are attached to the `sim` group. The twin is imported inside the command bodies,
so the core install never imports SimPy until a twin command runs. Outputs (docs/scenarios.md):
trace.csv, cycles.jsonl, summary.json, scenario.yaml, timeseries.csv, actuations.csv and the
PNG plots, in `--out` (default runs/<scenario>-<policy>), and the per-request table,
written as the run goes (requests.csv, or requests.parquet with `--requests-format`;
`--no-requests-table` skips it). No request is kept in memory once it has finished: memory
follows the fleet, not the simulated time, and the summary's percentiles come from quantile
sketches (0.5 % relative accuracy; SLO attainment and means stay exact). `--shards N` /
`--dask-scheduler ADDR` split the servers over worker processes that advance in lock-step
control periods (same result as one process). `--tuner` overrides the scenario's
`controller.tuner` (summary.json then has a `tuner` block).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from inferno.errors import ConfigError
from inferno.policy_names import POLICY_NAMES, one_of

if TYPE_CHECKING:  # the twin is imported inside the commands only
    from click._termui_impl import ProgressBar

    from sim.closedloop.summary import RunResult


class ProgressLine:
    """A progress bar with an ETA (`click.progressbar`) on stderr, shown only on a terminal
    and only once a run has taken `delay_s` (short runs stay quiet)."""

    STEPS = 1000
    """Resolution of the bar: the fraction of simulated time is drawn in 0.1 % steps."""

    def __init__(self, label: str, *, stream: TextIO | None = None, delay_s: float = 1.0,
                 width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.is_shown = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay_s = delay_s
        self.width = width
        self._start = time.monotonic()
        self._bar: ProgressBar[Any] | None = None
        self._steps = 0

    def __call__(self, done_s: float, end_s: float) -> None:
        if not self.is_shown or time.monotonic() - self._start < self.delay_s:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=self.STEPS, label=self.label, file=self.stream, width=self.width,
                fill_char="#", empty_char=".", bar_template="%(label)s [%(bar)s] %(info)s",
                item_show_func=lambda text: text)
            self._bar.__enter__()
        fraction = min(max(done_s / end_s, 0.0), 1.0) if end_s > 0 else 1.0
        steps = round(fraction * self.STEPS)
        self._bar.update(steps - self._steps, f"t={done_s:,.0f}/{end_s:,.0f} s")
        self._steps = steps

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _scale_options(command: Any) -> Any:
    """--requests-table, --shards and --dask-scheduler (shared by run and replay)."""
    command = click.option(
        "--dask-scheduler", "scheduler", metavar="ADDR",
        help="Shard the servers over the workers of the Dask cluster at ADDR.")(command)
    command = click.option(
        "--shards", type=click.IntRange(min=1), default=1, show_default=True,
        help="Split the servers over N local worker processes (lock-step control "
             "periods; same result as one process).")(command)
    command = click.option(
        "--requests-format", type=click.Choice(["csv", "parquet"]), default="csv",
        show_default=True, help="Format of the request table (requests.csv or "
                                "requests.parquet).")(command)
    return click.option(
        "--requests-table/--no-requests-table", "with_table", default=True, show_default=True,
        help="Write the per-request table as the run goes; without it no request is kept "
             "once finished.")(command)


def _requests_table(with_table: bool, table_format: str, out: Path, shards: int,
                    scheduler: str | None) -> Path | bool:
    from sim.closedloop.record import REQUESTS_FILES

    if shards > 1 and scheduler is not None:
        raise click.UsageError("--shards and --dask-scheduler are mutually exclusive")
    if not with_table:
        return False
    return out / REQUESTS_FILES[table_format]  # created with the first rows


def _report(result: RunResult, paths: dict[str, Path], out: Path) -> None:
    from sim.closedloop.summary import format_summary

    click.echo(format_summary(result.summary))
    plots = [p for p in paths.values() if p.suffix == ".png"]
    click.echo(f"\nsimulated {result.end_s:,.0f} s in {result.wall_s:.1f} s; outputs in {out}/")
    if plots:
        click.echo("plots: " + ", ".join(str(p) for p in plots))


@click.command("run")
@click.argument("scenario", required=False, type=click.Path(path_type=Path))
@click.option("--policy", help=f"{one_of(POLICY_NAMES)} "
              "(default: the scenario's policy.name).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output directory (default: runs/<scenario>-<policy>).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a scenario value, e.g. --set controller.period_s=30 (repeatable).")
@click.option("--tuner", type=click.Choice(["ekf", "window", "off"]),
              help="Online tuning of α, β, γ (default: the scenario's controller.tuner).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@_scale_options
@click.option("--force", is_flag=True, help="Run even beyond the size limits (simulated "
              "seconds, requests and control cycles; docs/scenarios.md).")
def run(scenario: Path | None, policy: str | None, out: Path | None, sets: tuple[str, ...],
        tuner: str | None, no_plots: bool, with_table: bool, requests_format: str,
        shards: int, scheduler: str | None, force: bool) -> None:
    """Run SCENARIO (default: the quickstart) in the twin with the controller in the loop."""
    from inferno.io import safe
    from sim.closedloop.record import write_run
    from sim.closedloop.run import run_scenario
    from sim.scenario import DEFAULT_SCENARIO, check_run_size, load_scenario

    path = scenario or DEFAULT_SCENARIO
    loaded = load_scenario(path, sets)
    if tuner is not None:
        loaded = loaded.with_tuner(tuner)
    if policy is not None:
        try:
            loaded = loaded.with_policy(policy)
        except ConfigError as exc:
            raise ConfigError(f"--policy {policy!r}: {exc}") from None
    check_run_size(loaded, force=force)
    name = loaded.policy.name
    out = safe.check_output_dir(out or Path("runs") / f"{loaded.name}-{name}", "--out")
    table = _requests_table(with_table, requests_format, out, shards, scheduler)
    progress = ProgressLine(f"{loaded.name} ({name})")
    result = run_scenario(loaded, policy=policy, progress=progress, requests_table=table,
                          shards=shards, scheduler=scheduler)
    progress.close()
    _report(result, write_run(result, out, plots=not no_plots), out)


@click.command("replay")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--policy", help="Decide with another policy (default: the recorded one).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output directory (default: RUN_DIR/replay).")
@click.option("--check", is_flag=True,
              help="Exit 1 when the decisions differ from the recorded ones.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@_scale_options
@click.option("--force", is_flag=True, help="Replay even beyond the size limits (as `sim run "
              "--force`).")
def replay(run_dir: Path, policy: str | None, out: Path | None, check: bool,
           no_plots: bool, with_table: bool, requests_format: str, shards: int,
           scheduler: str | None, force: bool) -> None:
    """Re-run a recorded run (RUN_DIR of `sim run`) on its recorded requests."""
    from inferno.io import safe
    from sim.closedloop.record import RUN_FILES, decision_diff, load_run, write_run
    from sim.closedloop.run import run_scenario
    from sim.scenario import check_run_size, load_scenario

    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: not a run directory (of `inferno sim run`)")
    # The recorded files are read safely here first (encoding, nesting, run size): the
    # recording's reader trusts what `sim run` wrote.
    if (run_dir / RUN_FILES["scenario"]).is_file():
        check_run_size(load_scenario(run_dir / RUN_FILES["scenario"]), force=force)
    if (run_dir / RUN_FILES["summary"]).is_file():
        safe.read_json(run_dir / RUN_FILES["summary"])
    recorded = load_run(run_dir)
    if check and policy not in (None, recorded.scenario.policy.name):
        raise click.UsageError("--check compares with the recorded policy; drop --policy")
    out = safe.check_output_dir(out or run_dir / "replay", "--out")
    table = _requests_table(with_table, requests_format, out, shards, scheduler)
    result = run_scenario(recorded.scenario, policy=policy,
                          progress=ProgressLine(f"replay {recorded.scenario.name}"),
                          requests_table=table, shards=shards, scheduler=scheduler)
    _report(result, write_run(result, out, plots=not no_plots), out)
    diff = decision_diff(recorded.cycles, result.cycles)
    if policy in (None, recorded.scenario.policy.name):
        click.echo("decisions: identical to the recording" if not diff
                   else "decisions differ from the recording:\n  " + "\n  ".join(diff))
    if check and diff:
        raise click.exceptions.Exit(1)
