"""Multi-observation fits of α, β, γ: Nelder–Mead, sliding-window refit, identifiability guard.

docs/design/optimizer-model.md §6.5–6.7. The objective is the sum of squared relative residuals of
TTFT and ITL over
the observations. The search runs in scaled log coordinates u = ln(x / x_start), so every
trial point is positive and all three parameters move on the same scale although α is ~10⁴×
γ. Nelder–Mead does the global part from a start that may be 2× off; a Levenberg–Marquardt
polish on the same residuals then takes the fit to machine precision, which the simplex
alone reaches only after thousands of evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

from inferno.model import PerfParms
from inferno.tuner.observation import ObservationSet, TunerObservation, as_parms

Residuals = Callable[[np.ndarray], np.ndarray]
"""Maps parameter rows (P, 3) = α, β, γ (ms) to residual rows (P, k)."""

BAD_RESIDUAL = 1e6
"""Stands in for a residual the model cannot produce (overflow far outside the physical
range), so searches see a large but finite penalty."""
COLD_STEP = 0.3
"""Initial simplex edge in log coordinates for a cold start: +35 %, the scale of 2× off."""
WARM_STEP = 0.05
"""Initial simplex edge for a warm start (window refits): +5 %."""
MAX_LOG_STEP = np.log(1e6)
"""A search is confined to a factor 10⁶ around its start (the valley of an unidentifiable
problem is unbounded; beyond this nothing is physical and exp would overflow)."""
_NM_XATOL = 1e-3
_NM_FATOL = 1e-8
"""Nelder–Mead only has to reach the basin (0.1 % in log coordinates); the LM polish does the
rest in ~20 evaluations where the simplex would need hundreds more."""
_LOG_STEP = 1e-3
"""Relative step of the condition-number Jacobian (upstream: x·1.001 and x·0.999)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """Outcome of one fit; a failed fit is a result (``success`` False), not an exception."""

    x: tuple[float, float, float]
    """α, β, γ (ms)."""
    fun: float
    """Sum of squared relative residuals at ``x``."""
    kappa: float
    """Condition number of the residual Jacobian w.r.t. ln x at ``x`` (inf: unidentifiable)."""
    num_obs: int
    nfev: int
    success: bool
    message: str
    dropped: tuple[int, ...] = ()
    """Indexes of observations left out as outliers (window mode)."""

    @property
    def params(self) -> PerfParms:
        return as_parms(np.asarray(self.x))

    def is_identifiable(self, max_condition_number: float) -> bool:
        """True if the guard lets this fit through (a threshold of 0 disables the guard)."""
        return max_condition_number <= 0 or self.kappa <= max_condition_number


def relative_residuals(obs: ObservationSet, params: np.ndarray) -> np.ndarray:
    """[(TTFT_model − TTFT)/TTFT, (ITL_model − ITL)/ITL] per observation, shape (P, 2n).

    Column 2i is observation i's TTFT residual, 2i+1 its ITL residual. Model failures give
    `BAD_RESIDUAL`.
    """
    pred = obs.predict(params)
    r_ttft = (pred.ttft_ms - obs.ttft_ms) / obs.ttft_ms
    r_itl = (pred.itl_ms - obs.itl_ms) / obs.itl_ms
    r = np.stack([r_ttft, r_itl], axis=2).reshape(pred.ttft_ms.shape[0], -1)
    return np.where(np.isfinite(r), r, BAD_RESIDUAL)


def objective(obs: ObservationSet, params: np.ndarray) -> np.ndarray:
    """Sum of squared relative residuals per parameter row, shape (P,)."""
    r = relative_residuals(obs, params)
    return np.einsum("pk,pk->p", r, r)


def log_jacobian(residuals: Residuals, x: np.ndarray, step: float = _LOG_STEP) -> np.ndarray:
    """Central-difference Jacobian of ``residuals`` w.r.t. ln x at ``x``, shape (k, 3).

    Column j is (r(x·(1+step)e_j) − r(x·(1−step)e_j)) / (2·step) (upstream: step 0.001). Any
    `BAD_RESIDUAL` at a probe makes the whole Jacobian inf.
    """
    x = np.asarray(x, dtype=float)
    scale = np.concatenate([np.eye(3) * step, -np.eye(3) * step]) + 1.0
    r = residuals(x[None, :] * scale)
    if np.any(r >= BAD_RESIDUAL):
        return np.full((r.shape[1], 3), np.inf)
    return ((r[:3] - r[3:]) / (2 * step)).T


def condition_of(jac: np.ndarray) -> float:
    """σ_max/σ_min of ``jac`` (k, 3); inf with fewer than 3 rows, non-finite entries or σ_min 0."""
    if jac.shape[0] < 3 or not np.all(np.isfinite(jac)):
        return float("inf")
    sigma = np.linalg.svd(jac, compute_uv=False)
    if not np.all(np.isfinite(sigma)) or sigma[-1] <= 0:
        return float("inf")
    return float(sigma[0] / sigma[-1])


def condition_number(obs: ObservationSet, x: np.ndarray) -> float:
    """κ of the relative-residual Jacobian of ``obs`` w.r.t. ln x (§6.5).

    inf when fewer than three residuals exist, the model fails at a probe, or σ_min is 0:
    one operating point gives two equations for three unknowns.
    """
    x = np.asarray(x, dtype=float)
    if 2 * len(obs) < 3 or np.any(x <= 0):
        return float("inf")
    return condition_of(log_jacobian(lambda p: relative_residuals(obs, p), x))


def fit_covariance(obs: ObservationSet, x: np.ndarray, rel_noise: float) -> np.ndarray:
    """Covariance of a fit at ``x`` if every measurement had relative noise ``rel_noise``.

    Linearised least squares: cov(ln x) = σ²·(JᵀJ)⁻¹ with J the relative-residual Jacobian
    w.r.t. ln x, mapped to x by diag(x). Directions the observations barely determine get a
    large variance, so a filter started from this fit still corrects them. Shape (3, 3); inf
    entries if the model fails at a probe.
    """
    x = np.asarray(x, dtype=float)
    jac = log_jacobian(lambda p: relative_residuals(obs, p), x)
    if not np.all(np.isfinite(jac)):
        return np.full((3, 3), np.inf)
    cov_log = rel_noise**2 * np.linalg.pinv(jac.T @ jac)
    return x[:, None] * cov_log * x[None, :]


def guess_init_state(obs: TunerObservation,
                     seed: Sequence[float] | np.ndarray | None = None) -> np.ndarray | None:
    """Low-load guess from one observation (§6.6); None when it yields no positive state.

    Uses TTFT ≈ α + (β+γ)·L and ITL ≈ α + β + γ·(L + (m+1)/2). With a seed, γ is taken from
    it and α, β solved; otherwise α = 0.9·ITL and β, γ solved.
    """
    ttft, itl = obs.ttft_ms, obs.itl_ms
    big_l, m = obs.in_tokens, obs.out_tokens
    if seed is not None and big_l > 1:
        gamma = float(seed[2])
        beta = (ttft - itl + gamma * (m + 1) / 2) / (big_l - 1)
        alpha = itl - beta - gamma * (big_l + (m + 1) / 2)
        if alpha > 0 and beta > 0:
            return np.array([alpha, beta, gamma])
        return np.asarray(seed, dtype=float)
    alpha = 0.9 * itl
    s = (ttft - alpha) / big_l
    gamma = (itl - alpha - s) / (big_l + (m + 1) / 2 - 1)
    beta = s - gamma
    x = np.array([alpha, beta, gamma])
    return x if np.all(x > 0) else None


def minimize_residuals(residuals: Residuals, start: np.ndarray, *, max_fev: int = 500,
                       simplex_step: float = COLD_STEP) -> tuple[np.ndarray, float, int]:
    """Minimise Σ r² over positive x from ``start``: Nelder–Mead, then an LM polish.

    Both run in u = ln(x / start), confined to ±`MAX_LOG_STEP`. ``residuals`` maps (P, 3)
    parameter rows to (P, k) residuals. Returns (x, Σ r², function evaluations).
    """
    x0 = np.asarray(start, dtype=float)

    def at(u: np.ndarray) -> np.ndarray:
        return x0 * np.exp(np.clip(u, -MAX_LOG_STEP, MAX_LOG_STEP))

    def j(u: np.ndarray) -> float:
        r = residuals(at(u)[None, :])[0]
        return float(r @ r)

    simplex = np.vstack([np.zeros(3), np.eye(3) * simplex_step])
    nm = minimize(j, np.zeros(3), method="Nelder-Mead",
                  options={"maxfev": max_fev, "initial_simplex": simplex,
                           "xatol": _NM_XATOL, "fatol": _NM_FATOL})
    u, fun, nfev = np.asarray(nm.x), float(nm.fun), int(nm.nfev)
    num_residuals = residuals(x0[None, :]).shape[1]
    if num_residuals >= 3 and fun < BAD_RESIDUAL:
        lm = least_squares(lambda v: residuals(at(v)[None, :])[0], u, method="lm",
                           xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=200)
        nfev += int(lm.nfev)
        lm_fun = float(2.0 * lm.cost)
        if np.all(np.isfinite(lm.x)) and lm_fun <= fun:
            u, fun = np.asarray(lm.x), lm_fun
    return at(u), fun, nfev


def fit(obs: ObservationSet, start: np.ndarray, *, max_fev: int = 500,
        simplex_step: float = COLD_STEP) -> FitResult:
    """Least-squares fit of α, β, γ to ``obs`` from ``start`` (`minimize_residuals`).

    ``simplex_step`` is the initial simplex edge in log coordinates (`COLD_STEP` from a prior
    that may be 2× off, `WARM_STEP` from the last fit).
    """
    x0 = np.asarray(start, dtype=float)
    if len(obs) == 0 or not np.all(np.isfinite(x0)) or np.any(x0 <= 0):
        return FitResult(x=_triple(x0), fun=float("inf"), kappa=float("inf"),
                         num_obs=len(obs), nfev=0, success=False,
                         message="no observations or a non-positive start")
    x, fun, nfev = minimize_residuals(lambda p: relative_residuals(obs, p), x0,
                                      max_fev=max_fev, simplex_step=simplex_step)
    ok = bool(np.isfinite(fun) and fun < BAD_RESIDUAL and np.all(np.isfinite(x)))
    return FitResult(x=_triple(x), fun=fun, kappa=condition_number(obs, x) if ok else np.inf,
                     num_obs=len(obs), nfev=nfev, success=ok,
                     message="converged" if ok else "no finite fit")


def fit_from_starts(obs: ObservationSet, starts: Sequence[np.ndarray], *,
                    max_fev: int = 500) -> FitResult:
    """`fit` from the start with the lowest objective among ``starts`` (positive ones only)."""
    candidates = [np.asarray(s, dtype=float) for s in starts]
    candidates = [s for s in candidates if np.all(np.isfinite(s)) and np.all(s > 0)]
    if not candidates or len(obs) == 0:
        return FitResult(x=(0.0, 0.0, 0.0), fun=float("inf"), kappa=float("inf"),
                         num_obs=len(obs), nfev=0, success=False, message="no usable start")
    values = objective(obs, np.vstack(candidates))
    return fit(obs, candidates[int(np.argmin(values))], max_fev=max_fev)


def refit_window(observations: Sequence[TunerObservation], start: np.ndarray, *,
                 residual_threshold: float, max_fev: int = 500) -> FitResult:
    """Window refit warm-started at ``start``, with one outlier pass (§6.7).

    If the worst observation's residual norm sqrt(dTTFT² + dITL²) exceeds
    ``residual_threshold`` it is dropped and the fit repeated from the first fit.
    """
    obs = ObservationSet(observations)
    first = fit(obs, start, max_fev=max_fev, simplex_step=WARM_STEP)
    if not first.success or len(obs) < 3:
        return first
    r = relative_residuals(obs, np.asarray(first.x)[None, :])[0].reshape(-1, 2)
    norms = np.hypot(r[:, 0], r[:, 1])
    worst = int(np.argmax(norms))
    if norms[worst] <= residual_threshold:
        return first
    kept = [o for i, o in enumerate(observations) if i != worst]
    second = fit(ObservationSet(kept), np.asarray(first.x), max_fev=max_fev,
                 simplex_step=WARM_STEP)
    if not second.success:
        return first
    return FitResult(x=second.x, fun=second.fun, kappa=second.kappa, num_obs=second.num_obs,
                     nfev=first.nfev + second.nfev, success=True, message=second.message,
                     dropped=(worst,))


def _triple(x: np.ndarray) -> tuple[float, float, float]:
    v = np.broadcast_to(np.asarray(x, dtype=float), (3,))
    return (float(v[0]), float(v[1]), float(v[2]))
