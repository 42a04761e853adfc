"""The twin's Prometheus: every served replica's vLLM series, scraped and queried.

A pod (a replica that is ready or draining, i.e. whose vLLM server answers) is scraped every
scrape interval: its `sim.promview.VllmSample`, the values its ``/metrics`` would show then.
`VllmScraper.window` answers, per Deployment, the queries of `live.prom` with the functions of
`sim.promql` over those samples, so the collector of the twin and the live collector feed the
same `inferno.control.observation.VllmWindow` to the same formulas. A gone pod's series goes
stale (no instant value) but its samples stay in range windows, as in Prometheus. Memory is
bounded: samples older than the retention are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from inferno.control.observation import VllmWindow
from sim.deployment import Deployment
from sim.promql import avg_over_time, delta, in_range, last, max_over_time, rate
from sim.promview import VllmCounters, VllmSample
from sim.replica import Replica, ReplicaState

SERVED = (ReplicaState.READY, ReplicaState.DRAINING)
"""Replica states whose metrics endpoint is up."""

_RATES = {
    "completed_rps": VllmSample._fields.index("success"),
    "prompt_len_sum_rps": VllmSample._fields.index("prompt_len_sum"),
    "prompt_len_count_rps": VllmSample._fields.index("prompt_len_count"),
    "gen_len_sum_rps": VllmSample._fields.index("gen_len_sum"),
    "gen_len_count_rps": VllmSample._fields.index("gen_len_count"),
    "prompt_tokens_rps": VllmSample._fields.index("prompt_tokens"),
    "generation_tokens_rps": VllmSample._fields.index("generation_tokens"),
    "ttft_sum_rps": VllmSample._fields.index("ttft_sum"),
    "ttft_count_rps": VllmSample._fields.index("ttft_count"),
    "itl_sum_rps": VllmSample._fields.index("tpot_sum"),
    "itl_count_rps": VllmSample._fields.index("tpot_count"),
}
"""VllmWindow rate field → sample column (sum over pods of rate())."""
_RUNNING = VllmSample._fields.index("running")
_WAITING = VllmSample._fields.index("waiting")
_KV = VllmSample._fields.index("kv_usage")


@dataclass(slots=True, eq=False)
class PodSeries:
    """One pod's samples, oldest first."""

    counters: VllmCounters
    times: list[float] = field(default_factory=list)
    samples: list[VllmSample] = field(default_factory=list)
    is_stale: bool = False


class VllmScraper:
    """Scrapes the served replicas of some deployments; answers windowed queries."""

    def __init__(self, deployments: Mapping[str, Deployment], *, retention_s: float) -> None:
        self.deployments = dict(deployments)
        self.retention_s = retention_s
        self._pods: dict[str, dict[Replica, PodSeries]] = {n: {} for n in self.deployments}

    def scrape(self, now: float) -> None:
        """Take one sample of every served replica now; drop what the retention forgets."""
        horizon = now - self.retention_s
        for name, dep in self.deployments.items():
            pods = self._pods[name]
            for rep in _served(dep.replicas):
                series = pods.get(rep)
                if series is None:
                    series = pods[rep] = PodSeries(VllmCounters(rep))
                series.times.append(now)
                series.samples.append(series.counters.sample(now))
            for rep, series in list(pods.items()):
                if rep.state not in SERVED:
                    series.is_stale = True
                cut = in_range(series.times, horizon, now)[0]
                if cut:
                    del series.times[:cut], series.samples[:cut]
                if series.is_stale and not series.times:
                    del pods[rep]

    def pods(self, name: str) -> Mapping[Replica, PodSeries]:
        """Deployment ``name``'s pods and their retained samples (read only)."""
        return self._pods[name]

    def window(self, name: str, end_s: float, window_s: float,
               recent_s: float | None = None) -> VllmWindow:
        """Deployment ``name``'s aggregates over [end − window, end] (live.prom's queries),
        with the completions and in-system growth of [end − recent, end] when given."""
        main = self._window(name, end_s, window_s)
        if recent_s is None:
            return main
        recent = self._window(name, end_s, recent_s)
        return replace(main, recent_window_s=recent_s,
                       recent_completed_rps=recent.completed_rps,
                       recent_in_system_delta=recent.in_system_delta)

    def _window(self, name: str, end_s: float, window_s: float) -> VllmWindow:
        start = end_s - window_s
        sums = dict.fromkeys(_RATES, 0.0)
        in_system = running_avg = waiting_avg = kv_avg = 0.0
        waiting_max: float | None = None
        running_now = waiting_now = 0.0
        reporting = gauged = instant = 0
        for series in self._pods[name].values():
            lo, hi = in_range(series.times, start, end_s)
            if hi == lo:
                continue
            times = series.times[lo:hi]
            rows = series.samples[lo:hi]
            if hi - lo >= 2:
                reporting += 1
                for key, col in _RATES.items():
                    sums[key] += rate(times, [r[col] for r in rows], start, end_s) or 0.0
                in_system += ((delta(times, [r[_RUNNING] for r in rows], start, end_s) or 0.0)
                              + (delta(times, [r[_WAITING] for r in rows], start, end_s) or 0.0))
            gauged += 1
            running_avg += avg_over_time([r[_RUNNING] for r in rows]) or 0.0
            waiting = [r[_WAITING] for r in rows]
            waiting_avg += avg_over_time(waiting) or 0.0
            kv_avg += avg_over_time([r[_KV] for r in rows]) or 0.0
            peak = max_over_time(waiting)
            if peak is not None:
                waiting_max = peak if waiting_max is None else max(waiting_max, peak)
            last_row = last(times, rows, end_s, is_stale=series.is_stale)
            if last_row is not None:
                instant += 1
                running_now += last_row[_RUNNING]
                waiting_now += last_row[_WAITING]
        rates: dict[str, float | None] = dict(sums) if reporting else dict.fromkeys(_RATES)
        return VllmWindow(
            window_s=window_s, **rates, in_system_delta=in_system if reporting else None,
            running_avg=running_avg / gauged if gauged else None,
            waiting_avg=waiting_avg / gauged if gauged else None,
            kv_usage_avg=kv_avg / gauged if gauged else None, waiting_max=waiting_max,
            running_now=running_now if instant else None,
            waiting_now=waiting_now if instant else None,
            reporting_pods=reporting if reporting else None)


def _served(replicas: Iterable[Replica]) -> list[Replica]:
    return [r for r in replicas if r.state in SERVED]
