"""Autoscaling policies behind one interface: `decide(snapshot, now_s, static) -> Decision`.

Each policy turns one `ClusterSnapshot` into raw per-server recommendations; damping
(`stabilise.py`) and the safety rules are the controller's. A policy leaves a server out of
its plan when it cannot decide (no metrics, unknown model); the controller then keeps that
server as it is. Policies are picked by name from `POLICY_TABLE`, the one list of them that
the CLI, scenarios and live mode read; they never read the clock, the environment or files.

| name         | decides from                                                  | module           |
|--------------|---------------------------------------------------------------|------------------|
| `inferno`    | the optimizer over the planned load and the corrected model   | inferno          |
| `oracle`     | the optimizer over the true load when replicas are ready      | inferno          |
| `hpa`        | ceil(current × metric/target), 10 % tolerance (Kubernetes)    | hpa              |
| `saturation` | KV-usage / queue spare thresholds, ±1 replica (WVA V1)        | saturation       |
| `static`     | fixed replicas                                                | static           |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from inferno.control.decision import (
    Decision,
    FutureLoad,
    Policy,
    Solve,
    current_replicas,
    keep_plan,
    unit_cost_per_hr,
)
from inferno.control.demand import LoadEstimate
from inferno.control.policies.hpa import HpaPolicy
from inferno.control.policies.inferno import (
    InfernoPolicy,
    OraclePolicy,
    build_system,
    observed_load,
)
from inferno.control.policies.saturation import SaturationScalingPolicy
from inferno.control.policies.static import StaticPolicy
from inferno.control.settings import (
    HpaSettings,
    InfernoSettings,
    SaturationSettings,
    StaticSettings,
)
from inferno.errors import ConfigError
from inferno.policy_names import LIVE_POLICY_NAMES, POLICY_NAMES, TWIN_ONLY_POLICY_NAMES

__all__ = [
    "LIVE_POLICY_NAMES", "POLICIES", "POLICY_NAMES", "POLICY_TABLE", "SETTINGS", "Decision",
    "FutureLoad", "HpaPolicy", "InfernoPolicy", "LoadEstimate", "OraclePolicy", "Policy",
    "PolicyDeps", "PolicyEntry", "SaturationScalingPolicy", "Solve", "StaticPolicy",
    "build_system", "current_replicas", "keep_plan", "make_policy", "observed_load",
    "unit_cost_per_hr",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDeps:
    """What a policy may need from outside: the optimizer and, for the oracle, the world."""

    solve: Solve | None = None
    future_load: FutureLoad | None = None
    horizon_s: float = 60.0
    """s of future load the oracle averages; the control period by default."""
    lead_s: float | None = None
    """s until replicas asked for now are ready (the world's startup delay); the oracle's
    future window starts there. None: the policy's own startup_s."""


def _settings(settings: object, kind: type[_T], name: str) -> _T | None:
    if settings is None or isinstance(settings, kind):
        return settings
    raise ConfigError(f"policy {name!r}: settings must be {kind.__name__}, "
                      f"got {type(settings).__name__}")


def _inferno(settings: object, deps: PolicyDeps) -> Policy:
    return InfernoPolicy(_settings(settings, InfernoSettings, "inferno"), solve=deps.solve)


def _oracle(settings: object, deps: PolicyDeps) -> Policy:
    if deps.future_load is None:
        raise ConfigError("policy 'oracle' needs the world's future load; "
                          "it is available in the twin only")
    return OraclePolicy(_settings(settings, InfernoSettings, "oracle"),
                        future_load=deps.future_load, horizon_s=deps.horizon_s,
                        lead_s=deps.lead_s, solve=deps.solve)


def _hpa(settings: object, deps: PolicyDeps) -> Policy:
    return HpaPolicy(_settings(settings, HpaSettings, "hpa"))


def _saturation(settings: object, deps: PolicyDeps) -> Policy:
    return SaturationScalingPolicy(_settings(settings, SaturationSettings, "saturation"))


def _static(settings: object, deps: PolicyDeps) -> Policy:
    return StaticPolicy(_settings(settings, StaticSettings, "static"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEntry:
    """One policy: its class, its settings class and how to build it."""

    policy: type
    settings: type
    build: Callable[[object, PolicyDeps], Policy]
    """factory(settings or None, deps)."""
    twin_only: bool = False
    """Needs the world's future load, which only the twin knows (refused live)."""


POLICY_TABLE: Mapping[str, PolicyEntry] = {
    "inferno": PolicyEntry(policy=InfernoPolicy, settings=InfernoSettings, build=_inferno),
    "oracle": PolicyEntry(policy=OraclePolicy, settings=InfernoSettings, build=_oracle,
                          twin_only=True),
    "hpa": PolicyEntry(policy=HpaPolicy, settings=HpaSettings, build=_hpa),
    "saturation": PolicyEntry(policy=SaturationScalingPolicy, settings=SaturationSettings,
                              build=_saturation),
    "static": PolicyEntry(policy=StaticPolicy, settings=StaticSettings, build=_static),
}
"""Policy name → entry: the one list of policies (CLI choices, scenario keys, live mode)."""

if (tuple(POLICY_TABLE) != POLICY_NAMES or tuple(
        n for n, e in POLICY_TABLE.items() if e.twin_only) != TWIN_ONLY_POLICY_NAMES):
    raise ImportError("inferno.policy_names disagrees with POLICY_TABLE")

POLICIES: Mapping[str, Callable[[object, PolicyDeps], Policy]] = {
    name: entry.build for name, entry in POLICY_TABLE.items()}
"""Policy name → factory(settings or None, deps) (a view of `POLICY_TABLE`)."""

SETTINGS: Mapping[str, type] = {name: entry.settings for name, entry in POLICY_TABLE.items()}
"""Policy name → its settings class (a view of `POLICY_TABLE`, for scenario loaders)."""


def make_policy(name: str, settings: object = None, deps: PolicyDeps | None = None) -> Policy:
    """Build the policy called `name`; unknown names raise ConfigError listing the choices."""
    entry = POLICY_TABLE.get(name)
    if entry is None:
        raise ConfigError(f"policy: unknown name {name!r}; choose one of "
                          f"{', '.join(sorted(POLICY_TABLE))}")
    return entry.build(settings, deps or PolicyDeps())
