"""Bad input: each corruption of sample small gives its exact one-line ConfigError message."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inferno.errors import ConfigError
from inferno.io import load_system

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"

Docs = dict[str, Any]


def edit(name: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    """A corruption that loads file ``name``, applies ``change`` and writes it back."""

    def apply(directory: Path) -> None:
        path = directory / name
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc, indent=1))

    return apply


def write(name: str, text: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).write_text(text)

    return apply


def remove(name: str) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).unlink()

    return apply


def load_of(i: int) -> Callable[[Docs], dict[str, Any]]:
    return lambda d: d["servers"][i]["currentAlloc"]["load"]


def setter(get: Callable[[Docs], dict[str, Any]], key: str, value: Any) -> Callable[[Docs], None]:
    def change(doc: Docs) -> None:
        get(doc)[key] = value

    return change


def server(i: int) -> Callable[[Docs], dict[str, Any]]:
    return lambda d: d["servers"][i]


def model(i: int) -> Callable[[Docs], dict[str, Any]]:
    return lambda d: d["models"][i]


def accelerator(i: int) -> Callable[[Docs], dict[str, Any]]:
    return lambda d: d["accelerators"][i]


def optimizer(d: Docs) -> dict[str, Any]:
    return d["optimizer"]


SRV, MOD, ACC, OPT = ("server-data.json", "model-data.json", "accelerator-data.json",
                      "optimizer-data.json")
CLS, CAP = "serviceclass-data.json", "capacity-data.json"
MODELS = "(known: granite_13b, granite_34b, llama_13b, llama_70b, mixtral_8_7b)"
ACCS = "(known: 2xAIU2, 4xA100, A100, AIU2, G2, L4)"

# (id, corruption, expected first line); "{dir}" stands for the data directory.
CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing-file", remove(CAP), "capacity-data.json: file not found in {dir}"),
    ("invalid-json", write(SRV, '{"servers": ['),
     "server-data.json: invalid JSON at line 1, column 14: Expecting value"),
    ("invalid-json-line", write(CLS, '{\n  "serviceClasses": [\n    {"name": "x",}\n  ]\n}'),
     "serviceclass-data.json: invalid JSON at line 3, column 18: "
     "Expecting property name enclosed in double quotes"),
    ("empty-file", write(OPT, ""),
     "optimizer-data.json: invalid JSON at line 1, column 1: Expecting value"),
    ("document-not-object", write(CAP, "[]"),
     "capacity-data.json: must be a JSON object, got a list"),
    ("string-for-number", edit(SRV, setter(load_of(2), "arrivalRate", "60")),
     'server-data.json: servers[2].currentAlloc.load.arrivalRate: must be a number, got "60"'),
    ("bool-for-int", edit(SRV, setter(server(1), "minNumReplicas", True)),
     "server-data.json: servers[1].minNumReplicas: must be an integer, got true"),
    ("fraction-for-int", edit(SRV, setter(load_of(0), "AvgInTokens", 128.5)),
     "server-data.json: servers[0].currentAlloc.load.avgInTokens: must be an integer, got 128.5"),
    ("list-for-object", edit(SRV, setter(server(0), "currentAlloc", [])),
     "server-data.json: servers[0].currentAlloc: must be an object, got a list"),
    ("object-for-list", edit(SRV, lambda d: d.update(servers={})),
     "server-data.json: servers: must be a list, got an object"),
    ("number-for-string", edit(SRV, setter(server(5), "model", 7)),
     "server-data.json: servers[5].model: must be a string, got 7"),
    ("entry-not-object", edit(ACC, lambda d: d["accelerators"].append("H100")),
     "accelerator-data.json: accelerators[6]: must be an object, got \"H100\""),
    ("nan", write(CAP, '{"count": [{"type": "L4", "count": NaN}]}'),
     "capacity-data.json: count[0].count: must be an integer, got NaN"),
    ("out-tokens-zero", edit(SRV, setter(load_of(3), "AvgOutTokens", 0)),
     "server-data.json: servers[3].currentAlloc.load.avgOutTokens: must be >= 1, got 0"),
    ("out-tokens-missing", edit(SRV, lambda d: load_of(4)(d).pop("AvgOutTokens")),
     "server-data.json: servers[4].currentAlloc.load.avgOutTokens: "
     "missing (must be >= 1 when arrivalRate > 0)"),
    ("negative-arrival", edit(SRV, setter(load_of(1), "arrivalRate", -5)),
     "server-data.json: servers[1].currentAlloc.load.arrivalRate: must be >= 0, got -5"),
    ("negative-tokens", edit(SRV, setter(load_of(1), "AvgInTokens", -1)),
     "server-data.json: servers[1].currentAlloc.load.avgInTokens: must be >= 0, got -1"),
    ("negative-min-replicas", edit(SRV, setter(server(6), "minNumReplicas", -1)),
     "server-data.json: servers[6].minNumReplicas: must be >= 0, got -1"),
    ("negative-max-batch", edit(SRV, setter(server(6), "maxBatchSize", -8)),
     "server-data.json: servers[6].maxBatchSize: must be >= 0, got -8"),
    ("negative-max-queue", edit(SRV, setter(server(7), "maxQueueSize", -1)),
     "server-data.json: servers[7].maxQueueSize: must be >= 0, got -1"),
    ("negative-current-cost", edit(SRV, lambda d: server(0)(d)["currentAlloc"].update(cost=-3)),
     "server-data.json: servers[0].currentAlloc.cost: must be >= 0, got -3"),
    ("unknown-class", edit(SRV, setter(server(2), "class", "Gold")),
     "server-data.json: servers[2].class: unknown service class 'Gold' "
     "(known: Bronze, Free, Premium)"),
    ("unknown-model", edit(SRV, setter(server(0), "model", "llama_99b")),
     f"server-data.json: servers[0].model: unknown model 'llama_99b': no model-data.json "
     f"entry {MODELS}"),
    ("missing-server-name", edit(SRV, lambda d: server(9)(d).pop("name")),
     "server-data.json: servers[9].name: missing (a non-empty string is required)"),
    ("duplicate-server", edit(SRV, setter(server(4), "name", "Premium-llama_13b")),
     "server-data.json: servers[4].name: duplicate server name 'Premium-llama_13b' "
     "(first at servers[0])"),
    ("unknown-accelerator", edit(MOD, setter(model(1), "acc", "X100")),
     f"model-data.json: models[1].acc: unknown accelerator 'X100' {ACCS}"),
    ("duplicate-perf-entry", edit(MOD, setter(model(1), "acc", "AIU2")),
     "model-data.json: models[1]: duplicate entry for model 'granite_13b' on accelerator "
     "'AIU2' (first at models[0])"),
    ("negative-perf", edit(MOD, lambda d: model(2)(d)["perfParms"].update(beta=-0.1)),
     "model-data.json: models[2].perfParms.beta: must be >= 0, got -0.1"),
    ("negative-model-max-batch", edit(MOD, setter(model(3), "maxBatchSize", -1)),
     "model-data.json: models[3].maxBatchSize: must be >= 0, got -1"),
    ("zero-max-num-tokens", edit(MOD, setter(model(3), "maxNumTokens", 0)),
     "model-data.json: models[3].maxNumTokens: must be >= 1, got 0"),
    ("negative-cost", edit(ACC, setter(accelerator(2), "cost", -3.75)),
     "accelerator-data.json: accelerators[2].cost: must be >= 0, got -3.75"),
    ("zero-multiplicity", edit(ACC, setter(accelerator(4), "multiplicity", 0)),
     "accelerator-data.json: accelerators[4].multiplicity: must be >= 1, got 0"),
    ("mid-util-above-one", edit(ACC, lambda d: accelerator(0)(d)["power"].update(midUtil=1.5)),
     "accelerator-data.json: accelerators[0].power.midUtil: must be <= 1, got 1.5"),
    ("duplicate-accelerator", edit(ACC, lambda d: d["accelerators"].append(accelerator(0)(d))),
     "accelerator-data.json: accelerators[6].name: duplicate accelerator 'L4' "
     "(first at accelerators[0])"),
    # Bounds that keep cost x cards x replicas and the service times finite (the MILP
    # refused infinite costs with a traceback; numpy warned of overflow).
    ("huge-cost", edit(ACC, setter(accelerator(0), "cost", 1e306)),
     "accelerator-data.json: accelerators[0].cost: must be <= 1,000,000,000,000 (MAX_COST), "
     "got 1e+306"),
    ("huge-current-cost", edit(SRV, lambda d: server(1)(d)["currentAlloc"].update(cost=2e12)),
     "server-data.json: servers[1].currentAlloc.cost: must be <= 1,000,000,000,000 "
     "(MAX_COST), got 2000000000000.0"),
    ("huge-gamma", edit(MOD, lambda d: model(0)(d)["perfParms"].update(gamma=1e300)),
     "model-data.json: models[0].perfParms.gamma: must be <= 1,000,000,000 (MAX_DURATION_MS), "
     "got 1e+300"),
    ("huge-capacity", write(CAP, '{"count": [{"type": "L4", "count": 1e30}]}'),
     "capacity-data.json: count[0].count: must be <= 1,000,000,000 (MAX_CAPACITY), got 1e+30"),
    # Found by mutation fuzzing: sizes that overflowed int64 or numpy's memory (a traceback).
    ("huge-acc-count", edit(MOD, setter(model(0), "accCount", 1e300)),
     "model-data.json: models[0].accCount: must be <= 4,096 (MAX_CARDS), got 1e+300"),
    ("huge-multiplicity", edit(ACC, setter(accelerator(1), "multiplicity", 2**70)),
     "accelerator-data.json: accelerators[1].multiplicity: must be <= 4,096 (MAX_CARDS), "
     f"got {2**70}"),
    ("huge-at-tokens", edit(MOD, setter(model(2), "atTokens", 512 * 10**12)),
     "model-data.json: models[2].atTokens: must be <= 10,000,000 (MAX_TOKENS), "
     "got 512000000000000"),
    ("huge-max-num-tokens", edit(MOD, setter(model(2), "maxNumTokens", 10**7 + 1)),
     "model-data.json: models[2].maxNumTokens: must be <= 10,000,000 (MAX_TOKENS), "
     "got 10000001"),
    ("huge-max-queue", edit(SRV, setter(server(7), "maxQueueSize", 2**70)),
     "server-data.json: servers[7].maxQueueSize: must be <= 655,360 (MAX_QUEUE), "
     f"got {2**70}"),
    # An integer of more than 4300 digits: Python refuses to convert it (ValueError).
    ("integer-too-long", write(CAP, '{"count": [{"type": "L4", "count": ' + "9" * 5000 + "}]}"),
     "capacity-data.json: count[0].count: must be <= 1,000,000,000 (MAX_CAPACITY), "
     "got Infinity"),
    ("negative-integer-too-long",
     write(OPT, '{"optimizer": {"accelPenaltyFactor": -' + "9" * 5000 + "}}"),
     "optimizer-data.json: optimizer.accelPenaltyFactor: must be a finite number, "
     "got -Infinity"),
    # A 10,000-character name is cut in the message (it printed a 10 kB line).
    ("long-name-cut", edit(SRV, setter(server(2), "class", "G" * 10_000)),
     f"server-data.json: servers[2].class: unknown service class '{'G' * 57}...' "
     "(known: Bronze, Free, Premium)"),
    ("newline-in-name", edit(SRV, setter(server(3), "name", "a\nb")),
     'server-data.json: servers[3].name: must not contain control characters, got "a\\nb"'),
    ("nul-in-type", write(CAP, '{"count": [{"type": "L\\u00004", "count": 2}]}'),
     'capacity-data.json: count[0].type: must not contain control characters, got "L\\u00004"'),
    ("surrogate-in-type", write(CAP, '{"count": [{"type": "L\\ud8004", "count": 2}]}'),
     'capacity-data.json: count[0].type: must not contain unpaired surrogates (not text), '
     'got "L\\ud8004"'),
    ("negative-slo", edit(CLS, lambda d: d["serviceClasses"][1]["modelTargets"][0].update(
        {"slo-itl": -160})),
     "serviceclass-data.json: serviceClasses[1].modelTargets[0].slo-itl: must be >= 0, got -160"),
    ("percentile-100", edit(CLS, lambda d: d["serviceClasses"][0]["modelTargets"][1].update(
        {"slo-ttft-percentile": 100})),
     "serviceclass-data.json: serviceClasses[0].modelTargets[1].slo-ttft-percentile: must be 0 "
     "(the mean) or below 100, got 100"),
    ("negative-percentile", edit(CLS, lambda d: d["serviceClasses"][2]["modelTargets"][0].update(
        {"slo-itl-percentile": -5})),
     "serviceclass-data.json: serviceClasses[2].modelTargets[0].slo-itl-percentile: must be >= 0, "
     "got -5"),
    ("string-percentile", edit(CLS, lambda d: d["serviceClasses"][1]["modelTargets"][2].update(
        {"slo-ttft-percentile": "p99"})),
     'serviceclass-data.json: serviceClasses[1].modelTargets[2].slo-ttft-percentile: must be a '
     'number, got "p99"'),
    ("duplicate-class", edit(CLS, lambda d: d["serviceClasses"].append(d["serviceClasses"][1])),
     "serviceclass-data.json: serviceClasses[3].name: duplicate service class 'Bronze' "
     "(first at serviceClasses[1])"),
    ("duplicate-target", edit(CLS, lambda d: d["serviceClasses"][0]["modelTargets"].append(
        d["serviceClasses"][0]["modelTargets"][2])),
     "serviceclass-data.json: serviceClasses[0].modelTargets[5].model: duplicate target for "
     "model 'granite_13b' (first at serviceClasses[0].modelTargets[2])"),
    ("empty-accelerator-type", edit(ACC, setter(accelerator(3), "type", "")),
     'accelerator-data.json: accelerators[3].type: must be a non-empty string, got ""'),
    ("string-perf-param", edit(MOD, lambda d: model(4)(d)["perfParms"].update(alpha="147")),
     'model-data.json: models[4].perfParms.alpha: must be a number, got "147"'),
    ("piecewise-without-beta-high",
     edit(MOD, lambda d: model(1)(d)["perfParms"].update(shape="piecewise", kneeTokens=256)),
     "model-data.json: models[1].perfParms.betaHigh: is required with shape 'piecewise'"),
    ("unknown-step-shape", edit(MOD, lambda d: model(1)(d)["perfParms"].update(shape="cubic")),
     "model-data.json: models[1].perfParms.shape: unknown value 'cubic' "
     "(allowed: linear, piecewise)"),
    ("negative-frontend", edit(MOD, lambda d: model(0)(d)["perfParms"].update(frontend=-2)),
     "model-data.json: models[0].perfParms.frontend: must be >= 0, got -2"),
    ("negative-capacity", edit(CAP, lambda d: d["count"][0].update(count=-1)),
     "capacity-data.json: count[0].count: must be >= 0, got -1"),
    ("duplicate-capacity", edit(CAP, lambda d: d["count"][3].update(type="L4")),
     "capacity-data.json: count[3].type: duplicate accelerator type 'L4' (first at count[0])"),
    ("unknown-saturation-policy", edit(OPT, setter(optimizer, "saturationPolicy", "Fair")),
     "optimizer-data.json: optimizer.saturationPolicy: unknown value 'Fair' "
     "(allowed: None, PriorityExhaustive, PriorityRoundRobin, RoundRobin)"),
    ("unknown-perf-model", edit(OPT, setter(optimizer, "perfModel", "fast")),
     "optimizer-data.json: optimizer.perfModel: unknown value 'fast' "
     "(allowed: chunked, classic, vllm)"),
    ("unknown-batch-policy", edit(OPT, setter(optimizer, "batchPolicy", "max")),
     "optimizer-data.json: optimizer.batchPolicy: unknown value 'max' (allowed: search, scaled)"),
    # factor x cost overflowed to inf (the MILP refused it with a traceback; found by probing)
    ("huge-penalty-factor", edit(OPT, setter(optimizer, "accelPenaltyFactor", 1e308)),
     "optimizer-data.json: optimizer.accelPenaltyFactor: must be <= 1,000,000 "
     "(MAX_PENALTY_FACTOR), got 1e+308"),
    ("string-for-bool", edit(OPT, setter(optimizer, "unlimited", "false")),
     'optimizer-data.json: optimizer.unlimited: must be true or false, got "false"'),
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A private copy of sample-data/small (six files) to corrupt."""
    directory = tmp_path / "small"
    directory.mkdir()
    for name in ("accelerator-data.json", CAP, CLS, MOD, OPT, SRV):
        shutil.copy(SMALL / name, directory / name)
    return directory


@pytest.mark.parametrize(("corrupt", "expected"), [(c, e) for _, c, e in CASES],
                         ids=[i for i, _, _ in CASES])
def test_invalid_input_message(data_dir: Path, corrupt: Callable[[Path], None],
                               expected: str) -> None:
    """Each corruption is a ConfigError whose only line is the expected one."""
    corrupt(data_dir)
    with pytest.raises(ConfigError) as info:
        load_system(data_dir)
    line = expected.format(dir=data_dir)
    assert str(info.value) == line
    assert info.value.problems == (line,)


def test_all_problems_of_all_files_reported(data_dir: Path) -> None:
    """Several problems are all reported, in file then document order; message = first."""

    def corrupt_servers(doc: Docs) -> None:
        doc["servers"][1]["class"] = "Gold"
        doc["servers"][3]["currentAlloc"]["load"]["AvgOutTokens"] = 0
        doc["servers"][3]["currentAlloc"]["load"]["arrivalRate"] = "fast"
        doc["servers"][8]["maxQueueSize"] = -4
        doc["servers"][12]["model"] = "gpt"

    edit(SRV, corrupt_servers)(data_dir)
    edit(MOD, setter(model(0), "atTokens", -512))(data_dir)
    edit(OPT, setter(optimizer, "perfModel", "G7"))(data_dir)
    with pytest.raises(ConfigError) as info:
        load_system(data_dir)
    expected = (
        "model-data.json: models[0].atTokens: must be >= 0, got -512",
        "server-data.json: servers[1].class: unknown service class 'Gold' "
        "(known: Bronze, Free, Premium)",
        'server-data.json: servers[3].currentAlloc.load.arrivalRate: must be a number, '
        'got "fast"',
        "server-data.json: servers[8].maxQueueSize: must be >= 0, got -4",
        f"server-data.json: servers[12].model: unknown model 'gpt': no model-data.json "
        f"entry {MODELS}",
        "optimizer-data.json: optimizer.perfModel: unknown value 'G7' "
        "(allowed: chunked, classic, vllm)",
    )
    assert info.value.problems == expected
    assert str(info.value) == expected[0]


def test_default_class_must_exist(data_dir: Path) -> None:
    """A server without class needs the default class Free to be defined."""

    def drop_free(doc: Docs) -> None:
        doc["serviceClasses"] = [c for c in doc["serviceClasses"] if c["name"] != "Free"]

    def reclass(doc: Docs) -> None:
        for entry in doc["servers"]:
            if entry["class"] == "Free":
                entry["class"] = "Bronze"
        del doc["servers"][10]["class"]

    edit(CLS, drop_free)(data_dir)
    edit(SRV, reclass)(data_dir)
    with pytest.raises(ConfigError) as info:
        load_system(data_dir)
    assert info.value.problems == (
        "server-data.json: servers[10].class: no class given and the default class 'Free' is "
        "not defined (known: Bronze, Premium)",)


def test_missing_files_all_reported(data_dir: Path) -> None:
    """Every missing file is listed, and references into them are not checked."""
    remove(CLS)(data_dir)
    remove(MOD)(data_dir)
    with pytest.raises(ConfigError) as info:
        load_system(data_dir)
    assert info.value.problems == (f"model-data.json: file not found in {data_dir}",
                                   f"serviceclass-data.json: file not found in {data_dir}")


def test_system_data_paths(tmp_path: Path) -> None:
    """In system-data.json the field path starts at system.<section>."""
    doc = json.loads((SMALL / "system-data.json").read_text())
    doc["system"]["serverData"]["servers"][2]["class"] = "Gold"
    doc["system"]["capacityData"]["count"][1]["count"] = -768
    path = tmp_path / "system-data.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        load_system(path)
    assert info.value.problems == (
        "system-data.json: system.capacityData.count[1].count: must be >= 0, got -768",
        "system-data.json: system.serverData.servers[2].class: unknown service class 'Gold' "
        "(known: Bronze, Free, Premium)",
    )


@pytest.mark.parametrize(("text", "expected"), [
    ('{"System": {}}', None),
    ("{}", "system-data.json: system: missing (the whole system is under this key)"),
    ('{"system": {"serverData": []}}',
     "system-data.json: system.serverData: must be an object, got a list"),
    ("{", "system-data.json: invalid JSON at line 1, column 2: "
          "Expecting property name enclosed in double quotes"),
], ids=["empty-system", "no-system", "section-not-object", "invalid-json"])
def test_system_data_structure(tmp_path: Path, text: str, expected: str | None) -> None:
    """An empty system is valid (Go zero values); a missing or malformed one is an error."""
    path = tmp_path / "system-data.json"
    path.write_text(text)
    if expected is None:
        system = load_system(path)
        assert (system.servers, dict(system.accelerators)) == ((), {})
        return
    with pytest.raises(ConfigError) as info:
        load_system(path)
    assert info.value.problems == (expected,)


def test_known_names_are_capped(data_dir: Path) -> None:
    """An unknown reference lists at most 12 known names, then how many more (a catalog of
    thousands made a line of kilobytes)."""

    def many(doc: Docs) -> None:
        doc["accelerators"] += [dict(doc["accelerators"][0], name=f"X{i:02}") for i in range(20)]

    edit(ACC, many)(data_dir)
    edit(MOD, setter(model(1), "acc", "nope"))(data_dir)
    with pytest.raises(ConfigError) as info:
        load_system(data_dir)
    assert info.value.problems == (
        "model-data.json: models[1].acc: unknown accelerator 'nope' (known: 2xAIU2, 4xA100, A100, "
        "AIU2, G2, L4, X00, X01, X02, X03, X04, X05, ... 14 more)",)
