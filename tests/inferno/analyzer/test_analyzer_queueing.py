"""Queue kernels against textbook closed forms (M/M/1/K, M/M/c/K) and against each other."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferno.analyzer.queueing import chain_solution, geometric_tail_sums, solve_birth_death

REL = 1e-9


def _mm1k(lam: float, mu: float, k: int) -> dict[str, float]:
    """M/M/1/K: p_j ∝ ρ^j; L = ρ/(1−ρ) − (K+1)ρ^{K+1}/(1−ρ^{K+1})."""
    rho = lam / mu
    p_k = rho**k * (1 - rho) / (1 - rho ** (k + 1))
    n_sys = rho / (1 - rho) - (k + 1) * rho ** (k + 1) / (1 - rho ** (k + 1))
    x = lam * (1 - p_k)
    return {"n_sys": n_sys, "p_block": p_k, "throughput": x, "resp": n_sys / x}


def _mmck(lam: float, mu: float, c: int, k: int) -> dict[str, float]:
    """M/M/c/K with a = λ/μ, ρ = a/c (ρ != 1):
    p0 = [Σ_{n<=c} aⁿ/n! + (a^c/c!)·Σ_{n=c+1..K} ρ^{n−c}]⁻¹,
    L_q = p0·a^c·ρ/(c!(1−ρ)²)·[1 − ρ^{K−c+1} − (1−ρ)(K−c+1)ρ^{K−c}],
    p_K = p0·a^c/c!·ρ^{K−c}, in service = a·(1 − p_K)."""
    a = lam / mu
    rho = a / c
    head = sum(a**n / math.factorial(n) for n in range(c + 1))
    tail = a**c / math.factorial(c) * sum(rho ** (n - c) for n in range(c + 1, k + 1))
    p0 = 1.0 / (head + tail)
    lq = (p0 * a**c * rho / (math.factorial(c) * (1 - rho) ** 2)
          * (1 - rho ** (k - c + 1) - (1 - rho) * (k - c + 1) * rho ** (k - c)))
    p_k = p0 * a**c / math.factorial(c) * rho ** (k - c)
    n_srv = a * (1 - p_k)
    x = lam * (1 - p_k)
    return {"n_sys": lq + n_srv, "n_srv": n_srv, "p_block": p_k, "throughput": x,
            "wait": lq / x}


@pytest.mark.parametrize(("lam", "mu", "k"), [(0.3, 1.0, 5), (0.9, 1.0, 40), (2.5, 1.0, 12),
                                              (1e-3, 0.02, 300)],
                         ids=["light", "heavy", "overload", "large-K"])
def test_mm1k_single_server(lam: float, mu: float, k: int) -> None:
    """N = 1, Q = K − 1 with constant μ is M/M/1/K: L, p_K, X, T and S = 1/μ."""
    ref = _mm1k(lam, mu, k)
    sol = solve_birth_death(np.array([lam]), np.log([[mu]]), np.array([1]), np.array([k - 1]))
    assert sol.valid[0]
    assert sol.n_sys[0] == pytest.approx(ref["n_sys"], rel=REL)
    assert sol.p_block[0] == pytest.approx(ref["p_block"], rel=REL)
    assert sol.throughput_rpms[0] == pytest.approx(ref["throughput"], rel=REL)
    assert sol.resp_ms[0] == pytest.approx(ref["resp"], rel=REL)
    assert sol.serv_ms[0] == pytest.approx(1.0 / mu, rel=REL)


def test_mm1k_all_states_in_service() -> None:
    """N = K with μ(n) = μ for every n is M/M/1/K too, with everyone 'in service'."""
    lam, mu, k = 0.7, 1.0, 9
    ref = _mm1k(lam, mu, k)
    sol = solve_birth_death(np.array([lam]), np.full((1, k), np.log(mu)), np.array([k]),
                            np.array([0]))
    assert sol.n_sys[0] == pytest.approx(ref["n_sys"], rel=REL)
    assert sol.n_srv[0] == pytest.approx(ref["n_sys"], rel=REL)
    assert sol.wait_ms[0] == 0.0


@pytest.mark.parametrize(("lam", "mu", "c", "k"),
                         [(1.5, 1.0, 3, 10), (7.0, 1.0, 8, 40), (12.0, 1.0, 4, 30),
                          (0.05, 0.01, 16, 100)],
                         ids=["small", "busy", "overload", "many-servers"])
def test_mmck_erlang(lam: float, mu: float, c: int, k: int) -> None:
    """μ(n) = n·μ up to c servers is M/M/c/K: L, X̄, p_K, X and W (Erlang closed form)."""
    ref = _mmck(lam, mu, c, k)
    log_mu = np.log(mu * np.arange(1, c + 1, dtype=float))[None, :]
    sol = solve_birth_death(np.array([lam]), log_mu, np.array([c]), np.array([k - c]))
    assert sol.n_sys[0] == pytest.approx(ref["n_sys"], rel=REL)
    assert sol.n_srv[0] == pytest.approx(ref["n_srv"], rel=REL)
    assert sol.p_block[0] == pytest.approx(ref["p_block"], rel=REL)
    assert sol.throughput_rpms[0] == pytest.approx(ref["throughput"], rel=REL)
    assert sol.wait_ms[0] == pytest.approx(ref["wait"], rel=REL)


def test_batched_rows_equal_single_rows() -> None:
    """A padded batch of mixed N, Q gives each row what it gives alone."""
    rng = np.random.default_rng(11)
    n = np.array([1, 3, 17, 64, 5])
    q = np.array([4, 0, 30, 200, 1])
    lam = rng.uniform(0.01, 2.0, n.size)
    log_mu = np.log(rng.uniform(0.1, 1.0, (n.size, 64)).cumsum(axis=1))
    both = solve_birth_death(lam, log_mu, n, q)
    for i in range(n.size):
        one = solve_birth_death(lam[i:i + 1], log_mu[i:i + 1, :n[i]], n[i:i + 1], q[i:i + 1])
        for field in ("n_sys", "n_srv", "throughput_rpms", "resp_ms", "p_block"):
            assert getattr(both, field)[i] == pytest.approx(getattr(one, field)[0], rel=1e-13)


def test_huge_occupancy_does_not_overflow() -> None:
    """K = 20000 in heavy overload stays finite (log-space normalisation)."""
    sol = solve_birth_death(np.array([5.0]), np.log([[1.0]]), np.array([1]), np.array([19999]))
    assert sol.valid[0]
    assert np.isfinite(sol.n_sys[0])
    assert sol.throughput_rpms[0] == pytest.approx(1.0, rel=1e-10)  # X = μ in overload


@pytest.mark.parametrize(("n", "q", "lam"), [(1, 0, 0.5), (0, 5, 0.5), (2, 2, 0.0),
                                             (2, 2, -1.0), (2, 2, np.nan)],
                         ids=["K=1", "N=0", "zero-rate", "negative-rate", "nan-rate"])
def test_invalid_rows_are_flagged_inf(n: int, q: int, lam: float) -> None:
    """Unsolvable rows come back valid=False with inf outputs, and do not disturb others."""
    sol = solve_birth_death(np.array([lam, 0.5]), np.log([[1.0, 2.0], [1.0, 2.0]]),
                            np.array([n, 2]), np.array([q, 2]))
    assert not sol.valid[0]
    assert np.isinf(sol.n_sys[0])
    assert np.isinf(sol.wait_ms[0])
    assert sol.valid[1]
    assert np.isfinite(sol.n_sys[1])


@pytest.mark.parametrize("q", [0, 1, 2, 7, 64, 640])
@pytest.mark.parametrize("d", [-1e-9, -1e-6, -1e-3, -0.05, -0.3, -2.0, -40.0, 0.0, 0.01],
                         ids=lambda d: f"d={d:g}")
def test_geometric_tail_sums_match_explicit_sum(d: float, q: int) -> None:
    """G0 = Σ e^{kd}, G1 = Σ k·e^{kd} (k = 1..Q) to 1e-14 for tiny and large |Q·d|."""
    terms = [math.exp(k * d) for k in range(1, q + 1)]
    g0 = math.fsum(terms)
    g1 = math.fsum(k * t for k, t in enumerate(terms, start=1))
    got0, got1 = geometric_tail_sums(np.array([d]), np.array([q]))
    assert got0[0] == pytest.approx(g0, rel=1e-14, abs=0.0)
    assert got1[0] == pytest.approx(g1, rel=1e-14, abs=0.0)


def test_chain_solution_equals_full_state_kernel() -> None:
    """In-service sums plus the closed-form tail equal the full-state solve."""
    rng = np.random.default_rng(5)
    n, q = 40, 75
    log_mu = np.log(np.arange(1, n + 1) / (50.0 + 3.0 * np.arange(1, n + 1)))
    lam = 0.9 * np.exp(log_mu[-1])
    full = solve_birth_death(np.array([lam]), log_mu[None, :], np.array([n]), np.array([q]))
    j = np.arange(n + 1)
    cum = np.concatenate([[0.0], np.cumsum(log_mu)])
    p = np.exp(j * np.log(lam) - cum - 7.0)  # any common scale
    shift = rng.uniform(0.5, 2.0)
    sol = chain_solution(np.array([lam]), np.array([p.sum() * shift]),
                         np.array([(j * p).sum() * shift]), np.array([p[-1] * shift]),
                         np.array([np.log(lam) - log_mu[-1]]), np.array([n]), np.array([q]))
    for field in ("n_sys", "n_srv", "throughput_rpms", "resp_ms", "serv_ms", "wait_ms",
                  "p_block"):
        assert getattr(sol, field)[0] == pytest.approx(getattr(full, field)[0], rel=1e-12)
