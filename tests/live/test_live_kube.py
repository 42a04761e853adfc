"""Deployment discovery and KubeActuator against the Kubernetes API emulator over HTTP."""

from __future__ import annotations

from pathlib import Path

import kubernetes.client
import pytest
from kube_emulator import (
    EmulatorThread,
    deployment,
    managed_labels,
    selector_matches,
    workload_manifest,
)
from prom_harness import free_port

from inferno.errors import ActuateError, CollectError
from inferno.io import load_static_data
from inferno.model.snapshot import ActuationReport, AllocationPlan, ServerPlan
from live.config import KubeSettings, load_api_client
from live.kube import (
    KubeActuator,
    backoff_s,
    discover_deployments,
    escape_pointer,
)
from live.placement import PlacementSettings, running_accelerator

SMALL = Path(__file__).resolve().parents[2] / "sample-data" / "small"
ACC = "inferno.server.allocation.accelerator"
MAX_BATCH = "inferno.server.allocation.maxbatchsize"


def seed_workload(kube: EmulatorThread) -> None:
    """The three sample Deployments of yamls/workload, one ready replica each."""
    for name in ("dep1.yaml", "dep2.yaml", "dep3.yaml"):
        body = workload_manifest(name)
        body["status"] = {"replicas": 1, "readyReplicas": 1}
        kube.put_deployment(body)


def apps(api_client: kubernetes.client.ApiClient) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(api_client)


class Sleeps:
    """Records the delays an actuator asks for instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def plan(*servers: ServerPlan) -> AllocationPlan:
    return AllocationPlan(servers={s.name: s for s in servers})


# ---- label selectors in the emulator (the other tests rely on them) ----

@pytest.mark.parametrize(("selector", "expected"), [
    ("a=1", True), ("a==1", True), ("a=2", False), ("a!=2", True), ("a!=1", False),
    ("a in (1,2)", True), ("a notin (1, 2)", False), ("b", True), ("!b", False),
    ("c", False), ("!c", True), ("a=1,b=x", True), ("a=1,b=y", False),
], ids=lambda v: str(v))
def test_emulator_label_selector_semantics(selector: str, expected: bool) -> None:
    """The emulator's selector matching follows Kubernetes label-selector rules."""
    assert selector_matches(selector, {"a": "1", "b": "x"}) is expected


# ---- discovery ----

def test_discovery_selects_managed_deployments_in_all_namespaces(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """All namespaces: managed Deployments are found, unmanaged ones are not listed."""
    seed_workload(kube)
    kube.put_deployment(deployment("team-b", "d-b", managed_labels("srv-b"), replicas=3,
                                   ready=2))
    kube.put_deployment(deployment("infer", "plain", {"app": "plain"}))
    kube.put_deployment(deployment("infer", "opted-out", {
        **managed_labels("srv-x"), "inferno.server.managed": "false"}))
    found = discover_deployments(apps(api_client), kube_settings)
    assert sorted(found.deployments) == ["Bronze-granite_13b", "Free-mixtral_8_7b",
                                         "Premium-llama_13b", "srv-b"]
    srv_b = found.deployments["srv-b"]
    assert (srv_b.namespace, srv_b.deployment, srv_b.desired_replicas, srv_b.ready_replicas) == (
        "team-b", "d-b", 3, 2)
    [listing] = kube.requests("GET", "/deployments$")
    assert (listing.url.path, listing.params["labelSelector"]) == (
        "/apis/apps/v1/deployments", "inferno.server.managed=true")


def test_watch_namespace_limits_discovery(kube: EmulatorThread,
                                          api_client: kubernetes.client.ApiClient,
                                          kubeconfig: Path) -> None:
    """WATCH_NAMESPACE=infer lists only that namespace (a namespaced list call)."""
    seed_workload(kube)
    kube.put_deployment(deployment("team-b", "d-b", managed_labels("srv-b")))
    settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace="infer")
    found = discover_deployments(apps(api_client), settings)
    assert {d.namespace for d in found.deployments.values()} == {"infer"}
    assert len(found.deployments) == 3
    [listing] = kube.requests("GET", "/deployments$")
    assert listing.url.path == "/apis/apps/v1/namespaces/infer/deployments"


def test_sample_labels_are_read(kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
                                kube_settings: KubeSettings) -> None:
    """dep3.yaml has no class label: it is served as Free; its load labels are read."""
    seed_workload(kube)
    dep3 = discover_deployments(apps(api_client), kube_settings).deployments["Free-mixtral_8_7b"]
    labels = dep3.labels
    assert (labels.model, labels.class_name, labels.accelerator, labels.max_batch,
            labels.load_rpm, labels.load_out_tokens) == ("mixtral_8_7b", "Free", "AIU2", 32,
                                                         20.0, 256.0)


def test_malformed_labels_skip_only_that_server(kube: EmulatorThread,
                                                api_client: kubernetes.client.ApiClient,
                                                kube_settings: KubeSettings) -> None:
    """A bad rpm label or a missing name skips that server with a reason; others are kept."""
    seed_workload(kube)
    kube.put_deployment(deployment("infer", "bad-rpm", managed_labels(
        "srv-bad", **{"inferno.server.load.rpm": "lots"})))
    kube.put_deployment(deployment("infer", "no-name", {
        "inferno.server.managed": "true", "inferno.server.model": "m1"}))
    found = discover_deployments(apps(api_client), kube_settings)
    assert len(found.deployments) == 3
    assert set(found.skipped) == {"srv-bad", "infer/no-name"}
    assert "inferno.server.load.rpm" in found.skipped["srv-bad"]
    assert "'lots'" in found.skipped["srv-bad"]
    assert "inferno.server.name" in found.skipped["infer/no-name"]


def test_duplicate_server_name_is_skipped(kube: EmulatorThread,
                                          api_client: kubernetes.client.ApiClient,
                                          kube_settings: KubeSettings) -> None:
    """Two Deployments claiming one server name: the first (namespace/name order) wins."""
    kube.put_deployment(deployment("a-ns", "first", managed_labels("same")))
    kube.put_deployment(deployment("b-ns", "second", managed_labels("same")))
    found = discover_deployments(apps(api_client), kube_settings)
    assert found.deployments["same"].namespace == "a-ns"
    assert "a-ns/first" in found.skipped["b-ns/second"]


def test_list_failure_is_transient_collect_error(kube: EmulatorThread,
                                                 api_client: kubernetes.client.ApiClient,
                                                 kube_settings: KubeSettings) -> None:
    """An API 500 on the list call raises a transient CollectError (cycle skipped)."""
    kube.fail_next("GET", "/deployments$", 500)
    with pytest.raises(CollectError, match="HTTP 500") as info:
        discover_deployments(apps(api_client), kube_settings)
    assert info.value.transient is True


def test_unreachable_api_is_transient_collect_error(tmp_path: Path) -> None:
    """No API server listening: a transient CollectError, not a crash."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    settings = KubeSettings(kubeconfig=str(config), request_timeout_s=2.0)
    client = load_api_client(settings)
    try:
        with pytest.raises(CollectError) as info:
            discover_deployments(apps(client), settings)
        assert info.value.transient is True
    finally:
        client.close()


# ---- actuation ----

def test_patch_of_replicas_and_labels_lands(kube: EmulatorThread,
                                            api_client: kubernetes.client.ApiClient,
                                            kube_settings: KubeSettings) -> None:
    """A plan changing replicas and max batch is written to the Deployment in one JSON patch;
    the template is untouched."""
    seed_workload(kube)
    template = kube.get_deployment("infer", "vllm-001")["spec"]["template"]
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps())
    report = actuator.apply(plan(ServerPlan(name="Premium-llama_13b", accelerator="A100",
                                            num_replicas=3, max_batch=128)))
    assert report == ActuationReport(applied=("Premium-llama_13b",))
    stored = kube.get_deployment("infer", "vllm-001")
    assert stored["spec"]["replicas"] == 3
    assert (stored["metadata"]["labels"][ACC], stored["metadata"]["labels"][MAX_BATCH]) == (
        "A100", "128")
    assert stored["metadata"]["labels"]["inferno.server.load.rpm"] == "60"
    assert stored["spec"]["template"] == template
    [patch] = kube.requests("PATCH")
    assert patch.headers["Content-Type"] == "application/json-patch+json"


def test_accelerator_change_without_migrations_is_refused(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """The fault: A100 -> G2 was a relabel that moved no pod. Migrations off (the default):
    the server's plan fails with the reason and nothing is written, not even its replicas."""
    seed_workload(kube)
    report = KubeActuator(api_client, kube_settings, sleep=Sleeps()).apply(plan(
        ServerPlan(name="Premium-llama_13b", accelerator="G2", num_replicas=3, max_batch=64)))
    assert report.applied == ()
    assert "A100 -> G2 not actuated: migrations are off" in report.failed["Premium-llama_13b"]
    assert kube.requests("PATCH") == []


@pytest.mark.parametrize(("target", "selector", "gpus"), [
    ("G2", "G2", "1"), ("4xA100", "A100", "4")], ids=["other-type", "more-cards"])
def test_migration_places_the_pod_template(kube: EmulatorThread,
                                           api_client: kubernetes.client.ApiClient,
                                           kube_settings: KubeSettings, target: str,
                                           selector: str, gpus: str) -> None:
    """Migrations on: one patch sets the label, the template's nodeSelector (accelerator type)
    and the container's GPU limit (multiplicity, accelerator-data of sample-data/small), and
    keeps the container's other resources; reading the template back gives the target."""
    seed_workload(kube)
    accelerators = load_static_data(SMALL).accelerators
    placement = PlacementSettings()
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps(), placement=placement,
                            accelerators=lambda: accelerators)
    report = actuator.apply(plan(ServerPlan(name="Premium-llama_13b", accelerator=target,
                                            num_replicas=2, max_batch=64)))
    assert report.applied == ("Premium-llama_13b",)
    stored = kube.get_deployment("infer", "vllm-001")
    pod = stored["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"inferno.accelerator": selector}
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"memory": "64Mi", "nvidia.com/gpu": gpus}}
    assert stored["metadata"]["labels"][ACC] == target
    assert len(kube.requests("PATCH")) == 1
    dep = discover_deployments(apps(api_client), kube_settings).deployments["Premium-llama_13b"]
    assert running_accelerator(dep.template, accelerators, placement) == target


def test_only_changed_fields_are_patched(kube: EmulatorThread,
                                         api_client: kubernetes.client.ApiClient,
                                         kube_settings: KubeSettings) -> None:
    """Same accelerator and max batch: the JSON patch carries the replicas op only."""
    seed_workload(kube)
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps())
    actuator.apply(plan(ServerPlan(name="Bronze-granite_13b", accelerator="L4", num_replicas=2,
                                   max_batch=16)))
    [patch] = kube.requests("PATCH")
    assert patch.data == [{"op": "add", "path": "/spec/replicas", "value": 2}]


def test_unchanged_plan_sends_no_patch(kube: EmulatorThread,
                                       api_client: kubernetes.client.ApiClient,
                                       kube_settings: KubeSettings) -> None:
    """A plan equal to the current state is reported unchanged and writes nothing."""
    seed_workload(kube)
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps())
    report = actuator.apply(plan(
        ServerPlan(name="Bronze-granite_13b", accelerator="L4", num_replicas=1, max_batch=16),
        ServerPlan(name="Free-mixtral_8_7b", accelerator="", num_replicas=1, max_batch=0)))
    assert report == ActuationReport(unchanged=("Bronze-granite_13b", "Free-mixtral_8_7b"))
    assert kube.requests("PATCH") == []


def test_missing_labels_are_added(kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
                                  kube_settings: KubeSettings) -> None:
    """A Deployment seeded without allocation labels gets them (add, not replace)."""
    labels = managed_labels("bare")
    del labels[ACC]
    kube.put_deployment(deployment("infer", "bare", labels))
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps())
    report = actuator.apply(plan(ServerPlan(name="bare", accelerator="L4", num_replicas=1,
                                            max_batch=8)))
    assert report.applied == ("bare",)
    stored = kube.get_deployment("infer", "bare")["metadata"]["labels"]
    assert (stored[ACC], stored[MAX_BATCH]) == ("L4", "8")


def test_unknown_and_skipped_servers_fail_without_patching(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """Plans for an absent server or a malformed one are reported failed; nothing is written."""
    kube.put_deployment(deployment("infer", "bad", managed_labels(
        "srv-bad", **{MAX_BATCH: "lots"})))
    actuator = KubeActuator(api_client, kube_settings, sleep=Sleeps())
    report = actuator.apply(plan(
        ServerPlan(name="ghost", accelerator="A100", num_replicas=2, max_batch=8),
        ServerPlan(name="srv-bad", accelerator="A100", num_replicas=2, max_batch=8)))
    assert report.applied == ()
    assert "inferno.server.name=ghost" in report.failed["ghost"]
    assert MAX_BATCH in report.failed["srv-bad"]
    assert kube.requests("PATCH") == []


def test_conflict_then_success_is_retried(kube: EmulatorThread,
                                          api_client: kubernetes.client.ApiClient,
                                          kube_settings: KubeSettings) -> None:
    """409 once: the patch is retried after the first backoff delay and lands."""
    seed_workload(kube)
    kube.fail_next("PATCH", "/deployments/vllm-002$", 409)
    sleeps = Sleeps()
    report = KubeActuator(api_client, kube_settings, sleep=sleeps).apply(plan(
        ServerPlan(name="Bronze-granite_13b", accelerator="L4", num_replicas=4, max_batch=16)))
    assert report.applied == ("Bronze-granite_13b",)
    assert sleeps.delays == [0.01]
    assert len(kube.requests("PATCH")) == 2
    assert kube.get_deployment("infer", "vllm-002")["spec"]["replicas"] == 4


def test_throttling_honours_retry_after(kube: EmulatorThread,
                                        api_client: kubernetes.client.ApiClient,
                                        kube_settings: KubeSettings) -> None:
    """429 with Retry-After: 0.5 waits 0.5 s (not the 10 ms backoff) before retrying."""
    seed_workload(kube)
    kube.fail_next("PATCH", "/deployments/vllm-002$", 429, headers={"Retry-After": "0.5"})
    sleeps = Sleeps()
    KubeActuator(api_client, kube_settings, sleep=sleeps).apply(plan(
        ServerPlan(name="Bronze-granite_13b", accelerator="L4", num_replicas=4, max_batch=16)))
    assert sleeps.delays == [0.5]


def test_repeated_500_gives_up_after_bounded_attempts(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """500 on every attempt: 4 attempts, delays 10/20/40 ms, then ActuateError; no change."""
    seed_workload(kube)
    kube.fail_next("PATCH", "/deployments/vllm-002$", 500, count=100)
    sleeps = Sleeps()
    actuator = KubeActuator(api_client, kube_settings, sleep=sleeps)
    with pytest.raises(ActuateError, match="gave up after 4 attempts") as info:
        actuator.apply(plan(ServerPlan(name="Bronze-granite_13b", accelerator="L4",
                                       num_replicas=4, max_batch=16)))
    assert info.value.transient is True
    assert sleeps.delays == pytest.approx([0.01, 0.02, 0.04])
    assert len(kube.requests("PATCH")) == 4
    assert kube.get_deployment("infer", "vllm-002")["spec"]["replicas"] == 1


def test_one_failing_server_does_not_block_the_others(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """500s on one Deployment: the other is patched and the report names the failure."""
    seed_workload(kube)
    kube.fail_next("PATCH", "/deployments/vllm-002$", 500, count=100)
    report = KubeActuator(api_client, kube_settings, sleep=Sleeps()).apply(plan(
        ServerPlan(name="Bronze-granite_13b", accelerator="L4", num_replicas=4, max_batch=16),
        ServerPlan(name="Premium-llama_13b", accelerator="A100", num_replicas=2, max_batch=64)))
    assert report.applied == ("Premium-llama_13b",)
    assert "HTTP 500" in report.failed["Bronze-granite_13b"]
    assert kube.get_deployment("infer", "vllm-001")["spec"]["replicas"] == 2


def test_invalid_patch_is_not_retried(kube: EmulatorThread,
                                      api_client: kubernetes.client.ApiClient,
                                      kube_settings: KubeSettings) -> None:
    """422 is permanent: one attempt, no sleep, a non-transient ActuateError."""
    seed_workload(kube)
    kube.fail_next("PATCH", "/deployments/vllm-001$", 422)
    sleeps = Sleeps()
    with pytest.raises(ActuateError) as info:
        KubeActuator(api_client, kube_settings, sleep=sleeps).apply(plan(
            ServerPlan(name="Premium-llama_13b", accelerator="A100", num_replicas=2,
                       max_batch=64)))
    assert (info.value.transient, sleeps.delays, len(kube.requests("PATCH"))) == (False, [], 1)


def test_invalid_accelerator_is_refused_before_the_api(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """An accelerator name that is not a label value fails that server without a request."""
    seed_workload(kube)
    report = KubeActuator(api_client, kube_settings, sleep=Sleeps()).apply(plan(
        ServerPlan(name="Premium-llama_13b", accelerator="A100/80GB", num_replicas=2,
                   max_batch=64)))
    assert "A100/80GB" in report.failed["Premium-llama_13b"]
    assert kube.requests("PATCH") == []


def test_list_failure_during_apply_is_retried_then_raises(
        kube: EmulatorThread, api_client: kubernetes.client.ApiClient,
        kube_settings: KubeSettings) -> None:
    """The actuator's own list call is retried too; a persistent 503 raises ActuateError."""
    seed_workload(kube)
    kube.fail_next("GET", "/deployments$", 503, count=100)
    sleeps = Sleeps()
    with pytest.raises(ActuateError, match="list managed Deployments"):
        KubeActuator(api_client, kube_settings, sleep=sleeps).apply(plan(
            ServerPlan(name="Premium-llama_13b", accelerator="A100", num_replicas=2,
                       max_batch=64)))
    assert len(sleeps.delays) == 3


def test_write_labels_sets_load_labels(kube: EmulatorThread,
                                       api_client: kubernetes.client.ApiClient,
                                       kube_settings: KubeSettings) -> None:
    """write_labels (the load emulator's write) changes only the given labels."""
    seed_workload(kube)
    current = discover_deployments(apps(api_client), kube_settings).deployments[
        "Premium-llama_13b"]
    KubeActuator(api_client, kube_settings, sleep=Sleeps()).write_labels(
        current, {"inferno.server.load.rpm": "72.5", "inferno.server.load.numtokens": "900"})
    stored = kube.get_deployment("infer", "vllm-001")
    assert {k: v for k, v in stored["metadata"]["labels"].items() if ".load." in k} == {
        "inferno.server.load.rpm": "72.5", "inferno.server.load.numtokens": "900"}
    assert (stored["spec"]["replicas"], stored["metadata"]["labels"][ACC]) == (1, "A100")


def test_backoff_doubles_and_is_capped() -> None:
    """Delays: base × 2^(attempt-1), never above the cap."""
    settings = KubeSettings(backoff_s=0.2, max_backoff_s=1.0)
    assert [backoff_s(a, settings) for a in range(1, 7)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_json_pointer_escaping() -> None:
    """RFC 6901: '~' → '~0' then '/' → '~1'; dots are left alone."""
    assert escape_pointer("example.com/a~b") == "example.com~1a~0b"
