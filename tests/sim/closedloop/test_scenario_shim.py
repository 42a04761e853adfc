"""The deprecated `inferno.scenario` shim and the deprecated `Phase` name still work, and warn.

Scenarios moved to `sim.scenario` (their YAML binder to `inferno.io.yamlbind`); user scripts
that import the old module must keep running, told where the names went.
"""

from __future__ import annotations

import importlib
import sys

import pytest

import sim.scenario
from inferno.control.load_noise import LoadPhase
from inferno.io.yamlbind import load_settings


def test_inferno_scenario_reexports_every_public_name_with_a_warning() -> None:
    sys.modules.pop("inferno.scenario", None)
    with pytest.warns(DeprecationWarning, match="import sim.scenario"):
        old = importlib.import_module("inferno.scenario")
    for name in sim.scenario.__all__:
        assert getattr(old, name) is getattr(sim.scenario, name), name
    assert old.load_settings is load_settings
    assert set(old.__all__) == {*sim.scenario.__all__, "load_settings"}


def test_phase_is_a_deprecated_name_of_load_phase() -> None:
    from inferno import control
    from inferno.control import load_noise

    with pytest.warns(DeprecationWarning, match="use LoadPhase"):
        assert load_noise.Phase is LoadPhase
    with pytest.warns(DeprecationWarning, match="use LoadPhase"):
        assert control.Phase is LoadPhase
    with pytest.raises(AttributeError):
        _ = control.Phaze  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "module", "attr"), [
    ("EmulatorSpec", "inferno.control.load_noise", "LoadNoiseSettings"),
    ("EngineSpec", "sim.engine", "EngineSettings"),
    ("RolloutSpec", "sim.deployment", "RolloutSettings"),
    ("StartupSpec", "sim.deployment", "StartupDelay"),
    ("TwinSpec", "sim.twin", "TwinSettings"),
])
def test_specs_bound_directly_are_deprecated_names_of_their_settings(name: str, module: str,
                                                                      attr: str) -> None:
    """The old spec names still import (from sim.scenario and the inferno.scenario shim)
    and warn, and are no longer public."""
    assert name not in sim.scenario.__all__
    expected = getattr(importlib.import_module(module), attr)
    with pytest.warns(DeprecationWarning, match=f"binds to {module}.{attr}"):
        assert getattr(sim.scenario, name) is expected
    old = sys.modules.get("inferno.scenario") or importlib.import_module("inferno.scenario")
    with pytest.warns(DeprecationWarning, match=f"binds to {module}.{attr}"):
        assert getattr(old, name) is expected


def test_startup_kind_is_deprecated_and_lists_the_twins_kinds() -> None:
    from sim.deployment import STARTUP_KINDS

    with pytest.warns(DeprecationWarning, match="STARTUP_KINDS"):
        kinds = sim.scenario.StartupKind
    assert tuple(k.value for k in kinds) == STARTUP_KINDS
    assert kinds("uniform") == "uniform"


def test_scenario_enums_are_the_twins() -> None:
    """sim.scenario's ArrivalSignal and RouterKind are the twin's own enums (one home)."""
    import sim.twin

    assert sim.scenario.ArrivalSignal is sim.twin.ArrivalSignal
    assert sim.scenario.RouterKind is sim.twin.RouterKind
