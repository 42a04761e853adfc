"""From a Deployment's vLLM metrics over a window to what the controller observes.

One home for the formulas, used by both collectors: the live one (`live.collector`, fed by
PromQL over Prometheus) and the twin's (`sim.twin`, fed by the same functions evaluated over
the replicas' scraped vLLM metrics, `sim.promql`). A `VllmWindow` holds the aggregates the
PromQL of `live.prom` returns, with Prometheus' semantics: per pod ``rate()`` / ``delta()``
/ ``avg_over_time()`` / ``max_over_time()`` over the window, then summed (rates, deltas,
last values) or averaged / maxed (gauges) over the pods of the Deployment.

vLLM exports no arrival counter: it counts a request when it *finishes*
(``request_success_total``). The offered load is therefore reconstructed by conservation:

    arrivals in the window = completions in the window + growth of the requests in the
    system (running + waiting) over the window

so ``offered_rpm = 60 · (Σ rate(request_success_total) + Σ delta(running + waiting) / w)``.
Error bounds (docs/observation.md): exact up to (i) Prometheus' extrapolation at the window
edges, at most about one scrape interval's worth of arrivals (δ/w relative, 8 % at δ = 5 s,
w = 60 s, and zero on average under a steady load); (ii) requests rejected before they
reach vLLM's queue (invisible to vLLM, so to us); (iii) pods ready for less than two scrapes,
whose few arrivals are missed (under 2δ/w of one pod's share); (iv) pods ready through the
whole window that did not report (a scrape gap, a pod Prometheus has not discovered), which
are assumed to carry the reporting pods' mean.
A completion-only estimate (upstream) instead reads 0 while requests outlive the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inferno.model.units import MS_PER_S, S_PER_MIN


@dataclass(frozen=True, slots=True, kw_only=True)
class VllmWindow:
    """One Deployment's vLLM series aggregated over ``window_s``; None = no series.

    Rates are per second (sum over pods of ``rate()``); ``in_system_delta`` is the sum over
    pods of ``delta(num_requests_running) + delta(num_requests_waiting)`` (requests);
    ``*_avg`` are the mean over pods of ``avg_over_time()``; ``waiting_max`` is the max over
    pods of ``max_over_time()``; ``*_now`` are sums over pods of the last sample.
    """

    window_s: float
    completed_rps: float | None = None
    """Finished requests per second (``vllm:request_success_total``, every finish reason)."""
    in_system_delta: float | None = None
    prompt_len_sum_rps: float | None = None
    """``vllm:request_prompt_tokens`` histogram (observed at completion): _sum and _count."""
    prompt_len_count_rps: float | None = None
    gen_len_sum_rps: float | None = None
    gen_len_count_rps: float | None = None
    prompt_tokens_rps: float | None = None
    """``vllm:prompt_tokens_total``: counted when a request's prefill ends (first token)."""
    generation_tokens_rps: float | None = None
    """``vllm:generation_tokens_total``: counted as tokens are produced."""
    ttft_sum_rps: float | None = None
    """``vllm:time_to_first_token_seconds`` (observed at the first token): _sum and _count."""
    ttft_count_rps: float | None = None
    itl_sum_rps: float | None = None
    """``vllm:request_time_per_output_token_seconds`` (at completion): _sum and _count."""
    itl_count_rps: float | None = None
    running_avg: float | None = None
    waiting_avg: float | None = None
    kv_usage_avg: float | None = None
    waiting_max: float | None = None
    running_now: float | None = None
    waiting_now: float | None = None
    reporting_pods: int | None = None
    """Pods with a request-counter rate in the window (at least two scrapes)."""
    recent_window_s: float | None = None
    """A short window at the end of the window (a couple of scrapes): the load now."""
    recent_completed_rps: float | None = None
    recent_in_system_delta: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedLoad:
    """The controller-facing quantities of one Deployment (the `ServerObservation` fields
    a collector derives from metrics); None = no data."""

    arrival_rpm: float | None = None
    throughput_rpm: float | None = None
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    running_requests: float | None = None
    waiting_requests: float | None = None
    kv_usage: float | None = None
    waiting_now: float | None = None
    running_now: float | None = None
    waiting_max: float | None = None
    recent_arrival_rpm: float | None = None
    """Offered load over the recent window (noisier, but without the window's lag)."""
    window_s: float | None = None
    recent_window_s: float | None = None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or not den > 0:
        return None
    value = num / den
    return value if math.isfinite(value) else None


def scale_to_ready(reported: float, num_reporting: int, num_ready: int) -> float:
    """A sum over ``num_reporting`` replicas, extended to all ``num_ready`` ones.

    Replicas that did not report (young, not scraped twice yet) are assumed to carry the mean
    of those that did, so a missing report never lowers the estimate (upstream sawtooth P1
    (docs/design/control-loop.md §8)).
    """
    return reported / num_reporting * max(num_ready, num_reporting)


def estimate_offered_rpm(reported_rpm: Sequence[float | None], num_ready: int) -> float | None:
    """Offered load from per-replica reports, scaled to all ready replicas (None: none)."""
    values = [v for v in reported_rpm if v is not None]
    if not values:
        return None
    return scale_to_ready(sum(values), len(values), num_ready)


def offered_rpm(window: VllmWindow, *, recent: bool = False) -> float | None:
    """Offered load (RPM) of the pods that reported: completions + growth in the system,
    over the window (or its recent end).

    Never 0 while requests are in the system: when nothing finished and nothing grew in the
    window (requests that outlive it), the requests present now count as arrived within it.
    """
    completed, delta, width = ((window.recent_completed_rps, window.recent_in_system_delta,
                                window.recent_window_s) if recent else
                               (window.completed_rps, window.in_system_delta, window.window_s))
    if completed is None or not width:
        return None
    growth = (delta or 0.0) / width
    rps = max(completed + growth, 0.0)
    in_system = (window.running_now or 0.0) + (window.waiting_now or 0.0)
    if rps <= 0.0 and in_system > 0.0:
        rps = in_system / width
    return rps * S_PER_MIN


def observe_window(window: VllmWindow, *, steady_ready: int | None = None) -> ObservedLoad:
    """Every controller quantity of one Deployment from its window of vLLM metrics.

    ``steady_ready`` counts the replicas that were ready through the whole window. Rates are
    extended to those of them that did not report, at the reporting pods' mean; replicas that
    became ready during the window count for what they reported (they served part of it:
    extending them too would count a backlogged pod's queue growth once per new pod). None:
    unknown, no extension. Per-request means are
    ratios of summed rates (a mean over the requests of the window); input tokens fall back to
    prompt tokens per first token (both counted when a prefill ends), output tokens to
    generated tokens per completion.
    """
    reporting = window.reporting_pods or 0

    def extend(value: float | None) -> float | None:
        if value is None or reporting <= 0 or steady_ready is None:
            return value
        return scale_to_ready(value, reporting, steady_ready)

    completed = window.completed_rps
    in_tokens = (_ratio(window.prompt_len_sum_rps, window.prompt_len_count_rps)
                 or _ratio(window.prompt_tokens_rps, window.ttft_count_rps)
                 or _ratio(window.prompt_tokens_rps, completed))
    out_tokens = (_ratio(window.gen_len_sum_rps, window.gen_len_count_rps)
                  or _ratio(window.generation_tokens_rps, completed))
    ttft_s = _ratio(window.ttft_sum_rps, window.ttft_count_rps)
    itl_s = _ratio(window.itl_sum_rps, window.itl_count_rps)
    return ObservedLoad(
        arrival_rpm=extend(offered_rpm(window)),
        throughput_rpm=None if completed is None else extend(completed * S_PER_MIN),
        avg_in_tokens=in_tokens, avg_out_tokens=out_tokens,
        ttft_ms=None if ttft_s is None else ttft_s * MS_PER_S,
        itl_ms=None if itl_s is None else itl_s * MS_PER_S,
        running_requests=window.running_avg, waiting_requests=window.waiting_avg,
        kv_usage=window.kv_usage_avg, waiting_now=window.waiting_now,
        running_now=window.running_now, waiting_max=window.waiting_max,
        recent_arrival_rpm=offered_rpm(window, recent=True), window_s=window.window_s,
        recent_window_s=window.recent_window_s)
