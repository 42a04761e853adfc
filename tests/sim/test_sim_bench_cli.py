"""`inferno sim bench`: table, JSON keys, sweep with a PNG, bad input → exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from inferno.cli import cli

STATS = {"mean", "p50", "p90", "p99"}


@pytest.fixture
def bench(sample_dir):
    """Invoke `inferno sim bench --data sample-data/large ...` with extra arguments."""

    def run(*args: str):
        base = ["sim", "bench", "--data", str(sample_dir / "large"), "--model", "granite_13b",
                "--accelerator", "H100", "--input-tokens", "512", "--output-tokens", "64"]
        return CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)

    return run


def test_concurrency_json_has_the_documented_keys(bench):
    """--json: ttft/itl/e2e {mean,p50,p90,p99}, throughput, tokens/s, count, mean_running."""
    res = bench("--concurrency", "4", "--num-requests", "200", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        assert set(doc[key]) == STATS
    assert doc["num_requests"] == 200
    assert doc["mean_running"] == pytest.approx(4.0, rel=0.05)
    assert doc["output_tokens_per_s"] == pytest.approx(64 * doc["throughput_rps"])
    assert "analyzer" not in doc


def test_closed_loop_throughput_obeys_littles_law(bench):
    """Closed loop with C users: throughput × mean E2E = C (every user always has a request)."""
    res = bench("--concurrency", "8", "--num-requests", "400", "--json")
    doc = json.loads(res.output)
    in_flight = doc["throughput_rps"] * doc["e2e_ms"]["mean"] / 1000.0
    assert in_flight == pytest.approx(8.0, rel=0.03)


def test_table_output_lists_the_point(bench):
    """Without --json: a header and one row for the load."""
    res = bench("--concurrency", "2", "--num-requests", "50", "--replicas", "2")
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:3] == ["concurrency", "reqs", "thru_rps"]
    assert lines[1].split()[:2] == ["2", "50"]


def test_sweep_writes_one_row_per_value_and_a_png(bench, tmp_path):
    """--sweep over three concurrencies: three rows and a PNG file."""
    png = tmp_path / "sweep.png"
    res = bench("--concurrency", "1,4,16", "--sweep", "--num-requests", "100",
                "--plot", str(png), "--json")
    assert res.exit_code == 0, res.output
    docs = json.loads(res.output)
    assert [d["load"] for d in docs] == [1, 4, 16]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    itl = [d["itl_ms"]["mean"] for d in docs]
    assert itl == sorted(itl)  # more concurrency, longer iterations


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "nope", "--concurrency", "2"], "unknown model 'nope'"),
    (["--accelerator", "TPU", "--concurrency", "2"], "unknown accelerator 'TPU'"),
    (["--concurrency", "2", "--rate", "1"], "exactly one of --concurrency or --rate"),
    (["--concurrency", "1,2"], "need --sweep"),
    (["--rate", "-3"], "--rate: expected a finite number > 0"),
    (["--concurrency", "2", "--num-requests", "5", "--duration", "3"], "mutually exclusive"),
], ids=["model", "accelerator", "both-modes", "list-without-sweep", "negative-rate",
        "count-and-duration"])
def test_bad_input_exits_2_with_one_line(bench, args, message):
    """Bad input: exit code 2 and a one-line message, no traceback."""
    res = bench(*args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_bad_data_directory_exits_2(sample_dir, tmp_path):
    """A data directory without the upstream files is a config error (exit 2)."""
    res = CliRunner().invoke(cli, ["sim", "bench", "--data", str(tmp_path / "none"),
                                   "--model", "m", "--accelerator", "a", "--concurrency", "1",
                                   "--input-tokens", "1", "--output-tokens", "1"])
    assert res.exit_code == 2
    assert "no such file" in res.output


def test_rate_mode_carries_the_analyzer_prediction(bench):
    """Rate mode: `analyzer` holds the analyzer's metrics at the same point, TTFT and ITL in
    the measurement's shape (mean, p50, p90, p99); ITL agrees."""
    res = bench("--rate", "2", "--num-requests", "600", "--replicas", "2", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    an = doc["analyzer"]
    assert set(an) >= {"ttft_ms", "itl_ms", "e2e_ms", "throughput_rps", "mean_running"}
    for key in ("ttft_ms", "itl_ms"):
        assert set(an[key]) == set(doc[key]) == {"mean", "p50", "p90", "p99"}
        stats = an[key]
        assert stats["p50"] <= stats["p90"] <= stats["p99"]
    assert an["throughput_rps"] == pytest.approx(2.0, rel=1e-3)  # 1 req/s per replica, no loss
    assert doc["itl_ms"]["mean"] == pytest.approx(an["itl_ms"]["mean"], rel=0.10)


def test_missing_perf_parms_exits_2_naming_the_file(sample_dir, tmp_path):
    """A model-data entry with all-zero perfParms: exit 2 naming model-data.json."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(sample_dir / "large", data)
    doc = json.loads((data / "model-data.json").read_text())
    for entry in doc["models"]:
        if (entry["name"], entry["acc"]) == ("granite_13b", "H100"):
            entry["perfParms"] = {"alpha": 0, "beta": 0, "gamma": 0}
    (data / "model-data.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["sim", "bench", "--data", str(data), "--model",
                                   "granite_13b", "--accelerator", "H100", "--concurrency", "1",
                                   "--input-tokens", "8", "--output-tokens", "8"])
    assert res.exit_code == 2
    assert "model-data.json: model 'granite_13b' on 'H100': perfParms missing" in res.output
