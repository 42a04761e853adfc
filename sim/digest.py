"""Latency digests of a run: exact (every value kept) or a mergeable quantile sketch.

A streaming run must not keep one value per request, so its percentiles come from a DDSketch
(`ddsketch`, relative accuracy `SKETCH_ACCURACY`): every quantile it returns is within that
relative error of a true order statistic, and two sketches merge by adding bin counts, so the
merge of per-server sketches is the same whatever the order or the process they were built
in. Means are exact in both kinds (running sum over count). `ExactDigest` keeps the values, for
runs that keep the request table anyway; its statistics are numpy's, as the table's are.

Values are added in numpy batches: a sketch bins a batch with one vectorised log and adds one
weighted entry per occupied bin, at the bin's representative value (the value the sketch
reports for that bin), so the cost is per bin, not per request.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from sim.metrics import Stats

SKETCH_ACCURACY = 0.005
"""Relative accuracy of the sketch's quantiles (0.5 %: a p99 of 812 ms reads 808-816 ms)."""
PERCENTILES = (50.0, 90.0, 99.0)


class Digest(Protocol):
    """Values of one latency (ms) with their mean and percentiles."""

    count: int

    def add(self, values: np.ndarray) -> None: ...

    def merge(self, other: Digest) -> None: ...

    def statistic(self, percentile: float) -> float:
        """The mean (percentile 0) or a percentile; NaN when empty."""
        ...

    def stats(self) -> Stats: ...


class ExactDigest:
    """Every value, in batches; numpy's mean and linear-interpolation percentiles."""

    def __init__(self) -> None:
        self.count = 0
        self._parts: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if values.size:
            self._parts.append(values)
            self.count += values.size

    def merge(self, other: Digest) -> None:
        assert isinstance(other, ExactDigest)
        self._parts.extend(other._parts)
        self.count += other.count

    def values(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.empty(0)

    def statistic(self, percentile: float) -> float:
        v = self.values()
        if v.size == 0:
            return math.nan
        return float(v.mean() if percentile == 0 else np.percentile(v, percentile))

    def stats(self) -> Stats:
        v = self.values()
        if v.size == 0:
            return Stats(mean=math.nan, p50=math.nan, p90=math.nan, p99=math.nan)
        p50, p90, p99 = np.percentile(v, PERCENTILES)
        return Stats(mean=float(v.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


class SketchDigest:
    """A DDSketch of the values plus their exact count and sum."""

    def __init__(self, relative_accuracy: float = SKETCH_ACCURACY) -> None:
        self.count = 0
        self.sum = 0.0
        self._mapping = LogarithmicMapping(relative_accuracy)
        self._log_gamma = math.log(self._mapping.gamma)
        self.sketch = BaseDDSketch(mapping=self._mapping, store=DenseStore(),
                                   negative_store=DenseStore(), zero_count=0.0)

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        self.count += values.size
        self.sum += float(values.sum())
        positive = values[values > self._mapping.min_possible]
        for value in values[values <= self._mapping.min_possible].tolist():
            self.sketch.add(value)
        if positive.size:
            keys, counts = np.unique(np.ceil(np.log(positive) / self._log_gamma),
                                     return_counts=True)
            value_of = self._mapping.value
            for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                self.sketch.add(value_of(int(key)), float(count))

    def merge(self, other: Digest) -> None:
        assert isinstance(other, SketchDigest)
        self.count += other.count
        self.sum += other.sum
        self.sketch.merge(other.sketch)

    def statistic(self, percentile: float) -> float:
        if self.count == 0:
            return math.nan
        if percentile == 0:
            return self.sum / self.count
        value = self.sketch.get_quantile_value(percentile / 100.0)
        return math.nan if value is None else float(value)

    def stats(self) -> Stats:
        p50, p90, p99 = (self.statistic(p) for p in PERCENTILES)
        return Stats(mean=self.statistic(0), p50=p50, p90=p90, p99=p99)


def make_digest(exact: bool) -> Digest:
    return ExactDigest() if exact else SketchDigest()
