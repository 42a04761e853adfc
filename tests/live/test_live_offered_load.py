"""The offered load of a replica whose generations outlive the window, read live.

`inferno emulate` plays one granite_13b replica on A100 (max batch 32) with fixed 100-token
prompts and 3,000-token generations (about 200 simulated seconds each, longer than the
120-second window), 20x faster than real time; a real Prometheus scrapes it every second and
`live.collector.LiveCollector` reads it through `live.prom.PromReader` with the window and the
time scale of the emulation. The load label steps from 8 to 32 requests per minute: vLLM counts
a request when it finishes, so the completions stay near the old rate while the queue grows;
the offered load (completions + growth of running and waiting, the formula the twin uses too)
reads the new 32 RPM within 20 %.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes.client
from kube_emulator import EmulatorThread, deployment
from live_helpers import ACC, MAX_BATCH, RPM, SMALL, spawn, terminate, wait_until
from prom_harness import PrometheusServer

from live.collector import LiveCollector
from live.config import KubeSettings, PromSettings
from live.prom import PromReader

NS = "offered"
SPEEDUP = 20.0
"""Simulated seconds per wall second of the emulation."""
WINDOW = "6s"
"""Wall seconds of the PromQL window: 120 simulated seconds."""


class WallClock:
    def now_s(self) -> float:
        import time

        return time.monotonic()


def test_offered_load_of_generations_outliving_the_window(
        kube: EmulatorThread, kubeconfig: Path, api_client: kubernetes.client.ApiClient,
        tmp_path: Path) -> None:
    """8 -> 32 RPM on a replica whose requests last longer than the window: offered within
    20 % of 32, completions far below it (the upstream proxy reads a fraction)."""
    labels = {"inferno.server.managed": "true", "inferno.server.name": "long",
              "inferno.server.model": "granite_13b", "inferno.server.class": "Premium",
              ACC: "A100", MAX_BATCH: "32", RPM: "8", "inferno.server.load.intokens": "100",
              "inferno.server.load.outtokens": "3000"}
    kube.put_deployment(deployment(NS, "long", labels))
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus")
    prometheus.start()
    env = {"KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": NS, "PATH": "/usr/bin:/bin"}
    emulate = spawn(["emulate", "--data-path", str(SMALL), "--targets-file",
                     str(prometheus.targets_file), "--poll", "0.5", "--speedup", str(SPEEDUP),
                     "--seed", "2"], env, tmp_path / "emulate.log")
    settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    reader = PromReader(PromSettings(url=prometheus.url, window=WINDOW, recent_window="3s",
                                     time_scale=SPEEDUP))
    collector = LiveCollector(api_client, settings, reader, WallClock())
    apps = kubernetes.client.AppsV1Api(api_client)
    try:
        prometheus.wait_for_samples(f'{{namespace="{NS}"}}', num_series=1, min_samples=6,
                                    timeout_s=30)
        wait_until(lambda: (collector.collect().servers["long"].throughput_rpm or 0) > 4, 40,
                   "completions at the 8 RPM load")
        apps.patch_namespaced_deployment("long", NS, [
            {"op": "replace", "path": "/metadata/labels/" + RPM, "value": "32"}])
        import time

        time.sleep(12.0)  # two windows (240 simulated seconds) at the new load
        seen = collector.collect().servers["long"]
    finally:
        reader.close()
        terminate(emulate)
        prometheus.stop()
    assert seen.arrival_rpm is not None, seen
    assert abs(seen.arrival_rpm / 32.0 - 1.0) <= 0.20, seen
    assert seen.throughput_rpm is not None, seen
    assert seen.throughput_rpm < 0.5 * 32.0, seen
