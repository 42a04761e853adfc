"""The control loop: controller, policies, stabilisation, load noise, driver, cycle log.

World independent: the twin (`sim`) and the cluster (`live`) plug in through `ports`.
"""

from inferno.control.controller import (
    Controller,
    ControllerBusy,
    FileStaticData,
    StaticData,
    Tune,
)
from inferno.control.cyclelog import (
    CycleLog,
    CycleRecord,
    CycleStatus,
    ServerRecord,
    Timing,
    read_cycle_log,
    write_cycle_log,
)
from inferno.control.driver import Driver, invoke_response, run_periodic
from inferno.control.load_noise import (
    LoadNoise,
    LoadNoiseSettings,
    LoadPhase,
    LoadPoint,
    phase_multiplier,
)
from inferno.control.observation import (
    ObservedLoad,
    VllmWindow,
    estimate_offered_rpm,
    observe_window,
    scale_to_ready,
)
from inferno.control.policies import (
    LIVE_POLICY_NAMES,
    POLICIES,
    POLICY_NAMES,
    POLICY_TABLE,
    SETTINGS,
    Decision,
    FutureLoad,
    HpaPolicy,
    InfernoPolicy,
    OraclePolicy,
    Policy,
    PolicyDeps,
    PolicyEntry,
    SaturationScalingPolicy,
    Solve,
    StaticPolicy,
    build_system,
    make_policy,
)
from inferno.control.ports import Actuator, Clock, Collector
from inferno.control.settings import (
    ControllerSettings,
    HpaMetric,
    HpaSettings,
    InfernoSettings,
    SaturationSettings,
    StabilisationSettings,
    StaticSettings,
    resolve_controller_settings,
)
from inferno.control.stabilise import Recommendation, Stabilised, hpa_desired, stabilise

__all__ = [
    "LIVE_POLICY_NAMES", "POLICIES", "POLICY_NAMES", "POLICY_TABLE", "SETTINGS", "Actuator",
    "Clock", "Collector", "Controller", "ControllerBusy",
    "ControllerSettings", "CycleLog", "CycleRecord", "CycleStatus", "Decision", "Driver",
    "FileStaticData", "FutureLoad", "HpaMetric", "HpaPolicy",
    "HpaSettings", "InfernoPolicy", "InfernoSettings", "LoadNoise",
    "LoadNoiseSettings", "LoadPhase", "LoadPoint",
    "ObservedLoad", "OraclePolicy", "Policy", "PolicyDeps", "PolicyEntry",
    "Recommendation",
    "SaturationScalingPolicy",
    "SaturationSettings", "ServerRecord", "Solve", "StabilisationSettings", "Stabilised",
    "StaticData", "StaticPolicy", "StaticSettings", "Timing", "Tune", "VllmWindow",
    "build_system", "observe_window",
    "estimate_offered_rpm", "hpa_desired", "invoke_response", "make_policy", "phase_multiplier",
    "read_cycle_log", "resolve_controller_settings", "run_periodic", "scale_to_ready", "stabilise",
    "write_cycle_log",
]


def __getattr__(name: str) -> object:
    """`Phase`, the deprecated name of `LoadPhase` (warns)."""
    if name == "Phase":
        from inferno.control import load_noise

        return load_noise.Phase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
