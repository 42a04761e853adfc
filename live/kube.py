"""Managed Deployments: discovery (what the cluster runs) and actuation (what it should run).

Discovery lists Deployments labelled ``inferno.server.managed=true`` (all namespaces, or the
watched one) and reads their ``inferno.server.*`` labels; a malformed Deployment is skipped with
a reason, never the whole cycle. `KubeActuator` implements the Actuator port with one JSON patch
per Deployment that needs a change: ``/spec/replicas`` and the allocation labels, each written
only when it differs, and on a change of accelerator the pod template's placement
(`live.placement`: node selector and GPU count) in the same patch, so label and pods never
disagree. Without placement settings (migrations off) a plan that changes a labelled
server's accelerator fails for that server instead of relabelling pods that do not move.
Writes are retried with capped exponential backoff on 409/429/5xx and on no answer, within the
cycle's deadline (`live.deadline`); other failures are reported per server.

This module only talks to the API through `kubernetes.client.AppsV1Api`; pods and ReplicaSets
are not read (Prometheus carries per-pod data) and pods are not relabelled: the Deployment
controller rolls them over when the template changes.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from inferno.errors import ActuateError, ConfigError
from inferno.model.accelerator import Accelerator
from inferno.model.snapshot import ActuationReport, AllocationPlan, ServerPlan
from live import labels as lbl
from live.config import KubeSettings
from live.deadline import UNBOUNDED, CycleBudget, Deadline
from live.errors import KUBE_ERRORS, actuate_error, is_retryable_status, kube_collect_error
from live.placement import PlacementSettings, PodTemplate, placement_ops, read_template

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagedDeployment:
    """One managed Deployment as read from the API."""

    namespace: str
    deployment: str
    labels: lbl.ServerLabels
    desired_replicas: int
    """``spec.replicas`` (Kubernetes defaults a missing value to 1)."""
    ready_replicas: int
    """``status.readyReplicas`` (0 when absent)."""
    held_replicas: int | None = None
    """``status.replicas``: pods of every revision not yet terminated (they hold their
    accelerators; pods already terminating are not counted by Kubernetes)."""
    template: PodTemplate = PodTemplate()
    """Node selector and container resources of the pod template (placement)."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.deployment}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """Managed Deployments by server name, and the ones that could not be read."""

    deployments: Mapping[str, ManagedDeployment] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Server name (or ``namespace/deployment`` when the name is unreadable) → reason."""


Listed = Mapping[str, Any]
"""A Deployment as the API serves it (JSON, camelCase keys)."""


@functools.cache
def _serializer() -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient()


def plain(dep: Listed | kubernetes.client.V1Deployment) -> Listed:
    """The API's JSON form of a Deployment (client models are converted)."""
    if isinstance(dep, Mapping):
        return dep
    converted: Listed = _serializer().sanitize_for_serialization(dep)
    return converted


def read_deployment(dep: Listed | kubernetes.client.V1Deployment) -> ManagedDeployment:
    """Plain data from a listed Deployment; raises ConfigError for malformed labels."""
    raw = plain(dep)
    meta = raw.get("metadata") or {}
    spec_replicas = (raw.get("spec") or {}).get("replicas")
    status = raw.get("status") or {}
    ready, pods = status.get("readyReplicas"), status.get("replicas")
    return ManagedDeployment(
        namespace=meta.get("namespace") or "", deployment=meta.get("name") or "",
        labels=lbl.parse_labels(meta.get("labels") or {}),
        desired_replicas=1 if spec_replicas is None else int(spec_replicas),
        ready_replicas=int(ready or 0), held_replicas=None if pods is None else int(pods),
        template=read_template(raw))


def _ref(raw: Listed) -> tuple[str, str]:
    meta = raw.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def discover(items: Iterable[Listed | kubernetes.client.V1Deployment]) -> Discovery:
    """Parse listed Deployments (in namespace/name order); skip malformed and duplicate names."""
    found: dict[str, ManagedDeployment] = {}
    skipped: dict[str, str] = {}
    for raw in sorted((plain(d) for d in items), key=_ref):
        ref = "/".join(_ref(raw))
        try:
            managed = read_deployment(raw)
        except ConfigError as exc:
            labels = (raw.get("metadata") or {}).get("labels") or {}
            name = str(labels.get(lbl.NAME, "")).strip() or ref
            skipped[name] = f"Deployment {ref}: {exc}"
            log.warning("skipping Deployment %s: %s", ref, exc)
            continue
        name = managed.labels.name
        if name in found:
            skipped[f"{ref}"] = (f"Deployment {ref}: server name {name!r} already used by "
                                 f"Deployment {found[name].ref}")
            log.warning("skipping Deployment %s: duplicate server name %r", ref, name)
            continue
        found[name] = managed
    return Discovery(deployments=found, skipped=skipped)


def list_managed(apps: kubernetes.client.AppsV1Api, settings: KubeSettings,
                 timeout_s: float | None = None) -> list[Listed]:
    """One list call with the managed label selector, as JSON (client-library errors
    propagate; a body that is not JSON is an HTTP 502).

    The JSON is parsed as is, not into the client's models: for 500 Deployments the models
    cost ~0.2 s of CPU per list, the JSON ~10 ms.
    """
    kwargs: dict[str, Any] = {"label_selector": lbl.MANAGED_SELECTOR,
                              "_request_timeout": timeout_s or settings.request_timeout_s,
                              "_preload_content": False}
    if settings.watch_namespace:
        response = apps.list_namespaced_deployment(settings.watch_namespace, **kwargs)
    else:
        response = apps.list_deployment_for_all_namespaces(**kwargs)
    # With _preload_content=False the client returns the raw urllib3 response, not the
    # V1DeploymentList its annotations promise.
    raw = cast("urllib3.BaseHTTPResponse", response)
    try:
        body = json.loads(raw.data)
    except ValueError as exc:
        raise ApiException(status=502, reason=f"Deployment list is not JSON: {exc}") from exc
    return list(body.get("items") or [])


def discover_deployments(apps: kubernetes.client.AppsV1Api, settings: KubeSettings,
                         deadline: Deadline = UNBOUNDED) -> Discovery:
    """Discovery for a collect: a failed list raises CollectError (the cycle is skipped)."""
    scope = settings.watch_namespace or "all namespaces"
    try:
        items = list_managed(apps, settings, deadline.timeout_s(settings.request_timeout_s))
    except KUBE_ERRORS as exc:
        raise kube_collect_error(exc, f"list managed Deployments in {scope}") from exc
    return discover(items)


def escape_pointer(key: str) -> str:
    """RFC 6901 escaping of one JSON-pointer segment (label keys may contain '/')."""
    return key.replace("~", "~0").replace("/", "~1")


def patch_ops(current: ManagedDeployment, plan: ServerPlan, *,
              placement: PlacementSettings | None = None,
              accelerators: Mapping[str, Accelerator] | None = None) -> list[dict[str, Any]]:
    """JSON-patch ops that make `current` match `plan`; empty when nothing differs.

    ``add`` replaces an existing member and creates a missing one, so a Deployment seeded
    without the allocation labels is patched too (upstream's ``replace`` failed with 422).
    An empty accelerator or a max batch of 0 in the plan means "leave as is". A change of a
    labelled accelerator also places the pod template (module notes); raises ConfigError when
    migrations are off (`placement` None) or the accelerator is not in `accelerators`.
    """
    if plan.num_replicas < 0:
        raise ConfigError(f"plan for {plan.name!r}: num_replicas must be >= 0, "
                          f"got {plan.num_replicas}")
    ops: list[dict[str, Any]] = []
    if plan.num_replicas != current.desired_replicas:
        ops.append({"op": "add", "path": "/spec/replicas", "value": plan.num_replicas})
    labels: dict[str, str] = {}
    if plan.accelerator and plan.accelerator != current.labels.accelerator:
        labels[lbl.ACCELERATOR] = plan.accelerator
        ops += migration_ops(current, plan.accelerator, placement, accelerators)
    if plan.max_batch > 0 and plan.max_batch != current.labels.max_batch:
        labels[lbl.MAX_BATCH] = str(plan.max_batch)
    return ops + label_ops(labels)


def migration_ops(current: ManagedDeployment, accelerator: str,
                  placement: PlacementSettings | None,
                  accelerators: Mapping[str, Accelerator] | None) -> list[dict[str, Any]]:
    """The template ops of a change to `accelerator` (none when the server had no
    accelerator label: recording one moves nothing); ConfigError when not allowed."""
    if placement is None:
        if not current.labels.accelerator:
            return []
        raise ConfigError(f"accelerator change {current.labels.accelerator} -> {accelerator} "
                          "not actuated: migrations are off (inferno live --allow-migration)")
    target = (accelerators or {}).get(accelerator)
    if target is None:
        raise ConfigError(f"accelerator {accelerator!r} is not in accelerator-data: cannot "
                          "place the pod template")
    return placement_ops(current.template, target, placement)


def label_ops(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSON-patch ops setting these labels; raises ConfigError for an invalid value."""
    for key, value in labels.items():
        if not lbl.is_valid_label_value(value):
            raise ConfigError(f"label {key}: {value!r} is not a valid label value")
    return [{"op": "add", "path": "/metadata/labels/" + escape_pointer(key), "value": value}
            for key, value in labels.items()]


def backoff_s(attempt: int, settings: KubeSettings) -> float:
    """Delay before retry number `attempt` (1-based): base × 2^(attempt-1), capped."""
    return float(min(settings.max_backoff_s, settings.backoff_s * 2 ** (attempt - 1)))


def call_with_retries(call: Callable[[float], T], *, what: str, settings: KubeSettings,
                      sleep: Callable[[float], None], deadline: Deadline = UNBOUNDED) -> T:
    """Run ``call(timeout_s)``, retrying transient API failures until `deadline`.

    Each attempt's timeout is `KubeSettings.request_timeout_s` capped by the deadline; no
    retry is started that could not end before it. Raises ActuateError when giving up.
    """
    for attempt in range(1, settings.max_attempts + 1):
        if deadline.is_expired:
            raise ActuateError(f"{what}: the cycle's deadline passed before attempt {attempt}",
                               transient=True)
        try:
            return call(deadline.timeout_s(settings.request_timeout_s))
        except KUBE_ERRORS as exc:
            error = actuate_error(exc, what)
            retryable = not isinstance(exc, ApiException) or is_retryable_status(exc.status)
            hint = error.retry_after_s
            delay = min(hint, settings.max_backoff_s) if hint is not None else backoff_s(
                attempt, settings)
            out_of_time = delay >= deadline.remaining_s()
            if not retryable or attempt == settings.max_attempts or out_of_time:
                if retryable:
                    why = "the cycle's deadline" if out_of_time else "the last attempt"
                    error = ActuateError(f"{error} (gave up after {attempt} attempts: {why})",
                                         transient=True, retry_after_s=error.retry_after_s)
                raise error from exc
            log.info("%s failed (%s); retry %d/%d in %.2f s", what, error, attempt,
                     settings.max_attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable: max_attempts >= 1")  # pragma: no cover


class KubeActuator:
    """Actuator port over the Kubernetes API: patches managed Deployments to match a plan.

    Raises ActuateError when the Deployments cannot be listed, or when every patch it tried
    failed (the API is unusable); otherwise per-server failures are in the report.
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, settings: KubeSettings, *,
                 sleep: Callable[[float], None] = time.sleep,
                 budget: CycleBudget | None = None,
                 placement: PlacementSettings | None = None,
                 accelerators: Callable[[], Mapping[str, Accelerator]] | None = None) -> None:
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self.settings = settings
        self._sleep = sleep
        self.budget = budget
        """The cycle's deadlines (set by the collector); None: unbounded (load emulator)."""
        self.placement = placement
        """None: migrations off (module notes)."""
        self._accelerators = accelerators

    def _retrying(self, call: Callable[[float], T], what: str) -> T:
        deadline = self.budget.cycle if self.budget is not None else UNBOUNDED
        return call_with_retries(call, what=what, settings=self.settings, sleep=self._sleep,
                                 deadline=deadline)

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Patch every planned server whose Deployment differs from its plan (as this cycle's
        collect listed it, else as listed now)."""
        discovery = None
        if self.budget is not None:
            self.budget.stage = "actuate"
            discovery = self.budget.discovery  # listed by this cycle's collect
        if discovery is None:
            scope = self.settings.watch_namespace or "all namespaces"
            discovery = discover(self._retrying(
                lambda t: list_managed(self._apps, self.settings, t),
                f"list managed Deployments in {scope}"))
        accelerators = self._accelerators() if self._accelerators is not None else {}
        unchanged: list[str] = []
        failed: dict[str, str] = {}
        writes: dict[str, tuple[ManagedDeployment, list[dict[str, Any]]]] = {}
        for name, server_plan in sorted(plan.servers.items()):
            current = discovery.deployments.get(name)
            if current is None or (server_plan.namespace
                                   and server_plan.namespace != current.namespace):
                where = f" in namespace {server_plan.namespace}" if server_plan.namespace else ""
                failed[name] = discovery.skipped.get(
                    name, f"no managed Deployment with {lbl.NAME}={name}{where}")
                continue
            try:
                ops = patch_ops(current, server_plan, placement=self.placement,
                                accelerators=accelerators)
            except ConfigError as exc:
                failed[name] = str(exc)
                continue
            if ops:
                writes[name] = (current, ops)
            else:
                unchanged.append(name)
        errors = self._write_all(writes)
        failed.update({name: str(exc) for name, exc in errors.items()})
        applied = tuple(name for name in writes if name not in errors)
        if errors and not applied:
            raise ActuateError("no Deployment could be patched: " + "; ".join(
                str(e) for e in errors.values()), transient=all(
                    e.transient for e in errors.values()))
        return ActuationReport(applied=applied, unchanged=tuple(unchanged),
                               failed=dict(sorted(failed.items())))

    def write_labels(self, current: ManagedDeployment, labels: Mapping[str, str]) -> None:
        """Set labels on one managed Deployment (e.g. the load emulator's load labels).

        Raises ConfigError for an invalid value, ActuateError when the API refuses or retries
        are exhausted.
        """
        ops = label_ops(labels)
        if ops:
            self._retrying(lambda t: self._patch(current, ops, t),
                           f"patch Deployment {current.ref}")

    def _write_all(self, writes: Mapping[str, tuple[ManagedDeployment, list[dict[str, Any]]]]
                   ) -> dict[str, ActuateError]:
        """Patch in parallel (each with its own retries); returns the failures by server."""
        def write(current: ManagedDeployment, ops: list[dict[str, Any]]) -> None:
            self._retrying(lambda t: self._patch(current, ops, t),
                           f"patch Deployment {current.ref}")
            log.info("patched Deployment %s: %s", current.ref,
                     ", ".join(f"{op['path'].rsplit('/', 1)[-1]}={op['value']}" for op in ops))

        errors: dict[str, ActuateError] = {}
        workers = min(self.settings.max_concurrent_writes, max(len(writes), 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube-patch") as pool:
            futures = {name: pool.submit(write, *job) for name, job in writes.items()}
            for name, future in futures.items():
                try:
                    future.result()
                except ActuateError as exc:
                    errors[name] = exc
        return errors

    def _patch(self, current: ManagedDeployment, ops: list[dict[str, Any]],
               timeout_s: float) -> None:
        self._apps.patch_namespaced_deployment(current.deployment, current.namespace, ops,
                                               _request_timeout=timeout_s)
