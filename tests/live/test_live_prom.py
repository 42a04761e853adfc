"""PromReader and LiveCollector against a real Prometheus scraping emulated vLLM pods.

The pods' counters grow at rates the test drives, so the expected values are closed forms:
for deployment ``alpha`` with pod a1 (2 req/s, 100 in / 50 out tokens, TTFT 0.1 s, ITL 20 ms,
2 waiting, 10 running, KV 0.5) and pod a2 (1 req/s, 400 / 200 tokens, TTFT 0.4 s, ITL 50 ms,
4 waiting, 20 running, KV 0.7): completions 2 + 1 = 3 req/s, constant gauges (no growth), so
arrival = 60·3 = 180 RPM; in tokens = (2·100+1·400)/3 = 200; out = (2·50+1·200)/3 = 100;
TTFT = 1000·(2·0.1+1·0.4)/3 = 200 ms; ITL = 1000·(2·0.02+1·0.05)/3 = 30 ms;
waiting = (2+4)/2 = 3 per pod, 6 now; running = (10+20)/2 = 15 per pod, 30 now;
KV = (0.5+0.7)/2 = 0.6.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import kubernetes.client
import pytest
from kube_emulator import EmulatorThread, deployment, managed_labels
from prom_harness import PodLoad, PrometheusServer, RecordingProxy, VllmPod

from inferno.control.observation import ObservedLoad, VllmWindow, observe_window
from inferno.errors import CollectError
from inferno.model.snapshot import ServerObservation
from live.collector import LiveCollector
from live.config import KubeSettings, PromSettings
from live.prom import WINDOW_FIELDS, PromReader, build_queries

WINDOW_S = 5
RECENT = "4s"
NS = "prom-a"

A1 = PodLoad(request_rps=2.0, in_tokens=100, out_tokens=50, ttft_s=0.1, itl_s=0.02,
             waiting=2, running=10, kv_usage=0.5)
A2 = PodLoad(request_rps=1.0, in_tokens=400, out_tokens=200, ttft_s=0.4, itl_s=0.05,
             waiting=4, running=20, kv_usage=0.7)
IDLE = PodLoad(request_rps=0.0, in_tokens=0, out_tokens=0, ttft_s=0, itl_s=0, waiting=0,
               running=0, kv_usage=0.1)
HIST = PodLoad(request_rps=1.0, in_tokens=900, out_tokens=700, ttft_s=0.1, itl_s=0.01,
               waiting=0, running=1, kv_usage=0.2, length_histograms=(128.0, 256.0))
"""Token counters that disagree with the per-request histograms (as around a load change,
when counters include requests still running): the histograms are the truth."""
OTHER = PodLoad(request_rps=0.5, in_tokens=10, out_tokens=10, ttft_s=0.1, itl_s=0.01,
                waiting=0, running=1, kv_usage=0.2)
OLD = PodLoad(request_rps=1.0, in_tokens=10, out_tokens=10, ttft_s=0.1, itl_s=0.04,
              waiting=0, running=1, kv_usage=0.3, old_names=True)
"""A vLLM that exports the former names of the KV usage and per-token latency series."""

ALPHA = ObservedLoad(arrival_rpm=180.0, throughput_rpm=180.0, avg_in_tokens=200.0,
                     avg_out_tokens=100.0, ttft_ms=200.0, itl_ms=30.0, waiting_requests=3.0,
                     running_requests=15.0, kv_usage=0.6, waiting_now=6.0, running_now=30.0,
                     waiting_max=4.0, recent_arrival_rpm=180.0, window_s=WINDOW_S,
                     recent_window_s=4.0)


class FixedClock:
    def now_s(self) -> float:
        return 42.0


@pytest.fixture(scope="module")
def served(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """Pods of alpha (2), idle (1) in prom-a and other, hist, old in prom-b, scraped long
    enough that a WINDOW_S window is fully covered."""
    pods = {("prom-a", "alpha", "a1"): VllmPod(A1), ("prom-a", "alpha", "a2"): VllmPod(A2),
            ("prom-a", "idle", "i1"): VllmPod(IDLE), ("prom-b", "other", "o1"): VllmPod(OTHER),
            ("prom-b", "hist", "h1"): VllmPod(HIST), ("prom-b", "old", "x1"): VllmPod(OLD)}
    for (namespace, dep, pod), server in pods.items():
        prometheus.add_target(server.address,
                              {"namespace": namespace, "deployment": dep, "pod": pod})
    prometheus.wait_for_samples('{job="vllm",namespace=~"prom-a|prom-b"}', num_series=6,
                                min_samples=WINDOW_S + 1)
    yield prometheus
    prometheus.remove_targets(server.address for server in pods.values())
    for server in pods.values():
        server.stop()


@pytest.fixture
def prom_reader(served: PrometheusServer) -> Iterator[PromReader]:
    reader = PromReader(PromSettings(url=served.url, window=f"{WINDOW_S}s",
                                     recent_window=RECENT))
    yield reader
    reader.close()


RATE_REL = 0.05
"""Tolerance of a rate: scrape timestamps and the pods' clock reads differ by scheduling
jitter (ms) over a 5 s window. Ratios of two series from one scrape carry no such error."""

RATIO_REL = 0.005
MIXED_REL = 0.02
"""A mean over several pods weights each pod by its rate, which carries the rate error: when
the machine is busy Prometheus scrapes the pods at different phases."""


def assert_observed(actual: ObservedLoad, expected: ObservedLoad,
                    ratio_rel: float = RATIO_REL) -> None:
    for f in fields(ObservedLoad):
        want, got = getattr(expected, f.name), getattr(actual, f.name)
        if want is None:
            assert got is None, f.name
        else:
            rel = (RATE_REL if f.name in ("arrival_rpm", "throughput_rpm", "recent_arrival_rpm")
                   else ratio_rel)
            assert got == pytest.approx(want, rel=rel, abs=1e-9), f.name


def test_queries_cover_every_window_field() -> None:
    """There is exactly one PromQL expression per VllmWindow field, using the window."""
    queries = build_queries(PromSettings(window="7s"), namespace="ns")
    assert set(queries) == set(WINDOW_FIELDS)
    for name, query in queries.items():
        assert 'namespace="ns"' in query, name
        assert (name.endswith("_now") or "[7s]" in query
                or name.startswith("recent_") and "[30s]" in query), name
    assert set(queries) == {f.name for f in fields(VllmWindow)} - {"window_s", "recent_window_s"}


def test_rates_and_latencies_match_the_driven_load(prom_reader: PromReader) -> None:
    """alpha's arrival and throughput (5 %), tokens, TTFT, ITL and gauges (2 %: means over two
    pods) equal the closed forms; both pods reported."""
    window = prom_reader.collect(namespace=NS)[(NS, "alpha")]
    assert window.reporting_pods == 2
    assert window.window_s == WINDOW_S
    assert window.in_system_delta == pytest.approx(0.0, abs=1e-9)
    assert_observed(observe_window(window, steady_ready=2), ALPHA, ratio_rel=MIXED_REL)


def test_idle_deployment_has_zero_rate_and_no_ratios(prom_reader: PromReader) -> None:
    """No completions: arrival 0 RPM, per-request means are 0/0 → None, gauges still read."""
    idle = prom_reader.collect(namespace=NS)[(NS, "idle")]
    assert_observed(observe_window(idle, steady_ready=1), ObservedLoad(
        arrival_rpm=0.0, throughput_rpm=0.0, waiting_requests=0.0, running_requests=0.0,
        kv_usage=0.1, waiting_now=0.0, running_now=0.0, waiting_max=0.0,
        recent_arrival_rpm=0.0, window_s=WINDOW_S, recent_window_s=4.0))


def test_token_means_prefer_per_request_histograms(prom_reader: PromReader) -> None:
    """With vLLM's request_prompt/generation_tokens histograms, their means win (128 / 256)."""
    hist = observe_window(prom_reader.collect(namespace="prom-b")[("prom-b", "hist")])
    assert hist.avg_in_tokens == pytest.approx(128.0, rel=RATIO_REL)
    assert hist.avg_out_tokens == pytest.approx(256.0, rel=RATIO_REL)


def test_former_vllm_metric_names_are_read(prom_reader: PromReader) -> None:
    """A vLLM exporting gpu_cache_usage_perc and time_per_output_token_seconds still gives
    KV usage 0.3 and ITL 40 ms."""
    old = observe_window(prom_reader.collect(namespace="prom-b")[("prom-b", "old")])
    assert old.kv_usage == pytest.approx(0.3, rel=RATIO_REL)
    assert old.itl_ms == pytest.approx(40.0, rel=RATIO_REL)


def test_namespace_scope(prom_reader: PromReader) -> None:
    """With a namespace only that namespace's Deployments come back; without, all of them."""
    assert set(prom_reader.collect(namespace=NS)) == {(NS, "alpha"), (NS, "idle")}
    assert {(NS, "alpha"), (NS, "idle"), ("prom-b", "other")} <= set(prom_reader.collect())


def test_no_series_is_no_data(prom_reader: PromReader) -> None:
    """A namespace without series yields no entry at all (no data, not an error)."""
    assert prom_reader.collect(namespace="nobody-here") == {}


def test_bad_query_is_permanent_error(prom_reader: PromReader) -> None:
    """Prometheus rejects malformed PromQL with 400: a non-transient CollectError."""
    with pytest.raises(CollectError, match="HTTP 400") as info:
        prom_reader.query("sum(")
    assert info.value.transient is False


def test_live_collector_merges_metrics_and_label_fallback(
        served: PrometheusServer, kube: EmulatorThread,
        api_client: kubernetes.client.ApiClient, kubeconfig: Path) -> None:
    """alpha is observed from Prometheus; 'absent' (no series) falls back to its load labels."""
    kube.put_deployment(deployment(NS, "alpha", managed_labels(
        "srv-alpha", **{"inferno.server.load.rpm": "999"}), replicas=2, ready=2))
    kube.put_deployment(deployment(NS, "absent", managed_labels(
        "srv-absent", **{"inferno.server.load.rpm": "30", "inferno.server.load.numtokens": "256",
                         "inferno.server.class": "Premium"})))
    kube.put_deployment(deployment(NS, "broken", managed_labels(
        "srv-broken", **{"inferno.server.allocation.maxbatchsize": "x"})))
    settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    prom = PromReader(PromSettings(url=served.url, window=f"{WINDOW_S}s"))
    try:
        snapshot = LiveCollector(api_client, settings, prom, FixedClock()).collect()
    finally:
        prom.close()
    assert snapshot.time_s == 42.0
    assert set(snapshot.servers) == {"srv-alpha", "srv-absent"}
    assert set(snapshot.skipped) == {"srv-broken"}
    alpha = snapshot.servers["srv-alpha"]
    assert (alpha.desired_replicas, alpha.ready_replicas, alpha.namespace) == (2, 2, NS)
    assert alpha.arrival_rpm == pytest.approx(180.0, rel=RATE_REL)
    assert alpha.itl_ms == pytest.approx(30.0, rel=MIXED_REL)
    assert snapshot.servers["srv-absent"] == ServerObservation(
        name="srv-absent", model="m1", class_name="Premium", namespace=NS, accelerator="A100",
        desired_replicas=1, ready_replicas=1, held_replicas=1, arrival_rpm=30.0,
        avg_out_tokens=256.0)


def test_live_collector_extends_partial_reports_to_ready_replicas(
        served: PrometheusServer, kube: EmulatorThread,
        api_client: kubernetes.client.ApiClient, kubeconfig: Path) -> None:
    """4 ready replicas (as far as this collector knows, all through the window), 2 reporting
    (pods Prometheus has not discovered): the missing two carry the reporting mean,
    180 / 2 × 4 = 360 RPM, instead of lowering the load (P1 (docs/design/control-loop.md §8))."""
    kube.put_deployment(deployment(NS, "alpha", managed_labels("srv-alpha"), replicas=4,
                                   ready=4))
    settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    prom = PromReader(PromSettings(url=served.url, window=f"{WINDOW_S}s"))
    try:
        snapshot = LiveCollector(api_client, settings, prom, FixedClock()).collect()
    finally:
        prom.close()
    assert snapshot.servers["srv-alpha"].arrival_rpm == pytest.approx(360.0, rel=RATE_REL)


class SteppingClock:
    def __init__(self) -> None:
        self.t_s = 100.0

    def now_s(self) -> float:
        self.t_s += 1.0
        return self.t_s


def test_live_collector_does_not_extend_to_replicas_that_just_became_ready(
        served: PrometheusServer, kube: EmulatorThread,
        api_client: kubernetes.client.ApiClient, kubeconfig: Path) -> None:
    """Read with 2 ready, then 1 s later with 4 ready: the two new ones were not ready through
    the window (they served a little of it at most), so 180 RPM is not doubled."""
    settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    prom = PromReader(PromSettings(url=served.url, window=f"{WINDOW_S}s"))
    collector = LiveCollector(api_client, settings, prom, SteppingClock())
    try:
        kube.put_deployment(deployment(NS, "alpha", managed_labels("srv-alpha"), replicas=2,
                                       ready=2))
        first = collector.collect().servers["srv-alpha"].arrival_rpm
        kube.put_deployment(deployment(NS, "alpha", managed_labels("srv-alpha"), replicas=4,
                                       ready=4))
        second = collector.collect().servers["srv-alpha"].arrival_rpm
    finally:
        prom.close()
    assert first == pytest.approx(180.0, rel=RATE_REL)
    assert second == pytest.approx(180.0, rel=RATE_REL)


def test_live_collector_without_prometheus_uses_labels(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """No Prometheus configured: load comes from the labels, latencies are unknown."""
    kube.put_deployment(deployment("infer", "d1", managed_labels(
        "s1", **{"inferno.server.load.rpm": "12.5"})))
    snapshot = LiveCollector(api_client, kube_settings, None, FixedClock()).collect()
    observed = snapshot.servers["s1"]
    assert (observed.arrival_rpm, observed.itl_ms, observed.ttft_ms) == (12.5, None, None)


def test_stopped_prometheus_is_transient_error(tmp_path: Path) -> None:
    """Queries work while Prometheus runs; once it is stopped, collect raises transient."""
    server = PrometheusServer(tmp_path)
    server.start()
    collector = PromReader(PromSettings(url=server.url, window="5s", timeout_s=2.0))
    try:
        assert collector.collect() == {}
        server.stop()
        with pytest.raises(CollectError) as info:
            collector.collect()
        assert info.value.transient is True
    finally:
        server.stop()
        collector.close()


def test_bearer_token_is_sent_and_reread(prometheus: PrometheusServer, tmp_path: Path) -> None:
    """To a URL the operator marked (allow_http_token), every collect sends the token file's
    current content as a Bearer header (projected tokens rotate); one query per collect."""
    proxy = RecordingProxy(prometheus.url)
    token = tmp_path / "token"
    token.write_text("one")
    reader = PromReader(PromSettings(url=proxy.url, token_path=str(token),
                                     allow_http_token=True))
    try:
        reader.collect()
        token.write_text("two")
        reader.collect()
    finally:
        reader.close()
        proxy.stop()
    assert proxy.authorization == ["Bearer one", "Bearer two"]


def test_service_account_token_is_not_sent_over_http(
        served: PrometheusServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fault: with INFERNO_PROMETHEUS_TOKEN_PATH unset, the pod's service-account token
    went to the plain-http Prometheus URL. Now no request carries it, and the metrics are
    still read."""
    sa_token = tmp_path / "token"
    sa_token.write_text("service-account-token")
    monkeypatch.setattr("live.config.SA_TOKEN", sa_token)
    proxy = RecordingProxy(served.url)
    reader = PromReader(PromSettings(url=proxy.url, window=f"{WINDOW_S}s"))
    try:
        metrics = reader.collect(namespace=NS)
    finally:
        reader.close()
        proxy.stop()
    alpha = observe_window(metrics[NS, "alpha"], steady_ready=2)
    assert alpha.arrival_rpm == pytest.approx(180.0, rel=RATE_REL)
    assert proxy.authorization == [None]
