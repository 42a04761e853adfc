"""Offline calibration: fit the iteration model to benchmark measurements (docs/tuner.md).

A benchmark row is one measured point: ``input_tokens, output_tokens``, a load given as
``concurrency`` (closed loop) or ``rate_rps`` (open loop), the measured means ``itl_ms,
ttft_ms`` and optionally ``throughput_rps``, ``max_batch``, ``replicas`` and
``num_preemptions`` (`benchfile` reads our CSV, vllm bench and GuideLLM JSON). The fit
minimises the squared relative TTFT and ITL residuals over the parameters of a `ParamSpace`
(α, β, γ and optional terms), in the directions the rows identify (SVD of the log-Jacobian;
the others held at the prior), and reports 95 % confidence intervals from the linearised
covariance s²·(JᵀJ)⁻¹ over those directions.

Analyzer predictions (`BenchModel`), per replica (load / replicas, an even split as the
round-robin router does):

* rate rows: the analyzer's open-loop birth–death queue (``perf_model``) at that rate, with
  Q = ``max_queue`` or 10·N;
* concurrency rows: the closed-network variant of the same model. C users with no think
  time keep exactly C requests in the system, so the chain sits in state C: the batch is
  B = min(C, N), every request is served at τ(B), throughput is X = B/τ(B), and by Little's
  law the response time is C/X, hence the wait W = τ(B)·(C − B)/B. Prefill, ITL and TTFT then
  follow from the model's metric extraction at X̄ = B (docs/design/optimizer-model.md §2.4), plus
  the front-end on
  TTFT. Approximation: a mean-value, single-state model; the twin's batch composition
  fluctuates as requests are admitted and finish, and a non-integer C/replicas is rounded.
  The CLI uses the twin for these rows by default (``refine``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import least_squares, minimize

from inferno.analyzer import QueueBatch, analyze_batch, perf_columns
from inferno.analyzer.service import ServiceParams, request_metrics, service_time_ms
from inferno.errors import ConfigError
from inferno.io import safe
from inferno.model import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_NUM_TOKENS,
    MAX_QUEUE_TO_BATCH_RATIO,
    PerfModel,
    PerfParms,
    StepShape,
)
from inferno.model.units import MS_PER_S
from inferno.tuner.benchfile import BenchRow
from inferno.tuner.fit import (
    BAD_RESIDUAL,
    Residuals,
    condition_of,
)
from inferno.tuner.observation import MAX_PARAM_MS, as_parms
from inferno.tuner.store import write_json_atomic

DEFAULT_SEED = (5.0, 0.05, 5e-5)
"""Start point when no model-data entry exists (upstream initState)."""
CONFIDENCE = 0.95
REFINE_STEP = 0.01
"""Relative step of the refinement's differences (1 %: above a simulator's event jitter)."""
_LOG_STEP = 1e-3
_MAX_MOVE = math.log(100.0)
"""A calibration moves no parameter more than a factor 100 from its start."""

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Maps parameter rows (P, 3) to (TTFT ms, ITL ms, throughput req/s), each (P, n rows)."""

FIT_PARAMETERS = {
    "alpha": "alpha_ms", "beta": "beta_ms", "gamma": "gamma_ms", "frontend": "frontend_ms",
    "frontend_per_token": "frontend_per_token_ms", "stream": "stream_ms",
    "beta_high": "beta_high_ms",
}
"""`--fit` names → `PerfParms` fields."""
DEFAULT_FIT = ("alpha", "beta", "gamma", "frontend")
_START = {"frontend_ms": 1.0, "frontend_per_token_ms": 1e-4, "stream_ms": 0.01}
"""Start values of terms the prior has at 0 (the fit runs in log coordinates)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpace:
    """Which `PerfParms` fields are fitted; the others stay as in ``base`` (the prior)."""

    names: tuple[str, ...]
    """`PerfParms` field names, in vector order."""
    base: PerfParms

    @classmethod
    def of(cls, fit: Sequence[str], base: PerfParms) -> ParamSpace:
        unknown = [f for f in fit if f not in FIT_PARAMETERS]
        if unknown or not fit:
            raise ConfigError(f"--fit: unknown parameter(s) {', '.join(unknown) or '(none)'}; "
                              f"known: {', '.join(FIT_PARAMETERS)}")
        if "beta_high" in fit and base.shape is not StepShape.PIECEWISE:
            raise ConfigError("--fit beta_high needs model data with shape 'piecewise'")
        return cls(names=tuple(dict.fromkeys(FIT_PARAMETERS[f] for f in fit)), base=base)

    @property
    def labels(self) -> tuple[str, ...]:
        back = {v: k for k, v in FIT_PARAMETERS.items()}
        return tuple(back[n] for n in self.names)

    def start(self) -> np.ndarray:
        values = []
        for name in self.names:
            v = float(getattr(self.base, name))
            if not v > 0:
                v = self.base.beta_ms if name == "beta_high_ms" else _START.get(name, 1.0)
            values.append(v if v > 0 else 1.0)
        return np.array(values)

    def perf(self, x: np.ndarray) -> PerfParms:
        # names are float fields of PerfParms (FIT_PARAMETERS), chosen at run time
        changes: dict[str, Any] = {n: float(v) for n, v in zip(self.names, x, strict=True)}
        return dataclasses.replace(self.base, **changes)


def _space_or_default(space: ParamSpace | None, start: PerfParms | None) -> ParamSpace:
    if space is not None:
        return space
    base = start if start is not None and not start.is_zero else as_parms(
        np.asarray(DEFAULT_SEED))
    return ParamSpace(names=("alpha_ms", "beta_ms", "gamma_ms"), base=base)


class BenchModel:
    """The analyzer's TTFT, ITL and throughput at every benchmark row, vectorised over
    parameter vectors of ``space`` (α, β, γ by default)."""

    def __init__(self, rows: Sequence[BenchRow], *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, space: ParamSpace | None = None,
                 perf_model: PerfModel = PerfModel.CHUNKED) -> None:
        self.rows = tuple(rows)
        self.max_num_tokens = max_num_tokens
        self.space = _space_or_default(space, None)
        self.perf_model = perf_model
        n = np.array([r.max_batch or max_batch for r in self.rows], dtype=np.int64)
        self._n = n
        self._q = np.array([MAX_QUEUE_TO_BATCH_RATIO * b if r.max_queue is None else r.max_queue
                            for r, b in zip(self.rows, n, strict=True)], dtype=np.int64)
        self._replicas = np.array([r.replicas for r in self.rows], dtype=float)
        self._in = np.array([r.in_tokens for r in self.rows], dtype=float)
        self._out = np.array([r.out_tokens for r in self.rows], dtype=float)
        self._closed = np.array([r.is_closed_loop for r in self.rows])
        load = np.array([r.load for r in self.rows], dtype=float) / self._replicas
        self._users = np.maximum(np.rint(load), 1.0)
        self._rate = load
        self.residuals: Residuals = relative_residuals(self.predict, self.rows)
        """Relative TTFT and ITL residuals, (P, 2n), interleaved per row."""

    def predict(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(TTFT ms, ITL ms, throughput req/s over all replicas), each (P, n), for (P, k)."""
        x = np.atleast_2d(np.asarray(params, dtype=float))
        p, n = x.shape[0], len(self.rows)
        ttft, itl, thr = (np.full(p * n, np.inf) for _ in range(3))
        usable = np.all(np.isfinite(x) & (x > 0) & (x < MAX_PARAM_MS), axis=1)
        perfs = [self.space.perf(row if ok else np.ones(x.shape[1]))
                 for row, ok in zip(x, usable, strict=True)]
        alpha, beta, gamma = (np.repeat([getattr(q, f) for q in perfs], n)
                              for f in ("alpha_ms", "beta_ms", "gamma_ms"))
        extras = perf_columns([q for q in perfs for _ in range(n)], np.tile(self._in, p))

        def tile(a: np.ndarray) -> np.ndarray:
            return np.tile(a, p)

        closed = tile(self._closed)
        with np.errstate(all="ignore"):
            if np.any(~self._closed):
                idx = ~closed
                m = analyze_batch(QueueBatch(
                    max_batch=tile(self._n)[idx], max_queue=tile(self._q)[idx],
                    in_tokens=tile(self._in)[idx], out_tokens=tile(self._out)[idx],
                    alpha_ms=alpha[idx], beta_ms=beta[idx], gamma_ms=gamma[idx],
                    max_num_tokens=np.full(int(idx.sum()), self.max_num_tokens),
                    perf_model=self.perf_model, **{k: v[idx] for k, v in extras.items()}),
                    tile(self._rate)[idx])
                ttft[idx], itl[idx] = m.ttft_ms, m.itl_ms
                thr[idx] = m.throughput_rps * tile(self._replicas)[idx]
            if np.any(self._closed):
                idx = closed
                users = tile(self._users)[idx]
                batch = np.minimum(users, tile(self._n)[idx].astype(float))
                sp = ServiceParams(alpha[idx], beta[idx], gamma[idx], tile(self._in)[idx],
                                   tile(self._out)[idx], tile(self._n)[idx],
                                   np.full(int(idx.sum()), self.max_num_tokens),
                                   **{k: v[idx] for k, v in extras.items()})
                tau = service_time_ms(self.perf_model, batch, sp)
                wait = tau * (users - batch) / batch
                _, itl_c, ttft_c = request_metrics(self.perf_model, batch, tau, wait, sp)
                ttft[idx], itl[idx] = ttft_c + extras["frontend_ms"][idx], itl_c
                thr[idx] = MS_PER_S * batch / tau * tile(self._replicas)[idx]
        bad = ~np.repeat(usable, n) | ~np.isfinite(ttft) | ~np.isfinite(itl)

        def grid(a: np.ndarray) -> np.ndarray:
            return np.where(bad, np.inf, a).reshape(p, n)

        return grid(ttft), grid(itl), grid(thr)


def combine(analyzer: Predictor, twin: Predictor, closed: np.ndarray) -> Predictor:
    """``twin`` (built for the closed-loop rows only, in order) for those rows, ``analyzer``
    for the others."""
    closed = np.asarray(closed, dtype=bool)

    def predict(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = [a.copy() for a in analyzer(params)]
        if closed.any():
            for a, t in zip(out, twin(params), strict=True):
                a[:, closed] = t
        return out[0], out[1], out[2]

    return predict


@dataclass(frozen=True, slots=True, kw_only=True)
class RowFit:
    """Measured vs fitted values of one benchmark row."""

    row: BenchRow
    ttft_ms: float
    itl_ms: float
    throughput_rps: float

    @property
    def ttft_error(self) -> float:
        """(fitted − measured) / measured."""
        return self.ttft_ms / self.row.ttft_ms - 1.0

    @property
    def itl_error(self) -> float:
        return self.itl_ms / self.row.itl_ms - 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Fitted parameters with 95 % confidence intervals and per-row residuals.

    Parameter vectors follow ``labels`` (the ``--fit`` names); directions of ln x the rows do
    not identify are held at the prior (``held``) and have no interval of their own.
    """

    params: PerfParms
    labels: tuple[str, ...]
    values: tuple[float, ...]
    stderr: tuple[float, ...]
    """Standard errors in the parameters' units; inf without residual degrees of freedom."""
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    dof: int
    """Residuals minus fitted directions."""
    kappa: float
    """Condition number of the residual Jacobian w.r.t. ln x over the fitted directions."""
    kappa_full: float
    """The same over every parameter (what an unconstrained fit would face)."""
    held: tuple[str, ...]
    """Directions held at the prior, as combinations of ln parameters."""
    rms_rel_error: float
    """Root mean square of the relative TTFT and ITL residuals."""
    rows: tuple[RowFit, ...]
    nfev: int
    dropped: tuple[str, ...] = ()
    """Rows left out before the fit, with the reason."""

    def is_identifiable(self, max_condition_number: float = 1000.0) -> bool:
        return max_condition_number <= 0 or self.kappa <= max_condition_number

    def problems(self, max_rms: float = 0.10) -> list[str]:
        """Why the fit should not be trusted (empty: none): a large residual, or a fitted
        parameter whose 95 % interval reaches zero."""
        out = []
        if self.rms_rel_error > max_rms:
            out.append(f"RMS relative residual {100 * self.rms_rel_error:.1f} % > "
                       f"{100 * max_rms:g} %")
        for name, lo, hi, se in zip(self.labels, self.ci_low, self.ci_high, self.stderr,
                                    strict=True):
            if se > 0 and not lo > 0:
                out.append(f"{name}: 95 % interval {lo:.4g} .. {hi:.4g} reaches zero")
        return out


def relative_residuals(predictor: Predictor, rows: Sequence[BenchRow]) -> Residuals:
    """Residual function of ``predictor`` for ``rows``: relative TTFT and ITL, (P, 2n)."""
    ttft_ms = np.array([r.ttft_ms for r in rows], dtype=float)
    itl_ms = np.array([r.itl_ms for r in rows], dtype=float)

    def residuals(params: np.ndarray) -> np.ndarray:
        ttft, itl, _ = predictor(params)
        r = np.stack([(ttft - ttft_ms) / ttft_ms, (itl - itl_ms) / itl_ms],
                     axis=2).reshape(ttft.shape[0], -1)
        return np.where(np.isfinite(r), r, BAD_RESIDUAL)

    return residuals


MIN_THROUGHPUT_RATIO = 0.95
"""An open-loop row completing less than this share of its offered rate is saturated."""


def screen(rows: Sequence[BenchRow]) -> tuple[tuple[BenchRow, ...], tuple[str, ...]]:
    """(rows to fit, messages of the rows left out): preempting rows (the KV cache was full;
    the model has no preemption) and saturated open-loop rows (throughput below
    `MIN_THROUGHPUT_RATIO` × rate: no steady state to compare with)."""
    kept, dropped = [], []
    for r in rows:
        if r.num_preemptions:
            dropped.append(f"{r.where}: dropped, {r.num_preemptions} preemptions (KV cache "
                           "full: outside the model)")
        elif (r.rate_rps is not None and r.throughput_rps is not None
              and r.throughput_rps < MIN_THROUGHPUT_RATIO * r.rate_rps):
            dropped.append(f"{r.where}: dropped, saturated (throughput {r.throughput_rps:.3g} "
                           f"< {MIN_THROUGHPUT_RATIO:g} × rate {r.rate_rps:.3g} req/s)")
        else:
            kept.append(r)
    return tuple(kept), tuple(dropped)


def calibrate(rows: Sequence[BenchRow], *, start: PerfParms | None = None,
              space: ParamSpace | None = None, max_batch: int = DEFAULT_MAX_BATCH,
              max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, max_fev: int = 2000,
              refine: Predictor | None = None, refine_max_nfev: int = 60,
              refine_step: float = REFINE_STEP, perf_model: PerfModel = PerfModel.CHUNKED,
              max_condition_number: float = 1000.0,
              analyzer_rows: np.ndarray | None = None) -> Calibration:
    """Least-squares fit of ``space``'s parameters (α, β, γ by default) to ``rows``, over
    the directions the rows identify, with confidence intervals.

    The analyzer fit (`BenchModel`) runs first, from the better of the prior, a low-load
    guess and the upstream seed. With ``refine`` (for instance the twin for closed-loop
    rows) a trust-region search on its residuals continues from there, with forward
    differences of ``refine_step`` in ln x (a stochastic simulator needs steps well above
    its jitter); intervals and residuals are then those of ``refine``.

    Identifiable subspace: the residual Jacobian w.r.t. ln x is decomposed (SVD); directions
    whose singular value is below σ_max / ``max_condition_number`` are held at the start
    (the prior) and reported in ``held``; the fit moves along the others only. A one-shape
    concurrency sweep, which pins the ITL slope but not how it splits between β and γ, is
    then fitted instead of refused. 0 disables the hold (every direction is fitted).

    ``analyzer_rows`` (bool per row, default all): the rows the analyzer stage fits; with
    fewer than two the refinement starts from the prior (the analyzer's closed-loop model is
    too rough to start a twin refinement of closed-loop rows from).
    """
    if len(rows) < 2:
        raise ConfigError(f"calibration needs at least 2 benchmark rows, got {len(rows)}")
    space = _space_or_default(space, start)
    model = BenchModel(rows, max_batch=max_batch, max_num_tokens=max_num_tokens, space=space,
                       perf_model=perf_model)
    first = space.start()
    starts = [first]
    guess = _low_load_guess(rows)
    for seed in (guess, np.asarray(DEFAULT_SEED)):
        cand = first.copy()
        for j, name in enumerate(space.names):
            k = ("alpha_ms", "beta_ms", "gamma_ms").index(name) if name in (
                "alpha_ms", "beta_ms", "gamma_ms") else None
            if k is not None:
                cand[j] = seed[k]
        starts.append(cand)
    starts = [s for s in starts if np.all(np.isfinite(s)) and np.all(s > 0)]
    r0 = model.residuals(np.vstack(starts))
    x0 = starts[int(np.argmin(np.einsum("pk,pk->p", r0, r0)))]
    mask = (np.ones(len(rows), dtype=bool) if analyzer_rows is None
            else np.asarray(analyzer_rows, dtype=bool))
    x, fun, nfev = first, math.inf, 0
    basis, held = np.eye(x.size), np.zeros((x.size, 0))
    if mask.sum() >= 2 or refine is None:
        fit_rows = [r for r, m in zip(rows, mask, strict=True) if m] if refine else rows
        stage = BenchModel(fit_rows, max_batch=max_batch, max_num_tokens=max_num_tokens,
                           space=space, perf_model=perf_model)
        x, fun, nfev, basis, held = _subspace_fit(stage.residuals, x0, max_condition_number,
                                                  step=_LOG_STEP, max_nfev=max_fev,
                                                  global_search=True)
    predictor: Predictor = model.predict
    residuals, jac_step = model.residuals, _LOG_STEP
    if refine is not None:
        predictor, jac_step = refine, refine_step
        residuals = relative_residuals(refine, rows)
        x, fun, more, basis, held = _subspace_fit(residuals, x, max_condition_number,
                                                  step=refine_step, max_nfev=refine_max_nfev,
                                                  global_search=False)
        nfev += more
    jac = _log_jacobian(residuals, x, jac_step, forward=refine is not None)
    reduced = jac @ basis
    num_res = 2 * len(rows)
    dof = num_res - basis.shape[1]
    stderr = np.full(x.size, np.inf)
    if dof > 0 and np.all(np.isfinite(reduced)):
        cov_z = fun / dof * np.linalg.pinv(reduced.T @ reduced)
        cov_u = basis @ cov_z @ basis.T
        stderr = x * np.sqrt(np.clip(np.diag(cov_u), 0.0, None))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, max(dof, 1)) * stderr
    ttft, itl, thr = predictor(x[None, :])
    fits = tuple(RowFit(row=r, ttft_ms=float(ttft[0, i]), itl_ms=float(itl[0, i]),
                        throughput_rps=float(thr[0, i])) for i, r in enumerate(rows))
    labels = space.labels
    return Calibration(params=space.perf(x), labels=labels, values=tuple(x.tolist()),
                       stderr=tuple(stderr.tolist()), ci_low=tuple((x - half).tolist()),
                       ci_high=tuple((x + half).tolist()), dof=dof,
                       kappa=condition_of(reduced) if basis.shape[1] >= 1 else math.inf,
                       kappa_full=condition_of(jac),
                       held=tuple(_describe(v, labels) for v in held.T),
                       rms_rel_error=math.sqrt(fun / num_res), rows=fits, nfev=nfev)


OPTIONAL_TERMS = ("frontend", "frontend_per_token", "stream")
"""Terms that are 0 unless the data shows them (upstream's model has none of them)."""


def calibrate_supported(rows: Sequence[BenchRow], *, space: ParamSpace,
                        refine_for: Callable[[ParamSpace], Predictor | None] | None = None,
                        **kwargs: Any) -> Calibration:
    """`calibrate`, then once more without the optional terms whose 95 % interval reaches
    zero (the rows do not show them): those stay at the prior's value, and are listed in
    ``held``. ``refine_for`` builds the refining predictor of a parameter space."""
    def run(sp: ParamSpace) -> Calibration:
        return calibrate(rows, space=sp, refine=refine_for(sp) if refine_for else None,
                         **kwargs)

    result = run(space)
    weak = [name for name, lo, se in zip(result.labels, result.ci_low, result.stderr,
                                         strict=True)
            if name in OPTIONAL_TERMS and ((not lo > 0 and np.isfinite(se))
                                           or name in result.held)]
    if not weak or len(weak) == len(result.labels):
        return result
    kept = [n for n in result.labels if n not in weak]
    base = space.perf(np.asarray(result.values))
    base = dataclasses.replace(base, **{FIT_PARAMETERS[n]: getattr(space.base,
                                                                    FIT_PARAMETERS[n])
                                        for n in weak})
    again = run(ParamSpace.of(kept, base))
    return dataclasses.replace(again, held=(*again.held, *(
        f"{n} (not distinguishable from its prior {getattr(space.base, FIT_PARAMETERS[n]):g})"
        for n in weak)))


def _log_jacobian(residuals: Residuals, x: np.ndarray, step: float,
                  forward: bool = False) -> np.ndarray:
    """d r / d ln x at ``x``, shape (k residuals, len(x)); central differences, or forward
    ones (a simulator: one batched call of len(x) + 1 probes)."""
    k = x.size
    if forward:
        probes = x * np.exp(np.vstack([np.zeros(k), step * np.eye(k)]))
        r = residuals(probes)
        return ((r[1:] - r[0]) / step).T
    probes = x * np.exp(np.vstack([step * np.eye(k), -step * np.eye(k)]))
    r = residuals(probes)
    if np.any(r >= BAD_RESIDUAL):
        return np.full((r.shape[1], k), np.inf)
    return ((r[:k] - r[k:]) / (2 * step)).T


def _split(jac: np.ndarray, max_condition_number: float) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) orthonormal bases of ln-x space: right singular vectors whose singular
    value is at least σ_max / ``max_condition_number`` are kept."""
    k = jac.shape[1]
    if not np.all(np.isfinite(jac)):
        return np.eye(k), np.zeros((k, 0))
    _, sigma, vt = np.linalg.svd(jac, full_matrices=True)
    sigma = np.concatenate([sigma, np.zeros(k - sigma.size)])
    if max_condition_number <= 0:
        keep = np.ones(k, dtype=bool)
    else:
        keep = sigma >= sigma[0] / max_condition_number
        keep &= sigma > 0
    keep[0] = True
    return vt[keep].T, vt[~keep].T


def _subspace_fit(residuals: Residuals, x0: np.ndarray, max_condition_number: float, *,
                  step: float, max_nfev: int, global_search: bool
                  ) -> tuple[np.ndarray, float, int, np.ndarray, np.ndarray]:
    """Minimise Σ r² over x0·exp(B z), B the identified directions at x0 (re-split once at
    the optimum). Returns (x, Σ r², evaluations, kept basis, held basis)."""
    nfev = 0
    x = np.asarray(x0, dtype=float)
    basis = held = np.eye(x.size)
    for _ in range(2):
        jac = _log_jacobian(residuals, x, step, forward=not global_search)
        nfev += 2 * x.size
        new_basis, held = _split(jac, max_condition_number)
        same = new_basis.shape == basis.shape and np.allclose(np.abs(new_basis.T @ basis),
                                                              np.eye(basis.shape[1]), atol=1e-3)
        basis = new_basis
        origin = x

        def at(z: np.ndarray, origin: np.ndarray = origin, basis: np.ndarray = basis
               ) -> np.ndarray:
            return origin * np.exp(np.clip(basis @ z, -_MAX_MOVE, _MAX_MOVE))

        def r_of(z: np.ndarray, at: Callable[[np.ndarray], np.ndarray] = at) -> np.ndarray:
            return residuals(at(z)[None, :])[0]

        z = np.zeros(basis.shape[1])
        if global_search:
            nm = minimize(lambda v: float(r_of(v) @ r_of(v)), z, method="Nelder-Mead",
                          options={"maxfev": max_nfev, "xatol": 1e-4, "fatol": 1e-10,
                                   "initial_simplex": np.vstack([z, 0.3 * np.eye(z.size)])})
            z, nfev = np.asarray(nm.x), nfev + int(nm.nfev)
            lm = least_squares(r_of, z, method="trf", xtol=1e-14, ftol=1e-14, gtol=1e-14,
                               max_nfev=400)
        else:
            def jac_z(v: np.ndarray, origin: np.ndarray = origin,
                      basis: np.ndarray = basis) -> np.ndarray:
                u = basis @ v
                probes = np.vstack([u, u[None, :] + step * basis.T])
                r = residuals(origin * np.exp(np.clip(probes, -_MAX_MOVE, _MAX_MOVE)))
                return ((r[1:] - r[0]) / step).T

            lm = least_squares(r_of, z, jac=jac_z, method="trf", max_nfev=max_nfev,
                               xtol=1e-8, ftol=1e-10)
        nfev += int(lm.nfev)
        x = at(np.asarray(lm.x))
        fun = float(2.0 * lm.cost)
        if same or not global_search:
            break
    return x, fun, nfev, basis, held


def _describe(v: np.ndarray, labels: Sequence[str]) -> str:
    """A held direction of ln x as text: one name if it dominates, else a combination."""
    i = int(np.argmax(np.abs(v)))
    if abs(v[i]) > 0.95:
        return labels[i]
    terms = [f"{'-' if c < 0 else '+'}{abs(c):.2f}·ln {n}" for c, n in zip(v, labels, strict=True)
             if abs(c) >= 0.05]
    return " ".join(terms).lstrip("+")


def _low_load_guess(rows: Sequence[BenchRow]) -> np.ndarray:
    """α = 0.9·ITL and β, γ from TTFT ≈ α + (β+γ)L at the lightest row (§6.6)."""
    r = min(rows, key=lambda row: (row.load / row.replicas, row.line))
    alpha = 0.9 * r.itl_ms
    slope = max((r.ttft_ms - alpha) / max(r.in_tokens, 1.0), 1e-9)
    return np.array([alpha, 0.9 * slope, 0.1 * slope])


def format_report(result: Calibration, model: str, accelerator: str) -> str:
    """Parameters with confidence intervals, what was held, fit quality, residual table."""
    units = {"alpha": "ms", "beta": "ms/token", "gamma": "ms/KV token", "frontend": "ms",
             "frontend_per_token": "ms/token", "stream": "ms/token", "beta_high": "ms/token"}
    lines = [f"{model} on {accelerator}: {len(result.rows)} benchmark rows"]
    lines += [f"  {d}" for d in result.dropped]
    for k, name in enumerate(result.labels):
        lines.append(f"  {name:<5} = {result.values[k]:.6g} {units[name]:<11} ± "
                     f"{result.stderr[k]:.3g} (95 % CI {result.ci_low[k]:.6g} .. "
                     f"{result.ci_high[k]:.6g})")
    for h in result.held:
        lines.append(f"  held at the prior (not identified by these rows): {h}")
    lines.append(f"  condition number {result.kappa:.3g} over the fitted directions "
                 f"({result.kappa_full:.3g} over all), RMS relative residual "
                 f"{100 * result.rms_rel_error:.2f} %, {result.dof} degrees of freedom")
    lines.append(f"  {'row':>14} {'load':>12} {'in':>6} {'out':>6} {'ttft_ms':>10} "
                 f"{'fit':>10} {'err%':>7} {'itl_ms':>8} {'fit':>8} {'err%':>7}")
    for f in result.rows:
        r = f.row
        load = f"C={r.concurrency}" if r.is_closed_loop else f"{r.rate_rps:g}/s"
        where = r.where if len(r.where) <= 14 else "…" + r.where[-13:]
        lines.append(f"  {where:>14} {load:>12} {r.in_tokens:>6.0f} {r.out_tokens:>6.0f} "
                     f"{r.ttft_ms:>10.2f} {f.ttft_ms:>10.2f} {100 * f.ttft_error:>7.2f} "
                     f"{r.itl_ms:>8.3f} {f.itl_ms:>8.3f} {100 * f.itl_error:>7.2f}")
    return "\n".join(lines)


def model_data_document(path: Path, base: Path | None) -> tuple[dict[str, Any], list[Any]]:
    """The model-data document `merge_model_data` starts from (``path`` if it exists, else
    ``base``, else empty) and its models list; a file that cannot be merged into is a
    `ConfigError` naming it (`inferno calibrate` checks this before fitting)."""
    source = path if path.is_file() else base
    doc: Any = {"models": []}
    if source is not None and source.is_file():
        doc = safe.read_json(source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(doc).__name__}")
    models_key = _key(doc, "models") or "models"
    models = doc.setdefault(models_key, [])
    if not isinstance(models, list):
        raise ConfigError(f"{source}: {models_key}: must be a list")
    return doc, models


def merge_model_data(path: Path, base: Path | None, model: str, accelerator: str,
                     params: PerfParms, *, max_batch: int | None = None) -> None:
    """Write ``base`` (or ``path`` if it exists, else an empty document) with the pair's
    perfParms replaced, to ``path`` atomically.

    Keys are matched case-insensitively (upstream files spell them freely); other entries and
    fields are kept as they are. A missing pair is appended with accCount 1.
    """
    doc, models = model_data_document(path, base)
    values: dict[str, float | str] = {"alpha": params.alpha_ms, "beta": params.beta_ms,
                                      "gamma": params.gamma_ms}
    values.update({wire: value for wire, value in (
        ("frontend", params.frontend_ms), ("frontendPerToken", params.frontend_per_token_ms),
        ("stream", params.stream_ms)) if value})
    if params.shape is not StepShape.LINEAR:
        values.update(shape=params.shape.value, kneeTokens=params.knee_tokens,
                      betaHigh=params.beta_high_ms)
    for entry in models:
        if not isinstance(entry, dict):
            continue
        if entry.get(_key(entry, "name") or "name") == model and entry.get(
                _key(entry, "acc") or "acc") == accelerator:
            parms_key = _key(entry, "perfParms") or "perfParms"
            parms = entry.get(parms_key)
            parms = parms if isinstance(parms, dict) else {}
            for name, value in values.items():
                parms[_key(parms, name) or name] = value
            entry[parms_key] = parms
            break
    else:
        models.append({"name": model, "acc": accelerator, "accCount": 1,
                       "maxBatchSize": max_batch or 0, "atTokens": 0, "perfParms": values})
    write_json_atomic(path, doc)


def _key(doc: Mapping[str, Any], name: str) -> str | None:
    """The key of ``doc`` equal to ``name`` ignoring case (Go JSON semantics)."""
    return next((k for k in doc if isinstance(k, str) and k.lower() == name.lower()), None)
