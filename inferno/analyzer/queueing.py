"""Numpy kernels of the state-dependent birth–death queue of one replica
(docs/design/optimizer-model.md §2.2).

States j = 0..K (K = N + Q) count the requests in the replica; arrivals come at rate λ in
every state below K and are lost in state K; the departure rate in state j >= 1 is
μ(min(j, N)). With C_j = Σ_{i<=j} log μ(i) for j <= N, the unnormalised log-probabilities
are log p_j = j·log λ − C_j in service and log p_{N+k} = log p_N + k·(log λ − log μ(N)) in
the queue, normalised in log space so that large K cannot overflow.

Kernels here are pure functions over arrays with a leading candidate axis C (rates in req/ms,
times in ms). They know nothing of LLMs, configs or dataclasses, and never raise on a bad row:
rows that cannot be solved come back with ``valid == False`` and ``inf`` outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "QueueSolution",
    "chain_solution",
    "geometric_tail_sums",
    "solve_birth_death",
    "state_probabilities",
]


class QueueSolution(NamedTuple):
    """Stationary measures of the queue, every field an ndarray of shape (C,).

    n_sys : mean number in the replica; n_srv : mean number in service (X̄);
    throughput_rpms : X = λ·(1 − p_K) (req/ms); resp_ms : T = n_sys/X; serv_ms : S = n_srv/X;
    wait_ms : W = T − S (= mean queue length / X, >= 0); p_block : p_K; p_idle : p_0, the
    replica empty; p_wait : Σ_{N<=j<K} p_j, all N slots busy and a queue slot free (an arrival
    then waits); valid : False where the row could not be solved (K <= 1, λ <= 0, non-finite
    input), whose other fields are ``inf``.
    """

    n_sys: np.ndarray
    n_srv: np.ndarray
    throughput_rpms: np.ndarray
    resp_ms: np.ndarray
    serv_ms: np.ndarray
    wait_ms: np.ndarray
    p_block: np.ndarray
    p_idle: np.ndarray
    p_wait: np.ndarray
    valid: np.ndarray


def _invalidate(sol: QueueSolution, valid: np.ndarray) -> QueueSolution:
    return QueueSolution._make([*(np.where(valid, f, np.inf) for f in sol[:-1]), valid])


def solve_birth_death(lam_rpms: np.ndarray, log_mu: np.ndarray, num_servers: np.ndarray,
                      num_queue: np.ndarray) -> QueueSolution:
    """Solve the queue for C candidates at once (the reference kernel; any λ > 0).

    Parameters
    ----------
    lam_rpms : ndarray, shape (C,)
        Arrival rate λ (req/ms).
    log_mu : ndarray, shape (C, S)
        log μ(n) for n = 1..S (req/ms), S >= max(num_servers); columns past a row's N are
        ignored (padding).
    num_servers : ndarray of int, shape (C,)
        N, the most requests in service (batch size), >= 1.
    num_queue : ndarray of int, shape (C,)
        Q, the waiting slots, >= 0. The state space is 0..K with K = N + Q.

    Returns
    -------
    QueueSolution of (C,) arrays; rows with K <= 1 (upstream's invalid model), λ <= 0 or
    non-finite μ are ``valid == False``.
    """
    lam, n, q, p, z, valid = _states(lam_rpms, log_mu, num_servers, num_queue)
    n_safe = np.where(valid, n, 1)
    q_safe = np.where(valid, q, 1)
    lam_safe = np.where(valid, lam, 1.0)
    jj = np.arange(p.shape[1])[None, :]
    n_srv = (p * np.minimum(jj, n_safe[:, None])).sum(axis=1) / z
    n_queue = (p * np.maximum(jj - n_safe[:, None], 0)).sum(axis=1) / z
    p_block = np.take_along_axis(p, (n_safe + q_safe)[:, None], axis=1)[:, 0] / z
    waiting = (jj >= n_safe[:, None]) & (jj < (n_safe + q_safe)[:, None])
    sol = _assemble(lam_safe, n_srv, n_queue, p_block, p[:, 0] / z,
                    (p * waiting).sum(axis=1) / z)
    return _invalidate(sol, valid)


def state_probabilities(lam_rpms: np.ndarray, log_mu: np.ndarray, num_servers: np.ndarray,
                        num_queue: np.ndarray, width: int) -> np.ndarray:
    """p_j for j = 0..width−1 (normalised over all K + 1 states), 0 past N; shape (C, width).

    Same inputs and validity rules as `solve_birth_death`; invalid rows are all zero.
    """
    _, n, _, p, z, valid = _states(lam_rpms, log_mu, num_servers, num_queue)
    out = np.zeros((p.shape[0], width))
    cols = min(width, p.shape[1])
    keep = np.arange(cols)[None, :] <= n[:, None]
    out[:, :cols] = np.where(keep & valid[:, None], p[:, :cols] / z[:, None], 0.0)
    return out


def _states(lam_rpms: np.ndarray, log_mu: np.ndarray, num_servers: np.ndarray,
            num_queue: np.ndarray) -> tuple[np.ndarray, ...]:
    """(λ, N, Q, unnormalised p (C, K_max+1), z, valid) of `solve_birth_death`."""
    lam = np.asarray(lam_rpms, dtype=float)
    log_mu = np.atleast_2d(np.asarray(log_mu, dtype=float))
    n = np.asarray(num_servers, dtype=np.int64)
    q = np.asarray(num_queue, dtype=np.int64)
    k = n + q
    width = log_mu.shape[1]
    cols = np.arange(width)
    in_service = cols[None, :] < n[:, None]
    valid = ((k >= 2) & (n >= 1) & (q >= 0) & (n <= width) & (lam > 0) & np.isfinite(lam)
             & np.all(np.isfinite(log_mu) | ~in_service, axis=1))
    n_safe = np.where(valid, n, 1)
    q_safe = np.where(valid, q, 1)
    lam_safe = np.where(valid, lam, 1.0)
    log_mu_safe = np.where(in_service & valid[:, None], log_mu, 0.0)
    x = np.log(lam_safe)
    cum = np.cumsum(log_mu_safe, axis=1)
    log_mu_top = np.take_along_axis(log_mu_safe, (n_safe - 1)[:, None], axis=1)[:, 0]
    cum_top = np.take_along_axis(cum, (n_safe - 1)[:, None], axis=1)[:, 0]
    k_max = int((n_safe + q_safe).max(initial=2))
    j = np.arange(k_max + 1)
    jj = j[None, :]
    serv_part = np.concatenate([np.zeros((lam.size, 1)), cum], axis=1)
    if serv_part.shape[1] < k_max + 1:
        serv_part = np.pad(serv_part, ((0, 0), (0, k_max + 1 - serv_part.shape[1])))
    serv_part = serv_part[:, :k_max + 1]
    log_p_in = jj * x[:, None] - serv_part
    log_p_top = n_safe * x - cum_top
    log_p_queue = log_p_top[:, None] + (jj - n_safe[:, None]) * (x - log_mu_top)[:, None]
    log_p = np.where(jj <= n_safe[:, None], log_p_in, log_p_queue)
    log_p = np.where(jj <= (n_safe + q_safe)[:, None], log_p, -np.inf)
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return lam, n, q, p, p.sum(axis=1), valid


def _assemble(lam: np.ndarray, n_srv: np.ndarray, n_queue: np.ndarray,
              p_block: np.ndarray, p_idle: np.ndarray, p_wait: np.ndarray) -> QueueSolution:
    """Little's law on the three means. W = n_queue/X equals max(0, T − S) exactly in real
    arithmetic and avoids the cancellation of T − S when the queue is nearly empty."""
    x_rate = lam * (1.0 - p_block)
    n_sys = n_srv + n_queue
    return QueueSolution(n_sys, n_srv, x_rate, n_sys / x_rate, n_srv / x_rate,
                         n_queue / x_rate, p_block, p_idle, p_wait,
                         np.ones(lam.shape, dtype=bool))


_PSI_SERIES = (1.0 / 2.0, 1.0 / 12.0, 0.0, -1.0 / 720.0, 0.0, 1.0 / 30240.0, 0.0,
               -1.0 / 1209600.0, 0.0, 1.0 / 47900160.0)
"""t/(1 − e^{−t}) − 1 = Σ B⁺_n tⁿ/n! (n >= 1); enough terms for |t| < 0.2 to ~1e-17."""


def _mean_small(qd: np.ndarray, d: np.ndarray) -> np.ndarray:
    """1 + (ψ(Q·d) − ψ(d))/d by the series of ψ(t) = t/(1 − e^{−t}) − 1, for |Q·d| < 0.2."""
    acc_q = np.zeros_like(qd)
    acc_1 = np.zeros_like(d)
    for coef in reversed(_PSI_SERIES):
        acc_q = (acc_q + coef) * qd
        acc_1 = (acc_1 + coef) * d
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d == 0, np.nan, 1.0 + (acc_q - acc_1) / d)


def geometric_tail_sums(d: np.ndarray, num_queue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G0, G1) = (Σ_{k=1..Q} e^{k·d}, Σ_{k=1..Q} k·e^{k·d}) without cancellation.

    The queue states above N have probabilities p_N·e^{k·d} with d = log(λ/μ(N)); these sums
    replace Q explicit states. G0 = e^d·(e^{Qd} − 1)/(e^d − 1), and the mean k = G1/G0 is
    Q/(e^{Qd} − 1) + Q − 1/(e^d − 1) = 1 + (ψ(Q·d) − ψ(d))/d with ψ(t) = t/(1 − e^{−t}) − 1;
    the first form loses ~ε/(Q·|d|) relative to cancellation, so rows with Q·|d| < 0.2 use
    the series of ψ instead.

    Parameters
    ----------
    d : ndarray, shape (C,), log(λ/μ(N)) <= 0 (d > 0 is allowed while e^{Q·d} is finite)
    num_queue : ndarray of int, shape (C,), Q >= 0
    """
    d = np.asarray(d, dtype=float)
    q = np.asarray(num_queue, dtype=float)
    qd = q * d
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        em1 = np.expm1(d)
        eq = np.expm1(qd)
        g0 = np.exp(d) * eq / em1
        mean_k = q / eq + q - 1.0 / em1
    # Q = 0 rows need no mean (G1 = 0), however small Q·d is
    small = ((np.abs(qd) < 0.2) & (q != 0)).nonzero()[0]
    if small.size:
        mean_k[small] = _mean_small(qd[small], d[small])
    zero = d == 0
    if zero.any():
        g0 = np.where(zero, q, g0)
        mean_k = np.where(zero, (q + 1.0) / 2.0, mean_k)
    return g0, np.where(q == 0, 0.0, g0 * mean_k)


def chain_solution(lam_rpms: np.ndarray, z0: np.ndarray, z1: np.ndarray, p_top: np.ndarray,
                   d: np.ndarray, num_servers: np.ndarray, num_queue: np.ndarray,
                   p_zero: np.ndarray | None = None) -> QueueSolution:
    """Assemble the solution from the in-service sums and the geometric queue tail.

    All sums share one (arbitrary) scale: z0 = Σ_{j<=N} p_j, z1 = Σ_{j<=N} j·p_j,
    p_top = p_N and p_zero = p_0, unnormalised; d = log(λ/μ(N)) <= 0. Shapes (C,).
    Without ``p_zero`` the solution's ``p_idle`` is NaN.
    """
    if p_zero is None:
        p_zero = np.full(np.shape(z0), np.nan)
    n = np.asarray(num_servers, dtype=float)
    q = np.asarray(num_queue, dtype=float)
    g0, g1 = geometric_tail_sums(d, num_queue)
    tail = p_top * g0
    z = z0 + tail
    n_srv = (z1 + n * tail) / z
    with np.errstate(under="ignore"):
        last = p_top * np.exp(q * d)
    return _assemble(np.asarray(lam_rpms, dtype=float), n_srv, p_top * g1 / z, last / z,
                     p_zero / z, (p_top + tail - last) / z)
