"""Candidate allocations: every feasible (server, accelerator) option with its cost and value.

Columnar: all (server, accelerator) pairs are built as numpy arrays, and a `Candidate` object
exists only while someone looks at it (`CandidateList` builds them on access), so memory
stays a few dozen bytes per pair. Sizing (the max rate one replica sustains within the SLO)
depends only on (model, accelerator, tokens, targets, N, Q), not on the arrival rate, so it
runs once per distinct key, in batched analyzer calls over chunks of at most `CHUNK_STATES`
chain states (the memory bound). Under the search batch policy the concurrency search's own
probe at M* is the sizing (no second solve). Per-replica metrics are computed only for the
chosen candidates (`with_metrics`). See docs/design/optimizer-model.md §3.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, overload

import numpy as np

from inferno.analyzer import (
    QueueBatch,
    analyze_batch,
    latency_percentiles_batch,
    optimal_concurrency_sizing,
    perf_columns,
    size_batch,
)
from inferno.io import safe
from inferno.model import (
    DEFAULT_MAX_BATCH,
    DEFAULT_PRIORITY,
    MAX_QUEUE_TO_BATCH_RATIO,
    BatchPolicy,
    ModelTarget,
    Server,
    System,
)
from inferno.model.units import MS_PER_S, S_PER_MIN, rpm_to_rps

DEFAULT_CONCURRENCY_CEILING = DEFAULT_MAX_BATCH
"""Search ceiling when model-data maxBatchSize is 0."""
DEPLOYMENT_MAX_REPLICAS = 2**31 - 1
"""A Deployment's replicas are an int32 in Kubernetes: a candidate needing more cannot be
deployed and is not offered (upstream offers any count; below this bound we match it)."""
CHUNK_STATES = 1 << 20
"""In-service chain states (Σ over rows of N + 1) per batched sizing call: bounds the chain
tables to 8 MiB however many servers there are."""
SEARCH_CHUNK_STATES = 3 << 19
"""The same for the concurrency search, whose rows are narrow (N <= M_max, a few hundred):
its memory goes mostly into per-row arrays, bounded by `CHUNK_ROWS`."""
CHUNK_ROWS = 1 << 13
"""Rows per batched analyzer call (the search keeps ~2 kB of arrays per row)."""
WHOLE_ROWS, WHOLE_STATES = 3 << 13, 1 << 22
"""Up to this many rows and states everything is sized in one call: each call has a fixed
cost (its lockstep iterations), so a ~1,000-server system is ~15% faster in one piece, and
its ~60 MiB is no concern; larger systems are cut into `CHUNK_ROWS` pieces."""


class Candidate(NamedTuple):
    """One way to serve a server: ``num_replicas`` replicas of ``accelerator``.

    A NamedTuple rather than a frozen dataclass: tens of thousands are built per solve and
    tuple construction is several times cheaper; it is immutable all the same.
    """

    server: str
    accelerator: str
    """Accelerator name; "" for the empty zero-load allocation."""
    acc_type: str
    units: int
    """Physical cards of ``acc_type`` per replica (accCount × multiplicity)."""
    num_replicas: int
    max_batch: int
    cost: float
    value: float
    """Ranking value: cost plus the transition penalty (§3.4)."""
    itl_ms: float
    """Predicted at the per-replica load; NaN until `with_metrics` (only chosen ones pay)."""
    ttft_ms: float
    rho: float
    max_rate_rps: float
    """Sustainable request rate of one replica within the SLO."""
    max_queue: int = 0
    sized_replicas: int = 0
    """Replicas the SLO needs; a best-effort copy (`rescaled`) has fewer."""
    ttft_stat_ms: float = math.nan
    """Predicted TTFT in the statistic the class targets (its percentile, or the mean)."""
    itl_stat_ms: float = math.nan
    """Predicted ITL in the statistic the class targets."""
    saturated: bool = False
    """Set by `with_metrics`: the load per replica is above the replica's max rate (the
    latencies, means and statistics, are then +inf)."""

    @property
    def cards(self) -> int:
        return self.units * self.num_replicas

    @property
    def is_empty(self) -> bool:
        return self.accelerator == ""

    def rescaled(self, num_replicas: int) -> Candidate:
        """Best-effort copy with fewer replicas (cost and value scale with them)."""
        ratio = num_replicas / self.num_replicas
        return self._replace(num_replicas=num_replicas, cost=self.cost * ratio,
                             value=self.value * ratio)


def transition_value(cur_same_acc: np.ndarray, cur_replicas: np.ndarray, cur_cost: np.ndarray,
                     num_replicas: np.ndarray, cost: np.ndarray,
                     penalty_factor: float = 0.1) -> np.ndarray:
    """Ranking value given the current allocation (§3.4); the current cost is used verbatim.

    0 if nothing changes, the cost delta if only replicas change, and the delta plus 10% of
    both costs if the accelerator changes.
    """
    same = np.where(cur_replicas == num_replicas, 0.0, cost - cur_cost)
    return np.where(cur_same_acc, same, penalty_factor * (cur_cost + cost)
                    + (cost - cur_cost))


def demand_rps(system: System, server: Server) -> float:
    """Request rate to serve (req/s): a TPS target replaces the measured load (§3.3)."""
    cls = system.classes.get(server.class_name)
    target = cls.targets.get(server.model) if cls else None
    if target is not None and target.slo_tps > 0 and server.load.avg_out_tokens > 0:
        return target.slo_tps / server.load.avg_out_tokens
    return rpm_to_rps(server.load.arrival_rpm)


def priority_of(system: System, server: Server) -> int:
    cls = system.classes.get(server.class_name)
    return cls.priority if cls is not None else DEFAULT_PRIORITY


@dataclass(frozen=True, slots=True)
class _Catalog:
    """Accelerators and perf entries as arrays; accelerators indexed in name order."""

    acc_names: tuple[str, ...]
    acc_types: tuple[str, ...]
    acc_cost: np.ndarray
    acc_mult: np.ndarray
    perf_keys: tuple[tuple[str, str], ...]
    perf_acc: np.ndarray
    perf_cols: dict[str, np.ndarray]
    by_model: dict[str, tuple[np.ndarray, np.ndarray]]
    """model -> (perf indexes, accelerator indexes) of the model's entries, by acc name."""
    penalty_factor: float

    @classmethod
    def of(cls, system: System) -> _Catalog:
        names = tuple(sorted(system.accelerators))
        acc_index = {n: i for i, n in enumerate(names)}
        accs = [system.accelerators[n] for n in names]
        keys = tuple(sorted(k for k in system.perf if k[1] in acc_index))
        perf = [system.perf[k] for k in keys]
        cols = {
            "alpha": np.array([p.perf.alpha_ms for p in perf], float),
            "beta": np.array([p.perf.beta_ms for p in perf], float),
            "gamma": np.array([p.perf.gamma_ms for p in perf], float),
            "max_batch": np.array([p.max_batch_size for p in perf], np.int64),
            "at_tokens": np.array([p.at_tokens for p in perf], np.int64),
            "acc_count": np.array([p.acc_count for p in perf], np.int64),
            "max_num_tokens": np.array([p.max_num_tokens for p in perf], np.int64),
            "stream": np.array([p.perf.stream_ms for p in perf], float),
            "knee": np.array([p.perf.knee_tokens for p in perf], float),
            "excess": np.array([p.perf.beta_excess_ms for p in perf], float),
            "frontend": np.array([p.perf.frontend_ms for p in perf], float),
            "frontend_per_token": np.array([p.perf.frontend_per_token_ms for p in perf], float),
        }
        perf_acc = np.array([acc_index[a] for _, a in keys], np.int64)
        by_model: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for model in {m for m, _ in keys}:
            idx = np.array([i for i, (m, _) in enumerate(keys) if m == model], np.int64)
            by_model[model] = (idx, perf_acc[idx])
        return cls(names, tuple(a.type for a in accs),
                   np.array([a.cost_per_hr for a in accs], float),
                   np.array([a.multiplicity for a in accs], np.int64), keys, perf_acc, cols,
                   by_model, system.settings.accel_penalty_factor)


@dataclass(frozen=True, slots=True)
class _Servers:
    """Per-server columns (S,) needed to build candidates."""

    names: tuple[str, ...]
    cols: dict[str, np.ndarray]

    @classmethod
    def of(cls, system: System, acc_index: dict[str, int]) -> _Servers:
        servers = system.servers
        targets = []
        for s in servers:
            c = system.classes.get(s.class_name)
            targets.append(None if c is None else c.targets.get(s.model))
        f = float
        cols = {
            "has_target": np.array([t is not None for t in targets], dtype=bool),
            "ttft": np.array([t.slo_ttft_ms if t else 0.0 for t in targets], f),
            "itl": np.array([t.slo_itl_ms if t else 0.0 for t in targets], f),
            "ttft_pct": np.array([t.slo_ttft_percentile if t else 0.0 for t in targets], f),
            "itl_pct": np.array([t.slo_itl_percentile if t else 0.0 for t in targets], f),
            "tps": np.array([t.slo_tps if t else 0.0 for t in targets], f),
            "rpm": np.array([s.load.arrival_rpm for s in servers], f),
            "in": np.array([s.load.avg_in_tokens for s in servers], f),
            "out": np.array([s.load.avg_out_tokens for s in servers], f),
            "min_rep": np.array([s.min_num_replicas for s in servers], np.int64),
            "batch_override": np.array([s.max_batch_size for s in servers], np.int64),
            "queue": np.array([-1 if s.max_queue_size is None else s.max_queue_size
                               for s in servers], np.int64),
            "cur_acc": np.array([acc_index.get(s.current.accelerator, -1) for s in servers],
                                np.int64),
            "cur_rep": np.array([s.current.num_replicas for s in servers], np.int64),
            "cur_cost": np.array([s.current.cost for s in servers], f),
        }
        return cls(tuple(s.name for s in servers), cols)


def _pairs(system: System, cat: _Catalog, acc_index: dict[str, int]
           ) -> tuple[np.ndarray, np.ndarray]:
    """(server index, perf index) of every candidate pair (§3.1, §3.2 structural checks)."""
    srv: list[np.ndarray] = []
    prf: list[np.ndarray] = []
    empty = np.zeros(0, np.int64)
    for i, s in enumerate(system.servers):
        load = s.load
        if load.arrival_rpm < 0 or load.avg_in_tokens < 0 or load.avg_out_tokens < 0:
            continue
        perf_idx, accs = cat.by_model.get(s.model, (empty, empty))
        cur = s.current.accelerator
        if s.keep_accelerator and cur:
            perf_idx = perf_idx[accs == acc_index.get(cur, -2)]
        srv.append(np.full(perf_idx.size, i, np.int64))
        prf.append(perf_idx)
    if not srv:
        return empty, empty
    return np.concatenate(srv), np.concatenate(prf)


@dataclass(frozen=True, slots=True)
class _Rows:
    """Candidate rows under construction, all (V,) arrays."""

    server: np.ndarray
    acc: np.ndarray
    units: np.ndarray
    num_replicas: np.ndarray
    max_batch: np.ndarray
    cost: np.ndarray
    value: np.ndarray
    itl_ms: np.ndarray
    ttft_ms: np.ndarray
    rho: np.ndarray
    rate_rps: np.ndarray
    max_queue: np.ndarray


def _queue_batch(cat: _Catalog, perf: np.ndarray, inp: np.ndarray, out: np.ndarray,
                 max_batch: np.ndarray, queue: np.ndarray, system: System) -> QueueBatch:
    c = cat.perf_cols
    return QueueBatch(max_batch=max_batch, max_queue=queue, in_tokens=inp, out_tokens=out,
                      alpha_ms=c["alpha"][perf], beta_ms=c["beta"][perf],
                      gamma_ms=c["gamma"][perf], max_num_tokens=c["max_num_tokens"][perf],
                      perf_model=system.settings.perf_model, stream_ms=c["stream"][perf],
                      knee_tokens=c["knee"][perf], beta_excess_ms=c["excess"][perf],
                      frontend_ms=c["frontend"][perf] + c["frontend_per_token"][perf] * inp)


def _unique(*columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index of each distinct row of the stacked columns, and the inverse map.

    One stable lexsort and a pass per column (``np.unique(axis=0)`` copies the whole key
    matrix several times: tens of MiB at 100k rows).
    """
    order = np.lexsort(columns[::-1])
    new = np.zeros(order.size, dtype=bool)
    new[:1] = True
    for col in columns:
        ranked = np.asarray(col)[order]
        new[1:] |= ranked[1:] != ranked[:-1]
    group = np.cumsum(new) - 1
    inverse = np.empty(order.size, dtype=np.int64)
    inverse[order] = group
    return order[new], inverse


def _chunks(width: np.ndarray, max_states: int = CHUNK_STATES) -> Iterator[np.ndarray]:
    """Row indexes in order of ``width`` (chain states per row): all at once up to
    `WHOLE_ROWS`/`WHOLE_STATES`, else in groups of at most ``max_states`` states and
    `CHUNK_ROWS` rows (a wider row goes alone)."""
    order = np.argsort(width, kind="stable")
    if order.size <= WHOLE_ROWS and int(width.sum()) <= WHOLE_STATES:
        yield order
        return
    ends = np.cumsum(width[order])
    start = 0
    while start < order.size:
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + max_states, side="right"))
        stop = max(start + 1, min(stop, start + CHUNK_ROWS))
        yield order[start:stop]
        start = stop


class _Pairs(NamedTuple):
    """Per-pair columns (P,) that define a sizing: perf entry, tokens, targets (and the
    percentile each latency target is on, 0 for the mean)."""

    perf: np.ndarray
    inp: np.ndarray
    out: np.ndarray
    ttft: np.ndarray
    itl: np.ndarray
    tps: np.ndarray
    ttft_pct: np.ndarray
    itl_pct: np.ndarray

    def keys(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The sizing key columns of ``rows`` (a TPS target matters only by being set)."""
        return (self.perf[rows], self.inp[rows], self.out[rows], self.ttft[rows],
                self.itl[rows], self.tps[rows] > 0, self.ttft_pct[rows], self.itl_pct[rows])


def _sized_rates(cat: _Catalog, system: System, p: _Pairs, u: np.ndarray,
                 max_batch: np.ndarray, queue: np.ndarray) -> np.ndarray:
    """Sustainable rate per replica (req/s, 0 if infeasible) of pairs ``u``, chunk by chunk
    (each chunk's batch is built when it is sized)."""
    rate = np.zeros(u.size)
    for part in _chunks(max_batch[u] + 1):
        r = u[part]
        sized = size_batch(_queue_batch(cat, p.perf[r], p.inp[r], p.out[r], max_batch[r],
                                        queue[r], system), p.ttft[r], p.itl[r], p.tps[r],
                           exact_rates=False, ttft_percentile=p.ttft_pct[r],
                           itl_percentile=p.itl_pct[r], latencies=False)
        rate[part] = np.where(sized.feasible, sized.rate_rps, 0.0)
    return rate


def _searched_rates(cat: _Catalog, system: System, p: _Pairs, u: np.ndarray,
                    m_max: np.ndarray, queue_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M*, sustainable rate at M*) of pairs ``u`` (§2.9), chunk by chunk; M* = 0 if
    infeasible. ``queue_in``: the server's maxQueueSize, −1 for Q = 10·N."""
    best = np.zeros(u.size, np.int64)
    rate = np.zeros(u.size)
    for part in _chunks(m_max[u] + 1, SEARCH_CHUNK_STATES):
        r = u[part]
        batch = _queue_batch(cat, p.perf[r], p.inp[r], p.out[r], m_max[r],
                             np.zeros(r.size, np.int64), system)
        m, found = optimal_concurrency_sizing(
            batch, p.ttft[r], p.itl[r], p.tps[r],
            queue_ratio=np.where(queue_in[r] >= 0, queue_in[r], -MAX_QUEUE_TO_BATCH_RATIO),
            ttft_percentile=p.ttft_pct[r], itl_percentile=p.itl_pct[r])
        best[part] = np.where(found > 0, m, 0)
        rate[part] = found
    return best, rate


def _loaded_rows(system: System, cat: _Catalog, sv: _Servers, srv: np.ndarray,
                 perf: np.ndarray) -> _Rows:
    """Sized candidates of pairs with load (§3.3); infeasible pairs are dropped."""
    s, c = sv.cols, cat.perf_cols
    p = _Pairs(perf, s["in"][srv], s["out"][srv], s["ttft"][srv], s["itl"][srv],
               s["tps"][srv], s["ttft_pct"][srv], s["itl_pct"][srv])
    override, queue_in = s["batch_override"][srv], s["queue"][srv]
    policy = system.settings.batch_policy
    if policy is BatchPolicy.SCALED:
        # capped, or a short output on a large atTokens would size a chain of 10⁹ states
        policy_batch = np.clip(c["max_batch"][perf] * c["at_tokens"][perf]
                               // p.out.astype(np.int64), 1, safe.MAX_BATCH)
    else:
        policy_batch = np.where(c["max_batch"][perf] > 0, c["max_batch"][perf],
                                DEFAULT_CONCURRENCY_CEILING)
    max_batch = np.where(override > 0, override, policy_batch)
    rate = np.zeros(srv.size)
    search = (override <= 0) & (policy is BatchPolicy.SEARCH)
    if search.any():
        # one search per distinct (perf, tokens, targets, Q rule, M_max); its probe at M*
        # is that key's sizing
        rows = np.flatnonzero(search)
        first, inv = _unique(*p.keys(rows), queue_in[rows], max_batch[rows])
        best, found = _searched_rates(cat, system, p, rows[first], max_batch, queue_in)
        max_batch[rows] = best[inv]
        rate[rows] = found[inv]
    queue = np.where(queue_in >= 0, queue_in, MAX_QUEUE_TO_BATCH_RATIO * max_batch)
    rows = np.flatnonzero(~search)
    if rows.size:
        first, inv = _unique(*p.keys(rows), max_batch[rows], queue[rows])
        rate[rows] = _sized_rates(cat, system, p, rows[first], max_batch, queue)[inv]
    tps, out = p.tps, p.out
    total = np.where(tps > 0, tps / np.maximum(out, 1.0), s["rpm"][srv] / S_PER_MIN)
    ok = (rate > 0) & (max_batch > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.ceil(np.where(ok, total / np.where(ok, rate, 1.0), 0.0))
    ok &= np.isfinite(need) & (need <= DEPLOYMENT_MAX_REPLICAS)
    k = np.flatnonzero(ok)
    srv, perf, max_batch, queue, rate = srv[k], perf[k], max_batch[k], queue[k], rate[k]
    n = np.maximum(np.maximum(need[k].astype(np.int64), s["min_rep"][srv]), 1)
    nan = np.full(k.size, np.nan)
    return _finish(cat, sv, srv, perf, n, max_batch, nan, nan, nan, rate, queue)


def _zero_load_rows(cat: _Catalog, sv: _Servers, srv: np.ndarray, perf: np.ndarray) -> _Rows:
    """§3.5: minNumReplicas replicas with nominal metrics, or the empty allocation (acc -1)."""
    s, c = sv.cols, cat.perf_cols
    n = s["min_rep"][srv]
    batch = np.where(s["batch_override"][srv] > 0, s["batch_override"][srv],
                     c["max_batch"][perf])
    alpha, beta, gamma = c["alpha"][perf], c["beta"][perf], c["gamma"][perf]
    itl = alpha + beta
    ttft = itl + gamma * batch
    denom = ttft + alpha + beta * batch
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(denom > 0, batch / denom, 0.0) * MS_PER_S
    rows = _finish(cat, sv, srv, perf, n, batch, itl, ttft, np.zeros(srv.size), rate)
    empty = n == 0
    if not empty.any():
        return rows
    # one empty allocation per server (upstream stores it under every candidate name)
    keep = ~empty
    _, first = np.unique(srv[empty], return_index=True)
    e = np.flatnonzero(empty)[first]
    pick = np.concatenate([np.flatnonzero(keep), e])
    fields = {f: getattr(rows, f)[pick].copy() for f in _Rows.__slots__}
    m = keep.sum()
    fields["acc"][m:] = -1
    for f in ("units", "max_batch", "num_replicas"):
        fields[f][m:] = 0
    for f in ("cost", "value", "itl_ms", "ttft_ms", "rho", "rate_rps", "max_queue"):
        fields[f][m:] = 0.0
    return _Rows(**fields)


def _finish(cat: _Catalog, sv: _Servers, srv: np.ndarray, perf: np.ndarray, n: np.ndarray,
            max_batch: np.ndarray, itl: np.ndarray, ttft: np.ndarray, rho: np.ndarray,
            rate: np.ndarray, queue: np.ndarray | None = None) -> _Rows:
    acc = cat.perf_acc[perf]
    count = cat.perf_cols["acc_count"][perf]
    cost = cat.acc_cost[acc] * count * n
    s = sv.cols
    value = transition_value(s["cur_acc"][srv] == acc, s["cur_rep"][srv], s["cur_cost"][srv],
                             n, cost, cat.penalty_factor)
    return _Rows(server=srv, acc=acc, units=count * cat.acc_mult[acc], num_replicas=n,
                 max_batch=np.asarray(max_batch, np.int64), cost=cost, value=value,
                 itl_ms=np.asarray(itl, float), ttft_ms=np.asarray(ttft, float),
                 rho=np.asarray(rho, float), rate_rps=np.asarray(rate, float),
                 max_queue=np.zeros(srv.size, np.int64) if queue is None else queue)


@dataclass(frozen=True, slots=True)
class _Store:
    """Every candidate of a system as columns, sorted by (server, value, accelerator name)."""

    rows: _Rows
    names: tuple[str, ...]
    acc_names: tuple[str, ...]
    """Accelerator names by index, "" last (index -1: the empty allocation)."""
    acc_types: tuple[str, ...]

    def candidate(self, k: int) -> Candidate:
        r = self.rows
        a = int(r.acc[k])
        n = int(r.num_replicas[k])
        return Candidate(self.names[int(r.server[k])], self.acc_names[a], self.acc_types[a],
                         int(r.units[k]), n, int(r.max_batch[k]), float(r.cost[k]),
                         float(r.value[k]), float(r.itl_ms[k]), float(r.ttft_ms[k]),
                         float(r.rho[k]), float(r.rate_rps[k]), int(r.max_queue[k]), n)


class CandidateList(Sequence[Candidate]):
    """One server's candidates, sorted by (value, accelerator name); each `Candidate` is
    built when it is read (a large system has 20+ per server, most never looked at)."""

    __slots__ = ("_built", "_start", "_stop", "_store")

    def __init__(self, store: _Store, start: int, stop: int) -> None:
        self._store, self._start, self._stop = store, start, stop
        self._built: dict[int, Candidate] | None = None

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, i: int) -> Candidate: ...

    @overload
    def __getitem__(self, i: slice) -> list[Candidate]: ...

    def __getitem__(self, i: int | slice) -> Candidate | list[Candidate]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        size = self._stop - self._start
        if not -size <= i < size:
            raise IndexError(i)
        k = i % size
        if self._built is None:
            self._built = {}
        c = self._built.get(k)
        if c is None:
            c = self._built[k] = self._store.candidate(self._start + k)
        return c

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CandidateList({list(self)!r})"


def compute_candidates(system: System) -> dict[str, CandidateList]:
    """All feasible candidates per server, sorted by (value, accelerator name).

    Servers with no feasible candidate map to an empty list.
    """
    cat = _Catalog.of(system)
    acc_index = {n: i for i, n in enumerate(cat.acc_names)}
    sv = _Servers.of(system, acc_index)
    srv, perf = _pairs(system, cat, acc_index)
    s = sv.cols
    base = s["has_target"][srv]
    zero = base & ((s["rpm"][srv] == 0) | (s["out"][srv] == 0))
    c = cat.perf_cols
    params_zero = (c["alpha"][perf] == 0) & (c["beta"][perf] == 0) & (c["gamma"][perf] == 0)
    loaded = base & ~zero & ~params_zero
    parts = [_zero_load_rows(cat, sv, srv[zero], perf[zero])]
    if loaded.any():
        parts.append(_loaded_rows(system, cat, sv, srv[loaded], perf[loaded]))
    rows = _Rows(**{f: np.concatenate([getattr(p, f) for p in parts])
                    for f in _Rows.__slots__})
    order = np.lexsort((rows.acc, rows.value, rows.server))
    store = _Store(_Rows(**{f: getattr(rows, f)[order] for f in _Rows.__slots__}), sv.names,
                   (*cat.acc_names, ""), (*cat.acc_types, ""))
    bounds = np.searchsorted(store.rows.server, np.arange(len(sv.names) + 1)).tolist()
    return {name: CandidateList(store, bounds[i], bounds[i + 1])
            for i, name in enumerate(sv.names)}


def target_of(system: System, server: Server) -> ModelTarget | None:
    """The class target of ``server``'s model, None when its class or target is missing."""
    cls = system.classes.get(server.class_name)
    return cls.targets.get(server.model) if cls else None


def with_metrics(system: System, chosen: Mapping[str, Candidate],
                 share: Mapping[str, float] | None = None) -> dict[str, Candidate]:
    """Fill predicted latencies and ρ of the chosen candidates, in batched analyzer calls.

    Metrics are those of one replica at the load it actually gets: the server's demand
    (times ``share[key]``, the fraction this candidate carries; default 1) over the
    candidate's ``num_replicas``. A best-effort copy therefore reports the latencies of its
    too few replicas, not those of the SLO-sized allocation (upstream reports the latter,
    §4.3). Where that load exceeds the replica's max rate the candidate is ``saturated``,
    with +inf latencies: the queue model has no finite answer there. Besides the means it
    fills each class-targeted statistic (the percentile where the target is on one; one
    `latency_percentiles_batch` call, only for those servers that are not saturated).
    """
    todo = [(key, c) for key, c in chosen.items() if c.itl_ms != c.itl_ms]  # NaN
    if not todo:
        return dict(chosen)
    servers = {s.name: s for s in system.servers}
    srv = [servers[c.server] for _, c in todo]
    perf = [system.perf[(s.model, c.accelerator)] for s, (_, c) in zip(srv, todo, strict=True)]
    out_tokens = np.array([s.load.avg_out_tokens for s in srv], float)
    total = np.array([demand_rps(system, s) * (1.0 if share is None else share[key])
                      for s, (key, _) in zip(srv, todo, strict=True)])
    cands = [c for _, c in todo]
    batch = QueueBatch(
        max_batch=np.array([c.max_batch for c in cands], np.int64),
        max_queue=np.array([c.max_queue for c in cands], np.int64),
        in_tokens=np.array([s.load.avg_in_tokens for s in srv], float), out_tokens=out_tokens,
        alpha_ms=np.array([p.perf.alpha_ms for p in perf]),
        beta_ms=np.array([p.perf.beta_ms for p in perf]),
        gamma_ms=np.array([p.perf.gamma_ms for p in perf]),
        max_num_tokens=np.array([p.max_num_tokens for p in perf], np.int64),
        perf_model=system.settings.perf_model,
        **perf_columns([p.perf for p in perf], np.array([s.load.avg_in_tokens for s in srv])))
    rate = total / np.array([c.num_replicas for c in cands], float)
    m = analyze_batch(batch, rate)
    saturated = ~m.valid | (rate > m.max_rate_rps)
    ttft_stat, itl_stat = m.ttft_ms.copy(), m.itl_ms.copy()
    targets = [target_of(system, s) for s in srv]
    pct = np.array([(t.slo_ttft_percentile, t.slo_itl_percentile) if t else (0.0, 0.0)
                    for t in targets]).reshape(-1, 2)
    rows = np.flatnonzero((pct > 0).any(axis=1) & ~saturated)
    if rows.size:
        levels = tuple(sorted({float(q) for q in pct[rows].ravel() if q > 0}))
        got = latency_percentiles_batch(batch.take(rows), rate[rows], levels)
        column = {q: j for j, q in enumerate(levels)}
        for k, i in enumerate(rows):
            if pct[i, 0] > 0:
                ttft_stat[i] = got.ttft_ms[k, column[pct[i, 0]]]
            if pct[i, 1] > 0:
                itl_stat[i] = got.itl_ms[k, column[pct[i, 1]]]
    inf = float("inf")
    result = dict(chosen)
    for k, (key, c) in enumerate(todo):
        if saturated[k]:
            result[key] = c._replace(itl_ms=inf, ttft_ms=inf, rho=1.0, ttft_stat_ms=inf,
                                     itl_stat_ms=inf, saturated=True)
        else:
            result[key] = c._replace(itl_ms=float(m.itl_ms[k]), ttft_ms=float(m.ttft_ms[k]),
                                     rho=float(m.rho[k]), ttft_stat_ms=float(ttft_stat[k]),
                                     itl_stat_ms=float(itl_stat[k]))
    return result
