"""Manifests under yamls/ and the Dockerfile: valid for the official client, wired together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kube_emulator import YAMLS

from live.kube import discover

ROOT = YAMLS.parent
MANIFESTS = sorted(YAMLS.rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def to_model(doc: dict[str, Any]) -> Any:
    """The official client's model for one manifest (kind → V1<Kind>)."""
    return kubernetes.client.ApiClient().deserialize(json.dumps(doc), f"V1{doc['kind']}",
                                                     "application/json")


def by_kind(path: Path) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in documents(path)}


def test_issue_manifests_exist() -> None:
    """Every manifest the issue lists is present."""
    names = {str(p.relative_to(YAMLS)) for p in MANIFESTS}
    assert names == {"workload/ns.yaml", "workload/dep1.yaml", "workload/dep2.yaml",
                     "workload/dep3.yaml", "deploy/ns.yaml", "deploy/deploy-loop.yaml",
                     "deploy/load-emulator.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(YAMLS)))
def test_manifest_round_trips_through_client_models(path: Path) -> None:
    """Each document becomes its V1 model and serialises back unchanged (no unknown field)."""
    for doc in documents(path):
        model = to_model(doc)
        assert type(model).__name__ == f"V1{doc['kind']}"
        assert kubernetes.client.ApiClient().sanitize_for_serialization(model) == doc


def test_round_trip_detects_a_misspelt_field() -> None:
    """The round-trip check is sharp: a misspelt container field is dropped, so it differs."""
    doc = documents(YAMLS / "workload" / "dep1.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    assert kubernetes.client.ApiClient().sanitize_for_serialization(to_model(doc)) != doc


def test_sample_deployments_are_three_managed_servers() -> None:
    """dep1..3 parse as managed servers with the labels of the seed's samples."""
    models = [to_model(documents(YAMLS / "workload" / f"dep{i}.yaml")[0]) for i in (1, 2, 3)]
    found = discover(models)
    assert found.skipped == {}
    summary = {name: (d.namespace, d.labels.model, d.labels.class_name, d.labels.accelerator,
                      d.labels.max_batch, d.labels.load_rpm, d.labels.load_out_tokens)
               for name, d in found.deployments.items()}
    assert summary == {
        "Premium-llama_13b": ("infer", "llama_13b", "Premium", "A100", 64, 60.0, 1024.0),
        "Bronze-granite_13b": ("infer", "granite_13b", "Bronze", "L4", 16, 30.0, 512.0),
        "Free-mixtral_8_7b": ("infer", "mixtral_8_7b", "Free", "AIU2", 32, 20.0, 256.0),
    }
    for model in models:
        assert model.metadata.labels["inferno.server.managed"] == "true"
        pod_labels = model.spec.template.metadata.labels
        assert model.spec.selector.match_labels.items() <= pod_labels.items()


def test_loop_rbac_is_least_privilege() -> None:
    """The ClusterRole grants get/list/watch/patch on apps/deployments only, bound to the SA."""
    docs = by_kind(YAMLS / "deploy" / "deploy-loop.yaml")
    assert docs["ClusterRole"]["rules"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                                             "verbs": ["get", "list", "watch", "patch"]}]
    subject = docs["ClusterRoleBinding"]["subjects"][0]
    sa = docs["ServiceAccount"]["metadata"]
    assert (subject["name"], subject["namespace"]) == (sa["name"], sa["namespace"])
    assert docs["ClusterRoleBinding"]["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]


def test_loop_deployment_wiring() -> None:
    """SA, data ConfigMaps at INFERNO_DATA_PATH, and Service port 80 → the controller port."""
    docs = by_kind(YAMLS / "deploy" / "deploy-loop.yaml")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert (env["KUBECONFIG"], env["INFERNO_DATA_PATH"], env["CONTROLLER_PORT"]) == (
        "", "/etc/data/", "3300")
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert [s["configMap"]["name"] for s in data["projected"]["sources"]] == [
        "inferno-static-data", "inferno-dynamic-data"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
    assert mount["mountPath"] + "/" == env["INFERNO_DATA_PATH"]
    port = docs["Service"]["spec"]["ports"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (port["port"], named[port["targetPort"]]) == (80, 3300)
    assert docs["Service"]["spec"]["selector"].items() <= (
        docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items())


def test_load_emulator_runs_emulate_load_with_seed_defaults() -> None:
    """The load-emulator Pod runs `inferno emulate-load 60 0.5` as the inferno SA."""
    pod = documents(YAMLS / "deploy" / "load-emulator.yaml")[0]
    assert pod["spec"]["serviceAccountName"] == "inferno"
    assert pod["spec"]["containers"][0]["args"] == ["emulate-load", "60", "0.5"]


def test_dockerfile_builds_the_loop_image() -> None:
    """python:3.11-slim, `pip install .`, entrypoint `inferno` with default command `live`."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert "RUN pip install . && rm -rf /app/build" in lines
    assert (
        next(x for x in lines if x.startswith("ENTRYPOINT")),
        next(x for x in lines if x.startswith("CMD"))) == ('ENTRYPOINT ["inferno"]', 'CMD ["live"]')
