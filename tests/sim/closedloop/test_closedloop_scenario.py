"""Scenario files: schema errors with key paths, overrides, cross references, round trips."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml
from closedloop_helpers import ROOT, SAMPLE_LARGE, SCENARIOS, small_scenario

from inferno.control.load_noise import phase_multiplier
from inferno.errors import ConfigError
from sim.scenario import (
    DEFAULT_SCENARIO,
    DiurnalSpec,
    ProfileSpec,
    apply_set,
    dump_scenario,
    load_scenario,
    parse_scenario,
    parse_set,
    profile_phases,
    scenario_system,
    scenario_to_dict,
)

SHIPPED = sorted(SCENARIOS.glob("*.yaml"))


def write(tmp_path: Path, doc: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenarios_load_and_cross_check(path: Path) -> None:
    """Every scenario in scenarios/ parses and names only known models, accelerators, classes."""
    scenario = load_scenario(path)
    system = scenario_system(scenario)
    for server in scenario.servers:
        assert (server.model, server.accelerator) in system.perf


def test_required_scenarios_are_shipped() -> None:
    """The six shipped scenarios (docs/scenarios.md) exist, and quickstart is the embedded
    default."""
    names = {p.stem for p in SHIPPED}
    assert {"quickstart", "ramp-5x", "surge", "diurnal", "multi-model-capacity",
            "trace-replay"} <= names
    assert DEFAULT_SCENARIO == SCENARIOS / "quickstart.yaml"


def test_unknown_key_names_the_path_and_lists_allowed_keys(tmp_path: Path) -> None:
    """A typo inside a server's load is reported as servers[0].load.rate with the choices."""
    doc = small_scenario()
    doc["servers"][0]["load"]["rate"] = 5
    with pytest.raises(ConfigError, match=r"servers\[0\]\.load\.rate: unknown key; allowed: "
                                          r"arrival_cv, arrivals, in_tokens"):
        load_scenario(write(tmp_path, doc))


@pytest.mark.parametrize(("key_path", "value", "message"), [
    ("duration_s", "long", r"duration_s: expected a number, got 'long'"),
    ("servers.0.replicas", 1.5, r"servers\[0\]\.replicas: expected an integer"),
    ("twin.router", "random", r"twin\.router: expected one of round_robin"),
    ("policy.hpa.metric", "gpu", r"policy\.hpa\.metric: expected one of requests"),
    ("policy.hpa.tolerance", 2.0, r"policy\.hpa: tolerance must be in \[0, 1\)"),
    ("policy.name", "magic", r"policy: name: unknown policy 'magic'"),
    ("servers.0.load.rate_rpm", -1, r"servers\[0\]\.load: rate_rpm must be >= 0"),
    ("emulator.alpha", True, r"emulator\.alpha: expected a number, got True"),
], ids=["type", "int", "enum", "policy-enum", "settings-check", "policy-name", "range", "bool"])
def test_bad_values_name_the_key_path(tmp_path: Path, key_path: str, value: object,
                                      message: str) -> None:
    """Type, enum and range errors carry the file name and the key path."""
    doc = apply_set(small_scenario(), key_path, value)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_missing_required_key(tmp_path: Path) -> None:
    """A server without a model is reported as servers[0].model: required."""
    doc = small_scenario()
    del doc["servers"][0]["model"]
    with pytest.raises(ConfigError, match=r"servers\[0\]\.model: required"):
        load_scenario(write(tmp_path, doc))


@pytest.mark.parametrize(("key_path", "value", "message"), [
    ("servers.0.model", "gpt_9", r"servers\[0\]\.model: unknown model 'gpt_9'"),
    ("servers.0.accelerator", "A100",
     r"servers\[0\]\.accelerator: unknown accelerator 'A100'"),
    ("servers.0.class", "Gold", r"servers\[0\]\.class: unknown service class 'Gold'"),
    ("capacity", {"TPU": 4}, r"capacity\.TPU: unknown accelerator type"),
    ("optimizer", {"saturation_policy": "Greedy"}, r"optimizer: overrides: saturation_policy"),
], ids=["model", "accelerator", "class", "capacity", "optimizer"])
def test_cross_references_are_checked_against_the_data(tmp_path: Path, key_path: str,
                                                       value: object, message: str) -> None:
    """Names the data files do not know are errors naming the scenario key."""
    scenario = load_scenario(write(tmp_path, apply_set(small_scenario(), key_path, value)))
    with pytest.raises(ConfigError, match=message):
        scenario_system(scenario)


def test_set_overrides_by_index_by_name_and_creating_mappings(tmp_path: Path) -> None:
    """--set reaches list items by index or name and creates missing sections."""
    path = write(tmp_path, small_scenario())
    scenario = load_scenario(path, [
        "servers.Premium-granite_13b.load.rate_rpm=30", "servers.0.replicas=2",
        "emulator.alpha=0.2", "accelerators=[H100, A100]"])
    assert scenario.servers[0].load.rate_rpm == 30.0
    assert scenario.servers[0].replicas == 2
    assert scenario.emulator is not None
    assert scenario.emulator.alpha == 0.2
    assert scenario.accelerators == ("H100", "A100")


@pytest.mark.parametrize(("text", "message"), [
    ("duration_s", r"expected key\.path=value"),
    ("servers.7.replicas=1", r"servers\.7: index out of range"),
    ("servers.nope.replicas=1", r"no item named 'nope'; names: Premium-granite_13b"),
    ("name.first=x", r"name is 'small', not a mapping"),
], ids=["no-equals", "index", "name", "scalar"])
def test_bad_set_overrides(tmp_path: Path, text: str, message: str) -> None:
    """Malformed or unreachable --set paths are ConfigErrors naming the path."""
    with pytest.raises(ConfigError, match=message):
        load_scenario(write(tmp_path, small_scenario()), [text])


def test_parse_set_reads_yaml_values() -> None:
    """Values are YAML: numbers, booleans, lists and null."""
    assert parse_set("a.b=3") == ("a.b", 3)
    assert parse_set("a=true") == ("a", True)
    assert parse_set("a=[1, 2]") == ("a", [1, 2])
    assert parse_set("a=") == ("a", None)


def test_nested_settings_start_from_the_policy_default(tmp_path: Path) -> None:
    """Overriding one stabilisation field keeps InfernoSettings' own 300 s scale-down window."""
    doc = apply_set(small_scenario(), "policy.inferno.stabilisation.max_step_up", 2)
    scenario = load_scenario(write(tmp_path, doc))
    stab = scenario.policy.inferno.stabilisation
    assert (stab.max_step_up, stab.scale_down_window_s) == (2, 300.0)
    assert scenario.policy.hpa.stabilisation.scale_down_window_s == 300.0


def test_relative_paths_resolve_against_the_scenario_directory(tmp_path: Path) -> None:
    """data: a relative path is taken from the scenario file's directory, not the cwd."""
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    doc = small_scenario(data="../../data")
    (tmp_path / "data").symlink_to(SAMPLE_LARGE)
    scenario = load_scenario(write(nested, doc))
    assert scenario.data == (tmp_path / "data").resolve()


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    """A dumped scenario reads back equal, its data path pointing at the same directory."""
    scenario = load_scenario(SCENARIOS / "multi-model-capacity.yaml")
    out = tmp_path / "copy.yaml"
    dump_scenario(scenario, out)
    again = load_scenario(out)
    assert dataclasses.replace(again, source=scenario.source) == scenario
    written = yaml.safe_load(out.read_text())["data"]
    assert (out.parent / written).resolve() == Path(scenario.data).resolve()


def test_dump_writes_relative_paths_under_a_common_root() -> None:
    """Inside one tree the data path is written relative, so a recording can move."""
    scenario = parse_scenario(small_scenario())
    doc = scenario_to_dict(scenario, relative_to=ROOT / "tests" / "golden")
    assert doc["data"] == "../../sample-data/large"


def test_diurnal_profile_matches_the_sine_at_piece_boundaries() -> None:
    """The chained linear phases hit 1 + a·sin(2πt/P) exactly at every boundary."""
    spec = ProfileSpec(diurnal=DiurnalSpec(amplitude=0.6, period_s=3600.0, pieces=12))
    phases = profile_phases(spec, duration_s=5400.0)
    assert len(phases) == 18
    for k in range(19):
        t = k * 300.0
        assert phase_multiplier(phases, t) == pytest.approx(
            1 + 0.6 * math.sin(2 * math.pi * t / 3600.0), rel=1e-12)


def test_trace_default_server_and_static_replicas_must_name_servers(tmp_path: Path) -> None:
    """References to servers inside the scenario are checked when it is built."""
    doc = small_scenario(trace={"path": "t.csv", "default_server": "other"})
    with pytest.raises(ConfigError, match=r"trace\.default_server: no server 'other'"):
        load_scenario(write(tmp_path, doc))
    doc = apply_set(small_scenario(), "policy.static.replicas", {"ghost": 2})
    with pytest.raises(ConfigError, match=r"policy\.static\.replicas\.ghost: no such server"):
        load_scenario(write(tmp_path, doc))


def test_policy_sections_are_the_policy_table() -> None:
    """`policy.<name>` keys are POLICY_TABLE's names, each bound to that policy's settings."""
    from typing import get_type_hints

    from inferno.control.policies import POLICY_TABLE
    from sim.scenario import POLICY_NAMES, PolicySpec

    hints = get_type_hints(PolicySpec)
    sections = [f.name for f in dataclasses.fields(PolicySpec) if f.name != "name"]
    assert sections == list(POLICY_TABLE)
    assert tuple(POLICY_TABLE) == POLICY_NAMES
    for name in sections:
        assert hints[name] is POLICY_TABLE[name].settings, name


# -- sections bound directly to the settings the twin and the emulator run with
def test_startup_rollout_and_emulator_keys_reach_the_settings_objects(tmp_path: Path) -> None:
    """Every key of twin.startup, twin.rollout and emulator, by YAML and by --set, lands in
    the sim.deployment / inferno.control settings the run uses (no translation layer)."""
    from inferno.control.load_noise import LoadNoiseSettings
    from sim.deployment import RolloutSettings, StartupDelay

    doc = small_scenario(emulator={"interval_s": 30, "alpha": 0.2})
    scenario = load_scenario(write(tmp_path, doc), [
        "twin.startup.kind=uniform", "twin.startup.mean_s=40", "twin.startup.spread=10",
        "twin.rollout.max_surge=0", "twin.rollout.max_unavailable=1", "emulator.theta=0.1",
        "emulator.range_factor=3"])
    assert scenario.twin.startup == StartupDelay(kind="uniform", mean_s=40.0, spread=10.0)
    assert scenario.twin.rollout == RolloutSettings(max_surge=0, max_unavailable=1)
    assert scenario.emulator == LoadNoiseSettings(interval_s=30.0, alpha=0.2, theta=0.1,
                                                  range_factor=3.0)
    again = parse_scenario(scenario_to_dict(scenario, relative_to=tmp_path), base_dir=tmp_path)
    assert (again.twin, again.emulator) == (scenario.twin, scenario.emulator)


def test_startup_kind_is_read_in_any_case_as_before_the_binding(tmp_path: Path) -> None:
    """Scenario files written for the old string spec (``kind: Uniform``) keep loading: a
    fixed-spelling string matches without case, like the enum-valued keys."""
    from sim.deployment import StartupDelay

    doc = small_scenario()
    doc["twin"]["startup"] = {"kind": "Uniform", "mean_s": 40, "spread": 10}
    scenario = load_scenario(write(tmp_path, doc))
    assert scenario.twin.startup == StartupDelay(kind="uniform", mean_s=40.0, spread=10.0)
    assert load_scenario(write(tmp_path, doc), ["twin.startup.kind=LOGNORMAL"]
                         ).twin.startup.kind == "lognormal"


def test_bound_sections_keep_the_documented_defaults(tmp_path: Path) -> None:
    """docs/scenarios.md: startup fixed 60 s, rollout 1/0, emulator every 60 s at α 0.5, θ 0;
    a partial section keeps the other defaults."""
    from inferno.control.load_noise import LoadNoiseSettings
    from sim.deployment import RolloutSettings, StartupDelay

    doc = small_scenario()
    del doc["twin"]
    scenario = load_scenario(write(tmp_path, doc), ["emulator={}"])
    assert scenario.twin.startup == StartupDelay(kind="fixed", mean_s=60.0, spread=0.0)
    assert scenario.twin.rollout == RolloutSettings(max_surge=1, max_unavailable=0)
    assert scenario.emulator == LoadNoiseSettings(interval_s=60.0, alpha=0.5, theta=0.0,
                                                  range_factor=None)
    partial = load_scenario(write(tmp_path, doc), ["twin.startup.kind=exponential"])
    assert partial.twin.startup == StartupDelay(kind="exponential", mean_s=60.0)
    assert load_scenario(write(tmp_path, doc)).emulator is None


@pytest.mark.parametrize(("key_path", "value", "message"), [
    ("twin.startup.kind", "gamma", r"twin\.startup\.kind must be one of fixed, uniform, "
                                   r"exponential, lognormal; got 'gamma'"),
    ("twin.startup.mean_s", -1, r"twin\.startup\.mean_s must be >= 0, got -1"),
    ("twin.startup.mean_s", 1e9, r"twin: startup\.mean_s must be <= 7,776,000 "
                                 r"\(MAX_SIM_DURATION_S\)"),
    ("twin.startup", {"kind": "uniform", "mean_s": 10, "spread": 20},
     r"twin\.startup\.spread must be in \[0, mean_s\] for uniform"),
    ("twin.startup.spread", "wide", r"twin\.startup\.spread: expected a number, got 'wide'"),
    ("twin.rollout", {"max_surge": 0, "max_unavailable": 0},
     r"twin\.rollout: max_surge and max_unavailable must be >= 0 and not both 0"),
    ("twin.rollout.max_unavailable", -1, r"twin\.rollout: max_surge and max_unavailable"),
    ("twin.rollout.max_surge", "one", r"twin\.rollout\.max_surge: expected an integer"),
    ("emulator.interval_s", 0, r"emulator: interval_s must be > 0, got 0"),
    ("emulator.alpha", 2, r"emulator: alpha must be in \[0, 1\], got 2"),
    ("emulator.theta", -0.5, r"emulator: theta must be in \[0, 1\], got -0\.5"),
    ("emulator.range_factor", 0.5, r"emulator: range_factor must be >= 1"),
    ("emulator.phases", [], r"emulator\.phases: unknown key; allowed: alpha, interval_s, "
                            r"range_factor, theta$"),
])
def test_bound_sections_report_bad_values_by_key_path(tmp_path: Path, key_path: str,
                                                      value: object, message: str) -> None:
    doc = apply_set(small_scenario(), key_path, value)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: ")
