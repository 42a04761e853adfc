"""`inferno sim run`, `inferno sim replay`, `inferno sweep`: outputs, exit codes, messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from closedloop_helpers import SCENARIOS, small_scenario

from inferno.cli import LazyGroup
from inferno.commands.simrun import ProgressLine, replay, run
from inferno.commands.sweep import sweep
from sim.closedloop.record import RUN_FILES


@pytest.fixture
def cli():
    """A group with the three commands behind the CLI's error handling (exit 2 on ConfigError)."""
    group = LazyGroup(name="inferno", commands={"run": run, "replay": replay, "sweep": sweep})

    def invoke(*args: str):
        return CliRunner().invoke(group, list(args))

    return invoke


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """`sim run` of the 5-minute quickstart into a directory (with plots)."""
    out = tmp_path_factory.mktemp("run")
    group = LazyGroup(name="inferno", commands={"run": run})
    result = CliRunner().invoke(group, [
        "run", str(SCENARIOS / "quickstart.yaml"), "--out", str(out), "--set", "duration_s=300",
        "--set", "drain_s=120"])
    return out, result


def test_run_writes_every_output_and_prints_the_summary(recorded):
    """Requests table, trace, cycles.jsonl, summary.json, scenario, tables and three PNGs."""
    out, result = recorded
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "inferno"
    lines = (out / "cycles.jsonl").read_text().splitlines()
    assert len(lines) == 4  # cycles at 60, 120, 180, 240 s
    assert all(json.loads(line)["status"] == "ok" for line in lines)
    for png in ("load_replicas.png", "latency.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "total (inferno)" in result.output
    assert f"plots: {out}/load_replicas.png" in result.output


def test_replay_check_passes_on_an_unchanged_recording(cli, recorded, tmp_path: Path):
    """`sim replay RUN --check` re-runs the recording: same decisions, exit 0, same summary."""
    out, _ = recorded
    result = cli("replay", str(out), "--check", "--no-plots", "--out", str(tmp_path / "again"))
    assert result.exit_code == 0, result.output
    assert "decisions: identical to the recording" in result.output
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == json.loads(
        (out / "summary.json").read_text())


def test_replay_under_another_policy(cli, recorded, tmp_path: Path):
    """--policy hpa replays the same requests under the HPA."""
    out, _ = recorded
    result = cli("replay", str(out), "--policy", "hpa", "--no-plots", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    original = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "hpa"
    assert summary["requests"] == original["requests"]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "servers.0.load.rate=3"], r"servers[0].load.rate: unknown key"),
    (["--set", "controller.period_s=-1"], "period_s must be > 0"),
    (["--policy", "kpa"], "unknown policy 'kpa'"),
], ids=["key", "value", "policy"])
def test_bad_input_exits_2_with_one_line(cli, tmp_path: Path, args, message):
    """Configuration errors print `ConfigError: ...` naming the key and exit with 2."""
    result = cli("run", str(SCENARIOS / "quickstart.yaml"), "--out", str(tmp_path), *args)
    assert result.exit_code == 2
    assert "ConfigError:" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_sweep_writes_tables_manifest_and_plot(cli, tmp_path: Path):
    """`inferno sweep`: results.csv, cycles.csv, manifest.json with seeds, cost_vs_slo.png."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(small_scenario(duration_s=240,
                                                                      drain_s=60)))
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(
        {"name": "t", "scenario": "base.yaml", "policies": ["inferno", "static"], "seed": 3}))
    result = cli("sweep", str(tmp_path / "sw.yaml"), "--workers", "1", "--out",
                 str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "cost_vs_slo.png", "cycles.csv", "manifest.json", "results.csv"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["policy"] for r in manifest["runs"]] == ["inferno", "static"]
    assert manifest["base_scenario"]["name"] == "small"
    assert "2 runs" in result.output


def test_sweep_rejects_workers_with_a_scheduler(cli, tmp_path: Path):
    """--workers and --dask-scheduler together are a usage error (exit 2)."""
    result = cli("sweep", str(tmp_path / "none.yaml"), "--workers", "2", "--dask-scheduler",
                 "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    assert "mutually exclusive" in result.output


def test_progress_line_draws_only_on_a_terminal():
    """No progress output when stderr is not a TTY (logs, CI, tests)."""
    import io

    stream = io.StringIO()
    line = ProgressLine("x", stream=stream, delay_s=0.0)
    line(50.0, 100.0)
    line.close()
    assert stream.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    line = ProgressLine("run", stream=tty, delay_s=0.0, width=10)
    line(50.0, 100.0)
    line(75.0, 100.0)
    line.close()
    drawn = tty.getvalue().split("\r")
    assert "run [#####.....]  50%  t=50/100 s" in drawn[-2]
    assert "run [#######...]  75%" in drawn[-1]  # click fills whole cells: 7 of 10
    assert "t=75/100 s" in drawn[-1]
    assert tty.getvalue().endswith("\n")


def test_progress_line_waits_for_its_delay():
    """Runs shorter than the delay print nothing, even on a terminal."""
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    line = ProgressLine("run", stream=tty, delay_s=3600.0)
    line(50.0, 100.0)
    line.close()
    assert tty.getvalue() == ""


def test_run_help_lists_every_policy_of_the_table(cli) -> None:
    """`--policy`'s help comes from POLICY_TABLE, the one list of policies."""
    from inferno.control.policies import POLICY_TABLE

    result = cli("run", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"{', '.join(list(POLICY_TABLE)[:-1])} or {list(POLICY_TABLE)[-1]}" in text
