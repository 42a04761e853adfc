"""Command-line flags checked before any work: ranges, size limits and output paths.

Each problem is one `ConfigError` naming the flag and the value (exit 2). The limits are the
named ones of `inferno.io.safe` (docs/scenarios.md, "Limits"); those on simulated work
(requests, seconds) yield to ``--force``, those beyond any real fleet (replicas, max batch,
tokens, users) do not. `bench_checks` wraps `inferno sim bench` so the checks stay out of
the command's body.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from inferno.errors import ConfigError
from inferno.io import safe
from inferno.model import PerfParms, iteration_time_ms
from inferno.model.units import MS_PER_S


def check_flag(flag: str, value: float | None, *, above: float | None = None,
               at_least: float | None = None, limit: str | None = None,
               force: bool | None = None) -> None:
    """A `ConfigError` unless ``value`` (None: not given) is a finite number above ``above``
    or at least ``at_least``, and at most the `safe` limit named ``limit``; ``force`` (None:
    the command has no --force) lifts the limit."""
    if value is None:
        return
    bound, sign = (above, ">") if above is not None else (at_least, ">=")
    low_ok = bound is None or (value > bound if sign == ">" else value >= bound)
    if not (math.isfinite(value) and low_ok):
        wanted = f"a finite number {sign} {bound:g}" if bound is not None else "a finite number"
        raise ConfigError(f"{flag}: expected {wanted}, got {value!r}")
    if limit is not None:
        safe.check_limit(value, getattr(safe, limit), f"{flag} ({limit})", force=bool(force),
                         hint="--force lifts it" if force is not None else "")


def _numbers(text: str | None) -> list[float]:
    """The numbers of a comma list (the command itself reports parts that are not numbers)."""
    values = []
    for part in (text or "").split(","):
        try:
            values.append(float(part))
        except ValueError:
            continue
    return values


def check_bench(params: dict[str, Any], *, force: bool) -> None:
    """`inferno sim bench`'s flags: ranges, the simulated requests and seconds (`--force`
    lifts those) and the output files."""
    from sim import workload  # the command runs the twin anyway

    for users in _numbers(params.get("concurrency")):
        check_flag("--concurrency", users, at_least=1, limit="MAX_CONCURRENCY")
    check_flag("--num-requests", params.get("num_requests"), at_least=1,
               limit="MAX_SIM_REQUESTS", force=force)
    check_flag("--duration", params.get("duration"), above=0.0, limit="MAX_SIM_DURATION_S",
               force=force)
    for rate in _numbers(params.get("rate")):
        check_flag("--rate", rate, above=0.0)
        if params.get("duration") is not None and math.isfinite(params["duration"]):
            safe.check_limit(rate * params["duration"], safe.MAX_SIM_REQUESTS,
                             f"--rate {rate:g} x --duration {params['duration']:g}: simulated "
                             "requests (MAX_SIM_REQUESTS)", force=force)
    check_flag("--stagger", params.get("stagger"), at_least=0.0, limit="MAX_SIM_DURATION_S",
               force=force)
    check_flag("--replicas", params.get("replicas"), at_least=1, limit="MAX_REPLICAS")
    check_flag("--max-batch", params.get("max_batch"), at_least=1, limit="MAX_BATCH")
    check_flag("--kv-tokens", params.get("kv_tokens"), at_least=1)
    check_flag("--seed", params.get("seed"), at_least=0)
    if params.get("think") is not None:
        think = workload.parse_delay(params["think"], "--think")
        check_flag("--think", max(think.mean_s, think.high_s), limit="MAX_SIM_DURATION_S",
                   force=force)
    if params.get("csv_path") is not None:
        safe.check_output_file(params["csv_path"], "--csv")
    if params.get("sweep") and params.get("plot") is not None:
        safe.check_output_file(params["plot"], "--plot")


def check_arrivals(times: Sequence[float], path: Path, *, force: bool) -> None:
    """``--arrivals``' timestamps (read once, by the command): how many, and their span."""
    where = f"--arrivals {path}"
    safe.check_limit(len(times), safe.MAX_SIM_REQUESTS,
                     f"{where}: arrivals (MAX_SIM_REQUESTS)", force=force)
    if len(times):
        safe.check_limit(float(times[-1]), safe.MAX_SIM_DURATION_S,
                         f"{where}: span of the arrival times, s (MAX_SIM_DURATION_S)",
                         force=force)


def fastest_request_s(perf: PerfParms, in_tokens: float, out_tokens: float) -> float:
    """A lower bound on a request's time in the engine (s): one decode iteration per output
    token, each at least one token computed over the prompt's KV cache (batching only makes
    iterations longer)."""
    return out_tokens * iteration_time_ms(perf, 1.0, in_tokens) / MS_PER_S


def check_users_duration(users: Sequence[float], duration_s: float | None,
                         cycle_s: float, *, force: bool) -> None:
    """``--concurrency C --duration D``: at most C·D / ``cycle_s`` requests (``cycle_s`` = the
    fastest request plus the mean think time), capped like ``--rate x --duration``."""
    if duration_s is None or not users:
        return
    for count in users:
        estimate = count * duration_s / cycle_s if cycle_s > 0 else math.inf
        safe.check_limit(estimate, safe.MAX_SIM_REQUESTS,
                         f"--concurrency {count:g} x --duration {duration_s:g}: simulated "
                         f"requests, estimated at the fastest request plus think time "
                         f"({cycle_s:.3g} s) (MAX_SIM_REQUESTS)", force=force)


def bench_checks(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` (the `sim bench` callback) with a ``--force`` flag and `check_bench` run on
    its parameters first; ``force`` is passed on for the checks that need what the command
    reads (the arrivals file, the model's parameters)."""

    @click.option("--force", is_flag=True, help="Run even beyond the limits on simulated "
                  "requests and seconds (docs/scenarios.md, Limits).")
    @functools.wraps(command)
    def checked(*, force: bool, **params: Any) -> None:
        check_bench(params, force=force)
        command(force=force, **params)

    return checked


def check_output_files(**paths: Path | None) -> None:
    """Each given output file path writable (`safe.check_output_file`); keys are flag names
    with ``_`` for ``-``."""
    for name, path in paths.items():
        if path is not None:
            safe.check_output_file(path, "--" + name.replace("_", "-"))
