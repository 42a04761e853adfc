"""Latency digests of a run: exact (every value kept) or a mergeable quantile sketch.

A streaming run must not keep one value per request, so its percentiles come from a DDSketch
(`ddsketch`, relative accuracy `SKETCH_ACCURACY`): every quantile it returns is within that
relative error of a true order statistic, and two sketches merge by adding bin counts, so the
merge of per-server sketches is the same whatever the order or the process they were built
in. Means are exact in both kinds (running sum over count). `ExactDigest` keeps the values, for
runs that keep the request table anyway; its statistics are numpy's, as the table's are.

Sums are exact (`ExactSum`), so a mean does not depend on how the values were batched or in
which order batches and merges came: a run split over processes gives the very same means.

Values are added in numpy batches: a sketch bins a batch with one vectorised log and adds one
weighted entry per occupied bin, at the bin's representative value (the value the sketch
reports for that bin), so the cost is per bin, not per request.
"""

from __future__ import annotations

import math
from fractions import Fraction
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


_SCALE_BITS = 1126
"""A float64 is an integer multiple of 2**-1074; mantissa·2**53 keeps 52 more bits."""


class ExactSum:
    """The exact sum of float64 values (an integer count of 2**-1126), added in numpy batches.

    Each value is split into its 53-bit integer mantissa (two halves of 27 and 26 bits) and its
    exponent; the halves are summed per exponent with `np.bincount`, exactly (a half times a
    batch of fewer than 2**26 values stays below 2**53), and shifted into one Python integer.
    Cost per batch: a few vectorised passes plus one integer operation per distinct exponent.
    Non-finite values are summed apart, as floats (they make the sum non-finite anyway).
    """

    __slots__ = ("_units", "_special")

    def __init__(self) -> None:
        self._units = 0
        self._special = 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        finite = np.isfinite(values)
        if not finite.all():
            self._special += float(values[~finite].sum())
            values = values[finite]
        for start in range(0, values.size, 1 << 25):
            self._add_exact(values[start:start + (1 << 25)])

    def _add_exact(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        mantissa, exponent = np.frexp(values)
        units = np.ldexp(mantissa, 53).astype(np.int64)
        high = units >> 26
        low = units - (high << 26)
        e_min = int(exponent.min())
        index = exponent - e_min
        sum_high = np.bincount(index, weights=high.astype(float))
        sum_low = np.bincount(index, weights=low.astype(float))
        total = self._units
        for k in np.flatnonzero((sum_high != 0) | (sum_low != 0)).tolist():
            part = (int(sum_high[k]) << 26) + int(sum_low[k])
            total += part << (e_min + k - 53 + _SCALE_BITS)
        self._units = total

    def merge(self, other: ExactSum) -> None:
        self._units += other._units
        self._special += other._special

    def value(self) -> float:
        """The sum, rounded once."""
        return float(Fraction(self._units, 1 << _SCALE_BITS)) + self._special

    def mean(self, count: int) -> float:
        """The sum over ``count``, rounded once (NaN when ``count`` is 0)."""
        if count == 0:
            return math.nan
        if self._special != 0.0:  # also NaN
            return self.value() / count
        return float(Fraction(self._units, count << _SCALE_BITS))


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
        self._sum = ExactSum()
        self._mapping = LogarithmicMapping(relative_accuracy)
        self._log_gamma = math.log(self._mapping.gamma)
        self.sketch = BaseDDSketch(mapping=self._mapping, store=DenseStore(),
                                   negative_store=DenseStore(), zero_count=0.0)

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        self.count += values.size
        self._sum.add(values)
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
        self._sum.merge(other._sum)
        self.sketch.merge(other.sketch)

    @property
    def sum(self) -> float:
        return self._sum.value()

    def statistic(self, percentile: float) -> float:
        if self.count == 0:
            return math.nan
        if percentile == 0:
            return self._sum.mean(self.count)
        value = self.sketch.get_quantile_value(percentile / 100.0)
        return math.nan if value is None else float(value)

    def stats(self) -> Stats:
        p50, p90, p99 = (self.statistic(p) for p in PERCENTILES)
        return Stats(mean=self.statistic(0), p50=p50, p90=p90, p99=p99)


def make_digest(exact: bool) -> Digest:
    return ExactDigest() if exact else SketchDigest()
