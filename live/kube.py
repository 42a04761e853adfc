"""Managed Deployments: discovery (what the cluster runs) and actuation (what it should run).

Discovery lists Deployments labelled ``inferno.server.managed=true`` (all namespaces, or the
watched one) and reads their ``inferno.server.*`` labels; a malformed Deployment is skipped with
a reason, never the whole cycle. `KubeActuator` implements the Actuator port with one JSON patch
per Deployment that needs a change: ``/spec/replicas`` and the allocation labels, each written
only when it differs. Writes are retried with capped exponential backoff on 409/429/5xx and on
no answer; other failures are reported per server.

This module only talks to the API through `kubernetes.client.AppsV1Api`; pods and ReplicaSets
are not read (Prometheus carries per-pod data) and pods are not relabelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from inferno.errors import ActuateError, ConfigError
from inferno.model.snapshot import ActuationReport, AllocationPlan, ServerPlan
from live import labels as lbl
from live.config import KubeSettings
from live.errors import TRANSPORT_ERRORS, actuate_error, is_retryable_status, kube_collect_error

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

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.deployment}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Discovery:
    """Managed Deployments by server name, and the ones that could not be read."""

    deployments: Mapping[str, ManagedDeployment] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Server name (or ``namespace/deployment`` when the name is unreadable) → reason."""


def read_deployment(dep: kubernetes.client.V1Deployment) -> ManagedDeployment:
    """Plain data from a V1Deployment; raises ConfigError for malformed labels."""
    meta = dep.metadata
    spec_replicas = dep.spec.replicas if dep.spec is not None else None
    ready = dep.status.ready_replicas if dep.status is not None else None
    pods = dep.status.replicas if dep.status is not None else None
    return ManagedDeployment(
        namespace=meta.namespace or "", deployment=meta.name or "",
        labels=lbl.parse_labels(meta.labels or {}),
        desired_replicas=1 if spec_replicas is None else int(spec_replicas),
        ready_replicas=int(ready or 0), held_replicas=None if pods is None else int(pods))


def discover(items: Iterable[kubernetes.client.V1Deployment]) -> Discovery:
    """Parse listed Deployments (in namespace/name order); skip malformed and duplicate names."""
    found: dict[str, ManagedDeployment] = {}
    skipped: dict[str, str] = {}
    ordered = sorted(items, key=lambda d: (d.metadata.namespace or "", d.metadata.name or ""))
    for dep in ordered:
        ref = f"{dep.metadata.namespace}/{dep.metadata.name}"
        try:
            managed = read_deployment(dep)
        except ConfigError as exc:
            name = (dep.metadata.labels or {}).get(lbl.NAME, "").strip() or ref
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


def list_managed(apps: kubernetes.client.AppsV1Api, settings: KubeSettings
                 ) -> list[kubernetes.client.V1Deployment]:
    """One list call with the managed label selector (client-library errors propagate)."""
    kwargs: dict[str, Any] = {"label_selector": lbl.MANAGED_SELECTOR,
                              "_request_timeout": settings.request_timeout_s}
    if settings.watch_namespace:
        result = apps.list_namespaced_deployment(settings.watch_namespace, **kwargs)
    else:
        result = apps.list_deployment_for_all_namespaces(**kwargs)
    return list(result.items or [])


def discover_deployments(apps: kubernetes.client.AppsV1Api, settings: KubeSettings) -> Discovery:
    """Discovery for a collect: a failed list raises CollectError (the cycle is skipped)."""
    scope = settings.watch_namespace or "all namespaces"
    try:
        items = list_managed(apps, settings)
    except (ApiException, *TRANSPORT_ERRORS) as exc:
        raise kube_collect_error(exc, f"list managed Deployments in {scope}") from exc
    return discover(items)


def escape_pointer(key: str) -> str:
    """RFC 6901 escaping of one JSON-pointer segment (label keys may contain '/')."""
    return key.replace("~", "~0").replace("/", "~1")


def patch_ops(current: ManagedDeployment, plan: ServerPlan) -> list[dict[str, Any]]:
    """JSON-patch ops that make `current` match `plan`; empty when nothing differs.

    ``add`` replaces an existing member and creates a missing one, so a Deployment seeded
    without the allocation labels is patched too (upstream's ``replace`` failed with 422).
    An empty accelerator or a max batch of 0 in the plan means "leave as is".
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
    if plan.max_batch > 0 and plan.max_batch != current.labels.max_batch:
        labels[lbl.MAX_BATCH] = str(plan.max_batch)
    return ops + label_ops(labels)


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


def call_with_retries(call: Callable[[], T], *, what: str, settings: KubeSettings,
                      sleep: Callable[[float], None]) -> T:
    """Run `call`, retrying transient API failures; raises ActuateError when giving up."""
    for attempt in range(1, settings.max_attempts + 1):
        try:
            return call()
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            error = actuate_error(exc, what)
            retryable = not isinstance(exc, ApiException) or is_retryable_status(exc.status)
            if not retryable or attempt == settings.max_attempts:
                if retryable:
                    error = ActuateError(f"{error} (gave up after {attempt} attempts)",
                                         transient=True, retry_after_s=error.retry_after_s)
                raise error from exc
            hint = error.retry_after_s
            delay = min(hint, settings.max_backoff_s) if hint is not None else backoff_s(
                attempt, settings)
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
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self.settings = settings
        self._sleep = sleep

    def _retrying(self, call: Callable[[], T], what: str) -> T:
        return call_with_retries(call, what=what, settings=self.settings, sleep=self._sleep)

    def apply(self, plan: AllocationPlan) -> ActuationReport:
        """Patch every planned server whose Deployment differs from its plan."""
        scope = self.settings.watch_namespace or "all namespaces"
        discovery = discover(self._retrying(lambda: list_managed(self._apps, self.settings),
                                            f"list managed Deployments in {scope}"))
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
                ops = patch_ops(current, server_plan)
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
            self._retrying(lambda: self._patch(current, ops), f"patch Deployment {current.ref}")

    def _write_all(self, writes: Mapping[str, tuple[ManagedDeployment, list[dict[str, Any]]]]
                   ) -> dict[str, ActuateError]:
        """Patch in parallel (each with its own retries); returns the failures by server."""
        def write(current: ManagedDeployment, ops: list[dict[str, Any]]) -> None:
            self._retrying(lambda: self._patch(current, ops), f"patch Deployment {current.ref}")
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

    def _patch(self, current: ManagedDeployment, ops: list[dict[str, Any]]) -> None:
        self._apps.patch_namespaced_deployment(
            current.deployment, current.namespace, ops,
            _request_timeout=self.settings.request_timeout_s)
