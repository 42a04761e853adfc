"""Benchmark files users already have, read into calibration rows.

* our CSV (`read_bench_csv`; `sim bench --csv` writes it);
* `vllm bench serve --save-result` JSON: one object per run (or a list, or JSON lines).
  The load is ``max_concurrency`` when ``request_rate`` is ``"inf"`` (closed loop), else
  ``request_rate`` (open loop); tokens are ``total_input_tokens`` / ``completed`` and
  ``total_output_tokens`` / ``completed``; TTFT is ``mean_ttft_ms``, ITL ``mean_tpot_ms``
  (vllm's TPOT is the per-request decode time per output token, our ITL);
* GuideLLM's report JSON (``--output ... .json``): one row per entry of ``benchmarks``,
  the load from its strategy (``concurrent`` streams, ``synchronous`` = 1 user,
  ``constant``/``poisson`` rate) and the means over successful requests of
  ``time_to_first_token_ms``, ``inter_token_latency_ms`` (GuideLLM's ITL is vLLM's TPOT),
  ``prompt_token_count``, ``output_token_count`` and ``requests_per_second``.

Each row remembers its file and position (``source``) for messages. A malformed file is a
`ConfigError` naming the file and the field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferno.errors import ConfigError
from inferno.io import safe

__all__ = ["CSV_COLUMNS", "BenchRow", "read_bench_csv", "read_bench_file", "read_bench_files"]

CSV_COLUMNS = ("input_tokens", "output_tokens", "concurrency", "rate_rps", "itl_ms", "ttft_ms",
               "throughput_rps", "max_batch", "replicas", "num_preemptions")
"""Columns `sim bench --csv` writes (and this reader takes, with the aliases below)."""
_REQUIRED = ("input_tokens", "output_tokens", "itl_ms", "ttft_ms")
_OPTIONAL = ("concurrency", "rate_rps", "throughput_rps", "max_batch", "max_queue", "replicas",
             "num_preemptions")
_ALIASES = {"in_tokens": "input_tokens", "out_tokens": "output_tokens",
            "mean_itl_ms": "itl_ms", "mean_ttft_ms": "ttft_ms", "rate": "rate_rps",
            "request_rate": "rate_rps", "max_concurrency": "concurrency",
            "request_throughput": "throughput_rps"}
"""Accepted spellings of vllm bench / guidellm exports, mapped to the canonical names."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchRow:
    """One benchmark point as measured (all replicas together)."""

    line: int
    """Line in the CSV file (for messages)."""
    in_tokens: float
    out_tokens: float
    concurrency: int | None = None
    rate_rps: float | None = None
    itl_ms: float
    ttft_ms: float
    throughput_rps: float | None = None
    max_batch: int | None = None
    max_queue: int | None = None
    replicas: int = 1
    num_preemptions: int | None = None
    """Preemptions during the run, when the file reports them (`sim bench --csv` does)."""
    source: str = ""
    """Where the row came from, for messages (file:line; empty: the line number alone)."""

    def __post_init__(self) -> None:
        for name, value, limit in (
                ("in_tokens", self.in_tokens, "MAX_TOKENS"),
                ("out_tokens", self.out_tokens, "MAX_TOKENS"),
                ("concurrency", self.concurrency, "MAX_CONCURRENCY"),
                ("rate_rps x 60", None if self.rate_rps is None else self.rate_rps * 60,
                 "MAX_RATE_RPM"),
                ("max_batch", self.max_batch, "MAX_BATCH"),
                ("max_queue", self.max_queue, "MAX_QUEUE"),
                ("replicas", self.replicas, "MAX_REPLICAS")):
            if value is not None:
                safe.check_limit(value, getattr(safe, limit), f"{self.where}: {name} ({limit})",
                                 hint="")

    @property
    def where(self) -> str:
        return self.source or f"line {self.line}"

    @property
    def is_closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def load(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate_rps or 0.0)


def read_bench_csv(path: str | Path) -> tuple[BenchRow, ...]:
    """Parse a benchmark CSV; any problem is a one-line `ConfigError` with file:line and column."""
    path = Path(path)
    text = safe.read_text(path)
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{path}:1: empty file (expected a header line)") from None
    names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    for name in names:
        stem = name.removesuffix("_seconds").removesuffix("_sec").removesuffix("_s")
        if stem != name and stem + "_ms" in (*_REQUIRED, *_OPTIONAL, *_ALIASES):
            raise ConfigError(f"{path}:1: column '{name}' is in seconds: give '{stem}_ms' in "
                              "milliseconds")
    missing = [c for c in _REQUIRED if c not in names]
    if missing or not {"concurrency", "rate_rps"} & set(names):
        need = missing or ["concurrency or rate_rps"]
        raise ConfigError(f"{path}:1: missing column '{need[0]}' "
                          f"(columns: {', '.join(h.strip() for h in header)})")
    rows = []
    for record in reader:
        line = reader.line_num
        if not any(v.strip() for v in record):
            continue
        if len(record) != len(names):
            raise ConfigError(f"{path}:{line}: expected {len(names)} fields, got {len(record)}")
        rows.append(_row(dict(zip(names, record, strict=True)), path, line))
    if not rows:
        raise ConfigError(f"{path}: no benchmark rows")
    return tuple(rows)


def _row(values: Mapping[str, str], path: Path, line: int) -> BenchRow:
    def number(name: str, *, integer: bool = False, minimum: float = 0.0,
               strict: bool = True, optional: bool = False) -> Any:
        raw = values.get(name, "").strip()
        if not raw and optional:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        above = value > minimum if strict else value >= minimum
        if not (math.isfinite(value) and above and (not integer or value.is_integer())):
            what = "an integer" if integer else "a number"
            raise ConfigError(f"{path}:{line}: column '{name}': must be {what} "
                              f"{'>' if strict else '>='} {minimum:g}, got {raw!r}")
        return int(value) if integer else value

    concurrency = number("concurrency", integer=True, optional=True)
    rate = number("rate_rps", optional=True)
    if (concurrency is None) == (rate is None):
        got = "both" if concurrency is not None else "neither"
        raise ConfigError(f"{path}:{line}: give one of columns 'concurrency' and 'rate_rps', "
                          f"got {got}")
    return BenchRow(
        line=line, in_tokens=number("input_tokens"),
        out_tokens=number("output_tokens", minimum=1.0, strict=False),
        concurrency=concurrency, rate_rps=rate, itl_ms=number("itl_ms"),
        ttft_ms=number("ttft_ms"), throughput_rps=number("throughput_rps", optional=True),
        max_batch=number("max_batch", integer=True, optional=True),
        max_queue=number("max_queue", integer=True, strict=False, optional=True),
        replicas=number("replicas", integer=True, optional=True) or 1,
        num_preemptions=number("num_preemptions", integer=True, strict=False, optional=True),
        source=f"{path}:{line}")


def read_bench_files(paths: list[Path]) -> tuple[BenchRow, ...]:
    """Rows of every file, in order."""
    rows: list[BenchRow] = []
    for path in paths:
        rows.extend(read_bench_file(path))
    return tuple(rows)


def read_bench_file(path: str | Path) -> tuple[BenchRow, ...]:
    """Rows of one file: JSON (vllm bench or GuideLLM) by content, anything else as our CSV."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".jsonl"):
        return read_bench_csv(path)
    text = safe.read_text(path)
    docs = list(_documents(text, path))
    rows: list[BenchRow] = []
    for i, doc in enumerate(docs):
        where = f"{path}[{i}]" if len(docs) > 1 else str(path)
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{where}: expected a JSON object, got {type(doc).__name__}")
        if isinstance(doc.get("benchmarks"), list):
            rows.extend(_guidellm(doc, where))
        elif "mean_ttft_ms" in doc:
            rows.append(_vllm(doc, where, len(rows) + 1))
        else:
            raise ConfigError(f"{where}: neither a vllm bench result (mean_ttft_ms) nor a "
                              "GuideLLM report (benchmarks)")
    if not rows:
        raise ConfigError(f"{path}: no benchmark rows")
    return tuple(rows)


def _documents(text: str, path: Path) -> Iterator[Any]:
    try:
        doc = safe.parse_json(text, str(path))
    except ConfigError as exc:
        if "invalid JSON" not in str(exc):
            raise
        for num, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield safe.parse_json(line, f"{path}:{num}")
                except ConfigError as exc:
                    raise ConfigError(str(exc).replace("invalid JSON", "not JSON")) from None
        return
    if isinstance(doc, list):
        yield from doc
    else:
        yield doc


def _number(doc: Mapping[str, Any], key: str, where: str, *, minimum: float = 0.0,
            strict: bool = True) -> float:
    value = doc.get(key)
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not (value > minimum if strict else value >= minimum)):
        raise ConfigError(f"{where}: {key}: must be a number {'>' if strict else '>='} "
                          f"{minimum:g}, got {value!r}")
    return float(value)


def _vllm(doc: Mapping[str, Any], where: str, position: int) -> BenchRow:
    completed = _number(doc, "completed", where)
    rate = doc.get("request_rate")
    concurrency = doc.get("max_concurrency")
    is_inf = rate in ("inf", "Infinity") or (isinstance(rate, float) and math.isinf(rate))
    if is_inf or rate is None:
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ConfigError(f"{where}: request_rate is {rate!r} and max_concurrency is "
                              f"{concurrency!r}: no load to calibrate against")
        load: dict[str, Any] = {"concurrency": concurrency}
    else:
        load = {"rate_rps": _number(doc, "request_rate", where)}
    return BenchRow(
        line=position, source=where,
        in_tokens=_number(doc, "total_input_tokens", where) / completed,
        out_tokens=max(1.0, _number(doc, "total_output_tokens", where) / completed),
        itl_ms=_number(doc, "mean_tpot_ms", where), ttft_ms=_number(doc, "mean_ttft_ms", where),
        throughput_rps=_number(doc, "request_throughput", where), **load)


def _mean(metrics: Mapping[str, Any], name: str, where: str) -> float:
    entry = metrics.get(name)
    value = entry.get("successful") if isinstance(entry, Mapping) else None
    value = value.get("mean") if isinstance(value, Mapping) else None
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}: metrics.{name}.successful.mean: must be a number > 0, "
                          f"got {value!r}")
    return float(value)


def _strategy(doc: Any) -> Mapping[str, Any] | None:
    """The first nested mapping under a key named ``strategy`` (its place moved between
    GuideLLM versions)."""
    if isinstance(doc, Mapping):
        found = doc.get("strategy")
        if isinstance(found, Mapping):
            return found
        for value in doc.values():
            hit = _strategy(value)
            if hit is not None:
                return hit
    elif isinstance(doc, list):
        for value in doc:
            hit = _strategy(value)
            if hit is not None:
                return hit
    return None


def _guidellm(doc: Mapping[str, Any], where: str) -> list[BenchRow]:
    rows = []
    for i, bench in enumerate(doc["benchmarks"]):
        at = f"{where}: benchmarks[{i}]"
        metrics = bench.get("metrics") if isinstance(bench, Mapping) else None
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"{at}: metrics: missing")
        strategy = _strategy({k: v for k, v in bench.items() if k != "metrics"}) or {}
        kind = str(strategy.get("type_") or strategy.get("type") or "")
        load: dict[str, Any]
        if kind == "synchronous":
            load = {"concurrency": 1}
        elif kind == "concurrent":
            load = {"concurrency": int(_number(strategy, "streams", f"{at}: strategy"))}
        elif kind in ("constant", "poisson"):
            load = {"rate_rps": _number(strategy, "rate", f"{at}: strategy")}
        else:
            raise ConfigError(f"{at}: strategy: type {kind or None!r} is not calibratable "
                              "(synchronous, concurrent, constant or poisson)")
        rows.append(BenchRow(
            line=i + 1, source=at, in_tokens=_mean(metrics, "prompt_token_count", at),
            out_tokens=max(1.0, _mean(metrics, "output_token_count", at)),
            itl_ms=_mean(metrics, "inter_token_latency_ms", at),
            ttft_ms=_mean(metrics, "time_to_first_token_ms", at),
            throughput_rps=_mean(metrics, "requests_per_second", at), **load))
    return rows
