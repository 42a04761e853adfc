"""Run results as tables: one row per request, one row per replica sample, summary statistics.

The engine appends plain records while it runs; this module converts them to pandas once, at the
end (the SimPy monitoring pattern). Times in the tables are seconds; summaries convert to ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inferno.model.units import MS_PER_S
from sim.request import Request

if TYPE_CHECKING:
    import pandas as pd

REQUEST_COLUMNS = (
    "id", "server", "replica", "status", "in_tokens", "out_tokens", "arrival_s",
    "first_scheduled_s", "first_token_s", "finish_s", "num_preemptions",
)
TIMESERIES_COLUMNS = (
    "time_s", "server", "replica", "state", "running", "waiting", "kv_usage",
    "finished_total", "generation_tokens_total",
)


def requests_frame(requests: Iterable[Request], now: float | None = None) -> pd.DataFrame:
    """Per-request table with derived ``wait_s``, ``ttft_s``, ``itl_s``, ``e2e_s``.

    ``itl_s`` is the mean decode time per output token after the first (NaN for one-token
    outputs); ``wait_s`` is arrival to first admission into the batch. With ``now``, a first
    token planned after it (a request still in its prefill) is not shown.
    """
    rows = [(r.id, r.server, r.replica, r.status.value, r.in_tokens, r.out_tokens, r.arrival_s,
             r.first_scheduled_s, r.first_token_s, r.finish_s, r.num_preemptions)
            for r in requests]
    import pandas as pd  # only where a frame is built: `sim bench` runs without pandas

    df = pd.DataFrame.from_records(rows, columns=list(REQUEST_COLUMNS))
    if now is not None and len(df):
        df.loc[df["first_token_s"] > now, "first_token_s"] = np.nan
    df["wait_s"] = df["first_scheduled_s"] - df["arrival_s"]
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["e2e_s"] = df["finish_s"] - df["arrival_s"]
    decode = df["out_tokens"] - 1
    df["itl_s"] = (df["finish_s"] - df["first_token_s"]) / decode.where(decode > 0)
    return df


def timeseries_frame(samples: list[tuple]) -> pd.DataFrame:
    """Per-replica samples; ``throughput_rps`` is completions since the replica's last sample."""
    import pandas as pd

    df = pd.DataFrame.from_records(samples, columns=list(TIMESERIES_COLUMNS))
    if df.empty:
        df["throughput_rps"] = pd.Series(dtype=float)
        return df
    g = df.groupby("replica", sort=False)
    dt = g["time_s"].diff()
    df["throughput_rps"] = g["finished_total"].diff() / dt
    return df


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Mean and percentiles of one latency (ms)."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of_seconds(cls, values_s: np.ndarray) -> Stats:
        v = np.asarray(values_s, dtype=float)
        v = v[~np.isnan(v)] * MS_PER_S
        if v.size == 0:
            return cls(mean=float("nan"), p50=float("nan"), p90=float("nan"), p99=float("nan"))
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        return cls(mean=float(v.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


def littles_law(requests: pd.DataFrame, area_s: float, span_s: float) -> tuple[float, float]:
    """(time-average number in system, arrival rate × mean time in system) over ``span_s``.

    ``area_s`` is ∫(running + waiting) dt from the engine; the product side uses only the
    per-request stamps of DONE requests. The two agree exactly when every request that arrived
    in the span also finished in it.
    """
    done = requests[requests["status"] == "done"]
    lam = len(done) / span_s
    return area_s / span_s, lam * float(done["e2e_s"].mean())
