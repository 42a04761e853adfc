"""Prepared birth–death chains for solving many candidates at many arrival rates (sizing).

Sizing solves each candidate's queue some 20–60 times at different λ while μ(n) stays fixed,
so everything that does not depend on λ is computed once: C_j = Σ_{i<=j} log μ(i) for the
in-service states j = 0..N (stored with a per-candidate shift that keeps every term <= 1 for
λ <= λ_max), and the queue states above N are summed in closed form
(`queueing.geometric_tail_sums`). One solve is then a rank-2 product (x·j), a subtraction,
a clamp, one ``exp`` and one small matrix product over the N + 1 in-service states.

Candidates are bucketed by N (rows padded to a multiple of `BUCKET_QUANTUM` states) and each
bucket is processed in cache-sized row blocks. Once a bisection bracket is narrow, the
in-service sums are continued by a Taylor series in h = log λ − log λ_c around the last
direct solve (moments of the state distribution, one matrix product), which costs O(terms)
instead of O(N) per solve and is accurate to ~1e-14 relative while `TAYLOR_REACH` bounds
D·|h| (D the largest |j − j_c| of the row).
"""

from __future__ import annotations

import functools

import numpy as np

from inferno.analyzer.queueing import QueueSolution, chain_solution, geometric_tail_sums

__all__ = ["BUCKET_QUANTUM", "TAYLOR_REACH", "TAYLOR_TERMS", "ChainTable", "bucket_layout"]

BUCKET_QUANTUM = 16
"""In-service states per row are padded to a multiple of this (padding waste vs. calls)."""
BLOCK_ELEMENTS = 1 << 17
"""Elements per row block of a direct solve (~1 MiB of float64: stays in L2)."""
TAYLOR_TERMS = 23
"""Series terms h^0..h^22; the remainder is < e^r·r^23/23! ≈ 2e-18 at r = D|h| <= 1.5, and
rounding in the alternating sum stays below ~e^{2r}·ε ≈ 5e-15."""
TAYLOR_REACH = 1.5
"""Largest D·|h| at which the series replaces a direct solve (tuned: a larger reach saves
direct solves but lengthens every series evaluation)."""
_LOG_FLOOR = -700.0
"""Log-terms are raised to this before ``exp``: terms that small are < e^-50 of the leading
one (so the sums do not change), and ``exp`` of anything lower would yield subnormals or
zeros, which take a slow path costing 5–40× a normal ``exp``."""
_SHIFT_LIMIT = 650.0
"""Rows whose largest log-term at λ_max exceeds this (N in the many hundreds) use an exact
per-solve maximum instead of the fixed shift, so the leading term can never underflow."""


def bucket_layout(num_servers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, widths): candidates sorted by N and cut into buckets of equal width.

    ``order`` permutes candidates so each bucket is contiguous; bucket b covers sorted rows
    starts[b]:starts[b+1] and holds in-service states 0..widths[b]−1 (>= N + 1).
    """
    n = np.asarray(num_servers, dtype=np.int64)
    if n.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(0, np.int64)
    order = np.argsort(n, kind="stable")
    width = (n[order] + BUCKET_QUANTUM) // BUCKET_QUANTUM * BUCKET_QUANTUM
    cut = np.flatnonzero(np.diff(width)) + 1
    starts = np.concatenate([[0], cut, [n.size]]).astype(np.int64)
    widths = width[starts[:-1]]
    return order, starts, widths


class _Bucket:
    """One bucket: rows start:stop of the table, states 0..width−1."""

    __slots__ = ("_vv", "block", "cum", "exact_max", "jm", "rank2", "start", "stop",
                 "states", "width")

    def __init__(self, start: int, cum: np.ndarray, exact_max: bool) -> None:
        self.start = start
        self.stop = start + cum.shape[0]
        self.width = cum.shape[1]
        self.cum = cum
        self.exact_max = exact_max
        constants = _state_constants if self.width <= _CACHED_WIDTH else _state_constants_of
        self.states, self.jm, self.rank2 = constants(self.width)
        self.block = max(8, BLOCK_ELEMENTS // self.width)
        self._vv: np.ndarray | None = None

    @property
    def vv(self) -> np.ndarray:
        """Taylor moment weights, built on first use (wide buckets rarely need them)."""
        if self._vv is None:
            self._vv = (_moment_weights(self.width) if self.width <= _CACHED_WIDTH
                        else _moment_weights_of(self.width))
        return self._vv


_CACHED_WIDTH = 512
"""Constants of bucket widths up to this are cached across tables (the search's widths);
wider ones (huge batches) are rebuilt per table, so the caches stay below ~10 MiB."""


def _state_constants_of(width: int) -> tuple[np.ndarray, ...]:
    """(states, [1, j], [j; 0]) of a bucket width: pure constants, read-only and shared by
    every table (rebuilding them per probe cost ~5% of a search)."""
    states = np.arange(width, dtype=float)
    jm = np.stack([np.ones(width), states], axis=1)
    rank2 = np.stack([states, np.zeros(width)])
    for a in (states, jm, rank2):
        a.flags.writeable = False
    return states, jm, rank2


_state_constants = functools.lru_cache(maxsize=64)(_state_constants_of)


def _moment_weights_of(width: int) -> np.ndarray:
    """(j − j_c)^k/k! for states j < width, k = 0..TAYLOR_TERMS (read-only).

    Built column by column as ((j − j_c)/k)·column k−1: ten times faster than ``**`` for
    the wide buckets of large batches, and within ~1e-15 of it (the series' own rounding).
    """
    offset = np.arange(width, dtype=float) - (width - 1) / 2.0
    vv = np.empty((width, TAYLOR_TERMS + 1))
    vv[:, 0] = 1.0
    for k in range(1, TAYLOR_TERMS + 1):
        np.multiply(vv[:, k - 1], offset / k, out=vv[:, k])
    vv.flags.writeable = False
    return vv


_moment_weights = functools.lru_cache(maxsize=64)(_moment_weights_of)


class ChainTable:
    """In-service log-terms of V candidates, ready for solves at any λ <= λ_max.

    Parameters
    ----------
    log_mu : list of ndarray, one (R_b, W_b) array per bucket of `bucket_layout`
        Column 0 is ignored; columns n = 1..W_b−1 hold log μ(n) (req/ms), +inf for n > N
        (those states get probability 0). The arrays are turned into the table in place.
    num_servers, num_queue : ndarray of int, shape (V,), in bucket order
    lam_max_rpms : ndarray, shape (V,), the largest λ any solve will use (req/ms)
    monotone : ndarray of bool, shape (V,), optional; rows whose μ(n) is known non-decreasing
    """

    def __init__(self, log_mu: list[np.ndarray], num_servers: np.ndarray,
                 num_queue: np.ndarray, lam_max_rpms: np.ndarray,
                 monotone: np.ndarray | None = None) -> None:
        self.num_servers = np.asarray(num_servers, dtype=np.int64)
        self.monotone = (np.zeros(self.num_servers.size, dtype=bool) if monotone is None
                         else np.asarray(monotone, dtype=bool))
        """μ(n) is non-decreasing in n (enables `solve_light`)."""
        self.num_queue = np.asarray(num_queue, dtype=np.int64)
        size = self.num_servers.size
        self.cum_top = np.empty(size)
        self.cum_zero = np.empty(size)
        self.exact_rows = np.zeros(size, dtype=bool)
        self.log_mu_top = np.empty(size)
        self.center = np.empty(size)
        x_max = np.log(lam_max_rpms)
        self.buckets: list[_Bucket] = []
        start = 0
        for cum in log_mu:
            rows, width = cum.shape
            n = self.num_servers[start:start + rows]
            r = np.arange(rows)
            self.log_mu_top[start:start + rows] = cum[r, n]
            cum[:, 0] = 0.0
            np.cumsum(cum, axis=1, out=cum)
            top = cum[r, n]
            shift = self._max_term(cum, x_max[start:start + rows])
            exact = bool(np.any(shift > _SHIFT_LIMIT))
            if not exact:
                cum += shift[:, None]
                top = top + shift
            self.cum_top[start:start + rows] = top
            self.cum_zero[start:start + rows] = cum[:, 0]
            self.center[start:start + rows] = (width - 1) / 2.0
            self.buckets.append(_Bucket(start, cum, exact))
            self.exact_rows[start:start + rows] = exact
            start += rows
        self._buffers = [np.empty(0), np.empty(0)]
        self.reach = np.maximum(self.center, self.num_servers - self.center)
        """D: the largest |j − j_c| over a row's in-service states (Taylor radius scale)."""

    def __len__(self) -> int:
        return self.num_servers.size

    @staticmethod
    def _max_term(cum: np.ndarray, x_max: np.ndarray) -> np.ndarray:
        """max_j (j·x_max − C_j) per row, in row blocks (no full-size temporary)."""
        rows, width = cum.shape
        out = np.empty(rows)
        states = np.arange(width, dtype=float)
        step = max(1, BLOCK_ELEMENTS // width)
        for r0 in range(0, rows, step):
            e = np.multiply(x_max[r0:r0 + step, None], states)
            e -= cum[r0:r0 + step]
            out[r0:r0 + step] = e.max(axis=1)
        return out

    def _scratch(self, size: int, slot: int = 0) -> np.ndarray:
        """A reused work buffer (fresh large allocations cost page faults on every solve)."""
        if self._buffers[slot].size < size:
            self._buffers[slot] = np.empty(size)
        return self._buffers[slot][:size]

    def direct(self, cand: np.ndarray, x: np.ndarray, want_moments: np.ndarray | None = None,
               *, states: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """In-service sums at log-rates ``x`` for candidates ``cand`` (both shape (P,)).

        ``cand`` must be sorted ascending. Returns (z0, z1, p_top, moments): z0 = Σ p_j,
        z1 = Σ j·p_j over j <= N and p_top = p_N, on one unnormalised scale per point (p_0 on
        the same scale: `p_zero`); moments
        (P_w, TAYLOR_TERMS + 1) holds, for the points where ``want_moments`` is set,
        M_k = Σ p_j·(j − j_c)^k/k!, k = 0..TAYLOR_TERMS (see `taylor_coefficients`).
        ``states`` limits the sums to states j < ``states``: the caller vouches that the
        states left out are negligible (see `solve_light`).
        """
        cand = np.asarray(cand, dtype=np.int64)
        x = np.asarray(x, dtype=float)
        points = cand.size
        z = np.empty((points, 2))
        extra = np.zeros(points)
        want = np.zeros(points, dtype=bool) if want_moments is None else want_moments
        slot = np.cumsum(want) - 1
        moments = np.empty((int(want.sum()), TAYLOR_TERMS + 1))
        bounds = np.searchsorted(cand, [(b.start, b.stop) for b in self.buckets])
        for b, (p0, p1) in zip(self.buckets, bounds, strict=True):
            if p1 <= p0:
                continue
            rows = cand[p0:p1] - b.start
            contiguous = rows.size < 2 or bool((rows[1:] - rows[:-1] == 1).all())
            width = b.width if states is None else min(states, b.width)
            bcum = b.cum if width == b.width else b.cum[:, :width]
            buf = self._scratch(b.block * width).reshape(b.block, width)
            for q0 in range(p0, p1, b.block):
                q1 = min(q0 + b.block, p1)
                e = buf[:q1 - q0]
                if contiguous:
                    cum = bcum[rows[q0 - p0]:rows[q1 - p0 - 1] + 1]
                else:
                    cum = bcum[rows[q0 - p0:q1 - p0]]
                # x·j as a rank-2 product [x, 1]·[j; 0]: BLAS does it 3x faster than a
                # broadcast multiply.
                xs = self._scratch(2 * (q1 - q0), 1).reshape(q1 - q0, 2)
                xs[:, 0] = x[q0:q1]
                xs[:, 1] = 0.0
                np.matmul(xs, b.rank2[:, :width], out=e)
                np.subtract(e, cum, out=e)
                if b.exact_max:
                    extra[q0:q1] = e.max(axis=1)
                    e -= extra[q0:q1, None]
                np.maximum(e, _LOG_FLOOR, out=e)
                np.exp(e, out=e)
                np.matmul(e, b.jm[:width], out=z[q0:q1])
                w = want[q0:q1]
                if w.any():
                    moments[slot[q0:q1][w]] = e[w] @ b.vv[:width]
        with np.errstate(under="ignore"):
            p_top = np.exp(self.num_servers[cand] * x - self.cum_top[cand] - extra)
        return z[:, 0], z[:, 1], p_top, moments

    def p_zero(self, cand: np.ndarray, x: np.ndarray, p_top: np.ndarray) -> np.ndarray:
        """p_0 on the scale of `direct`'s sums at log-rates ``x`` (given its ``p_top``).

        Fixed-shift rows: e^{−C_0}, whatever λ. Exact-maximum rows (N in the hundreds) divide
        by the per-solve maximum M: p_0 = e^{−C_0 − M}, with M = N·x − C_N − log p_N, or a
        direct maximum where p_N underflowed.
        """
        cand = np.asarray(cand, dtype=np.int64)
        x = np.asarray(x, dtype=float)
        rows = self.exact_rows[cand].nonzero()[0]
        extra = np.zeros(cand.size)
        if rows.size:
            with np.errstate(divide="ignore"):
                top = (self.num_servers[cand[rows]] * x[rows] - self.cum_top[cand[rows]]
                       - np.log(p_top[rows]))
            lost = ~np.isfinite(top)
            if lost.any():
                top[lost] = self._max_at(cand[rows[lost]], x[rows[lost]])
            extra[rows] = top
        with np.errstate(under="ignore"):
            return np.exp(-self.cum_zero[cand] - extra)

    def _max_at(self, cand: np.ndarray, x: np.ndarray) -> np.ndarray:
        """max_j (j·x − C_j) per point (the exact-maximum rows' per-solve scale)."""
        out = np.empty(cand.size)
        for i, (c, xi) in enumerate(zip(cand, x, strict=True)):
            b = next(b for b in self.buckets if b.start <= c < b.stop)
            out[i] = float(np.max(xi * b.states - b.cum[c - b.start]))
        return out

    def solution(self, cand: np.ndarray, lam_rpms: np.ndarray, z0: np.ndarray, z1: np.ndarray,
                 p_top: np.ndarray, p_zero: np.ndarray | None = None) -> QueueSolution:
        """`queueing.chain_solution` for points (cand, λ) from their in-service sums."""
        d = np.log(lam_rpms) - self.log_mu_top[cand]
        if p_zero is None:
            p_zero = self.p_zero(cand, np.log(lam_rpms), p_top)
        return chain_solution(lam_rpms, z0, z1, p_top, d, self.num_servers[cand],
                              self.num_queue[cand], p_zero)

    def solve(self, cand: np.ndarray, lam_rpms: np.ndarray) -> QueueSolution:
        """Direct solve at arrival rates ``lam_rpms`` (req/ms, <= λ_max) for sorted ``cand``."""
        lam = np.asarray(lam_rpms, dtype=float)
        z0, z1, p_top, _ = self.direct(cand, np.log(lam))
        return self.solution(cand, lam, z0, z1, p_top)

    def state_probabilities(self, cand: np.ndarray, lam_rpms: np.ndarray) -> np.ndarray:
        """p_j, j = 0..W−1, normalised over all states (0 past N) at ``lam_rpms`` (<= λ_max)
        for sorted ``cand``; shape (P, W), W the widest bucket of ``cand``.

        The in-service terms of `direct` kept per state (the distributions need them), with
        the queue states summed in closed form for the normalisation.
        """
        cand = np.asarray(cand, dtype=np.int64)
        x = np.log(np.asarray(lam_rpms, dtype=float))
        bounds = np.searchsorted(cand, [(b.start, b.stop) for b in self.buckets])
        used = [(b, p0, p1) for b, (p0, p1) in zip(self.buckets, bounds, strict=True)
                if p1 > p0]
        width = max((b.width for b, _, _ in used), default=1)
        out = np.zeros((cand.size, width))
        for b, p0, p1 in used:
            e = x[p0:p1, None] * b.states[None, :] - b.cum[cand[p0:p1] - b.start]
            if b.exact_max:
                e -= e.max(axis=1, keepdims=True)
            with np.errstate(under="ignore"):
                # Terms below the floor are < e^-50 of the leading one: exactly 0 here.
                out[p0:p1, :b.width] = np.where(e > _LOG_FLOOR, np.exp(e), 0.0)
        n = self.num_servers[cand]
        out[np.arange(width)[None, :] > n[:, None]] = 0.0
        p_top = out[np.arange(cand.size), n]
        g0, _ = geometric_tail_sums(x - self.log_mu_top[cand], self.num_queue[cand])
        return out / (out.sum(axis=1) + p_top * g0)[:, None]

    def solve_light(self, cand: np.ndarray, lam_rpms: np.ndarray) -> QueueSolution:
        """`solve` at λ <= ε·μ(1) (the bottom of the rate range), for sorted ``cand``.

        Where μ is non-decreasing (``monotone``), each state is at least 1/ε = 1000 times
        less likely than the one below it, so states past the first `BUCKET_QUANTUM` weigh
        less than 1e-48 and are skipped; other rows are solved in full.
        """
        lam = np.asarray(lam_rpms, dtype=float)
        x = np.log(lam)
        z0, z1, p_top = np.empty(cand.size), np.empty(cand.size), np.empty(cand.size)
        light = self.monotone[cand]
        for sel, states in ((light, BUCKET_QUANTUM), (~light, None)):
            if sel.any():
                z0[sel], z1[sel], p_top[sel], _ = self.direct(cand[sel], x[sel], states=states)
        return self.solution(cand, lam, z0, z1, p_top)

    def taylor_coefficients(self, cand: np.ndarray, moments: np.ndarray,
                            out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Series coefficients of z0 and z1 in h, coefficient-major (TAYLOR_TERMS, P).

        With p_j(x_c + h) = p_j(x_c)·e^{j_c·h}·e^{(j − j_c)·h}, and dropping the common
        factor e^{j_c·h}: z0 = Σ_k M_k·h^k and z1 = Σ_k ((k+1)·M_{k+1} + j_c·M_k)·h^k, from
        the moments M (P, TAYLOR_TERMS + 1) of `direct`. The remainder is below
        e^{D|h|}·(D|h|)^T/T! relative, D = ``reach``. ``out`` (TAYLOR_TERMS, 2, P), if
        given, receives both (z0 in ``out[:, 0]``, z1 in ``out[:, 1]``) without temporaries.
        """
        m = moments.T
        k = np.arange(1, TAYLOR_TERMS + 1, dtype=float)[:, None]
        if out is None:
            out = np.empty((TAYLOR_TERMS, 2, m.shape[1]))
        np.multiply(k, m[1:], out=out[:, 1])
        out[:, 1] += self.center[cand][None, :] * m[:-1]
        out[:, 0] = m[:-1]
        return out[:, 0], out[:, 1]
