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


# -- twin and twin.engine bound to sim.twin.TwinSettings and sim.engine.EngineSettings
TWIN_KEYS = {"window_s": 30, "scrape_interval_s": 2.5, "arrival_signal": "completions",
             "router": "least_outstanding", "drain_grace_s": 120,
             "engine": {"max_num_batched_tokens": 4096, "block_size": 32,
                        "kv_capacity_tokens": 50_000, "max_waiting": 40}}


def _expected_twin() -> object:
    from sim.deployment import StartupDelay
    from sim.engine import EngineSettings
    from sim.twin import ArrivalSignal, RouterKind, TwinSettings

    return TwinSettings(window_s=30.0, scrape_interval_s=2.5,
                        arrival_signal=ArrivalSignal.COMPLETIONS,
                        router=RouterKind.LEAST_OUTSTANDING, drain_grace_s=120.0,
                        startup=StartupDelay(mean_s=30.0),
                        engine=EngineSettings(max_num_batched_tokens=4096, block_size=32,
                                              kv_capacity_tokens=50_000, max_waiting=40))


def test_twin_and_engine_keys_reach_the_twins_settings_by_yaml(tmp_path: Path) -> None:
    """Every key of twin and twin.engine, written in the file, lands in the TwinSettings and
    EngineSettings the run hands to the twin and the deployments (no translation layer)."""
    doc = small_scenario()
    doc["twin"].update(TWIN_KEYS)
    scenario = load_scenario(write(tmp_path, doc))
    assert scenario.twin == _expected_twin()


def test_twin_and_engine_keys_reach_the_twins_settings_by_set(tmp_path: Path) -> None:
    """The same keys by --set paths, values in any case for the enums as before."""
    sets = ["twin.window_s=30", "twin.scrape_interval_s=2.5", "twin.arrival_signal=Completions",
            "twin.router=LEAST_OUTSTANDING", "twin.drain_grace_s=120",
            "twin.engine.max_num_batched_tokens=4096", "twin.engine.block_size=32",
            "twin.engine.kv_capacity_tokens=50000", "twin.engine.max_waiting=40"]
    scenario = load_scenario(write(tmp_path, small_scenario()), sets)
    assert scenario.twin == _expected_twin()


def test_twin_and_engine_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    """docs/scenarios.md: window 60 s, scrapes every 5 s, offered, round robin, no drain
    grace; engine: the model data's token budget (None), blocks of 16, unlimited KV cache,
    unbounded queue; the engine's own semantics (vLLM first token, fast path) as a replica's
    default; a partial engine section keeps the other defaults."""
    from sim.twin import ArrivalSignal, RouterKind

    doc = small_scenario()
    del doc["twin"]
    twin = load_scenario(write(tmp_path, doc)).twin
    assert (twin.window_s, twin.scrape_interval_s, twin.drain_grace_s) == (60.0, 5.0, None)
    assert twin.arrival_signal is ArrivalSignal.OFFERED
    assert twin.router is RouterKind.ROUND_ROBIN
    engine = twin.engine
    assert (engine.max_num_batched_tokens, engine.block_size, engine.kv_capacity_tokens,
            engine.max_waiting) == (None, 16, None, None)
    assert (engine.prefill_emits_token, engine.fast_path) == (True, True)
    assert twin.recent_window_s is None
    partial = load_scenario(write(tmp_path, doc), ["twin.engine.block_size=8"]).twin.engine
    assert (partial.max_num_batched_tokens, partial.block_size) == (None, 8)


def test_twin_and_engine_keys_survive_a_dump_round_trip(tmp_path: Path) -> None:
    """scenario_to_dict writes exactly the documented keys (not the engine's semantics nor
    the recent window) and parse_scenario reads them back to equal settings."""
    doc = small_scenario()
    doc["twin"].update(TWIN_KEYS)
    scenario = load_scenario(write(tmp_path, doc))
    plain = scenario_to_dict(scenario, relative_to=tmp_path)
    assert list(plain["twin"]) == ["window_s", "scrape_interval_s", "arrival_signal", "router",
                                   "startup", "engine", "rollout", "drain_grace_s"]
    assert plain["twin"]["engine"] == TWIN_KEYS["engine"]
    assert (plain["twin"]["arrival_signal"], plain["twin"]["router"]) == (
        "completions", "least_outstanding")
    again = parse_scenario(plain, base_dir=tmp_path)
    assert again.twin == scenario.twin
    default = parse_scenario(small_scenario())
    assert scenario_to_dict(default)["twin"]["engine"]["max_num_batched_tokens"] is None
    assert parse_scenario(scenario_to_dict(default)).twin == default.twin


@pytest.mark.parametrize(("key_path", "value", "message"), [
    ("twin.engine.fast_path", False, r"twin\.engine\.fast_path: unknown key; allowed: "
                                     r"block_size, kv_capacity_tokens, max_num_batched_tokens, "
                                     r"max_waiting$"),
    ("twin.engine.prefill_emits_token", False, r"twin\.engine\.prefill_emits_token: unknown"),
    ("twin.recent_window_s", 10, r"twin\.recent_window_s: unknown key; allowed: "
                                 r"arrival_signal, drain_grace_s, engine, rollout, router, "
                                 r"scrape_interval_s, startup, window_s$"),
    ("twin.window_s", 0, r"twin: window_s must be > 0, got 0"),
    ("twin.scrape_interval_s", -1, r"twin: scrape_interval_s must be > 0, got -1"),
    ("twin.arrival_signal", "gateway", r"twin\.arrival_signal: expected one of offered, "
                                       r"arrivals, completions, got 'gateway'"),
    ("twin.engine.block_size", "big", r"twin\.engine\.block_size: expected an integer"),
    ("twin.engine.max_waiting", 1.5, r"twin\.engine\.max_waiting: expected an integer"),
    ("twin.drain_grace_s", "soon", r"twin\.drain_grace_s: expected a number"),
], ids=["fast-path", "prefill-emits", "recent-window", "window", "scrape", "signal",
        "block-size", "max-waiting", "drain-grace"])
def test_twin_and_engine_report_bad_keys_and_values_by_key_path(
        tmp_path: Path, key_path: str, value: object, message: str) -> None:
    """The engine's semantics and the recent window were never scenario keys and are not now;
    bad values name the file and the key path."""
    doc = apply_set(small_scenario(), key_path, value)
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError, match=message) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: ")


def _data_with_max_num_tokens(tmp_path: Path, tokens: int) -> Path:
    """sample-data/large with maxNumTokens set on granite_13b's H100 entry."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(SAMPLE_LARGE, data)
    models = json.loads((data / "model-data.json").read_text())
    hits = [m for m in models["models"] if (m["name"], m["acc"]) == ("granite_13b", "H100")]
    assert len(hits) == 1
    hits[0]["maxNumTokens"] = tokens
    (data / "model-data.json").write_text(json.dumps(models))
    return data


@pytest.mark.parametrize(("sets", "budget", "kv"), [
    ([], 3072, None),
    (["twin.engine.max_num_batched_tokens=0"], 3072, None),
    (["twin.engine.max_num_batched_tokens=2048"], 2048, None),
    (["twin.engine.kv_capacity_tokens=40000"], 3072, 40_000),
    (["twin.engine.kv_capacity_tokens=40000", "servers.0.kv_capacity_tokens=30000"],
     3072, 30_000),
], ids=["model-data", "zero-is-model-data", "scenario", "shared-kv", "server-kv"])
def test_deployments_get_the_engine_resolved_per_server(tmp_path: Path, sets: list[str],
                                                        budget: int, kv: int | None) -> None:
    """A deployment runs with the scenario's engine, its token budget the model data's
    maxNumTokens unless the scenario gives one, its KV cache the server's own if set."""
    from sim.closedloop.run import build_world, prepare

    doc = small_scenario(data=str(_data_with_max_num_tokens(tmp_path, 3072)))
    sets = [*sets, "twin.engine.block_size=32", "twin.engine.max_waiting=7"]
    scenario, system, work = prepare(load_scenario(write(tmp_path, doc), sets), None)
    world = build_world(scenario, system, work, scenario.server_names, requests_table=False,
                        period_s=60.0)
    engine = world.cluster.deployments["Premium-granite_13b"].spec.engine
    assert (engine.max_num_batched_tokens, engine.kv_capacity_tokens) == (budget, kv)
    assert (engine.block_size, engine.max_waiting) == (32, 7)
    assert world.twin.settings is scenario.twin
