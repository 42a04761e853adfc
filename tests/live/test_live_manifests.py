"""Manifests under yamls/ and the image files: valid for the official client, wired together,
rendered by kustomize (kubectl's), Pod Security "restricted"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kube_emulator import YAMLS
from pod_security import restricted_violations

from live.kube import discover

ROOT = YAMLS.parent
DEPLOY = YAMLS / "deploy"
OVERLAYS = ("cluster", "namespaced")
PLAIN = sorted(p for p in YAMLS.rglob("*.yaml")
               if p.name != "kustomization.yaml" and "components" not in p.parts)
"""Manifests of built-in kinds (the PodMonitor is a CRD the client has no model for)."""
KUBECTL = shutil.which("kubectl")


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def read(path: Path) -> list[dict[str, Any]]:
    return documents(path.read_text())


def to_model(doc: dict[str, Any]) -> Any:
    """The official client's model for one manifest (V1<Kind>)."""
    return kubernetes.client.ApiClient().deserialize(json.dumps(doc), f"V1{doc['kind']}",
                                                     "application/json")


def round_trips(doc: dict[str, Any]) -> bool:
    return kubernetes.client.ApiClient().sanitize_for_serialization(to_model(doc)) == doc


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` (kustomize v5 inside kubectl), as documents."""
    if KUBECTL is None:
        pytest.fail("kubectl not found: the manifests are kustomize overlays and the test "
                    "renders them with `kubectl kustomize` (kubectl >= 1.27)")
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return documents(done.stdout)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: kustomize(DEPLOY / "overlays" / name) for name in OVERLAYS}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(deployment)["env"]}


def test_manifests_are_where_the_docs_say() -> None:
    """The sample workload, the kustomize base, both overlays, the PodMonitor component and
    the load emulator are present."""
    names = {str(p.relative_to(YAMLS)) for p in YAMLS.rglob("*.yaml")}
    assert names == {
        "workload/ns.yaml", "workload/dep1.yaml", "workload/dep2.yaml", "workload/dep3.yaml",
        "deploy/base/kustomization.yaml", "deploy/base/namespace.yaml",
        "deploy/base/serviceaccount.yaml", "deploy/base/deployment.yaml",
        "deploy/base/service.yaml", "deploy/base/networkpolicy.yaml",
        "deploy/overlays/cluster/kustomization.yaml", "deploy/overlays/cluster/clusterrole.yaml",
        "deploy/overlays/namespaced/kustomization.yaml", "deploy/overlays/namespaced/role.yaml",
        "deploy/overlays/namespaced/watch-namespace.yaml",
        "deploy/components/podmonitor/kustomization.yaml",
        "deploy/components/podmonitor/podmonitor.yaml", "deploy/load-emulator.yaml"}


@pytest.mark.parametrize("path", [p for p in PLAIN if "watch-namespace" not in p.name],
                         ids=lambda p: str(p.relative_to(YAMLS)))
def test_manifest_round_trips_through_client_models(path: Path) -> None:
    """Each document becomes its V1 model and serialises back unchanged (no unknown field)."""
    for doc in read(path):
        assert type(to_model(doc)).__name__ == f"V1{doc['kind']}"
        assert round_trips(doc)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_round_trips(rendered: dict[str, list[dict[str, Any]]],
                                      overlay: str) -> None:
    """What kustomize renders (patches applied) is valid for the client models too."""
    for doc in rendered[overlay]:
        assert round_trips(doc), doc["kind"]


def test_round_trip_detects_a_misspelt_field() -> None:
    """The round-trip check is sharp: a misspelt container field is dropped, so it differs."""
    doc = read(YAMLS / "workload" / "dep1.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    assert not round_trips(doc)


def test_sample_deployments_are_three_managed_servers() -> None:
    """dep1..3 parse as managed servers with the labels of the seed's samples."""
    models = [to_model(read(YAMLS / "workload" / f"dep{i}.yaml")[0]) for i in (1, 2, 3)]
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


# ------------------------------------------------------------------ RBAC per overlay

RULES = [{"apiGroups": ["apps"], "resources": ["deployments"],
          "verbs": ["get", "list", "watch", "patch"]}]


def test_cluster_overlay_grants_deployments_everywhere(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """ClusterRole with get/list/watch/patch on apps/deployments only, bound to the SA;
    WATCH_NAMESPACE empty; no namespaced Role."""
    docs = by_kind(rendered["cluster"])
    assert docs["ClusterRole"]["rules"] == RULES
    subject = docs["ClusterRoleBinding"]["subjects"][0]
    sa = docs["ServiceAccount"]["metadata"]
    assert (subject["name"], subject["namespace"]) == (sa["name"], sa["namespace"])
    assert docs["ClusterRoleBinding"]["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert "Role" not in docs
    assert env_of(docs["Deployment"])["WATCH_NAMESPACE"] == ""


def test_namespaced_overlay_grants_one_namespace(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Role + RoleBinding in the watched namespace only, the same rules, WATCH_NAMESPACE set
    to that namespace; no cluster-wide grant."""
    docs = by_kind(rendered["namespaced"])
    role, binding = docs["Role"], docs["RoleBinding"]
    watched = env_of(docs["Deployment"])["WATCH_NAMESPACE"]
    assert watched == "infer"
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == watched
    assert role["rules"] == RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "inferno",
                                    "namespace": "inferno"}]
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(docs)


# ------------------------------------------------------------------ Pod Security

def pod_specs(rendered: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    specs = [(f"{name}/Deployment", by_kind(docs)["Deployment"]["spec"]["template"]["spec"])
             for name, docs in rendered.items()]
    emulator = read(DEPLOY / "load-emulator.yaml")[0]
    return [*specs, ("load-emulator", emulator["spec"])]


def test_pods_satisfy_pod_security_restricted(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The controller (both overlays) and the load emulator pass every restricted rule."""
    for where, spec in pod_specs(rendered):
        assert restricted_violations(spec) == [], where


def test_restricted_check_rejects_the_old_pod() -> None:
    """The check is sharp: the earlier securityContext (no capabilities drop, no seccomp)
    fails on exactly those two rules; a privileged container fails baseline too."""
    old = {"securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
           "containers": [{"name": "controller", "securityContext": {
               "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}}]}
    assert restricted_violations(old) == [
        "containers[controller]: seccompProfile.type must be RuntimeDefault or Localhost",
        "containers[controller].securityContext.capabilities.drop: must include ALL"]
    old["containers"][0]["securityContext"]["privileged"] = True
    old["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    found = restricted_violations(old)
    assert "containers[controller].securityContext.privileged: must be unset or false" in found
    assert "volumes[host].hostPath: not allowed" in found


# ------------------------------------------------------------------ wiring

def test_controller_wiring(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """SA, data at INFERNO_DATA_PATH, token file under the Secret's mount, /invoke on port
    http and /metrics + /health on port metrics (probes there), Service ports to them."""
    docs = by_kind(rendered["cluster"])
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = container(docs["Deployment"])
    env = env_of(docs["Deployment"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert (env["KUBECONFIG"], env["INFERNO_DATA_PATH"]) == ("", mounts["data"] + "/")
    assert [s["configMap"]["name"] for s in volumes["data"]["projected"]["sources"]] == [
        "inferno-static-data", "inferno-dynamic-data"]
    assert (int(env["CONTROLLER_PORT"]), int(env["CONTROLLER_METRICS_PORT"])) == (
        ports["http"], ports["metrics"])
    assert Path(env["INFERNO_INVOKE_TOKEN_PATH"]).parent == Path(mounts["invoke-token"])
    assert volumes["invoke-token"]["secret"]["secretName"] == "inferno-invoke-token"
    assert Path(env["INFERNO_CYCLE_LOG"]).parent == Path(mounts["cycle-log"])
    assert env["INFERNO_ALLOW_MIGRATION"] == "false"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "metrics"}
    service = {p["name"]: p["targetPort"] for p in docs["Service"]["spec"]["ports"]}
    assert service == {"http": "http", "metrics": "metrics"}
    assert docs["Service"]["spec"]["selector"].items() <= (
        docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items())


def test_network_policy_admits_invoke_only_from_labelled_clients(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The fault: /invoke was open to the cluster. The policy selects the controller pod and
    admits port http only from pods labelled inferno.io/invoke=true, port metrics only from
    the monitoring namespace; nothing else."""
    docs = by_kind(rendered["cluster"])
    policy = docs["NetworkPolicy"]["spec"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    rules = {tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["ingress"]}
    assert rules == {
        ("http",): [{"namespaceSelector": {},
                     "podSelector": {"matchLabels": {"inferno.io/invoke": "true"}}}],
        ("metrics",): [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}]}


def test_podmonitor_scrapes_the_metrics_port(tmp_path: Path) -> None:
    """The PodMonitor component, added to an overlay, selects the controller pod and scrapes
    its metrics port at /metrics."""
    def relative(path: Path) -> str:  # kustomize refuses absolute paths
        return os.path.relpath(path, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [relative(DEPLOY / "overlays" / "cluster")],
        "components": [relative(DEPLOY / "components" / "podmonitor")]}))
    docs = by_kind(kustomize(tmp_path))
    monitor = docs["PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == docs["Deployment"]["metadata"]["namespace"]
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in container(docs["Deployment"])["ports"]}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == "/metrics"


def test_load_emulator_runs_load_noise_with_seed_defaults() -> None:
    """The load-emulator Pod runs `inferno load-noise 60 0.5` as the inferno SA."""
    pod = read(DEPLOY / "load-emulator.yaml")[0]
    assert pod["spec"]["serviceAccountName"] == "inferno"
    assert pod["spec"]["containers"][0]["args"] == ["load-noise", "60", "0.5"]


# ------------------------------------------------------------------ image

def test_dockerfile_installs_the_live_extra_in_a_dependency_layer() -> None:
    """Pinned base image; the pinned requirements are installed before the source is copied
    (a layer that survives code edits); the package without dependencies after; `inferno
    live` as an unprivileged user."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    base = next(x for x in lines if x.startswith("FROM"))
    assert base.startswith("FROM python:3.11.")
    assert "-slim" in base
    steps = [x for x in lines if x.startswith(("COPY", "RUN pip"))]
    deps = steps.index("RUN pip install --no-cache-dir -r requirements-live.txt")
    assert steps[deps - 1] == "COPY docker/requirements-live.txt requirements-live.txt"
    source = next(i for i, x in enumerate(steps) if x.startswith("COPY inferno"))
    assert deps < source
    assert any(x.startswith("RUN pip install --no-cache-dir --no-deps --no-build-isolation .")
               for x in steps[source:])
    assert "USER 10001" in lines
    assert (next(x for x in lines if x.startswith("ENTRYPOINT")),
            next(x for x in lines if x.startswith("CMD"))) == ('ENTRYPOINT ["inferno"]',
                                                                'CMD ["live"]')


def test_image_requirements_pin_the_live_extra_without_the_twin() -> None:
    """docker/requirements-live.txt pins every package (==), covers the live extra and the
    core, and holds none of the twin's stack (simpy, pandas, matplotlib)."""
    pins = {}
    for line in (ROOT / "docker" / "requirements-live.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            pins[name.lower().replace("_", "-")] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["live"]]
    names = {w.split(">")[0].split("=")[0].split("[")[0].strip().lower() for w in wanted}
    assert names <= set(pins)
    assert not {"simpy", "pandas", "matplotlib"} & set(pins)


def test_dockerignore_keeps_the_context_small() -> None:
    """The build context leaves out the venv, git, tests, notebooks and results."""
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".git", "tests", "notebooks", "*.jsonl"} <= ignored


BLOCK_TWIN = '''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("simpy", "pandas", "matplotlib", "sim", "dask"):
            raise ImportError("blocked in this test: " + name)
sys.meta_path.insert(0, Block())
import inferno.optimizer, live.app, live.server, live.placement
from inferno.cli import main
sys.argv = ["inferno", "live", "--help"]
main()
'''


def test_the_controller_imports_without_the_twin_stack() -> None:
    """What the image installs is enough: with simpy, pandas, matplotlib (and the twin's
    package) unimportable, the controller's modules import and `inferno live --help` runs."""
    done = subprocess.run([sys.executable, "-c", BLOCK_TWIN], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage: inferno live" in done.stdout
    assert "--allow-migration" in done.stdout
