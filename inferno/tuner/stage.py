"""The tuner as a controller stage: observe a snapshot, merge learned parameters into a System.

The controller calls `TunerStage.observe` after collecting and `TunerStage.merge` before
solving. The stage never raises into the controller: a failure is logged, counted and shown in
`state_for_log`, and `merge` then returns its input unchanged, so optimize/actuate always run
(upstream: a dead tuner only produced a warning).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from inferno.model import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_NUM_TOKENS,
    ModelPerf,
    PerfParms,
    System,
    effective_max_queue,
)
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from inferno.tuner.observation import FirstToken, TunerObservation
from inferno.tuner.pair import tune_pair
from inferno.tuner.settings import TunerMode, TunerSettings
from inferno.tuner.store import Key, ParameterStore, TunerPhase

logger = logging.getLogger(__name__)

DEFAULT_APPENDED_MAX_BATCH = DEFAULT_MAX_BATCH
"""maxBatchSize of a learned pair appended to model data that lacks it (upstream /merge)."""


def observations_from_snapshot(snapshot: ClusterSnapshot, system: System | None = None, *,
                               first_token: FirstToken = FirstToken.DECODE,
                               previous: ClusterSnapshot | None = None
                               ) -> list[TunerObservation]:
    """One observation per server with traffic and ready replicas (per-replica means).

    Idle servers (no rate or no ready replica) give none, as upstream ignores them; a missing
    latency or token count becomes NaN so that screening counts it as invalid. ``first_token``
    is the collector's TTFT convention.

    With ``previous``, the last cycle's snapshot, a server is marked transient unless it was
    in it with the same ready replicas, accelerator and max batch: its window may hold a
    scaling step or a start from empty (exact when the collection window is at most the
    control period). Without ``previous`` nothing is marked (a caller that does not track
    history takes every window as stationary).
    """
    out = []
    for name in sorted(snapshot.servers):
        s = snapshot.servers[name]
        if not s.arrival_rpm or s.arrival_rpm <= 0 or s.ready_replicas <= 0 or not s.accelerator:
            continue
        prev = previous.servers.get(name) if previous is not None else s
        is_transient = prev is None or (
            (prev.ready_replicas, prev.accelerator, prev.max_batch)
            != (s.ready_replicas, s.accelerator, s.max_batch))
        out.append(_observation(s, snapshot.time_s, system, first_token, is_transient))
    return out


def _observation(s: ServerObservation, time_s: float, system: System | None,
                 first_token: FirstToken, is_transient: bool) -> TunerObservation:
    perf = system.perf.get((s.model, s.accelerator)) if system is not None else None
    n = s.max_batch
    q = effective_max_queue(s.max_queue_size, n)
    nan = math.nan

    def value(v: float | None) -> float:
        return nan if v is None else float(v)

    arrival = value(s.arrival_rpm)
    done = s.throughput_rpm
    if done is not None and abs(done - arrival) <= STEADY_SHARE * arrival:
        # Steady: the completions are the same rate without the offered estimate's queue
        # term, whose window-edge noise would pass for spread between operating points.
        arrival = float(done)
    return TunerObservation(
        model=s.model, accelerator=s.accelerator,
        arrival_rpm=arrival / s.ready_replicas,
        throughput_rpm=None if done is None else float(done) / s.ready_replicas,
        in_tokens=value(s.avg_in_tokens), out_tokens=value(s.avg_out_tokens),
        max_batch=n, max_queue=q, ttft_ms=value(s.ttft_ms), itl_ms=value(s.itl_ms),
        waiting_requests=s.waiting_requests,
        max_num_tokens=perf.max_num_tokens if perf is not None else DEFAULT_MAX_NUM_TOKENS,
        time_s=time_s, first_token=first_token, is_transient=is_transient)


STEADY_SHARE = 0.1
"""Offered and completed rates within this share of each other mark a steady window."""


class TunerStage:
    """Learns α, β, γ per (model, accelerator) from cycle observations (§6)."""

    def __init__(self, settings: TunerSettings | None = None,
                 store: ParameterStore | None = None) -> None:
        self.settings = settings or TunerSettings()
        self.store = store or ParameterStore()
        self._priors: dict[Key, PerfParms] = {}
        self._num_errors = 0
        self._last_error: str | None = None
        self._warming_cycles = 0
        self._num_cycles = 0
        self._previous: ClusterSnapshot | None = None
        """The last observed snapshot; a server absent from it, or whose replica set changed
        since, gives a transient observation (the first cycle's are all transient)."""

    @property
    def is_enabled(self) -> bool:
        return self.settings.mode is not TunerMode.OFF

    # -- input -----------------------------------------------------------------------------

    def observe(self, snapshot: ClusterSnapshot, system: System | None = None) -> None:
        """Tune every pair seen in ``snapshot``; ``system`` supplies model-data priors."""
        try:
            observations = observations_from_snapshot(
                snapshot, system, first_token=self.settings.first_token,
                previous=self._previous or ClusterSnapshot(time_s=snapshot.time_s))
            self._previous = snapshot
        except Exception as exc:  # the tuner must never break the control loop
            self._record_error("observe", exc)
            return
        self.tune(observations, now_s=snapshot.time_s, system=system)

    def tune(self, observations: Iterable[TunerObservation], *, now_s: float,
             system: System | None = None) -> None:
        """One cycle over per-replica ``observations`` (any mix of pairs)."""
        if not self.is_enabled:
            return
        self._num_cycles += 1
        try:
            if system is not None:
                self._remember_priors(system)
            by_pair: dict[Key, list[TunerObservation]] = defaultdict(list)
            for o in observations:
                by_pair[o.key].append(o)
        except Exception as exc:  # the tuner must never break the control loop
            self._record_error("tune", exc)
            return
        for key in sorted(by_pair):
            state = self.store.get(key)
            try:
                new = tune_pair(state, by_pair[key], prior=self._priors.get(key),
                                settings=self.settings, now_s=now_s)
            except Exception as exc:  # one pair's failure must not stop the others
                message = self._record_error(f"pair {key[0]}/{key[1]}", exc)
                new = dataclasses.replace(state, last_error=message,
                                          counts=state.counted("error"))
            self.store.put(new)
        self._warming_cycles = self._warming_cycles + 1 if self._is_pair_warming() else 0

    # -- output ----------------------------------------------------------------------------

    def merge(self, system: System) -> System:
        """``system`` with learned perfParms in place of model data (input if nothing learned).

        A learned pair missing from model data is appended with accCount 1 and
        maxBatchSize 256 (upstream /merge) when its accelerator is known.
        """
        if not self.is_enabled:
            return system
        try:
            self._remember_priors(system)
            learned = self.store.learned()
            if not learned:
                return system
            perf = dict(system.perf)
            for key, parms in learned.items():
                if key in perf:
                    # α, β, γ are learned; the other terms (front-end, shape) stay the data's.
                    perf[key] = dataclasses.replace(perf[key], perf=dataclasses.replace(
                        perf[key].perf, alpha_ms=parms.alpha_ms, beta_ms=parms.beta_ms,
                        gamma_ms=parms.gamma_ms))
                elif key[1] in system.accelerators:
                    perf[key] = ModelPerf(model=key[0], accelerator=key[1], acc_count=1,
                                          max_batch_size=DEFAULT_APPENDED_MAX_BATCH,
                                          perf=parms)
            return dataclasses.replace(system, perf=perf)
        except Exception as exc:  # the tuner must never break the control loop
            self._record_error("merge", exc)
            return system

    def is_warming_up(self) -> bool:
        """True while a pair collects or runs its NIS-free warm-up, until the timeout.

        The timeout counts consecutive warming cycles (``warm_up_timeout_cycles``, 0 = never).
        """
        if not self.is_enabled or not self._is_pair_warming():
            return False
        timeout = self.settings.warm_up_timeout_cycles
        return timeout == 0 or self._warming_cycles < timeout

    def state_for_log(self) -> dict[str, Any]:
        """JSON-ready record for the cycle log: per pair parameters, NIS, κ and counters."""
        return {
            "mode": self.settings.mode.value, "cycles": self._num_cycles,
            "warmingUp": self.is_warming_up(), "errors": self._num_errors,
            "lastError": self._last_error, "pairs": [s.for_log() for s in self.store],
        }

    def params(self) -> Mapping[Key, PerfParms]:
        """Published parameters per pair (what `merge` uses; pairs without are absent)."""
        return self.store.learned()

    def candidates(self) -> Mapping[Key, PerfParms]:
        """The estimator's current parameters per pair, published or not."""
        return {s.key: s.params for s in self.store if s.params is not None}

    # -- internals -------------------------------------------------------------------------

    def _remember_priors(self, system: System) -> None:
        """Model data as first seen is the fit's start point (later merges carry our values)."""
        for key, perf in system.perf.items():
            self._priors.setdefault(key, perf.perf)

    def _is_pair_warming(self) -> bool:
        return any(s.phase is not TunerPhase.TUNED for s in self.store)

    def _record_error(self, where: str, exc: Exception) -> str:
        message = f"{where}: {type(exc).__name__}: {exc}"
        logger.exception("tuner %s failed", where)
        self._num_errors += 1
        self._last_error = message
        return message
