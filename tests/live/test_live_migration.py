"""Accelerator changes that move pods: `inferno live` + `inferno emulate` + a real Prometheus.

Set-up (127.0.0.1 only): the API emulator holds one Deployment of llama_13b labelled and
placed on ``4xA100`` (nodeSelector ``inferno.accelerator=A100``, 4 GPUs per pod); the twin's
pods follow the API through the same reader as ``inferno emulate`` and serve vLLM metrics to
a Prometheus of their own. At 120 RPM a 4xA100 unit ($160/h in sample-data/small) is far
from the cheapest that meets the Premium SLOs, so the optimizer migrates when allowed.

The fault: a relabel A100 -> G2 left the pod template alone; nothing moved, and inferno then
modelled the old pods as G2.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kube_emulator import EmulatorThread, deployment
from live_helpers import ACC, RPM, SMALL, labels, wait_until
from prom_harness import PrometheusServer

from inferno.commands.live import follow_deployments
from inferno.control import ControllerSettings
from inferno.io import load_static_data
from live.app import LiveLoop, LiveSettings
from live.config import KubeSettings, PromSettings
from live.emulate import DeploymentReader, DeploymentStatusWriter
from live.placement import PlacementSettings
from sim.deployment import StartupDelay
from sim.emulate import ClusterEmulation, EmulationSettings

NS = "mig"
SYSTEM = load_static_data(SMALL)


def placed_deployment() -> dict[str, Any]:
    """llama_13b at 120 RPM on 4xA100: label, node selector and 4 GPUs agree."""
    body = deployment(NS, "llama", labels("mig-llama", **{
        ACC: "4xA100", RPM: "120", "inferno.server.load.intokens": "128",
        "inferno.server.load.outtokens": "64"}))
    pod = body["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"inferno.accelerator": "A100"}
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    return body


def loop_settings(kube_settings: KubeSettings, prom_url: str | None, tmp_path: Path,
                  **changes: Any) -> LiveSettings:
    return LiveSettings(
        controller=ControllerSettings(data_path=SMALL, period_s=0.0, port=0),
        kube=replace(kube_settings, watch_namespace=NS),
        prom=None if prom_url is None else PromSettings(url=prom_url, window="3s"),
        policy="inferno", lead_s=0.0, cycle_log=str(tmp_path / "cycles.jsonl"), **changes)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Objects with a close() or stop() registered here are ended after the test."""
    items: list[Any] = []
    yield items
    for item in reversed(items):
        (getattr(item, "close", None) or item.stop)()


def test_migration_changes_the_template_and_the_pods_move(
        kube: EmulatorThread, kube_settings: KubeSettings,
        api_client: kubernetes.client.ApiClient, tmp_path: Path, closing: list[Any]) -> None:
    """With --allow-migration the cycle moves the server off 4xA100 in one patch (label,
    nodeSelector = the new type, GPU limit = its multiplicity); the emulation rolls its pods
    over to a new revision on that accelerator, Prometheus scrapes the new pods, and the next
    cycle observes the server there on measured metrics."""
    kube.put_deployment(placed_deployment())
    prometheus = PrometheusServer(tmp_path)
    prometheus.start()
    closing.append(prometheus)
    scoped = replace(kube_settings, watch_namespace=NS)
    source = follow_deployments(DeploymentReader(api_client, scoped), SYSTEM.accelerators,
                                PlacementSettings())
    emulation = ClusterEmulation(
        SYSTEM, source, EmulationSettings(poll_s=0.2, startup=StartupDelay(mean_s=1.0), seed=3),
        targets_file=prometheus.targets_file,
        report=DeploymentStatusWriter(api_client, scoped))
    emulation.start()
    closing.append(emulation)
    twin = emulation.cluster.deployments[f"{NS}/llama"]
    assert [r.accelerator for r in twin.ready] == ["4xA100"]
    prometheus.wait_for_samples(f'{{namespace="{NS}"}}', num_series=1, min_samples=4)

    loop = LiveLoop(loop_settings(kube_settings, prometheus.url, tmp_path,
                                  allow_migration=True))
    closing.append(loop)
    # A 3 s window on a loaded machine can read a noisy load for one cycle; the decision to
    # leave 4xA100 must come within three cycles on measured metrics, in one patch.
    for _ in range(3):
        record = loop.driver.invoke()
        assert record.is_ok, record.reason
        [server] = record.servers
        assert (server.current_accelerator, server.itl_ms is not None) == ("4xA100", True)
        if server.accelerator != "4xA100":
            break
        time.sleep(3.0)  # one metrics window of fresh samples
    assert server.accelerator != "4xA100", server
    target = SYSTEM.accelerators[server.accelerator]
    stored = kube.get_deployment(NS, "llama")
    pod = stored["spec"]["template"]["spec"]
    assert stored["metadata"]["labels"][ACC] == server.accelerator
    assert pod["nodeSelector"] == {"inferno.accelerator": target.type}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(
        target.multiplicity)

    wait_until(lambda: twin.accelerator == server.accelerator and twin.ready
               and {r.accelerator for r in twin.ready} == {server.accelerator}, 20,
               "the emulated pods on the new accelerator")
    new_pods = {p.name for p in emulation.pods() if "-r1-" in p.name}
    assert new_pods
    wait_until(lambda: {s["metric"]["pod"] for s in prometheus.query(
        f'vllm:num_requests_running{{namespace="{NS}"}}')} >= new_pods, 20,
        "Prometheus scraping the new pods")
    prometheus.wait_for_samples(f'{{namespace="{NS}",pod=~".*-r1-.*"}}', num_series=1,
                                min_samples=4)
    after = loop.driver.invoke()
    assert after.is_ok, after.reason
    assert after.servers[0].current_accelerator == server.accelerator
    assert after.servers[0].itl_ms is not None


def test_without_opt_in_the_accelerator_is_kept(
        kube: EmulatorThread, kube_settings: KubeSettings, tmp_path: Path,
        closing: list[Any]) -> None:
    """Default (no --allow-migration): the same server keeps 4xA100; the template is not
    touched, whatever the replicas."""
    kube.put_deployment(placed_deployment())
    template = copy.deepcopy(kube.get_deployment(NS, "llama")["spec"]["template"])
    loop = LiveLoop(loop_settings(kube_settings, None, tmp_path))
    closing.append(loop)
    record = loop.driver.invoke()
    assert record.is_ok, record.reason
    assert [s.accelerator for s in record.servers] == ["4xA100"]
    stored = kube.get_deployment(NS, "llama")
    assert stored["metadata"]["labels"][ACC] == "4xA100"
    assert stored["spec"]["template"] == template


def test_label_that_disagrees_with_the_template_is_skipped(
        kube: EmulatorThread, kube_settings: KubeSettings, tmp_path: Path,
        closing: list[Any]) -> None:
    """Migrations on: a Deployment relabelled G2 whose template still places pods on
    4xA100 is skipped with the reason (inferno would model pods that run elsewhere)."""
    body = placed_deployment()
    body["metadata"]["labels"][ACC] = "G2"
    kube.put_deployment(body)
    loop = LiveLoop(loop_settings(kube_settings, None, tmp_path, allow_migration=True))
    closing.append(loop)
    record = loop.driver.invoke()
    assert record.servers == ()
    assert "label G2 but the pod template places pods on 4xA100" in record.skipped_servers[
        "mig-llama"]
    assert kube.requests("PATCH") == []
