"""Sizing to a percentile target: the largest rate at which P(latency > target) <= 1 − p.

A percentile target (say p99 TTFT <= 1 s) is a bound on an exceedance probability, which
grows with the rate, so the sustainable rate is found by bisection on λ over the sizing range
[λ_min, λ_max], like the mean targets (docs/design/optimizer-model.md §2.7), with the rule written
for probabilities:

* the target is met at λ_max: λ_max ("above the region");
* it is missed at λ_min: the candidate is infeasible ("below the region");
* otherwise `PERCENTILE_SEARCH_STEPS` halvings, keeping a bracket [lo, hi] with the target
  met at lo and missed at hi; the answer is lo, so the target holds at the rate returned.

Rows are independent and searched in lockstep; the scalar API runs the same code on one row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PERCENTILE_SEARCH_STEPS", "percentile_search"]

PERCENTILE_SEARCH_STEPS = 48
"""Halvings of [λ_min, λ_max]: the bracket ends within 2^-48 (4e-15) of the range."""

Exceedance = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(rows, λ req/ms) -> P(latency > target) at those rates, rows ascending."""


def percentile_search(exceedance: Exceedance, lam_min: np.ndarray, lam_max: np.ndarray,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(λ, below) per row: the largest rate (req/ms) with exceedance <= ``allowed`` (1 − p),
    and whether even λ_min misses it (λ is then λ_min and the row infeasible).

    Parameters
    ----------
    exceedance : callable (rows, λ) -> ndarray, the probability the target is exceeded
    lam_min, lam_max : ndarray, shape (R,), the sizing range (req/ms)
    allowed : ndarray, shape (R,), 1 − p/100 (the tail mass the target allows)
    """
    lo = np.asarray(lam_min, dtype=float).copy()
    hi = np.asarray(lam_max, dtype=float).copy()
    rows = np.arange(lo.size)
    met_hi = exceedance(rows, hi) <= allowed
    below = np.zeros(lo.size, dtype=bool)
    open_ = np.flatnonzero(~met_hi)
    if open_.size:
        below[open_] = exceedance(open_, lo[open_]) > allowed[open_]
    result = np.where(met_hi, hi, lo)
    active = np.flatnonzero(~met_hi & ~below)
    for _ in range(PERCENTILE_SEARCH_STEPS):
        if active.size == 0:
            break
        mid = 0.5 * (lo[active] + hi[active])
        met = exceedance(active, mid) <= allowed[active]
        lo[active] = np.where(met, mid, lo[active])
        hi[active] = np.where(met, hi[active], mid)
    result[active] = lo[active]
    return result, below
