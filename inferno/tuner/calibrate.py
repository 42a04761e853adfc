"""Offline calibration: fit α, β, γ to benchmark measurements (issue 6 item 4).

A benchmark CSV has one row per measured point: ``input_tokens, output_tokens``, a load given
as ``concurrency`` (closed loop) or ``rate_rps`` (open loop), the measured means ``itl_ms,
ttft_ms`` and optionally ``throughput_rps``, ``max_batch`` and ``replicas``. The fit minimises
the squared relative TTFT and ITL residuals against the model's prediction at the same points
(Nelder–Mead then Levenberg–Marquardt, as the online tuner) and reports 95 % confidence
intervals from the linearised covariance s²·(JᵀJ)⁻¹.

Predictions, per replica (load / replicas, i.e. an even split as the round-robin router does):

* rate rows: the analyzer's open-loop birth–death queue (chunked model) at that rate, with
  Q = ``max_queue`` or 10·N;
* concurrency rows: the closed-network variant of the same model. C users with no think
  time keep exactly C requests in the system, so the chain sits in state C: the batch is
  B = min(C, N), every request is served at τ(B), throughput is X = B/τ(B), and by Little's
  law the response time is C/X, hence the wait W = τ(B)·(C − B)/B. Prefill, ITL and TTFT then
  follow from the chunked model's metric extraction at X̄ = B (design §2.4). Approximation:
  this is a mean-value, single-state model; the twin's batch composition fluctuates as
  requests are admitted and finish, and a non-integer C/replicas is rounded to the nearest
  integer.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from inferno.analyzer import QueueBatch, analyze_batch
from inferno.analyzer.service import ServiceParams, request_metrics, service_time_ms
from inferno.errors import ConfigError
from inferno.model import DEFAULT_MAX_NUM_TOKENS, PerfModel, PerfParms
from inferno.tuner.fit import (
    BAD_RESIDUAL,
    Residuals,
    condition_of,
    log_jacobian,
    minimize_residuals,
)
from inferno.tuner.observation import as_array, as_parms
from inferno.tuner.store import write_json_atomic

DEFAULT_MAX_BATCH = 256
"""N when neither the CSV nor model data gives one (vLLM max_num_seqs default)."""
MAX_QUEUE_TO_BATCH_RATIO = 10
DEFAULT_SEED = (5.0, 0.05, 5e-5)
"""Start point when no model-data entry exists (upstream initState)."""
CONFIDENCE = 0.95
REFINE_STEP = 0.01
"""Relative step of the refinement's differences (1 %: above a simulator's event jitter)."""
_LOG_STEP = 1e-3

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Maps parameter rows (P, 3) to (TTFT ms, ITL ms, throughput req/s), each (P, n rows)."""

CSV_COLUMNS = ("input_tokens", "output_tokens", "concurrency", "rate_rps", "itl_ms", "ttft_ms",
               "throughput_rps", "max_batch", "replicas", "num_preemptions")
"""Columns `sim bench --csv` writes (and this reader takes, with the aliases below)."""
_REQUIRED = ("input_tokens", "output_tokens", "itl_ms", "ttft_ms")
_OPTIONAL = ("concurrency", "rate_rps", "throughput_rps", "max_batch", "max_queue", "replicas")
_ALIASES = {"in_tokens": "input_tokens", "out_tokens": "output_tokens",
            "mean_itl_ms": "itl_ms", "mean_ttft_ms": "ttft_ms", "rate": "rate_rps",
            "request_rate": "rate_rps", "max_concurrency": "concurrency",
            "request_throughput": "throughput_rps"}
"""Accepted spellings of vllm bench / guidellm exports, mapped to the canonical names."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchRow:
    """One benchmark point as measured (all replicas together)."""

    line: int
    """Line in the CSV file (for messages)."""
    in_tokens: float
    out_tokens: float
    concurrency: int | None = None
    rate_rps: float | None = None
    itl_ms: float
    ttft_ms: float
    throughput_rps: float | None = None
    max_batch: int | None = None
    max_queue: int | None = None
    replicas: int = 1

    @property
    def is_closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def load(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate_rps or 0.0)


def read_bench_csv(path: str | Path) -> tuple[BenchRow, ...]:
    """Parse a benchmark CSV; any problem is a one-line `ConfigError` with file:line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{path}:1: empty file (expected a header line)") from None
    names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
    missing = [c for c in _REQUIRED if c not in names]
    if missing or not {"concurrency", "rate_rps"} & set(names):
        need = missing or ["concurrency or rate_rps"]
        raise ConfigError(f"{path}:1: missing column '{need[0]}' "
                          f"(columns: {', '.join(h.strip() for h in header)})")
    rows = []
    for record in reader:
        line = reader.line_num
        if not any(v.strip() for v in record):
            continue
        if len(record) != len(names):
            raise ConfigError(f"{path}:{line}: expected {len(names)} fields, got {len(record)}")
        rows.append(_row(dict(zip(names, record, strict=True)), path, line))
    if not rows:
        raise ConfigError(f"{path}: no benchmark rows")
    return tuple(rows)


def _row(values: Mapping[str, str], path: Path, line: int) -> BenchRow:
    def number(name: str, *, integer: bool = False, minimum: float = 0.0,
               strict: bool = True, optional: bool = False) -> Any:
        raw = values.get(name, "").strip()
        if not raw and optional:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        above = value > minimum if strict else value >= minimum
        if not (math.isfinite(value) and above and (not integer or value.is_integer())):
            what = "an integer" if integer else "a number"
            raise ConfigError(f"{path}:{line}: column '{name}': must be {what} "
                              f"{'>' if strict else '>='} {minimum:g}, got {raw!r}")
        return int(value) if integer else value

    concurrency = number("concurrency", integer=True, optional=True)
    rate = number("rate_rps", optional=True)
    if (concurrency is None) == (rate is None):
        got = "both" if concurrency is not None else "neither"
        raise ConfigError(f"{path}:{line}: give one of columns 'concurrency' and 'rate_rps', "
                          f"got {got}")
    return BenchRow(
        line=line, in_tokens=number("input_tokens"),
        out_tokens=number("output_tokens", minimum=1.0, strict=False),
        concurrency=concurrency, rate_rps=rate, itl_ms=number("itl_ms"),
        ttft_ms=number("ttft_ms"), throughput_rps=number("throughput_rps", optional=True),
        max_batch=number("max_batch", integer=True, optional=True),
        max_queue=number("max_queue", integer=True, strict=False, optional=True),
        replicas=number("replicas", integer=True, optional=True) or 1)


class BenchModel:
    """The model's TTFT, ITL and throughput at every benchmark row, vectorised over parameters."""

    def __init__(self, rows: Sequence[BenchRow], *, max_batch: int = DEFAULT_MAX_BATCH,
                 max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS) -> None:
        self.rows = tuple(rows)
        self.max_num_tokens = max_num_tokens
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
        """(TTFT ms, ITL ms, throughput req/s over all replicas), each (P, n), for (P, 3)."""
        x = np.atleast_2d(np.asarray(params, dtype=float))
        p, n = x.shape[0], len(self.rows)
        ttft, itl, thr = (np.full(p * n, np.inf) for _ in range(3))
        usable = np.all(np.isfinite(x) & (x > 0), axis=1)
        alpha, beta, gamma = (np.repeat(np.where(usable, x[:, k], 1.0), n) for k in range(3))

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
                    perf_model=PerfModel.CHUNKED), tile(self._rate)[idx])
                ttft[idx], itl[idx] = m.ttft_ms, m.itl_ms
                thr[idx] = m.throughput_rps * tile(self._replicas)[idx]
            if np.any(self._closed):
                idx = closed
                users = tile(self._users)[idx]
                batch = np.minimum(users, tile(self._n)[idx].astype(float))
                sp = ServiceParams(alpha[idx], beta[idx], gamma[idx], tile(self._in)[idx],
                                   tile(self._out)[idx], tile(self._n)[idx],
                                   np.full(int(idx.sum()), self.max_num_tokens))
                tau = service_time_ms(PerfModel.CHUNKED, batch, sp)
                wait = tau * (users - batch) / batch
                _, itl_c, ttft_c = request_metrics(PerfModel.CHUNKED, batch, tau, wait, sp)
                ttft[idx], itl[idx] = ttft_c, itl_c
                thr[idx] = 1000.0 * batch / tau * tile(self._replicas)[idx]
        bad = ~np.repeat(usable, n) | ~np.isfinite(ttft) | ~np.isfinite(itl)
        return tuple(np.where(bad, np.inf, a).reshape(p, n)  # type: ignore[return-value]
                     for a in (ttft, itl, thr))


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
    """Fitted parameters with 95 % confidence intervals and per-row residuals."""

    params: PerfParms
    stderr: tuple[float, float, float]
    """Standard errors of α, β, γ (ms); inf without residual degrees of freedom."""
    ci_low: tuple[float, float, float]
    ci_high: tuple[float, float, float]
    dof: int
    """Residuals minus parameters."""
    kappa: float
    """Condition number of the residual Jacobian w.r.t. ln x (identifiability)."""
    rms_rel_error: float
    """Root mean square of the relative TTFT and ITL residuals."""
    rows: tuple[RowFit, ...]
    nfev: int

    def is_identifiable(self, max_condition_number: float = 1000.0) -> bool:
        return max_condition_number <= 0 or self.kappa <= max_condition_number


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


def calibrate(rows: Sequence[BenchRow], *, start: PerfParms | None = None,
              max_batch: int = DEFAULT_MAX_BATCH,
              max_num_tokens: int = DEFAULT_MAX_NUM_TOKENS, max_fev: int = 2000,
              refine: Predictor | None = None, refine_max_nfev: int = 40,
              refine_step: float = REFINE_STEP) -> Calibration:
    """Least-squares α, β, γ for ``rows`` with confidence intervals.

    The analyzer fit (`BenchModel`) runs first, from the better of ``start`` (model data), a
    low-load guess and the upstream seed. With ``refine`` (for instance a twin that simulates
    every row) a Levenberg–Marquardt search on its residuals continues from there, with
    forward differences of ``refine_step`` in ln x (a stochastic simulator needs steps well
    above its jitter); intervals and residuals are then those of ``refine``.
    """
    if len(rows) < 2:
        raise ConfigError(f"calibration needs at least 2 benchmark rows, got {len(rows)}")
    model = BenchModel(rows, max_batch=max_batch, max_num_tokens=max_num_tokens)
    starts = [np.asarray(DEFAULT_SEED)]
    if start is not None and not start.is_zero:
        starts.append(as_array(start))
    starts.append(_low_load_guess(rows))
    starts = [s for s in starts if np.all(np.isfinite(s)) and np.all(s > 0)]
    r0 = model.residuals(np.vstack(starts))
    values = np.einsum("pk,pk->p", r0, r0)
    x, fun, nfev = minimize_residuals(model.residuals, starts[int(np.argmin(values))],
                                      max_fev=max_fev)
    predictor: Predictor = model.predict
    residuals, jac_step = model.residuals, _LOG_STEP
    if refine is not None:
        predictor, jac_step = refine, refine_step
        residuals = relative_residuals(refine, rows)
        x0 = x

        def in_log(u: np.ndarray) -> np.ndarray:
            return residuals((x0 * np.exp(u))[None, :])[0]

        def forward_jacobian(u: np.ndarray) -> np.ndarray:
            # One batched call for the three probes; scipy's own differences use steps
            # near machine precision at u = 0, where a simulator's TTFT is a step function.
            probes = x0 * np.exp(u + np.vstack([np.zeros(3), refine_step * np.eye(3)]))
            r = residuals(probes)
            return ((r[1:] - r[0]) / refine_step).T

        lm = least_squares(in_log, np.zeros(3), jac=forward_jacobian, method="trf",
                           max_nfev=refine_max_nfev, xtol=1e-8, ftol=1e-10)
        x, fun, nfev = x0 * np.exp(lm.x), float(2.0 * lm.cost), nfev + int(lm.nfev)
    jac = log_jacobian(residuals, x, step=jac_step)
    num_res = 2 * len(rows)
    dof = num_res - 3
    stderr = np.full(3, np.inf)
    if dof > 0 and np.all(np.isfinite(jac)):
        s2 = fun / dof
        cov_u = s2 * np.linalg.pinv(jac.T @ jac)
        stderr = x * np.sqrt(np.clip(np.diag(cov_u), 0.0, None))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, max(dof, 1)) * stderr
    ttft, itl, thr = predictor(x[None, :])
    fits = tuple(RowFit(row=r, ttft_ms=float(ttft[0, i]), itl_ms=float(itl[0, i]),
                        throughput_rps=float(thr[0, i])) for i, r in enumerate(rows))
    return Calibration(params=as_parms(x), stderr=_t3(stderr), ci_low=_t3(x - half),
                       ci_high=_t3(x + half), dof=dof, kappa=condition_of(jac),
                       rms_rel_error=math.sqrt(fun / num_res), rows=fits, nfev=nfev)


def _low_load_guess(rows: Sequence[BenchRow]) -> np.ndarray:
    """α = 0.9·ITL and β, γ from TTFT ≈ α + (β+γ)L at the lightest row (design §6.6)."""
    r = min(rows, key=lambda row: (row.load / row.replicas, row.line))
    alpha = 0.9 * r.itl_ms
    slope = max((r.ttft_ms - alpha) / r.in_tokens, 1e-9)
    return np.array([alpha, 0.9 * slope, 0.1 * slope])


def _t3(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def format_report(result: Calibration, model: str, accelerator: str) -> str:
    """Parameters with confidence intervals, fit quality, and the residual table."""
    p = as_array(result.params)
    lines = [f"{model} on {accelerator}: {len(result.rows)} benchmark rows, chunked model"]
    for name, unit, k in (("alpha", "ms", 0), ("beta", "ms/token", 1),
                          ("gamma", "ms/KV token", 2)):
        lines.append(f"  {name:<5} = {p[k]:.6g} {unit:<11} ± {result.stderr[k]:.3g} (95 % CI "
                     f"{result.ci_low[k]:.6g} .. {result.ci_high[k]:.6g})")
    lines.append(f"  condition number {result.kappa:.3g}, RMS relative residual "
                 f"{100 * result.rms_rel_error:.2f} %, {result.dof} degrees of freedom")
    lines.append(f"  {'line':>5} {'load':>12} {'in':>6} {'out':>6} {'ttft_ms':>10} "
                 f"{'fit':>10} {'err%':>7} {'itl_ms':>8} {'fit':>8} {'err%':>7}")
    for f in result.rows:
        r = f.row
        load = f"C={r.concurrency}" if r.is_closed_loop else f"{r.rate_rps:g}/s"
        lines.append(f"  {r.line:>5} {load:>12} {r.in_tokens:>6g} {r.out_tokens:>6g} "
                     f"{r.ttft_ms:>10.2f} {f.ttft_ms:>10.2f} {100 * f.ttft_error:>7.2f} "
                     f"{r.itl_ms:>8.3f} {f.itl_ms:>8.3f} {100 * f.itl_error:>7.2f}")
    return "\n".join(lines)


def merge_model_data(path: Path, base: Path | None, model: str, accelerator: str,
                     params: PerfParms, *, max_batch: int | None = None) -> None:
    """Write ``base`` (or ``path`` if it exists, else an empty document) with the pair's
    perfParms replaced, to ``path`` atomically.

    Keys are matched case-insensitively (upstream files spell them freely); other entries and
    fields are kept as they are. A missing pair is appended with accCount 1.
    """
    source = path if path.is_file() else base
    doc: Any = {"models": []}
    if source is not None and source.is_file():
        try:
            doc = json.loads(source.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read model data: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(doc).__name__}")
    models_key = _key(doc, "models") or "models"
    models = doc.setdefault(models_key, [])
    if not isinstance(models, list):
        raise ConfigError(f"{source}: {models_key}: must be a list")
    values = {"alpha": params.alpha_ms, "beta": params.beta_ms, "gamma": params.gamma_ms}
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
