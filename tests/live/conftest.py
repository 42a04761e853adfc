"""Fixtures for the live adapters: real components on 127.0.0.1 only.

- `kube`: kmock's KubernetesEmulator (extended in kube_emulator.py) over HTTP, one per session,
  wiped before each test; `kubeconfig` points the official client at it.
- `prometheus`: the Debian ``prometheus`` binary, one per session, scraping file-discovered
  targets every second (prom_harness.py);
- `hot_pod`: one pod of Deployment e2e-hpa/hot with constant gauges, scraped over a window;
- `loops`: LiveLoops registered there are closed after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
from kube_emulator import EmulatorThread
from live_helpers import HPA_NS
from prom_harness import PROMETHEUS, PodLoad, PrometheusServer, VllmPod

from live.app import LiveLoop
from live.config import KubeSettings, load_api_client


@pytest.fixture(scope="session")
def kube_emulator() -> Iterator[EmulatorThread]:
    """The emulator thread for the whole session."""
    emulator = EmulatorThread()
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def kube(kube_emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with no objects, no recorded requests and no pending faults."""
    kube_emulator.clear()
    return kube_emulator


@pytest.fixture(scope="session")
def kubeconfig(kube_emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig file whose server is the emulator's http://127.0.0.1:PORT."""
    return kube_emulator.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture
def kube_settings(kubeconfig: Path) -> KubeSettings:
    """Settings for the emulator with fast retries (4 attempts, 10 ms first delay)."""
    return KubeSettings(kubeconfig=str(kubeconfig), max_attempts=4, backoff_s=0.01,
                        max_backoff_s=5.0, request_timeout_s=5.0)


@pytest.fixture
def api_client(kube_settings: KubeSettings) -> Iterator[kubernetes.client.ApiClient]:
    """An official-client ApiClient built from the generated kubeconfig."""
    client = load_api_client(kube_settings)
    yield client
    client.close()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A running Prometheus (started once per session) on a free loopback port."""
    if shutil.which(PROMETHEUS) is None:
        pytest.fail(f"{PROMETHEUS} not found: run `make install-test` (Debian package prometheus)")
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"))
    server.start()
    yield server
    server.stop()


HOT = PodLoad(request_rps=1.0, in_tokens=100, out_tokens=50, ttft_s=0.1, itl_s=0.02,
              waiting=10, running=70, kv_usage=0.5)
"""running + waiting = 80 per pod (see live_helpers.HOT_REPLICAS)."""


@pytest.fixture(scope="session")
def hot_pod(prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    """One pod of Deployment e2e-hpa/hot with constant gauges, scraped over the window."""
    pod = VllmPod(HOT)
    prometheus.add_target(pod.address, {"namespace": HPA_NS, "deployment": "hot",
                                        "pod": "hot-1"})
    prometheus.wait_for_samples(f'{{namespace="{HPA_NS}"}}', num_series=1, min_samples=3)
    yield prometheus
    prometheus.remove_targets([pod.address])
    pod.stop()


@pytest.fixture
def loops() -> Iterator[list[LiveLoop]]:
    """Loops registered here are closed after the test."""
    started: list[LiveLoop] = []
    yield started
    for loop in started:
        loop.close()
