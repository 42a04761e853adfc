"""Deployment-level load and latency from vLLM metrics in Prometheus.

Label scheme: every vLLM series carries the pod's namespace and the name of the Deployment that
owns the pod, in the labels named by `PromSettings.namespace_label` / `.deployment_label`
(``namespace`` / ``deployment`` by default; docs/live.md shows the relabelling that produces
them). Every quantity is one PromQL query aggregated ``by (namespace, deployment)``, so a cycle
costs a fixed 8 queries whatever the number of Deployments.

Semantics (control-loop.md §3, peers.md §1.4): arrival rate is the completion rate (vLLM exports
no arrival counter), in RPM, summed over pods; token counts and latencies are ratios of summed
rates, i.e. means per request; waiting/running/KV usage are per-pod gauges averaged over the
window and over pods. A missing series or a 0/0 ratio is "no data" (None); a failed query
raises a transient CollectError, and the caller skips the cycle.

Older vLLM releases, still deployed, export ``vllm:gpu_cache_usage_perc`` and
``vllm:time_per_output_token_seconds`` instead of the current KV-usage and ITL names; each of
those queries is ``(current) or (older)``, per Deployment, so a fleet may mix versions.

Time: each query's timeout is the smaller of `PromSettings.timeout_s` and what is left of the
cycle's collect deadline (`live.deadline`), and Prometheus gets the same ``timeout`` so it
stops evaluating a query nobody waits for any more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from inferno.errors import CollectError
from inferno.model.units import MS_PER_S, S_PER_MIN
from live.config import PromSettings, make_prom_client, read_bearer_token
from live.deadline import UNBOUNDED, Deadline
from live.errors import TRANSPORT_ERRORS, prom_collect_error

log = logging.getLogger(__name__)

REQUESTS = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PROMPT_LEN = "vllm:request_prompt_tokens"
GENERATION_LEN = "vllm:request_generation_tokens"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:request_time_per_output_token_seconds"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
ITL_OLD = "vllm:time_per_output_token_seconds"
"""ITL histogram of older vLLM releases (same meaning, renamed in vLLM 0.11)."""
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
"""KV-cache usage fraction of older vLLM releases."""

DeploymentKey = tuple[str, str]
"""(namespace, Deployment name)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentMetrics:
    """One Deployment's observations over the window; None = no data."""

    arrival_rpm: float | None = None
    avg_in_tokens: float | None = None
    avg_out_tokens: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    waiting_requests: float | None = None
    running_requests: float | None = None
    kv_usage: float | None = None
    reporting_pods: float | None = None
    """Pods with request series in the window (fewer than ready while Prometheus has not
    yet discovered a new pod)."""


def series_selector(settings: PromSettings, namespace: str = "") -> str:
    """Matcher of the series that belong to some Deployment (optionally one namespace)."""
    matchers = [f'{settings.deployment_label}!=""']
    if namespace:
        matchers.append(f'{settings.namespace_label}="{namespace}"')
    return "{" + ",".join(matchers) + "}"


def build_queries(settings: PromSettings, namespace: str = "") -> dict[str, str]:
    """PromQL per DeploymentMetrics field, each returning one sample per Deployment."""
    sel, w = series_selector(settings, namespace), settings.window
    by = f"sum by ({settings.namespace_label}, {settings.deployment_label})"
    avg = f"avg by ({settings.namespace_label}, {settings.deployment_label})"

    def rate(metric: str) -> str:
        return f"{by} (rate({metric}{sel}[{w}]))"

    def gauge(metric: str) -> str:
        return f"{avg} (avg_over_time({metric}{sel}[{w}]))"

    return {
        "arrival_rpm": f"{S_PER_MIN:g} * {rate(REQUESTS)}",
        # Per-request length histograms (observed at completion) keep numerator and
        # denominator on the same requests; the token counters grow while requests run, so
        # their ratio to completions swings around a load change. Counters are the fallback
        # for servers that do not export the histograms.
        "avg_in_tokens": (f"({rate(PROMPT_LEN + '_sum')} / {rate(PROMPT_LEN + '_count')}) or "
                          f"({rate(PROMPT_TOKENS)} / {rate(REQUESTS)})"),
        "avg_out_tokens": (f"({rate(GENERATION_LEN + '_sum')} / "
                           f"{rate(GENERATION_LEN + '_count')}) or "
                           f"({rate(GENERATION_TOKENS)} / {rate(REQUESTS)})"),
        "ttft_ms": f"{MS_PER_S:g} * {rate(TTFT + '_sum')} / {rate(TTFT + '_count')}",
        "itl_ms": " or ".join(f"({MS_PER_S:g} * {rate(m + '_sum')} / {rate(m + '_count')})"
                              for m in (ITL, ITL_OLD)),
        "waiting_requests": gauge(WAITING),
        "running_requests": gauge(RUNNING),
        "kv_usage": f"({gauge(KV_USAGE)}) or ({gauge(KV_USAGE_OLD)})",
        "reporting_pods": (f"count by ({settings.namespace_label}, {settings.deployment_label}) "
                           f"(sum by ({settings.namespace_label}, {settings.deployment_label}, "
                           f"{settings.pod_label}) (rate({REQUESTS}{sel}[{w}])))"),
    }


def parse_vector(result: list[dict[str, object]], settings: PromSettings
                 ) -> dict[DeploymentKey, float]:
    """Instant-vector samples by Deployment; NaN/Inf samples (0/0 ratios) are dropped."""
    values: dict[DeploymentKey, float] = {}
    for item in result:
        labels = item.get("metric", {})
        sample = item.get("value", ())
        if not isinstance(labels, Mapping) or not isinstance(sample, list | tuple):
            continue
        value = float(sample[1]) if len(sample) == 2 else math.nan
        if math.isfinite(value):
            key = (str(labels.get(settings.namespace_label, "")),
                   str(labels.get(settings.deployment_label, "")))
            values[key] = value
    return values


class PromCollector:
    """Reads DeploymentMetrics for every Deployment with vLLM series in Prometheus."""

    def __init__(self, settings: PromSettings, *,
                 client_factory: Callable[[PromSettings], PrometheusConnect] = make_prom_client
                 ) -> None:
        self.settings = settings
        self._client = client_factory(settings)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def query(self, promql: str, deadline: Deadline = UNBOUNDED) -> dict[DeploymentKey, float]:
        """Run one instant query; raises CollectError (transient unless HTTP 4xx)."""
        if deadline.is_expired:
            raise CollectError(f"prometheus query {promql!r}: the cycle's collect deadline "
                               "passed before it was sent", transient=True)
        timeout_s = deadline.timeout_s(self.settings.timeout_s)
        try:
            result = self._client.custom_query(promql, params={"timeout": f"{timeout_s:.3f}"},
                                               timeout=timeout_s)
        except (PrometheusApiClientException, *TRANSPORT_ERRORS) as exc:
            raise prom_collect_error(exc, promql) from exc
        return parse_vector(result, self.settings)

    def collect(self, namespace: str = "", deadline: Deadline = UNBOUNDED
                ) -> dict[DeploymentKey, DeploymentMetrics]:
        """All fields for every Deployment seen in any query (others are absent: no data)."""
        token = read_bearer_token(self.settings)
        self._client.headers = {"Authorization": f"Bearer {token}"} if token else {}
        columns = {name: self.query(promql, deadline)
                   for name, promql in build_queries(self.settings, namespace).items()}
        keys = sorted({key for column in columns.values() for key in column})
        return {key: DeploymentMetrics(**{name: columns[name].get(key) for name in columns})
                for key in keys}
