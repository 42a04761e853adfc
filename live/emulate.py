"""The cluster side of ``inferno emulate``: the Deployments it follows and the status it reports.

`DeploymentReader` lists the managed Deployments for `sim.emulate` to follow, and
`DeploymentStatusWriter` serves ``inferno emulate --write-status``: a Kubernetes API emulator
has no Deployment controller, so the emulated cluster reports its replica counts itself. Never
use the writer against a real cluster, whose controller owns the status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import kubernetes.client

from inferno.errors import ActuateError
from live.config import KubeSettings
from live.kube import ManagedDeployment, call_with_retries, discover_deployments

log = logging.getLogger(__name__)


class DeploymentReader:
    """The managed Deployments, for `inferno emulate` to follow; raises CollectError."""

    def __init__(self, api_client: kubernetes.client.ApiClient, kube: KubeSettings) -> None:
        self.kube = kube
        self._apps = kubernetes.client.AppsV1Api(api_client)

    def __call__(self) -> list[ManagedDeployment]:
        return list(discover_deployments(self._apps, self.kube).deployments.values())


class DeploymentStatusWriter:
    """Reports replica counts into Deployments' status (API emulators only, see module doc)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, kube: KubeSettings, *,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.kube = kube
        self._apps = kubernetes.client.AppsV1Api(api_client)
        self._sleep = sleep

    def __call__(self, namespace: str, deployment: str, replicas: int, ready: int) -> None:
        """Set status.replicas, .readyReplicas and .availableReplicas; failures are logged."""
        body = {"status": {"replicas": replicas, "readyReplicas": ready,
                           "availableReplicas": ready}}
        what = f"patch status of Deployment {namespace}/{deployment}"
        try:
            call_with_retries(
                lambda timeout_s: self._apps.patch_namespaced_deployment_status(
                    deployment, namespace, body, _request_timeout=timeout_s),
                what=what, settings=self.kube, sleep=self._sleep)
        except ActuateError as exc:
            log.warning("emulate: %s", exc)
