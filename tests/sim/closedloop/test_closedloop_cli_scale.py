"""`inferno sim run` / `sim bench` at scale: request table on disk or off, shard flags."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from closedloop_helpers import SAMPLE_LARGE, SCENARIOS

from inferno.cli import LazyGroup, cli
from inferno.commands.simrun import run

SHORT = ("--set", "duration_s=240", "--set", "drain_s=60", "--no-plots")


def invoke(*args: str):
    group = LazyGroup(name="inferno", commands={"run": run})
    return CliRunner().invoke(group, ["run", str(SCENARIOS / "quickstart.yaml"), *args])


def test_parquet_table_has_a_row_per_request(tmp_path: Path):
    """--requests-format parquet: requests.parquet, one row per request of the summary."""
    result = invoke("--out", str(tmp_path), "--requests-format", "parquet", *SHORT)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(table) == summary["requests"] > 0
    assert int(table["meets_slo"].sum()) == round(summary["slo_attainment"] * len(table))
    assert not (tmp_path / "requests.csv").exists()


def test_no_requests_table_writes_none_and_the_same_summary(tmp_path: Path):
    """--no-requests-table: no table file; summary.json as with the table."""
    with_table = invoke("--out", str(tmp_path / "a"), *SHORT)
    without = invoke("--out", str(tmp_path / "b"), "--no-requests-table", *SHORT)
    assert with_table.exit_code == without.exit_code == 0
    assert not list((tmp_path / "b").glob("requests.*"))
    assert (json.loads((tmp_path / "a" / "summary.json").read_text())
            == json.loads((tmp_path / "b" / "summary.json").read_text()))


def test_shards_and_scheduler_together_are_a_usage_error(tmp_path: Path):
    """--shards N with --dask-scheduler: exit 2, nothing run."""
    result = invoke("--out", str(tmp_path), "--shards", "2", "--dask-scheduler",
                    "tcp://127.0.0.1:1", *SHORT)
    assert result.exit_code == 2
    assert "mutually exclusive" in result.output


def test_bench_streams_its_table_to_csv(tmp_path: Path):
    """sim bench --requests-table FILE.csv: one row per request; a bad suffix exits 2."""
    base = ["sim", "bench", "--data", str(SAMPLE_LARGE), "--model", "granite_13b",
            "--accelerator", "H100", "--input-tokens", "256", "--output-tokens", "32",
            "--rate", "8", "--num-requests", "300", "--json"]
    path = tmp_path / "bench.csv"
    result = CliRunner().invoke(cli, [*base, "--requests-table", str(path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    table = pd.read_csv(path)
    assert len(table) == doc["num_requests"] == 300
    bad = CliRunner().invoke(cli, [*base, "--requests-table", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2
