"""A Deployment's vLLM metrics over the window, from Prometheus.

Label scheme: every vLLM series carries the pod's namespace and the name of the Deployment that
owns the pod, in the labels named by `PromSettings.namespace_label` / `.deployment_label`
(``namespace`` / ``deployment`` by default; docs/live.md shows the relabelling that produces
them). Each field of `inferno.control.observation.VllmWindow` is one PromQL expression
aggregated ``by (namespace, deployment)`` (`build_queries`); a cycle sends them as one query,
each tagged with its field in a ``__field__`` label (``label_replace``), so a collect costs one
HTTP call whatever the number of Deployments and fields. The formulas that turn these
aggregates into the controller's observation live in `inferno.control.observation`, shared
with the twin, which evaluates the same expressions over its replicas' scrapes.

Older vLLM names are read when the current ones are absent: ``vllm:gpu_cache_usage_perc``
for the KV usage, ``vllm:time_per_output_token_seconds`` for the per-token latency.
A missing series or a 0/0 ratio is "no data" (None); a failed query raises a transient
CollectError, and the caller skips the cycle.

Time: the query's timeout is the smaller of `PromSettings.timeout_s` and what is left of the
cycle's collect deadline (`live.deadline`), and Prometheus gets the same ``timeout`` so it
stops evaluating a query nobody waits for any more.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import fields

from prometheus_api_client import PrometheusConnect

from inferno.control.observation import VllmWindow
from inferno.errors import CollectError
from live.config import PromSettings, make_prom_client, read_bearer_token
from live.deadline import UNBOUNDED, Deadline
from live.errors import PROM_ERRORS, prom_collect_error

log = logging.getLogger(__name__)

REQUESTS = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PROMPT_LEN = "vllm:request_prompt_tokens"
GENERATION_LEN = "vllm:request_generation_tokens"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:request_time_per_output_token_seconds"
ITL_OLD = "vllm:time_per_output_token_seconds"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_OLD = "vllm:gpu_cache_usage_perc"
FIELD_LABEL = "__field__"
"""Label tagging each part of the combined query with its VllmWindow field."""

DeploymentKey = tuple[str, str]
"""(namespace, Deployment name)."""

WINDOW_FIELDS = tuple(f.name for f in fields(VllmWindow)
                      if f.name not in ("window_s", "recent_window_s"))


def series_selector(settings: PromSettings, namespace: str = "") -> str:
    """Matcher of the series that belong to some Deployment (optionally one namespace)."""
    matchers = [f'{settings.deployment_label}!=""']
    if namespace:
        matchers.append(f'{settings.namespace_label}="{namespace}"')
    return "{" + ",".join(matchers) + "}"


def build_queries(settings: PromSettings, namespace: str = "") -> dict[str, str]:
    """PromQL per VllmWindow field, each returning one sample per Deployment."""
    sel, w, r = series_selector(settings, namespace), settings.window, settings.recent_window
    keys = f"{settings.namespace_label}, {settings.deployment_label}"

    def rate(metric: str, over: str = w) -> str:
        return f"sum by ({keys}) (rate({metric}{sel}[{over}]))"

    def in_system(over: str) -> str:
        return (f"sum by ({keys}) (delta({RUNNING}{sel}[{over}]) + "
                f"delta({WAITING}{sel}[{over}]))")

    def either(new: str, old: str, make: Callable[[str], str]) -> str:
        return f"({make(new)}) or ({make(old)})"

    def over_time(fn: str, agg: str) -> Callable[[str], str]:
        return lambda metric: f"{agg} by ({keys}) ({fn}_over_time({metric}{sel}[{w}]))"

    return {
        "completed_rps": rate(REQUESTS),
        "in_system_delta": in_system(w),
        "prompt_len_sum_rps": rate(PROMPT_LEN + "_sum"),
        "prompt_len_count_rps": rate(PROMPT_LEN + "_count"),
        "gen_len_sum_rps": rate(GENERATION_LEN + "_sum"),
        "gen_len_count_rps": rate(GENERATION_LEN + "_count"),
        "prompt_tokens_rps": rate(PROMPT_TOKENS),
        "generation_tokens_rps": rate(GENERATION_TOKENS),
        "ttft_sum_rps": rate(TTFT + "_sum"),
        "ttft_count_rps": rate(TTFT + "_count"),
        "itl_sum_rps": either(ITL + "_sum", ITL_OLD + "_sum", rate),
        "itl_count_rps": either(ITL + "_count", ITL_OLD + "_count", rate),
        "running_avg": over_time("avg", "avg")(RUNNING),
        "waiting_avg": over_time("avg", "avg")(WAITING),
        "kv_usage_avg": either(KV_USAGE, KV_USAGE_OLD, over_time("avg", "avg")),
        "waiting_max": over_time("max", "max")(WAITING),
        "running_now": f"sum by ({keys}) ({RUNNING}{sel})",
        "waiting_now": f"sum by ({keys}) ({WAITING}{sel})",
        "reporting_pods": (f"count by ({keys}) (sum by ({keys}, {settings.pod_label}) "
                           f"(rate({REQUESTS}{sel}[{w}])))"),
        "recent_completed_rps": rate(REQUESTS, r),
        "recent_in_system_delta": in_system(r),
    }


def combined_query(queries: Mapping[str, str]) -> str:
    """One query returning every field's series, each tagged with ``__field__``."""
    return " or ".join(f'label_replace({promql}, "{FIELD_LABEL}", "{name}", "", "")'
                       for name, promql in queries.items())


def parse_vector(result: list[dict[str, object]], settings: PromSettings
                 ) -> dict[str, dict[DeploymentKey, float]]:
    """Field → Deployment → value; NaN/Inf samples (0/0 ratios) are dropped."""
    values: dict[str, dict[DeploymentKey, float]] = {}
    for item in result:
        labels = item.get("metric", {})
        sample = item.get("value", ())
        if not isinstance(labels, Mapping) or not isinstance(sample, list | tuple):
            continue
        value = float(sample[1]) if len(sample) == 2 else math.nan
        if math.isfinite(value):
            key = (str(labels.get(settings.namespace_label, "")),
                   str(labels.get(settings.deployment_label, "")))
            values.setdefault(str(labels.get(FIELD_LABEL, "")), {})[key] = value
    return values


class PromReader:
    """Reads every Deployment's VllmWindow from Prometheus in one query per collect."""

    def __init__(self, settings: PromSettings, *,
                 client_factory: Callable[[PromSettings], PrometheusConnect] = make_prom_client
                 ) -> None:
        self.settings = settings
        self._client = client_factory(settings)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def query(self, promql: str, time_s: float | None = None,
              deadline: Deadline = UNBOUNDED) -> list[dict[str, object]]:
        """Run one instant query (now, or at Unix time ``time_s``) within ``deadline``;
        raises CollectError (transient unless HTTP 4xx)."""
        if deadline.is_expired:
            raise CollectError(f"prometheus query {promql!r}: the cycle's collect deadline "
                               "passed before it was sent", transient=True)
        timeout_s = deadline.timeout_s(self.settings.timeout_s)
        token = read_bearer_token(self.settings)
        self._client.headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"timeout": f"{timeout_s:.3f}"}
        if time_s is not None:
            params["time"] = f"{time_s:.3f}"
        try:
            return self._client.custom_query(promql, params=params, timeout=timeout_s)
        except PROM_ERRORS as exc:
            raise prom_collect_error(exc, promql) from exc

    def collect(self, namespace: str = "", time_s: float | None = None,
                deadline: Deadline = UNBOUNDED) -> dict[DeploymentKey, VllmWindow]:
        """Every Deployment with a series in any field (others are absent: no data), now or
        at Unix time ``time_s``."""
        queries = build_queries(self.settings, namespace)
        columns = parse_vector(self.query(combined_query(queries), time_s, deadline),
                               self.settings)
        keys = sorted({key for column in columns.values() for key in column})
        window_s = self.settings.window_s
        out = {}
        for key in keys:
            found = {name: columns.get(name, {}).get(key) for name in WINDOW_FIELDS}
            pods = found.pop("reporting_pods")
            out[key] = VllmWindow(window_s=window_s,
                                  recent_window_s=self.settings.recent_window_s,
                                  **found,
                                  reporting_pods=None if pods is None else round(pods))
        return out
