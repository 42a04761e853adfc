"""The few PromQL functions the collector uses, over the twin's scraped samples.

The twin must see what a controller sees through Prometheus, so its collector evaluates the
same functions with Prometheus' semantics (version 2.x, `promql/functions.go`) over samples
scraped every scrape interval: a range selector ``[w]`` evaluated at t takes the samples with
timestamps in [t − w, t] (`in_range`); ``rate``/``increase``/``delta`` extrapolate the
first-to-last difference towards the window edges (by at most half a sample interval when the
series starts or ends inside the window, never below a counter's zero); ``avg_over_time`` and
``max_over_time`` reduce the samples in the window; an instant selector takes the last sample
within the lookback delta (5 min), unless the series went stale (its pod is gone).
tests/live/test_live_promql.py checks these against a real Prometheus on the same samples.

The functions take the samples already restricted to the window (``times``, ``values``) and
the window's bounds, so one bisection per series serves every function.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import TypeVar

LOOKBACK_S = 300.0
"""Prometheus' default lookback delta of instant selectors."""
EXTRAPOLATION_SLACK = 1.1
"""A sample this many average intervals from a window edge still counts as 'near' it."""


def in_range(times: Sequence[float], start_s: float, end_s: float) -> tuple[int, int]:
    """Index bounds [lo, hi) of the sorted ``times`` in [start, end]."""
    return bisect_left(times, start_s), bisect_right(times, end_s)


def extrapolated_delta(times: Sequence[float], values: Sequence[float], start_s: float,
                       end_s: float, *, is_counter: bool) -> float | None:
    """Prometheus' ``increase()`` (counter) or ``delta()`` (gauge); None with < 2 samples."""
    n = len(times)
    if n < 2:
        return None
    first_t, last_t = times[0], times[-1]
    first_v, last_v = values[0], values[-1]
    result = last_v - first_v
    if is_counter:
        previous = 0.0
        for v in values:
            if v < previous:  # a counter reset: the old value was lost, add it back
                result += previous
            previous = v
    to_start = first_t - start_s
    to_end = end_s - last_t
    sampled = last_t - first_t
    average = sampled / (n - 1)
    if is_counter and result > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / result))
    threshold = average * EXTRAPOLATION_SLACK
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled)


def rate(times: Sequence[float], values: Sequence[float], start_s: float,
         end_s: float) -> float | None:
    """``rate(counter[w])``: per-second increase over the window."""
    increase = extrapolated_delta(times, values, start_s, end_s, is_counter=True)
    return None if increase is None else increase / (end_s - start_s)


def delta(times: Sequence[float], values: Sequence[float], start_s: float,
          end_s: float) -> float | None:
    """``delta(gauge[w])``."""
    return extrapolated_delta(times, values, start_s, end_s, is_counter=False)


def avg_over_time(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def max_over_time(values: Sequence[float]) -> float | None:
    return max(values) if values else None


_V = TypeVar("_V")


def last(times: Sequence[float], values: Sequence[_V], end_s: float, *,
         is_stale: bool = False) -> _V | None:
    """An instant selector: the last sample at or before ``end_s`` within the lookback."""
    if is_stale:
        return None
    lo, hi = in_range(times, end_s - LOOKBACK_S, end_s)
    return values[hi - 1] if hi > lo else None
