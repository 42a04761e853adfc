"""The `inferno` command line: one click group, thin commands.

Subcommands from the worlds (`sim`, `live`, …) are imported lazily, so the core install works
without them. Every InfernoError becomes one line on stderr and an exit code (2 for bad input,
1 for a failed run); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
from types import FrameType

import click

from inferno.errors import ConfigError, InfernoError

# name -> "module:attribute" of a click command, imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "optimize": "inferno.commands.optimize:optimize",
    "analyze": "inferno.commands.analyze:analyze",
    "sim": "inferno.commands.sim:sim",
    "sweep": "inferno.commands.sweep:sweep",
    "live": "inferno.commands.live:live",
    "emulate": "inferno.commands.live:emulate",
    "load-noise": "inferno.commands.live:load_noise",
    "calibrate": "inferno.commands.calibrate:calibrate",
}
# name -> the command's short help, so `inferno --help` imports no command module (the
# sim and live ones take a second); tests/inferno/cli keeps it equal to the docstrings.
SHORT_HELP: dict[str, str] = {
    "optimize": "Choose accelerator, replicas and max batch for every server...",
    "analyze": "Queue metrics and latency percentiles of one replica at a...",
    "sim": "SimPy digital twin of vLLM-style replicas and deployments.",
    "sweep": "Run every scenario variant × policy × seed of SWEEP and...",
    "live": "Control the managed Deployments of a cluster: every...",
    "emulate": "Emulate the managed Deployments' vLLM pods with the twin...",
    "load-noise": "Every INTERVAL s [env INFERNO_LOAD_INTERVAL, default 60]...",
    "calibrate": "Fit the iteration model of one (model, accelerator) to...",
}
DEPRECATED_COMMANDS: dict[str, str] = {"emulate-load": "load-noise"}
"""Old spelling -> command: still runs, with a warning on stderr, and is hidden from --help."""
SUBCOMMANDS: dict[str, dict[str, str]] = {"sim": {"emulate": "emulate", "sweep": "sweep"}}
"""Group -> {subcommand: top-level command} also reachable in that group (``inferno sim
sweep`` is ``inferno sweep``): the groups mirror the worlds, the old spellings stay."""


def _available(target: str) -> bool:
    return importlib.util.find_spec(target.split(":")[0]) is not None


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = {name for name, target in LAZY_COMMANDS.items() if _available(target)}
        return sorted({*super().list_commands(ctx), *lazy})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from `SHORT_HELP`, without importing commands."""
        rows = [(name, SHORT_HELP.get(name) or self._short_help(ctx, name))
                for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _short_help(self, ctx: click.Context, name: str) -> str:
        cmd = self.get_command(ctx, name)
        return "" if cmd is None else cmd.get_short_help_str(limit=60)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in DEPRECATED_COMMANDS:
            new = DEPRECATED_COMMANDS[cmd_name]
            click.echo(f"inferno {cmd_name} is deprecated; use inferno {new}", err=True)
            cmd_name = new
        if cmd_name in LAZY_COMMANDS and _available(LAZY_COMMANDS[cmd_name]):
            module_name, attr = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if isinstance(command, click.Group):
                for sub, top in SUBCOMMANDS.get(cmd_name, {}).items():
                    if sub not in command.commands and _available(LAZY_COMMANDS[top]):
                        mirrored = self.get_command(ctx, top)
                        if mirrored is not None:
                            command.add_command(mirrored, sub)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except InfernoError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            for line in error_lines(exc):
                click.echo(line, err=True)
            ctx.exit(2 if isinstance(exc, ConfigError) else 1)


MAX_ERROR_LINES = 3
"""Problems printed for one error; the rest are counted ("and N more")."""


def error_lines(exc: InfernoError) -> list[str]:
    """The lines printed for ``exc``: each problem on one line (newlines folded), at most
    `MAX_ERROR_LINES` of them, then "and N more problems"."""
    problems = [" ".join(str(p).split()) for p in
                (getattr(exc, "problems", None) or (str(exc),))]
    lines = [f"{type(exc).__name__}: {p}" for p in problems[:MAX_ERROR_LINES]]
    if len(problems) > MAX_ERROR_LINES:
        rest = len(problems) - MAX_ERROR_LINES
        lines.append(f"... and {rest} more problem{'s' if rest > 1 else ''}")
    return lines


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="inferno")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int) -> None:
    """inferno: SLO-aware, cost-optimal allocation and autoscaling of LLM inference servers."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that set numpy's BLAS threads (OpenBLAS, OpenMP builds, MKL)."""


def single_blas_thread() -> None:
    """Run numpy's BLAS on one thread unless the user set one of `BLAS_THREAD_VARS`.

    Our matrix products are thin (rows × 2, rows × 24): extra BLAS threads only spin, and
    starting them at ``import numpy`` costs ~50 ms of CPU, a sixth of an `inferno optimize`
    on 100 servers (docs/performance.md). Must run before numpy is imported: this module
    imports it nowhere, and commands load lazily.
    """
    if not any(v in os.environ for v in BLAS_THREAD_VARS):
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


EXIT_ON_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""Signals `main` turns into an exit with code 128 + the signal number (143, 130)."""


def exit_on_signals() -> None:
    """Make SIGTERM and SIGINT raise `SystemExit` (128 + signal number) in this process.

    Python's default SIGTERM ends the process at once, so context managers never run and a
    reserved output file (`inferno.io.output.OutputFile`) stays behind as ``.NAME.XXXX.tmp``;
    SIGINT's KeyboardInterrupt unwinds, but click turns it into exit code 1. Unwinding can
    wait on child processes (a process pool's shutdown, a forked worker's join), so the
    handler first terminates this process's `multiprocessing` children; forked children
    inherit the handler and take the default action instead. Commands that stop gracefully
    (`live`, `emulate`) install their own handlers over these while they run. A signal the
    process was started ignoring stays ignored.
    """
    parent = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != parent:  # a forked child: what it would have done without us
            if signum == signal.SIGINT:
                signal.default_int_handler(signum, frame)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            for child in mp.active_children():
                child.terminate()
        raise SystemExit(128 + signum)

    for sig in EXIT_ON_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup, a background job: kept
            signal.signal(sig, handler)


def main() -> None:
    """Console entry point."""
    single_blas_thread()
    exit_on_signals()
    cli(prog_name="inferno")
