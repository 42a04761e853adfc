"""Lockstep docs/design/optimizer-model.md §2.7 bisection of every candidate's TTFT and ITL target
(the core of `size_batch`).

Row r of the 2·V searches is kind r // V (0: TTFT, 1: ITL) of candidate r % V. Each row runs
exactly the scalar rules of `analyzer.bisect`: the same end-point tests, midpoints
0.5·(lo + hi), tolerance test and bracket update, at most `SEARCH_MAX_ITERATIONS` halvings,
and stops when its metric is within tolerance. Rows are independent, so they need not move
together; the search runs in two phases:

* direct phase: all unfinished rows halve together, each midpoint solved by a direct
  `ChainTable` solve; while a candidate's two brackets coincide (same midpoint in the same
  step, as they do until the two roots fall into different halves) one solve serves both;
* series phase: a row whose bracket has become narrow enough keeps the Taylor data of its
  last direct solve and finishes in a compact loop where each solve costs O(terms); in a
  small phase each round evaluates several guessed midpoints per row at once and keeps
  those on the row's real path (every halving is still decided by its own metric value).

A row whose partner's target is below the attainable region is not searched (the candidate
is infeasible whatever it finds); with ``cap`` a row also stops once it can no longer hold
min(λ_TTFT, λ_ITL, cap), the only value `size_batch` needs for the sustainable rate.
"""

from __future__ import annotations

import numpy as np

from inferno.analyzer.analyzer import SEARCH_MAX_ITERATIONS, SEARCH_TOLERANCE
from inferno.analyzer.chain import TAYLOR_REACH, TAYLOR_TERMS, ChainTable
from inferno.analyzer.latency import LatencyCoefficients, queue_metrics
from inferno.analyzer.queueing import QueueSolution, chain_solution
from inferno.model import PerfModel

__all__ = ["LockstepSearch", "within"]

_FLOOR_MARGIN = 1.0 - 1e-9
"""A bound must be below the floor by more than rounding (λ* is rescaled to req/s and back
before the throughput is computed)."""
_COMPACT_FRACTION = 0.75
"""The series phase drops finished rows once fewer than this share is still running."""
_GUESS_STEPS = 6
"""Most halvings guessed per row and series-phase round (a row's series phase takes ~15):
more points per evaluation save per-call costs, a wrong guess wastes the points after it."""
_GUESS_ROWS = 1500
"""A search of more rows (2·V) than this evaluates one midpoint per row and round in its
series phase (the plain bisection) and keeps no points for guesses: there the element work,
not the per-call cost, dominates (valgrind instruction counts at 100 and 1,000 case
servers)."""


def within(y: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Vectorised `analyzer.within_tolerance` (rows with a zero target: only y == 0)."""
    rel = np.abs(np.subtract(y, target))
    nonzero = target != 0
    np.divide(rel, np.abs(target), out=rel, where=nonzero)
    return (y == target) | (nonzero & (rel <= SEARCH_TOLERANCE))


def _lowers(y: np.ndarray, target: np.ndarray, increasing: np.ndarray) -> np.ndarray:
    """The §2.7 update: True where the midpoint becomes the new upper end."""
    return (increasing & (target < y)) | (~increasing & (target > y))


def _horner(coef: np.ndarray, h: np.ndarray, shape: tuple[int, ...] | None = None
            ) -> np.ndarray:
    """Σ_k coef[k]·h^k for coefficient-major ``coef`` (K, …) and ``h`` broadcasting
    against ``coef[k]`` (the result has the shape of ``coef[k]`` unless ``shape`` says)."""
    acc = coef[-1].copy() if shape is None else np.broadcast_to(coef[-1], shape).copy()
    for k in range(coef.shape[0] - 2, -1, -1):
        acc *= h
        acc += coef[k]
    return acc


class LockstepSearch:
    """The TTFT and ITL bisections of V candidates over [λ_min, λ_max] (req/ms).

    Parameters
    ----------
    table : ChainTable of the V candidates
    model : service-time model
    coef : LatencyCoefficients, shape (V,)
    lam_min, lam_max : ndarray, shape (V,), the rate range (req/ms)
    ttft_ms, itl_ms : ndarray, shape (V,), targets (0: not searched, result λ_max)
    cap : ndarray, shape (V,), optional
        Only min(λ_TTFT, λ_ITL, cap) is wanted: a row stops as soon as its bracket lies at or
        above the partner's bracket (or its result) or the cap, since its exact root can no
        longer change that minimum; its result is then NaN. The minimum itself is exactly
        the one the full searches give. Without ``cap`` every row runs to the end.

    floor : ndarray, shape (V,), optional (with ``cap`` only)
        A candidate is given up (``given_up``, both rows stopped) as soon as its brackets
        show min(λ_TTFT, λ_ITL, cap) < floor: its throughput at λ* is then below the floor
        too, the only thing a caller passing a floor wants to know.

    Either way a row whose partner's target is below the region (candidate infeasible)
    is not searched; its result is NaN.
    """

    def __init__(self, table: ChainTable, model: PerfModel, coef: LatencyCoefficients,
                 lam_min: np.ndarray, lam_max: np.ndarray, ttft_ms: np.ndarray,
                 itl_ms: np.ndarray, cap: np.ndarray | None = None,
                 floor: np.ndarray | None = None) -> None:
        self.table, self.model, self.coef = table, model, coef
        v = self.v = len(table)
        if floor is not None and cap is None:
            raise ValueError("LockstepSearch: a floor needs a cap")
        self.cap = None if cap is None else np.concatenate([cap, cap])
        self.floor = None if floor is None else floor * _FLOOR_MARGIN
        self.given_up = np.zeros(v, dtype=bool)
        """Candidates stopped because their rate is certainly below ``floor``."""
        self.target = np.concatenate([ttft_ms, itl_ms])
        self.lo = np.concatenate([lam_min, lam_min])
        self.hi = np.concatenate([lam_max, lam_max])
        self.result = self.hi.copy()
        """λ found per row (req/ms); λ_max where the target is 0 or above the region."""
        self.below = np.zeros(2 * v, dtype=bool)
        """The target lies below the attainable region: the candidate is infeasible."""
        self.increasing = np.zeros(2 * v, dtype=bool)
        self.active = np.zeros(2 * v, dtype=bool)
        self.steps = np.zeros(2 * v, dtype=np.int64)
        self.parked = np.zeros(2 * v, dtype=bool)
        self.x_center = np.zeros(2 * v)
        self.p_top_center = np.zeros(2 * v)
        self.p_zero_center = np.zeros(2 * v)
        self.moments = np.zeros((2 * v, TAYLOR_TERMS + 1))
        self._sums = np.empty((4, 2 * v))
        self.y_lo = np.full(2 * v, np.nan)
        self.y_hi = np.full(2 * v, np.nan)
        self.lam_old = np.full(2 * v, np.nan)
        self.y_old = np.full(2 * v, np.nan)
        """The metric at ``lo`` and ``hi``, and the bracket end last replaced and its metric:
        the series phase guesses the root from these three points."""
        self.guess = 2 * v <= _GUESS_ROWS
        """The series phase may guess (it has at most 2·V rows): keep the points above."""

    def run(self) -> LockstepSearch:
        """Run both phases to completion; results in ``result`` and ``below``."""
        self._ends()
        while self._direct_step():
            pass
        self._series_phase((self.active & self.parked).nonzero()[0])
        return self

    def _metric(self, rows: np.ndarray, sol: QueueSolution) -> tuple[np.ndarray, np.ndarray]:
        """(TTFT or ITL by row kind, ITL) from the solutions at ``rows``.

        A row's ITL does not depend on whether its TTFT includes the wait for a slot, so a
        TTFT row's ITL is its partner's value at the same point."""
        is_ttft = rows < self.v
        lat = queue_metrics(self.model, sol, self.coef.take(rows % self.v), is_ttft)
        return np.where(is_ttft, lat.ttft_ms, lat.itl_ms), lat.itl_ms

    def _ends(self) -> None:
        """The end-point rules of §2.7 for every row with a target (> 0)."""
        v = self.v
        t = self.target
        searched = t > 0
        cand = (searched[:v] | searched[v:]).nonzero()[0]
        y_lo = np.full(2 * v, np.nan)
        y_hi = np.full(2 * v, np.nan)
        if cand.size:
            coef = self.coef.take(cand)
            for lam, y, solve in ((self.lo, y_lo, self.table.solve_light),
                                  (self.hi, y_hi, self.table.solve)):
                # one evaluation gives both searches' metrics at the shared end point
                lat = queue_metrics(self.model, solve(cand, lam[cand]), coef)
                y[cand], y[cand + v] = lat.ttft_ms, lat.itl_ms
        at_lo = searched & within(y_lo, t)
        at_hi = searched & ~at_lo & within(y_hi, t)
        open_ = searched & ~at_lo & ~at_hi
        inc = y_lo < y_hi
        below = open_ & ((inc & (t < y_lo)) | (~inc & (t > y_lo)))
        above = open_ & ~below & ((inc & (t > y_hi)) | (~inc & (t < y_hi)))
        self.below = below
        self.increasing = inc
        self.y_lo, self.y_hi = y_lo, y_hi
        self.active = open_ & ~below & ~above
        self.result = np.where(at_lo, self.lo, self.hi)
        doomed = below[self._partner(np.arange(2 * v))]
        self.active &= ~doomed
        self.result[doomed] = np.nan
        self._give_up(np.arange(v))

    def _partner(self, rows: np.ndarray) -> np.ndarray:
        """The other search (ITL for TTFT and vice versa) of the same candidate."""
        return np.where(rows < self.v, rows + self.v, rows - self.v)

    def _prune(self, rows: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Of ``rows`` (active, with lower ends ``lo``), those that can no longer set the
        minimum (see ``cap``); they are stopped with result NaN."""
        if self.cap is None:
            return np.zeros(rows.size, dtype=bool)
        partner = self._partner(rows)
        bound = np.where(self.active[partner], self.hi[partner], self.result[partner])
        stop = lo >= np.fmin(bound, self.cap[rows])
        # Two brackets collapsed onto one point would stop each other: keep the TTFT one.
        stopping = np.zeros(2 * self.v, dtype=bool)
        stopping[rows[stop]] = True
        stop &= ~((rows < self.v) & stopping[partner])
        self.active[rows[stop]] = False
        self.result[rows[stop]] = np.nan
        return stop

    def _give_up(self, rows: np.ndarray) -> None:
        """Stop the candidates of ``rows`` whose min(λ_TTFT, λ_ITL, cap) is certainly below
        the floor (an active row's λ is at most its upper end, a stopped one's is its result
        or, NaN, not the minimum)."""
        if self.floor is None or rows.size == 0:
            return
        v = self.v
        cand = rows % v
        rows = np.concatenate([cand, cand + v])
        bound = np.where(self.active[rows], self.hi[rows], self.result[rows])
        cap = np.inf if self.cap is None else self.cap[cand]
        lowest = np.fmin(np.fmin(bound[:cand.size], bound[cand.size:]), cap)
        drop = cand[lowest < self.floor[cand]]
        if drop.size:
            self.given_up[drop] = True
            self.active[drop] = False
            self.active[drop + v] = False

    def _update(self, rows: np.ndarray, mid: np.ndarray, y: np.ndarray) -> None:
        t = self.target[rows]
        done = within(y, t) | (self.steps[rows] + 1 >= SEARCH_MAX_ITERATIONS)
        lower = ~done & _lowers(y, t, self.increasing[rows])
        higher = ~done & ~lower
        self.result[rows] = mid
        self.steps[rows] += 1
        self.active[rows[done]] = False
        if self.guess:
            self.lam_old[rows] = np.where(lower, self.hi[rows], self.lo[rows])
            self.y_old[rows] = np.where(lower, self.y_hi[rows], self.y_lo[rows])
            self.y_hi[rows[lower]] = y[lower]
            self.y_lo[rows[higher]] = y[higher]
        self.hi[rows[lower]] = mid[lower]
        self.lo[rows[higher]] = mid[higher]
        going = rows[~done]
        self._prune(going, self.lo[going])
        self._give_up(rows)

    def _direct_step(self) -> bool:
        """One halving of every active, unparked row by direct solves; False if none."""
        v = self.v
        rows = (self.active & ~self.parked).nonzero()[0]
        if rows.size == 0:
            return False
        mid = 0.5 * (self.lo[rows] + self.hi[rows])
        x = np.log(mid)
        # An ITL row whose TTFT partner halves the same bracket reuses the partner's solve.
        mid_of = np.full(2 * v, np.nan)
        mid_of[rows] = mid
        borrow = (rows >= v) & (mid_of[np.where(rows >= v, rows - v, 0)] == mid)
        own = (~borrow).nonzero()[0]
        cand = rows[own] % v
        order = np.argsort(cand, kind="stable")
        own, cand = own[order], cand[order]
        own_rows = rows[own]
        # After this step the bracket is [lo, mid] or [mid, hi], both within log(mid/lo)
        # of x: Taylor data taken here covers every later midpoint of the row.
        want = self.table.reach[cand] * np.log(mid[own] / self.lo[own_rows]) <= TAYLOR_REACH
        z0, z1, p_top, moments = self.table.direct(cand, x[own], want)
        p_zero = self.table.p_zero(cand, x[own], p_top)
        sums = self._sums
        sums[0, own_rows], sums[1, own_rows], sums[2, own_rows] = z0, z1, p_top
        sums[3, own_rows] = p_zero
        park = own_rows[want]
        self.parked[park] = True
        self.x_center[park] = x[own][want]
        self.p_top_center[park] = p_top[want]
        self.p_zero_center[park] = p_zero[want]
        self.moments[park] = moments
        # The borrowing ITL rows' solutions and metrics are their partners' (same point).
        y = np.empty(rows.size)
        y[own], itl = self._metric(own_rows, self.table.solution(
            cand, mid[own], sums[0, own_rows], sums[1, own_rows], sums[2, own_rows],
            sums[3, own_rows]))
        if borrow.any():
            dst = rows[borrow]
            src = dst - v
            at = np.empty(2 * v, dtype=np.int64)
            at[own_rows] = np.arange(own_rows.size)
            y[borrow] = itl[at[src]]
            shared = dst[self.parked[src]]
            self.parked[shared] = True
            self.x_center[shared] = self.x_center[shared - v]
            self.p_top_center[shared] = self.p_top_center[shared - v]
            self.p_zero_center[shared] = self.p_zero_center[shared - v]
            self.moments[shared] = self.moments[shared - v]
        self._update(rows, mid, y)
        return True

    def _series_phase(self, rows: np.ndarray) -> None:
        """Finish the parked rows with series solves.

        A search of at most `_GUESS_ROWS` rows guesses, each round, every row's next
        `_GUESS_STEPS` midpoints (see `_guess_path`), evaluates them in one vectorised call,
        and then applies the §2.7 rules to them in order, stopping at the first midpoint
        whose decision differs from the guess: every halving taken is decided by its own
        metric, exactly as one at a time (a solve is elementwise, so its value does not
        depend on the other points evaluated with it); a wrong guess only wastes the points
        after it. Larger phases halve every row once per round.
        """
        if rows.size == 0:
            return
        v, table = self.v, self.table
        cand = rows % v
        state = {
            "rows": rows, "lo": self.lo[rows], "hi": self.hi[rows],
            "y_lo": self.y_lo[rows], "y_hi": self.y_hi[rows],
            "lam_old": self.lam_old[rows], "y_old": self.y_old[rows],
            "target": self.target[rows], "inc": self.increasing[rows],
            "left": SEARCH_MAX_ITERATIONS - self.steps[rows],
            "xc": self.x_center[rows], "ptc": self.p_top_center[rows],
            "pzc": self.p_zero_center[rows], "jc": table.center[cand],
            # N and Q as floats: `chain_solution` would convert them on every step
            "n": table.num_servers[cand].astype(float), "q": table.num_queue[cand].astype(float),
            "dn": table.num_servers[cand] - table.center[cand],
            "log_mu_top": table.log_mu_top[cand], "ttft": rows < v,
        }
        coef = self.coef.take(cand)
        # (terms, 2, rows), filled in place; the moments are not needed after this
        series = np.empty((TAYLOR_TERMS, 2, rows.size))
        table.taylor_coefficients(cand, self.moments[rows], out=series)
        self.moments = np.zeros((0, TAYLOR_TERMS + 1))
        live = np.ones(rows.size, dtype=bool)
        # Guesses pay where per-call costs dominate (few rows); with many rows the gathers
        # and the points wasted after a wrong guess cost more than they save.
        guess = self.guess
        count: np.ndarray | None = None
        while True:
            s = state
            row_of: np.ndarray | slice
            at: tuple[np.ndarray, np.ndarray] | slice
            if not guess:  # the plain bisection: every row once, no gathers
                mid = 0.5 * (s["lo"] + s["hi"])
                mids, grid = mid[None], mid
                row_of = at = slice(None)
                coefs, shape = series, None
                cf = coef
            else:
                mids, count = self._guess_path(s["lo"], s["hi"], s["y_lo"], s["y_hi"],
                                               s["lam_old"], s["y_old"], s["target"],
                                               s["left"], _GUESS_STEPS)
                count[~live] = 0
                # the guessed points, row by row (ragged: each row up to its guessed end)
                row_of = np.repeat(np.arange(live.size), count)
                at = (np.arange(row_of.size)
                      - np.repeat(np.cumsum(count) - count, count), row_of)
                cf = coef.take(row_of)
                grid = mids
                coefs, shape = series[:, :, None, :], (2, *mids.shape)
            # The series sums on the whole (steps, rows) grid (no gathers of the 2·terms
            # coefficients per point), then only the guessed points go on.
            x = np.log(grid)
            h = x - s["xc"]
            z0, z1 = _horner(coefs, h, shape)
            p_top = s["ptc"] * np.exp(s["dn"] * h)
            # p_0 carries no e^{j·h} factor; the series drops the common e^{j_c·h}.
            p_zero = s["pzc"] * np.exp(-s["jc"] * h)
            sol = chain_solution(grid[at], z0[at], z1[at], p_top[at],
                                 (x - s["log_mu_top"])[at], s["n"][row_of], s["q"][row_of],
                                 p_zero[at])
            ttft = s["ttft"][row_of]
            lat = queue_metrics(self.model, sol, cf, ttft)
            if count is None:
                ys = np.where(ttft, lat.ttft_ms, lat.itl_ms)[None]
            else:
                ys = np.full(mids.shape, np.nan)
                ys[at] = np.where(ttft, lat.ttft_ms, lat.itl_ms)
            acting = live.copy()
            for i in range(mids.shape[0]):
                if count is not None:
                    acting &= i < count
                    if not acting.any():
                        break
                mid, y = mids[i], ys[i]
                done = acting & (within(y, s["target"]) | (s["left"] <= 1))
                lower = acting & ~done & _lowers(y, s["target"], s["inc"])
                higher = acting & ~done & ~lower
                self.result[s["rows"][acting]] = mid[acting]
                if guess:  # the points the next guesses interpolate
                    s["lam_old"] = np.where(lower, s["hi"],
                                            np.where(higher, s["lo"], s["lam_old"]))
                    s["y_old"] = np.where(lower, s["y_hi"],
                                          np.where(higher, s["y_lo"], s["y_old"]))
                    s["y_hi"] = np.where(lower, y, s["y_hi"])
                    s["y_lo"] = np.where(higher, y, s["y_lo"])
                s["hi"] = np.where(lower, mid, s["hi"])
                s["lo"] = np.where(higher, mid, s["lo"])
                s["left"] = s["left"] - acting
                live &= ~done
                # the next guessed point is on the path only if this halving was guessed
                if i + 1 < mids.shape[0]:
                    acting &= ~done & (lower == (mids[i + 1] < mid))
            if self.cap is not None:  # partners read each other's brackets
                going = live.nonzero()[0]
                self.active[s["rows"][~live]] = False
                self.hi[s["rows"][going]] = s["hi"][going]
                live[going[self._prune(s["rows"][going], s["lo"][going])]] = False
                if self.floor is not None:
                    self._give_up(s["rows"][going])
                    live &= self.active[s["rows"]]
            running = int(live.sum())
            if running == 0:
                break
            if running < _COMPACT_FRACTION * live.size:
                keep = live.nonzero()[0]
                state = {key: val[keep] for key, val in s.items()}
                coef = coef.take(keep)
                series = series[:, :, keep]
                live = np.ones(keep.size, dtype=bool)
        self.active[rows] = False

    @staticmethod
    def _guess_path(lo: np.ndarray, hi: np.ndarray, y_lo: np.ndarray, y_hi: np.ndarray,
                    lam_old: np.ndarray, y_old: np.ndarray, target: np.ndarray,
                    left: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """(mids, count): the next ``steps`` midpoints of each row's bisection, every
        halving decided by a guess of the root (inverse quadratic interpolation through
        the bracket ends and the end replaced last, else the secant of the bracket), shape
        (steps, rows); and per row how many of them to evaluate: up to the first one the
        guess puts within the tolerance (or the last step allowed), at least one."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = (y_hi - y_lo) / (hi - lo)
            root = lo + (target - y_lo) / slope
            a, b, c = y_lo - target, y_hi - target, y_old - target
            iqi = (lo * b * c / ((y_lo - y_hi) * (y_lo - y_old))
                   + hi * a * c / ((y_hi - y_lo) * (y_hi - y_old))
                   + lam_old * a * b / ((y_old - y_lo) * (y_old - y_hi)))
            root = np.where((iqi > lo) & (iqi < hi), iqi, root)
            band = SEARCH_TOLERANCE * np.abs(target) / np.abs(slope)
        sure = np.isfinite(root) & np.isfinite(band)
        root = np.where(sure, root, 0.5 * (lo + hi))
        mids = np.empty((steps, lo.size))
        count = np.where(sure, np.minimum(left, steps), 1)
        open_ = sure.copy()
        lo, hi = lo.copy(), hi.copy()
        for i in range(steps):
            mid = mids[i]
            np.add(lo, hi, out=mid)
            mid *= 0.5
            hit = open_ & (np.abs(mid - root) <= band)
            count[hit] = np.minimum(count[hit], i + 1)
            open_ &= ~hit
            above = mid > root
            np.copyto(hi, mid, where=above)
            np.copyto(lo, mid, where=~above)
        return mids, np.maximum(count, 1)
