"""Accelerator placement: what makes a Deployment's pods run on the accelerator inferno chose.

Model (docs/live.md, "Accelerator changes"): one Deployment per server; its pod template says
where the pods run. A change of accelerator is one JSON patch that sets, together with the
``inferno.server.allocation.accelerator`` label,

- ``nodeSelector[<node label>] = <accelerator type>`` (accelerator-data ``type``; GPU nodes
  carry the label, e.g. ``kubectl label node gpu-7 inferno.accelerator=H100``), and
- the model-server container's ``resources.limits[<GPU resource>]`` (and ``requests`` when the
  container sets one) ``= multiplicity`` (accelerator-data ``multiplicity``: cards per replica),

so the Deployment controller rolls the pods over to the new nodes (a rolling update). The
label alone moves nothing. Migrations are off unless the operator opts in
(``inferno live --allow-migration``); without them the actuator refuses a plan that changes a
server's accelerator rather than apply half of it.

`running_accelerator` reads the template back: the accelerator whose type and multiplicity
the template asks for. `inferno emulate` places its twin's pods by it (the twin runs where the
template says, as the cluster does), and the collector, with migrations on, skips a server
whose label disagrees with its template (inferno would model pods that run elsewhere).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferno.errors import ConfigError
from inferno.model.accelerator import Accelerator

DEFAULT_NODE_LABEL = "inferno.accelerator"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

_QUALIFIED = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
"""A Kubernetes qualified name: optional DNS prefix and ``/``, then a name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementSettings:
    """How accelerator types map to pod templates (env ``INFERNO_ACCELERATOR_*``)."""

    node_label: str = DEFAULT_NODE_LABEL
    """Node label whose value is the accelerator type (``INFERNO_ACCELERATOR_NODE_LABEL``)."""
    gpu_resource: str = DEFAULT_GPU_RESOURCE
    """Extended resource counting cards (``INFERNO_ACCELERATOR_RESOURCE``); amd.com/gpu,
    habana.ai/gaudi, ... on other fleets."""
    container: str = ""
    """Name of the model-server container (``INFERNO_ACCELERATOR_CONTAINER``); empty: the
    first container."""

    def __post_init__(self) -> None:
        for env, value in (("INFERNO_ACCELERATOR_NODE_LABEL", self.node_label),
                           ("INFERNO_ACCELERATOR_RESOURCE", self.gpu_resource)):
            if not _QUALIFIED.match(value):
                raise ConfigError(f"{env}: must be a Kubernetes qualified name such as "
                                  f"nvidia.com/gpu, got {value!r}")


def placement_settings_from_env(env: Mapping[str, str]) -> PlacementSettings:
    """Read the ``INFERNO_ACCELERATOR_*`` variables (empty or unset = default)."""
    return PlacementSettings(
        node_label=env.get("INFERNO_ACCELERATOR_NODE_LABEL", "").strip() or DEFAULT_NODE_LABEL,
        gpu_resource=env.get("INFERNO_ACCELERATOR_RESOURCE", "").strip()
        or DEFAULT_GPU_RESOURCE,
        container=env.get("INFERNO_ACCELERATOR_CONTAINER", "").strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerResources:
    """What the patch needs to know of one container of the pod template."""

    name: str
    limits: Mapping[str, str] | None = None
    """None: the container has no ``resources.limits`` map."""
    requests: Mapping[str, str] | None = None
    has_resources: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PodTemplate:
    """The placement-relevant part of a Deployment's pod template."""

    node_selector: Mapping[str, str] | None = None
    """None: the template has no nodeSelector map."""
    containers: tuple[ContainerResources, ...] = ()


def read_template(dep: Mapping[str, Any]) -> PodTemplate:
    """The pod template of a listed Deployment (API JSON); empty when it has none."""
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec")
    if spec is None:
        return PodTemplate()

    def quantities(resources: Mapping[str, Any] | None, key: str) -> Mapping[str, str] | None:
        values = None if resources is None else resources.get(key)
        return None if values is None else {k: str(v) for k, v in values.items()}

    containers = tuple(
        ContainerResources(name=c.get("name") or "", has_resources="resources" in c,
                           limits=quantities(c.get("resources"), "limits"),
                           requests=quantities(c.get("resources"), "requests"))
        for c in spec.get("containers") or ())
    selector = spec.get("nodeSelector")
    return PodTemplate(node_selector=None if selector is None else dict(selector),
                       containers=containers)


def _container_index(template: PodTemplate, settings: PlacementSettings) -> int:
    for index, container in enumerate(template.containers):
        if not settings.container or container.name == settings.container:
            return index
    wanted = f"container {settings.container!r}" if settings.container else "a container"
    raise ConfigError(f"pod template has no {wanted} to give the accelerator to")


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _set(path: str, current: Mapping[str, str] | None, key: str, value: str
         ) -> list[dict[str, Any]]:
    """``add`` the key, or the whole map when it does not exist (JSON patch cannot create
    intermediate members); nothing when already so."""
    if current is None:
        return [{"op": "add", "path": path, "value": {key: value}}]
    if current.get(key) == value:
        return []
    return [{"op": "add", "path": f"{path}/{_pointer(key)}", "value": value}]


def placement_ops(template: PodTemplate, accelerator: Accelerator,
                  settings: PlacementSettings) -> list[dict[str, Any]]:
    """JSON-patch ops placing the template on `accelerator` (module notes); ConfigError when
    the template has no container to give it to."""
    base = "/spec/template/spec"
    index = _container_index(template, settings)
    container = template.containers[index]
    count = str(accelerator.multiplicity)
    ops = _set(f"{base}/nodeSelector", template.node_selector, settings.node_label,
               accelerator.type)
    where = f"{base}/containers/{index}/resources"
    if not container.has_resources:
        return [*ops, {"op": "add", "path": where,
                       "value": {"limits": {settings.gpu_resource: count}}}]
    ops += _set(f"{where}/limits", container.limits, settings.gpu_resource, count)
    if container.requests is not None and settings.gpu_resource in container.requests:
        ops += _set(f"{where}/requests", container.requests, settings.gpu_resource, count)
    return ops


def running_accelerator(template: PodTemplate, accelerators: Mapping[str, Accelerator],
                        settings: PlacementSettings) -> str | None:
    """The accelerator the template places pods on; None when it names no type.

    Raises ConfigError when the template names a type and card count that no accelerator of
    `accelerators` has.
    """
    node_type = (template.node_selector or {}).get(settings.node_label)
    if node_type is None:
        return None
    try:
        limits = template.containers[_container_index(template, settings)].limits or {}
    except ConfigError:
        limits = {}
    raw = limits.get(settings.gpu_resource)
    count = int(raw) if raw is not None and raw.isdigit() else None
    matches = sorted(name for name, acc in accelerators.items()
                     if acc.type == node_type and (count is None or acc.multiplicity == count))
    if count is None and len(matches) > 1:
        matches = [n for n in matches if accelerators[n].multiplicity == 1] or matches
    if not matches:
        raise ConfigError(f"pod template: nodeSelector {settings.node_label}={node_type} with "
                          f"{settings.gpu_resource}={raw} matches no accelerator in "
                          "accelerator-data")
    return matches[0]
