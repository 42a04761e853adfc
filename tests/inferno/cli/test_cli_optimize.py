"""`inferno optimize` and `inferno analyze` through click's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from inferno.cli import cli

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"
CASES = ROOT / "tests" / "data" / "optimizer-cases"


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_optimize_prints_table_and_writes_upstream_json(tmp_path: Path) -> None:
    """Table with every server and status line; --output has upstream field names
    (docs/design/optimizer-model.md §7.4)."""
    out = tmp_path / "solution.json"
    result = run("optimize", str(SMALL), "--perf-model", "classic", "--batch-policy", "scaled",
                 "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "Premium-granite_13b" in result.output
    assert "status: optimal" in result.output
    doc = json.loads(out.read_text())
    assert set(doc) >= {"allocations", "unallocated", "solveTimeMs"}
    alloc = doc["allocations"]["Premium-granite_13b"]
    # §7.1: G2 x 2, maxBatch 38, cost 46, ITL 29.409, TTFT 62.26
    assert (alloc["accelerator"], alloc["numReplicas"], alloc["maxBatch"]) == ("G2", 2, 38)
    assert alloc["cost"] == pytest.approx(46.0)
    assert alloc["itlAverage"] == pytest.approx(29.4088, rel=1e-4)
    assert alloc["ttftAverage"] == pytest.approx(62.2606, rel=1e-4)
    assert alloc["load"] == {"arrivalRate": 60.0, "throughput": 0.0, "avgInTokens": 128,
                             "avgOutTokens": 1024}
    assert doc["unallocated"] == []


def test_partial_solution_exits_zero_and_lists_unallocated() -> None:
    """case-001 leaves three servers unallocated upstream: listed, exit code 0."""
    result = run("optimize", str(CASES / "case-001"), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["unallocated"] == ["Batch2K-llama3_8b-4", "Batch2K-llama_7b-14",
                                  "Batch2K-mistral_7b-7"]


def test_solver_flag_overrides_optimizer_data() -> None:
    """--solver unlimited on the starved-free small sample uses G2 for every server (§7.5)."""
    result = run("optimize", str(SMALL), "--perf-model", "classic", "--batch-policy", "scaled",
                 "--solver", "unlimited", "--json")
    doc = json.loads(result.output)
    assert {a["accelerator"] for a in doc["allocations"].values()} == {"G2"}
    assert doc["allocations"]["Free-llama_70b"]["numReplicas"] == 132


@pytest.mark.parametrize(("file", "edit", "message"), [
    ("server-data.json", lambda d: d["servers"][3]["currentAlloc"]["load"].update(
        AvgOutTokens=0),
     "server-data.json: servers[3].currentAlloc.load.avgOutTokens: must be >= 1, got 0"),
    ("optimizer-data.json", lambda d: d["optimizer"].update(saturationPolicy="Greedy"),
     "optimizer-data.json: optimizer.saturationPolicy: unknown value 'Greedy'"),
    ("capacity-data.json", None, "capacity-data.json: file not found in"),
], ids=["zero-tokens", "bad-enum", "missing-file"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, file: str, edit: object,
                                          message: str) -> None:
    """Each bad file gives its one-line message on stderr, exit 2, no traceback."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    (data / "system-data.json").unlink()
    if edit is None:
        (data / file).unlink()
    else:
        doc = json.loads((data / file).read_text())
        edit(doc)
        (data / file).write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["optimize", str(data), "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.json").exists()


def test_analyze_reports_the_walkthrough_numbers() -> None:
    """§7.1: granite_13b on G2, N=38, classic: 0.5 req/s → ITL 29.4088 ms, max rate 41.85 RPM."""
    result = run("analyze", "--data", str(SMALL), "--model", "granite_13b", "--accelerator",
                 "G2", "--rate-rpm", "30", "--in-tokens", "128", "--out-tokens", "1024",
                 "--class", "Premium", "--max-batch", "38", "--perf-model", "classic",
                 "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["metrics"]["itl_ms"] == pytest.approx(29.4088, rel=1e-4)
    assert doc["metrics"]["ttft_ms"] == pytest.approx(62.2606, rel=1e-4)
    assert doc["maxRateRpm"] == pytest.approx(0.6975013 * 60, rel=1e-5)


def test_analyze_unknown_pair_is_a_config_error() -> None:
    """A model without an entry on the accelerator: one line naming model-data.json, exit 2."""
    result = CliRunner().invoke(cli, ["analyze", "--data", str(SMALL), "--model", "nope",
                                      "--accelerator", "G2", "--rate-rpm", "1",
                                      "--in-tokens", "1", "--out-tokens", "1"])
    assert result.exit_code == 2
    assert "model-data.json: no entry for model 'nope' on accelerator 'G2'" in result.output


@pytest.mark.parametrize("servers", [{}, {"servers": []}, {"servers": None}],
                         ids=["empty-object", "empty-list", "null"])
def test_no_servers_is_one_line_and_exit_2(tmp_path: Path, servers: dict) -> None:
    """server-data.json of {} or with no servers: one line naming the field, exit 2."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    (data / "system-data.json").unlink()
    (data / "server-data.json").write_text(json.dumps(servers))
    result = CliRunner().invoke(cli, ["optimize", str(data)])
    assert result.exit_code == 2
    assert result.output == ("ConfigError: server-data.json: servers: missing or empty: "
                             "there are no servers to optimize\n")


def test_no_servers_in_system_data_names_the_section(tmp_path: Path) -> None:
    """The same check on a system-data.json names the field inside the system object."""
    doc = json.loads((SMALL / "system-data.json").read_text())
    doc["system"]["serverData"] = {"servers": []}
    path = tmp_path / "system-data.json"
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(cli, ["optimize", str(path)])
    assert result.exit_code == 2
    assert result.output == ("ConfigError: system-data.json: system.serverData.servers: missing "
                             "or empty: there are no servers to optimize\n")


@pytest.mark.parametrize(("output", "reason"), [
    ("missing/out.json", "directory {d}/missing does not exist"),
    (".", "it is a directory"),
    ("file.txt/out.json", "{d}/file.txt is not a directory"),
], ids=["missing-dir", "is-dir", "parent-is-file"])
def test_output_path_problem_is_one_line_exit_2_before_solving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, reason: str) -> None:
    """Each output-path problem: one line, exit 2, nothing written, and no solve started."""
    (tmp_path / "file.txt").write_text("x")
    import inferno.commands.optimize as command

    def no_solve(*_: object, **__: object) -> None:
        raise AssertionError("solve started before the output path was checked")

    monkeypatch.setattr(command, "solve", no_solve)
    before = sorted(p.name for p in tmp_path.iterdir())
    path = tmp_path / output
    result = CliRunner().invoke(cli, ["optimize", str(SMALL), "-o", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output == (f"ConfigError: {path}: cannot write the output: "
                             f"{reason.format(d=tmp_path)}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_in_unwritable_directory_is_one_line_exit_2() -> None:
    """A directory the process may not write into (/sys, even for root): one line, exit 2."""
    result = CliRunner().invoke(cli, ["optimize", str(SMALL), "-o", "/sys/inferno-out.json"])
    assert result.exit_code == 2
    assert result.output == ("ConfigError: /sys/inferno-out.json: cannot write the output: "
                             "permission denied\n")


def test_bad_input_leaves_existing_output_untouched(tmp_path: Path) -> None:
    """A load error after the output was reserved keeps the old file and leaves no temp file."""
    data = tmp_path / "data"
    shutil.copytree(SMALL, data)
    (data / "system-data.json").unlink()
    (data / "server-data.json").write_text("{")
    out = tmp_path / "o.json"
    out.write_text("old")
    result = CliRunner().invoke(cli, ["optimize", str(data), "-o", str(out)])
    assert result.exit_code == 2
    assert "server-data.json: invalid JSON" in result.output
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "o.json"]


def test_solver_milp_keeps_an_unlimited_system_unlimited() -> None:
    """case-000 sets unlimited: --solver milp gives the unlimited allocation and says so."""
    plain = json.loads(run("optimize", str(CASES / "case-000"), "--json").output)
    result = CliRunner().invoke(cli, ["optimize", str(CASES / "case-000"), "--json",
                                      "--solver", "milp"])
    assert result.exit_code == 0
    milp = json.loads(result.stdout)
    assert milp["allocations"] == plain["allocations"]
    assert milp["message"].startswith("unlimited capacity")
    assert "--solver milp has no effect" in result.stderr
