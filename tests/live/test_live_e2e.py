"""End to end: `inferno live` against a real Prometheus and the Kubernetes API emulator.

Everything runs on 127.0.0.1. The load-step test runs the two long-lived commands as
processes, `inferno emulate` (the twin's pods serving vLLM metrics, following the API) and
`inferno live` (period 1 s), and stops both with SIGTERM. The fault tests run `LiveLoop` in
process against pods whose gauges are constants, with the HPA policy, whose answer is a closed
form (Kubernetes HPA): desired = ceil(ready × metric / target). With running + waiting = 80
requests per pod and target 0.8 × max batch 40 = 32, ratio 2.5 → ceil(2.5 × 1) = 3 replicas.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import kubernetes.client
from kube_emulator import EmulatorThread, deployment
from live_helpers import (
    ACC,
    HOT_REPLICAS,
    HPA_NS,
    MAX_BATCH,
    RPM,
    SMALL,
    get,
    hpa_loop,
    labels,
    put_hot,
    spawn,
    terminate,
    wait_until,
)
from prom_harness import PodLoad, PrometheusServer, VllmPod, free_port
from prometheus_client.parser import text_string_to_metric_families

from inferno.control import read_cycle_log
from live.app import Actuation, LiveLoop
from live.config import KubeSettings

FAST = PodLoad(request_rps=40.0, in_tokens=128, out_tokens=64, ttft_s=0.05, itl_s=0.02,
               waiting=0, running=20, kv_usage=0.3)
"""2400 RPM: more than one replica of any accelerator in sample-data/small."""
HPA_REPLICAS = HOT_REPLICAS


def patches(kube: EmulatorThread, name: str = "") -> list[Any]:
    return kube.requests("PATCH", f"/deployments/{name}")


# ------------------------------------------------------------------ load step, as processes

def test_load_step_scales_up_then_down(kube: EmulatorThread, kubeconfig: Path,
                                       api_client: kubernetes.client.ApiClient,
                                       tmp_path: Path) -> None:
    """A load step in the emulated pods raises the replicas, after the max batch label was
    written; the drop lowers them; /invoke and /metrics answer; SIGTERM stops both commands."""
    ns, name, server = "e2e-step", "llama", "step-llama"
    kube.put_deployment(deployment(ns, name, labels(server, **{
        ACC: "G2", RPM: "300", "inferno.server.load.intokens": "128",
        "inferno.server.load.outtokens": "64"})))
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus")
    prometheus.start()
    port = free_port()
    cycle_log = tmp_path / "cycles.jsonl"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": ns,
           "INFERNO_PROMETHEUS_WINDOW": "5s"}
    apps = kubernetes.client.AppsV1Api(api_client)

    def dep() -> dict[str, Any]:
        return kube.get_deployment(ns, name)

    def measured() -> list[dict[str, Any]]:
        """Servers of decided cycles observed through Prometheus (ITL is never a label)."""
        return [r["servers"][0] for r in read_cycle_log(cycle_log)
                if r["status"] == "ok" and r["servers"][0]["itl_ms"] is not None]

    def set_rpm(value: str) -> None:
        apps.patch_namespaced_deployment(name, ns, [
            {"op": "add", "path": "/metadata/labels/" + RPM, "value": value}])

    emulate = spawn(["emulate", "--data-path", str(SMALL), "--targets-file",
                     str(prometheus.targets_file), "--poll", "0.5", "--startup", "1",
                     "--write-status", "--seed", "1"], env, tmp_path / "emulate.log")
    fast = tmp_path / "policy.yaml"  # time knobs for a 1 s period (defaults suit 60 s)
    fast.write_text("reversal_hold_s: 0\ndemand: {burst_memory_s: 0}\n", encoding="utf-8")
    live = spawn(["-v", "live", "1", "--data-path", str(SMALL), "--prometheus-url",
                  prometheus.url, "--port", str(port), "--cycle-log", str(cycle_log),
                  "--max-batch", "76", "--lead", "0", "--scale-down-window", "6",
                  "--policy-settings", str(fast)], env, tmp_path / "live.log")
    try:
        wait_until(lambda: cycle_log.exists() and len(measured()) >= 2
                   and dep()["spec"]["replicas"] == 1, 30, "one replica on measured metrics")
        assert dep()["metadata"]["labels"][MAX_BATCH] == "76"  # written: the seed had none

        set_rpm("2400")
        wait_until(lambda: dep()["spec"]["replicas"] >= 2, 40, "a scale-up")

        def raised_cycles() -> list[dict[str, Any]]:
            return [r for r in read_cycle_log(cycle_log) if r["servers"][0]["num_replicas"] > 1]

        # The cycle is logged after it actuates: the Deployment can show the change first.
        wait_until(lambda: bool(raised_cycles()), 10, "the scale-up in the cycle log")
        raised = raised_cycles()[0]
        assert raised["servers"][0]["itl_ms"] is not None  # decided on measured metrics
        wait_until(lambda: dep()["status"]["readyReplicas"] == dep()["spec"]["replicas"], 20,
                   "the emulated replicas to be ready")
        wait_until(lambda: measured()[-1]["arrival_rpm"] > 600, 20, "the measured step")

        set_rpm("300")
        wait_until(lambda: dep()["spec"]["replicas"] == 1, 60, "the scale-down")

        assert get(f"http://127.0.0.1:{port}/invoke") == (200, b"OK")
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert gauge(body, "inferno_desired_replicas") == {(server, ns, "G2"): 1.0}
    finally:
        codes = terminate(live), terminate(emulate)
        prometheus.stop()
    assert codes == (0, 0), ((tmp_path / "live.log").read_text()[-2000:]
                             + (tmp_path / "emulate.log").read_text()[-2000:])
    assert "stopped" in (tmp_path / "live.log").read_text()
    assert json.loads(prometheus.targets_file.read_text()) == []


def gauge(body: bytes, name: str) -> dict[tuple[str, str, str], float]:
    """Samples of one gauge by (server, namespace, accelerator)."""
    return {(s.labels["server"], s.labels["namespace"], s.labels["accelerator"]): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == name}


# ------------------------------------------------------------------ faults, in process

def test_invoke_and_metrics_answer_in_metrics_mode(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """--actuation metrics: /invoke answers 200 OK, /metrics exports desired 3, current 1,
    ratio 3 for the server, and no Deployment is patched."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, actuation=Actuation.METRICS)
    loops.append(loop)
    host, port = loop.serve()
    assert get(f"http://{host}:{port}/invoke") == (200, b"OK")
    status, body = get(f"http://{host}:{port}/metrics")
    assert status == 200
    key = ("hot", HPA_NS, "A100")
    assert gauge(body, "inferno_desired_replicas") == {key: HPA_REPLICAS}
    assert gauge(body, "inferno_current_replicas") == {key: 1.0}
    assert gauge(body, "inferno_desired_ratio") == {key: HPA_REPLICAS / 1}
    assert patches(kube) == []
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == 1


def test_dry_run_patches_nothing(kube: EmulatorThread, kube_settings: KubeSettings,
                                 hot_pod: PrometheusServer, tmp_path: Path,
                                 loops: list[LiveLoop]) -> None:
    """--dry-run decides (3 replicas in the cycle log) but sends no PATCH and exports no
    decision on /metrics (the gauges are an actuation too)."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"dry_run": True})
    loops.append(loop)
    record = loop.driver.invoke()
    assert record.is_ok
    assert [s.num_replicas for s in record.servers] == [HPA_REPLICAS]
    assert read_cycle_log(tmp_path / "cycles.jsonl")[0]["servers"][0]["num_replicas"] == 3
    assert gauge(loop.exporter.render(), "inferno_desired_replicas") == {}
    assert patches(kube) == []
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == 1


def test_tuner_state_is_logged_every_cycle(kube: EmulatorThread, kube_settings: KubeSettings,
                                           hot_pod: PrometheusServer, tmp_path: Path,
                                           loops: list[LiveLoop]) -> None:
    """--tuner ekf: the live cycle log carries the tuner's state (mode, cycles seen)."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"dry_run": True},
                    tuner="ekf")
    loops.append(loop)
    assert loop.driver.invoke().is_ok
    logged = read_cycle_log(tmp_path / "cycles.jsonl")[0]["tuner"]
    assert logged["mode"] == "ekf"
    assert logged["cycles"] == 1


def test_conflict_and_server_error_are_retried(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """A PATCH answered 409, then 500, is retried: the third attempt lands, the cycle is OK."""
    put_hot(kube)
    kube.fail_next("PATCH", r"/deployments/hot$", 409)
    kube.fail_next("PATCH", r"/deployments/hot$", 500)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path)
    loops.append(loop)
    record = loop.driver.invoke()
    assert record.is_ok
    assert dict(record.actuation_failed) == {}
    assert len(patches(kube, "hot")) == 3
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == HPA_REPLICAS


def test_malformed_labels_skip_that_server_with_a_reason(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """A Deployment with rpm 'lots' is skipped with the label and value in the cycle log;
    the other server is decided and patched."""
    put_hot(kube)
    kube.put_deployment(deployment(HPA_NS, "bad", labels("bad", **{RPM: "lots"})))
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path)
    loops.append(loop)
    assert loop.driver.invoke().is_ok
    logged = read_cycle_log(tmp_path / "cycles.jsonl")[0]
    assert [s["name"] for s in logged["servers"]] == ["hot"]
    assert set(logged["skipped_servers"]) == {"bad"}
    assert RPM in logged["skipped_servers"]["bad"]
    assert "'lots'" in logged["skipped_servers"]["bad"]
    assert patches(kube, "bad") == []
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == HPA_REPLICAS


def test_prometheus_stopped_skips_cycles_and_scales_nothing(
        kube: EmulatorThread, kube_settings: KubeSettings, tmp_path: Path,
        loops: list[LiveLoop]) -> None:
    """After Prometheus stops, cycles are skipped at collect (503 on /invoke) and the
    Deployment keeps the replicas decided from the measured load, though its load label
    (1 RPM) would scale it down."""
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus")
    prometheus.start()
    pod = VllmPod(FAST)
    try:
        prometheus.add_target(pod.address, {"namespace": HPA_NS, "deployment": "hot",
                                            "pod": "hot-1"})
        prometheus.wait_for_samples(f'{{namespace="{HPA_NS}"}}', num_series=1, min_samples=3)
        put_hot(kube, **{RPM: "1"})
        loop = hpa_loop(kube_settings, prometheus.url, tmp_path, policy="inferno",
                        scale_down_window_s=0.0)
        loops.append(loop)
        host, port = loop.serve()
        assert loop.driver.invoke().is_ok
        scaled = kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"]
        before = len(patches(kube))
        prometheus.stop()
        status, body = get(f"http://{host}:{port}/invoke")
        record = loop.driver.invoke()
    finally:
        prometheus.stop()
        pod.stop()
    assert scaled >= 2
    assert status == 503
    assert json.loads(body)["message"].startswith("controller: collect: prometheus query")
    assert (record.status, record.stage) == ("skipped", "collect")
    assert [r["status"] for r in read_cycle_log(tmp_path / "cycles.jsonl")] == [
        "ok", "skipped", "skipped"]
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == scaled
    assert len(patches(kube)) == before


def test_periodic_loop_stops_on_request(kube: EmulatorThread, kube_settings: KubeSettings,
                                        hot_pod: PrometheusServer, tmp_path: Path,
                                        loops: list[LiveLoop]) -> None:
    """With a 0.2 s period cycles run on their own; stop() ends run() within a period."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"period_s": 0.2})
    loops.append(loop)
    counted: list[int] = []
    thread = threading.Thread(target=lambda: counted.append(loop.run()))
    thread.start()
    wait_until(lambda: (tmp_path / "cycles.jsonl").exists()
               and len(read_cycle_log(tmp_path / "cycles.jsonl")) >= 2, 10, "two cycles")
    loop.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert counted[0] >= 2
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == HPA_REPLICAS



def test_implausible_load_label_is_capped_and_named(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """A load label of 1e12 RPM on a Deployment with no vLLM series is the only load signal:
    the inferno policy cuts it to 4 x what the current replica sustains, names the cut in the
    cycle log, and asks for a handful of replicas, not every free card in the cluster."""
    put_hot(kube)
    kube.put_deployment(deployment(HPA_NS, "wild", labels(
        "wild", **{ACC: "A100", MAX_BATCH: "40", RPM: "1e12",
                   "inferno.server.load.intokens": "128",
                   "inferno.server.load.outtokens": "64"})))
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, policy="inferno")
    loops.append(loop)
    assert loop.driver.invoke().is_ok
    logged = {s["name"]: s for s in read_cycle_log(tmp_path / "cycles.jsonl")[0]["servers"]}
    wild = logged["wild"]
    assert "arrival 1e+12 rpm capped at" in wild["note"], wild
    # 4 x one replica's rate (plus the SLO margin) fits in a few replicas; the cluster has
    # dozens of free A100 cards in sample-data/small.
    replicas = kube.get_deployment(HPA_NS, "wild")["spec"]["replicas"]
    assert 1 <= replicas <= 6
