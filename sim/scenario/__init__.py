"""Scenarios: what a closed-loop twin run simulates, as frozen data loaded from YAML.

The twin's configuration lives here, in sim: `schema` (the specs and their checks), `files`
(YAML in with `--set` overrides, YAML out, through the core's binder `inferno.io.yamlbind`)
and `system` (the static data, profile and scaled controller data a run derives from a
scenario). The twin's parts (engine, cluster, metrics, emulation) never read scenarios: they
take settings objects; `sim.closedloop` turns a Scenario into a SimPy environment. The schema
is documented in docs/scenarios.md.
"""

import importlib
import warnings
from enum import StrEnum
from typing import Any

from sim.scenario.files import (
    DEFAULT_SCENARIO,
    REPO_ROOT,
    apply_set,
    dump_scenario,
    load_scenario,
    parse_scenario,
    parse_set,
    read_yaml,
    scenario_to_dict,
)
from sim.scenario.schema import (
    POLICY_NAMES,
    ArrivalKind,
    ClassSpec,
    ControllerSpec,
    DiurnalSpec,
    LengthKind,
    PerfScaleSpec,
    PolicySpec,
    ProfileSpec,
    Scenario,
    ServerSpec,
    TargetSpec,
    TraceSpec,
    WorkloadSpec,
    check_run_size,
)
from sim.scenario.system import profile_phases, scaled_perf, scaled_targets, scenario_system
from sim.twin import ArrivalSignal, RouterKind

__all__ = [
    "DEFAULT_SCENARIO", "POLICY_NAMES", "REPO_ROOT", "ArrivalKind", "ArrivalSignal",
    "ClassSpec", "ControllerSpec", "DiurnalSpec", "LengthKind",
    "PerfScaleSpec", "PolicySpec", "ProfileSpec", "RouterKind", "Scenario",
    "ServerSpec", "TargetSpec", "TraceSpec",
    "WorkloadSpec", "apply_set", "check_run_size", "dump_scenario", "load_scenario",
    "parse_scenario", "parse_set", "profile_phases", "read_yaml", "scaled_perf",
    "scaled_targets", "scenario_system", "scenario_to_dict",
]

_BOUND_DIRECTLY = {
    "EmulatorSpec": ("inferno.control.load_noise", "LoadNoiseSettings", ""),
    "EngineSpec": ("sim.engine", "EngineSettings",
                   " (whose max_num_batched_tokens defaults to 8192; None is the model data's, "
                   "the twin.engine default)"),
    "RolloutSpec": ("sim.deployment", "RolloutSettings", ""),
    "StartupSpec": ("sim.deployment", "StartupDelay", ""),
    "TwinSpec": ("sim.twin", "TwinSettings", ""),
}
"""Specs that duplicated a settings class: the sections now bind to the class itself."""


def __getattr__(name: str) -> Any:
    """The deprecated spec names (and StartupKind), with a DeprecationWarning."""
    if name in _BOUND_DIRECTLY:
        module, attr, note = _BOUND_DIRECTLY[name]
        warnings.warn(f"sim.scenario.{name} is deprecated: the section binds to "
                      f"{module}.{attr}{note}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), attr)
    if name == "StartupKind":
        from sim.deployment import STARTUP_KINDS

        warnings.warn("sim.scenario.StartupKind is deprecated: twin.startup.kind is one of "
                      "sim.deployment.STARTUP_KINDS", DeprecationWarning, stacklevel=2)
        return StrEnum("StartupKind", {kind.upper(): kind for kind in STARTUP_KINDS})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
