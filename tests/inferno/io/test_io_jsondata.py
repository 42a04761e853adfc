"""Loading the upstream JSON inputs: samples, reference cases, case-insensitivity, defaults."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from inferno.errors import ConfigError
from inferno.io import apply_overrides, load_system
from inferno.model import (
    BatchPolicy,
    ModelTarget,
    OptimizerSettings,
    PerfModel,
    PerfParms,
    SaturationPolicy,
    SolverKind,
    StepShape,
)

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"
LARGE = ROOT / "sample-data" / "large"
CASES = sorted((ROOT / "tests" / "data" / "optimizer-cases").glob("case-*"))


def write_dir(directory: Path, docs: dict[str, Any]) -> Path:
    """Write ``{file name: document}`` as JSON files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (directory / name).write_text(json.dumps(doc))
    return directory


def minimal_docs() -> dict[str, Any]:
    """A tiny valid system: one accelerator, one model, one class, one server."""
    return {
        "accelerator-data.json": {"accelerators": [
            {"name": "A100", "type": "A100", "multiplicity": 1, "cost": 40.0}]},
        "capacity-data.json": {"count": [{"type": "A100", "count": 8}]},
        "model-data.json": {"models": [
            {"name": "m", "acc": "A100", "accCount": 1, "maxBatchSize": 64, "atTokens": 512,
             "perfParms": {"alpha": 20.58, "beta": 0.041, "gamma": 0.00128125}}]},
        "serviceclass-data.json": {"serviceClasses": [
            {"name": "Free", "priority": 3,
             "modelTargets": [{"model": "m", "slo-itl": 80, "slo-ttft": 1000}]}]},
        "server-data.json": {"servers": [
            {"name": "s", "class": "Free", "model": "m",
             "currentAlloc": {"load": {"arrivalRate": 60, "avgInTokens": 128,
                                       "avgOutTokens": 1024}}}]},
        "optimizer-data.json": {"optimizer": {}},
    }


def test_small_sample_values() -> None:
    """Sample small loads with the values quoted in docs/design/optimizer-model.md §1.1–1.5, units
    unchanged."""
    system = load_system(SMALL)
    assert len(system.accelerators) == 6
    assert len(system.perf) == 30
    assert len(system.servers) == 15
    costs = {name: acc.cost_per_hr for name, acc in system.accelerators.items()}
    assert costs == {"L4": 6.0, "A100": 40.0, "AIU2": 3.75, "G2": 23.0, "2xAIU2": 7.5,
                     "4xA100": 160.0}
    quad = system.accelerators["4xA100"]
    assert (quad.type, quad.multiplicity, quad.mem_gb, quad.mem_bw_gbps) == ("A100", 4, 320, 8000)
    assert (quad.power.idle_w, quad.power.full_w, quad.power.mid_w, quad.power.mid_util) == (
        600, 1600, 1280, 0.6)
    assert system.capacity == {"L4": 1024, "A100": 768, "AIU2": 1024, "G2": 512}
    assert system.perf["granite_13b", "G2"].perf == PerfParms(alpha_ms=17.15, beta_ms=0.034,
                                                              gamma_ms=0.0010625)
    assert system.perf["granite_13b", "AIU2"].perf.alpha_ms == 205.8
    assert system.perf["granite_13b", "L4"].acc_count == 2
    assert system.perf["granite_13b", "L4"].max_batch_size == 18
    assert system.perf["granite_13b", "L4"].at_tokens == 512
    assert {c.name: c.priority for c in system.classes.values()} == {
        "Premium": 1, "Bronze": 2, "Free": 3}
    assert system.classes["Premium"].targets["granite_13b"] == ModelTarget(
        model="granite_13b", slo_itl_ms=40.0, slo_ttft_ms=1000.0)
    first = system.servers[0]
    assert (first.name, first.class_name, first.model) == ("Premium-llama_13b", "Premium",
                                                           "llama_13b")
    load = first.load
    assert (load.arrival_rpm, load.avg_in_tokens, load.avg_out_tokens) == (60.0, 128, 1024)
    assert first.current.accelerator == ""
    assert first.current.num_replicas == 0
    assert first.max_queue_size is None
    assert system.settings == OptimizerSettings(saturation_policy=SaturationPolicy.ROUND_ROBIN)


def test_large_sample_counts() -> None:
    """Sample large has 21 accelerators, 189 perf entries, 4 classes and 27 servers."""
    system = load_system(LARGE)
    sizes = (len(system.accelerators), len(system.perf), len(system.classes),
             len(system.servers))
    assert sizes == (21, 189, 4, 27)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_case_loads(case: Path) -> None:
    """Each reference case loads: all servers, the maxQueueSize values and the settings."""
    system = load_system(case)
    raw_servers = json.loads((case / "server-data.json").read_text())["servers"]
    raw_opt = json.loads((case / "optimizer-data.json").read_text())["optimizer"]
    assert [s.name for s in system.servers] == [s["name"] for s in raw_servers]
    assert [s.max_queue_size for s in system.servers] == [s["maxQueueSize"] for s in raw_servers]
    assert system.settings.unlimited is raw_opt["unlimited"]
    assert system.settings.delayed_best_effort is raw_opt["delayedBestEffort"]
    assert system.settings.saturation_policy == raw_opt["saturationPolicy"]
    assert system.settings.perf_model is PerfModel.CHUNKED
    assert system.settings.batch_policy is BatchPolicy.SCALED
    expected = json.loads((case / "expected-solution.json").read_text())["allocations"]
    assert set(expected) <= {s.name for s in system.servers}


def test_reference_cases_present() -> None:
    """The twelve reference cases of the design are shipped in tests/data."""
    assert [c.name for c in CASES] == [f"case-{i:03d}" for i in range(12)]


def test_system_data_equals_six_files() -> None:
    """small/system-data.json gives the six-file system; only saturationPolicy differs (§1.6)."""
    six = load_system(SMALL)
    one = load_system(SMALL / "system-data.json")
    assert six.settings.saturation_policy is SaturationPolicy.ROUND_ROBIN
    assert one.settings.saturation_policy is SaturationPolicy.PRIORITY_ROUND_ROBIN
    assert dataclasses.replace(one, settings=six.settings) == six


def test_directory_with_only_system_data(tmp_path: Path) -> None:
    """A directory holding just system-data.json is read through that file."""
    shutil.copy(SMALL / "system-data.json", tmp_path / "system-data.json")
    assert load_system(tmp_path) == load_system(SMALL / "system-data.json")


def test_keys_case_insensitive(tmp_path: Path) -> None:
    """Keys match in any case at every level (Go decoder semantics, §0.4)."""
    docs = {
        "accelerator-data.json": {"ACCELERATORS": [
            {"NAME": "A100", "Type": "A100", "MultiPlicity": 2, "MEMSIZE": 80, "membw": 2000,
             "COST": 40.0, "POWER": {"IDLE": 150, "Full": 400, "MIDPOWER": 320, "midutil": 0.6}}]},
        "capacity-data.json": {"Count": [{"TYPE": "A100", "COUNT": 8}]},
        "model-data.json": {"Models": [
            {"NAME": "m", "ACC": "A100", "ACCCOUNT": 2, "MaxBatchSize": 64, "ATTOKENS": 512,
             "MaxNumTokens": 4096, "PERFPARMS": {"Alpha": 1.5, "BETA": 0.5, "gamma": 0.25}}]},
        "serviceclass-data.json": {"SERVICECLASSES": [
            {"Name": "Gold", "PRIORITY": 7,
             "ModelTargets": [{"MODEL": "m", "SLO-ITL": 80, "Slo-Ttft": 1000, "SLO-tps": 5}]}]},
        "server-data.json": {"SERVERS": [
            {"NAME": "s", "CLASS": "Gold", "MODEL": "m", "KEEPACCELERATOR": True,
             "MinNumReplicas": 2, "MAXBATCHSIZE": 8, "MaxQueueSize": 16,
             "CurrentAlloc": {"ACCELERATOR": "A100", "NUMREPLICAS": 3, "MAXBATCH": 8,
                              "COST": 120.0, "ItlAverage": 30.0, "TTFTAVERAGE": 200.0,
                              "LOAD": {"ARRIVALRATE": 60, "Throughput": 59, "AvgInTokens": 128,
                                       "AVGOUTTOKENS": 1024}}}]},
        "optimizer-data.json": {"OPTIMIZER": {
            "UNLIMITED": True, "Heterogeneous": True, "milpsolver": True, "USECPLEX": True,
            "DELAYEDBESTEFFORT": True, "SATURATIONPOLICY": "RoundRobin",
            "PERFMODEL": "classic", "BatchPolicy": "scaled", "MilpTimeLimit": 2.5}},
    }
    system = load_system(write_dir(tmp_path, docs))
    acc = system.accelerators["A100"]
    assert (acc.multiplicity, acc.mem_gb, acc.mem_bw_gbps, acc.cost_per_hr) == (2, 80, 2000, 40)
    assert (acc.power.idle_w, acc.power.full_w, acc.power.mid_w, acc.power.mid_util) == (
        150, 400, 320, 0.6)
    assert system.capacity == {"A100": 8}
    perf = system.perf["m", "A100"]
    assert (perf.acc_count, perf.max_batch_size, perf.at_tokens, perf.max_num_tokens) == (
        2, 64, 512, 4096)
    assert perf.perf == PerfParms(alpha_ms=1.5, beta_ms=0.5, gamma_ms=0.25)
    gold = system.classes["Gold"]
    assert gold.priority == 7
    assert gold.targets["m"] == ModelTarget(model="m", slo_itl_ms=80, slo_ttft_ms=1000,
                                            slo_tps=5)
    (server,) = system.servers
    assert (server.class_name, server.keep_accelerator, server.min_num_replicas,
            server.max_batch_size, server.max_queue_size) == ("Gold", True, 2, 8, 16)
    cur = server.current
    assert (cur.accelerator, cur.num_replicas, cur.max_batch, cur.cost, cur.itl_ms,
            cur.ttft_ms) == ("A100", 3, 8, 120.0, 30.0, 200.0)
    assert (cur.load.arrival_rpm, cur.load.throughput_rpm, cur.load.avg_in_tokens,
            cur.load.avg_out_tokens) == (60, 59, 128, 1024)
    assert system.settings == OptimizerSettings(
        unlimited=True, heterogeneous=True, milp_solver=True, use_cplex=True,
        delayed_best_effort=True, saturation_policy=SaturationPolicy.ROUND_ROBIN,
        perf_model=PerfModel.CLASSIC, batch_policy=BatchPolicy.SCALED, milp_time_limit_s=2.5)


def test_defaults_for_missing_keys(tmp_path: Path) -> None:
    """Missing keys take the upstream defaults: class Free, priority 100, accCount 1, Q None."""
    docs = minimal_docs()
    docs["accelerator-data.json"] = {"accelerators": [{"name": "A100", "type": "A100"}]}
    docs["model-data.json"] = {"models": [{"name": "m", "acc": "A100"}]}
    docs["serviceclass-data.json"] = {"serviceClasses": [{"name": "Free"}]}
    docs["server-data.json"] = {"servers": [{"name": "s", "model": "m"}]}
    docs["optimizer-data.json"] = {}
    system = load_system(write_dir(tmp_path, docs))
    acc = system.accelerators["A100"]
    assert (acc.multiplicity, acc.cost_per_hr, acc.mem_gb) == (1, 0.0, 0.0)
    perf = system.perf["m", "A100"]
    assert (perf.acc_count, perf.max_batch_size, perf.at_tokens, perf.max_num_tokens) == (
        1, 0, 0, 8192)
    assert perf.perf.is_zero
    assert system.classes["Free"].priority == 100
    assert system.classes["Free"].targets == {}
    (server,) = system.servers
    assert (server.class_name, server.keep_accelerator, server.min_num_replicas,
            server.max_batch_size, server.max_queue_size) == ("Free", False, 0, 0, None)
    assert server.load.is_zero
    assert system.settings == OptimizerSettings()
    assert system.settings.solver is SolverKind.GREEDY


@pytest.mark.parametrize(("raw", "expected"), [(0, 100), (1, 1), (100, 100), (101, 100),
                                               (-3, 100), (None, 100)],
                         ids=["zero", "one", "hundred", "above", "negative", "null"])
def test_priority_normalised(tmp_path: Path, raw: int | None, expected: int) -> None:
    """Priority outside 1..100 (missing, 0, negative, too large) reads as 100 (§1.4)."""
    docs = minimal_docs()
    docs["serviceclass-data.json"]["serviceClasses"][0]["priority"] = raw
    assert load_system(write_dir(tmp_path, docs)).classes["Free"].priority == expected


@pytest.mark.parametrize(("raw", "expected"), [(0, 1), (-2, 1), (4, 4)],
                         ids=["zero", "negative", "four"])
def test_acc_count_normalised(tmp_path: Path, raw: int, expected: int) -> None:
    """accCount <= 0 reads as 1 (§1.3)."""
    docs = minimal_docs()
    docs["model-data.json"]["models"][0]["accCount"] = raw
    assert load_system(write_dir(tmp_path, docs)).perf["m", "A100"].acc_count == expected


@pytest.mark.parametrize(("server_extra", "expected"),
                         [({}, None), ({"maxQueueSize": None}, None), ({"maxQueueSize": 0}, 0),
                          ({"maxQueueSize": 64}, 64)],
                         ids=["absent", "null", "zero", "sixty-four"])
def test_max_queue_size_presence(tmp_path: Path, server_extra: dict, expected: int | None,
                                 ) -> None:
    """maxQueueSize absent (or null) is None; present, 0 included, is kept (Decisions)."""
    docs = minimal_docs()
    docs["server-data.json"]["servers"][0].update(server_extra)
    (server,) = load_system(write_dir(tmp_path, docs)).servers
    assert server.max_queue_size == expected


@pytest.mark.parametrize("class_value", ["", None], ids=["empty", "null"])
def test_empty_class_is_free(tmp_path: Path, class_value: str | None) -> None:
    """A server with class "" or null belongs to the default class Free."""
    docs = minimal_docs()
    docs["server-data.json"]["servers"][0]["class"] = class_value
    (server,) = load_system(write_dir(tmp_path, docs)).servers
    assert server.class_name == "Free"


def test_enum_values_and_empty_strings(tmp_path: Path) -> None:
    """Enum values match case-insensitively; "" gives the default (policy None, chunked, search)."""
    docs = minimal_docs()
    docs["optimizer-data.json"] = {"optimizer": {"saturationPolicy": "",
                                                 "perfModel": "", "batchPolicy": ""}}
    assert load_system(write_dir(tmp_path / "a", docs)).settings == OptimizerSettings()
    docs["optimizer-data.json"] = {"optimizer": {"saturationPolicy": "priorityexhaustive",
                                                 "perfModel": "CLASSIC", "batchPolicy": "Scaled"}}
    settings = load_system(write_dir(tmp_path / "b", docs)).settings
    assert settings.saturation_policy is SaturationPolicy.PRIORITY_EXHAUSTIVE
    assert settings.perf_model is PerfModel.CLASSIC
    assert settings.batch_policy is BatchPolicy.SCALED


def test_unknown_keys_and_g1_fields_ignored(tmp_path: Path) -> None:
    """Unknown keys (and the legacy G1 decodeParms) are ignored on read (Decisions)."""
    docs = minimal_docs()
    docs["model-data.json"]["models"][0]["decodeParms"] = {"alpha": 1, "beta": 2}
    docs["server-data.json"]["servers"][0]["desiredAlloc"] = {"numReplicas": 3}
    docs["server-data.json"]["comment"] = "hello"
    plain = load_system(write_dir(tmp_path / "a", minimal_docs()))
    assert load_system(write_dir(tmp_path / "b", docs)) == plain


def test_integral_float_accepted_for_integer(tmp_path: Path) -> None:
    """An integer field accepts 1024.0 (same JSON number) but not 1024.5."""
    docs = minimal_docs()
    docs["server-data.json"]["servers"][0]["currentAlloc"]["load"]["avgOutTokens"] = 1024.0
    (server,) = load_system(write_dir(tmp_path, docs)).servers
    assert server.load.avg_out_tokens == 1024
    assert isinstance(server.load.avg_out_tokens, int)


def test_overrides_replace_settings() -> None:
    """overrides set settings fields by name; solver sets milp_solver, unlimited still wins."""
    system = load_system(SMALL, overrides={"perf_model": "classic", "batch_policy": "scaled",
                                           "saturation_policy": None, "solver": "milp",
                                           "delayed_best_effort": True})
    assert system.settings == OptimizerSettings(
        milp_solver=True, delayed_best_effort=True, saturation_policy=SaturationPolicy.ROUND_ROBIN,
        perf_model=PerfModel.CLASSIC, batch_policy=BatchPolicy.SCALED)
    assert system.settings.solver is SolverKind.MILP
    unlimited = apply_overrides(OptimizerSettings(milp_solver=True), {"solver": "unlimited"})
    assert (unlimited.unlimited, unlimited.milp_solver) == (True, False)
    for kind in (SolverKind.GREEDY, SolverKind.MILP):
        kept = apply_overrides(OptimizerSettings(unlimited=True), {"solver": kind})
        assert kept.unlimited
        assert kept.solver is SolverKind.UNLIMITED
    greedy = apply_overrides(OptimizerSettings(milp_solver=True), {"solver": "greedy"})
    assert greedy.solver is SolverKind.GREEDY


@pytest.mark.parametrize(("overrides", "message"), [
    ({"perf_model": "fast"},
     "overrides: perf_model: unknown value 'fast' (allowed: chunked, classic, vllm)"),
    ({"solver": "cplex"},
     "overrides: solver: unknown value 'cplex' (allowed: unlimited, greedy, milp)"),
    ({"unlimited": "yes"}, "overrides: unlimited: must be true or false, got 'yes'"),
    ({"perfmodel": "classic"},
     "overrides: unknown setting 'perfmodel' (allowed: accel_penalty_factor, batch_policy, "
     "delayed_best_effort, heterogeneous, milp_solver, milp_time_limit_s, perf_model, "
     "saturation_policy, solver, unlimited, use_cplex)"),
], ids=["enum", "solver", "bool", "name"])
def test_bad_overrides(overrides: dict, message: str) -> None:
    """A bad override is a ConfigError naming the setting and the allowed values."""
    with pytest.raises(ConfigError) as info:
        load_system(SMALL, overrides=overrides)
    assert str(info.value) == message


def test_missing_path() -> None:
    """A path that does not exist is a one-line ConfigError."""
    missing = ROOT / "no-such-dir"
    with pytest.raises(ConfigError) as info:
        load_system(missing)
    assert str(info.value) == f"{missing}: no such file or directory"


def test_static_data_without_server_file(tmp_path: Path) -> None:
    """A control-loop data path needs no server-data.json; capacity reads on its own."""
    import shutil

    from inferno.io import load_capacity, load_static_data

    src = Path(__file__).resolve().parents[3] / "sample-data" / "small"
    shutil.copytree(src, tmp_path / "d")
    (tmp_path / "d" / "server-data.json").unlink()
    (tmp_path / "d" / "system-data.json").unlink()
    static = load_static_data(tmp_path / "d")
    assert static.servers == ()
    assert "G2" in static.accelerators
    assert load_capacity(tmp_path / "d") == {"L4": 1024, "A100": 768, "AIU2": 1024, "G2": 512}


@pytest.mark.parametrize("source", ["small", "large", "case-005", "case-009"])
def test_written_system_reads_back_equal(tmp_path: Path, source: str) -> None:
    """write_system then load_system gives back the same System (every field)."""
    from inferno.io.dump import write_system

    path = SMALL.parent / source if source in ("small", "large") else CASES[0].parent / source
    system = load_system(path)
    write_system(system, tmp_path / "out")
    assert load_system(tmp_path / "out") == system


UPSTREAM_INT_FIELDS = ("multiplicity", "memSize", "memBW", "power.idle", "power.full",
                      "power.midPower")
"""Accelerator fields typed ``int`` in upstream's Go config (its decoder rejects 24.0)."""


def test_written_accelerators_keep_upstream_integers(tmp_path: Path) -> None:
    """Integral accelerator sizes and powers are written as JSON integers, as the upstream
    files have them, so the Go optimizer reads what we write; a fractional one stays a
    fractional number and reads back equal."""
    from inferno.io.dump import write_system

    system = load_system(SMALL)
    first = next(iter(system.accelerators))
    accs = dict(system.accelerators)
    accs[first] = dataclasses.replace(accs[first], mem_gb=40.5)
    system = dataclasses.replace(system, accelerators=accs)
    write_system(system, tmp_path / "out")
    for acc in json.loads((tmp_path / "out" / "accelerator-data.json").read_text())[
            "accelerators"]:
        for path in UPSTREAM_INT_FIELDS:
            head, _, tail = path.partition(".")
            value = acc[head][tail] if tail else acc[head]
            if acc["name"] == first and path == "memSize":
                assert value == 40.5
            else:
                assert type(value) is int, (acc["name"], path, value)
    assert load_system(tmp_path / "out") == system


def test_written_system_keeps_percentiles_and_perf_terms(tmp_path: Path) -> None:
    """write_system keeps inferno's percentile targets and optional perfParms terms (front
    end, stream, piecewise shape), so load_system reads back the same System."""
    from inferno.io.dump import write_system

    system = load_system(SMALL)
    classes = {name: dataclasses.replace(cls, targets={
        m: dataclasses.replace(t, slo_ttft_percentile=99.0, slo_itl_percentile=90.0)
        for m, t in cls.targets.items()}) for name, cls in system.classes.items()}
    perf = {key: dataclasses.replace(p, perf=dataclasses.replace(
        p.perf, frontend_ms=9.0, frontend_per_token_ms=0.003, stream_ms=0.02,
        shape=StepShape.PIECEWISE, knee_tokens=768.0, beta_high_ms=2 * p.perf.beta_ms))
        for key, p in system.perf.items()}
    system = dataclasses.replace(system, classes=classes, perf=perf)
    write_system(system, tmp_path / "out")
    assert load_system(tmp_path / "out") == system


def test_likely_typos_are_warned_not_refused(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A capacity type no accelerator has, and a keepAccelerator server on an unknown
    accelerator, load (upstream accepts them) but each logs one warning line naming the
    file and the value; the shipped data logs none."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    cap = json.loads((data / "capacity-data.json").read_text())
    cap["count"].append({"type": "A1OO", "count": 4})
    (data / "capacity-data.json").write_text(json.dumps(cap))
    srv = json.loads((data / "server-data.json").read_text())
    srv["servers"][0]["keepAccelerator"] = True
    srv["servers"][0]["currentAlloc"]["accelerator"] = "H200"
    (data / "server-data.json").write_text(json.dumps(srv))
    with caplog.at_level(logging.WARNING, logger="inferno.io.jsondata"):
        load_system(SMALL)
        assert not caplog.records
        system = load_system(data)
    assert system.capacity["A1OO"] == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("capacity-data.json: capacity for type 'A1OO', which no "
                               "accelerator has (known: ")
    name = srv["servers"][0]["name"]
    assert lines[1] == (f"server-data.json: server '{name}' keeps accelerator 'H200', which "
                        "is not in accelerator-data.json: it cannot be allocated")
    assert all("\n" not in line for line in lines)


def test_likely_typos_log_at_most_three_lines(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Ten unused capacity types log three warnings and a count, not ten lines."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    cap = json.loads((data / "capacity-data.json").read_text())
    cap["count"] += [{"type": f"T{i}", "count": 1} for i in range(10)]
    (data / "capacity-data.json").write_text(json.dumps(cap))
    with caplog.at_level(logging.WARNING, logger="inferno.io.jsondata"):
        load_system(data)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines[:3]] == [
        f"capacity-data.json: capacity for type '{t}'" for t in ("T0", "T1", "T2")]
    assert lines[3:] == ["... and 7 more such warnings"]
