"""`inferno sim bench` realistic clients: length distributions, think time, stagger, arrival
replay, vllm bench keys and the calibration CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from inferno.cli import cli
from inferno.tuner.benchfile import read_bench_csv
from sim import workload


def bench(sample_dir, *args: str):
    base = ["sim", "bench", "--data", str(sample_dir / "large"), "--model", "granite_13b",
            "--accelerator", "H100"]
    return CliRunner().invoke(cli, [*base, *args], catch_exceptions=False)


@pytest.mark.parametrize(("spec", "mean", "low", "high"), [
    ("300", 300, 300, 300), ("uniform:100:200", 150, 100, 200),
    ("lognormal:400:0.5", 400, 1, None), ("exponential:50", 50, 1, None),
], ids=["fixed", "uniform", "lognormal", "exponential"])
def test_token_specs(spec, mean, low, high):
    """Each spec draws integers >= 1 with the stated mean (5 % over 20000 draws) and range."""
    dist = workload.parse_tokens(spec, "--input-tokens")
    x = dist.sample(np.random.default_rng(0), 20000)
    assert x.mean() == pytest.approx(mean, rel=0.05)
    assert x.min() >= low
    if high is not None:
        assert x.max() <= high


def test_empirical_tokens_from_a_file(tmp_path):
    """file:PATH draws only the listed lengths (header line and comments skipped)."""
    path = tmp_path / "lengths.txt"
    path.write_text("tokens\n10\n20 # short\n30,40\n")
    dist = workload.parse_tokens(f"file:{path}", "--output-tokens")
    x = dist.sample(np.random.default_rng(1), 4000)
    assert set(x.tolist()) == {10, 20, 30, 40}
    assert dist.mean_tokens == 25


@pytest.mark.parametrize(("spec", "mean"), [("0.5", 0.5), ("exponential:0.5", 0.5),
                                              ("lognormal:0.5:1.5", 0.5),
                                              ("uniform:0.2:0.8", 0.5)])
def test_think_specs(spec, mean):
    """Think-time specs draw non-negative seconds with the stated mean."""
    x = workload.parse_delay(spec, "--think").sample(np.random.default_rng(2), 40000)
    assert x.min() >= 0
    assert x.mean() == pytest.approx(mean, rel=0.05)


def test_think_time_lowers_the_load_by_littles_law(sample_dir):
    """C users thinking Z on average: throughput × (E2E + Z) = C."""
    res = bench(sample_dir, "--concurrency", "8", "--think", "exponential:1.0", "--stagger",
                "4", "--input-tokens", "uniform:256:768", "--output-tokens", "64",
                "--num-requests", "1500", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    cycle_s = doc["e2e_ms"]["mean"] / 1000.0 + 1.0
    assert doc["throughput_rps"] * cycle_s == pytest.approx(8.0, rel=0.06)
    assert doc["vllm_bench"]["total_input_tokens"] == doc["total_input_tokens"]
    assert doc["total_input_tokens"] / doc["num_requests"] == pytest.approx(512, rel=0.03)


def test_arrival_replay_and_vllm_keys(sample_dir, tmp_path):
    """--arrivals replays the timestamps (shifted to 0): every request is served and the
    vllm bench keys carry the totals."""
    ts = tmp_path / "ts.csv"
    ts.write_text("timestamp\n100.0\n100.5\n101.0\n103.0\n")
    res = bench(sample_dir, "--arrivals", str(ts), "--input-tokens", "256",
                "--output-tokens", "32", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    v = doc["vllm_bench"]
    assert doc["mode"] == "replay"
    assert v["completed"] == 4
    assert v["total_output_tokens"] == 4 * 32
    assert v["request_throughput"] == pytest.approx(4 / v["duration"])
    for key in ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_e2el_ms"):
        assert v[key] > 0
    assert v["mean_itl_ms"] == pytest.approx(doc["tpot_ms"]["mean"], rel=1e-9)


def test_csv_is_what_calibrate_reads(sample_dir, tmp_path):
    """--csv writes one row per sweep point that `inferno calibrate` reads back."""
    out = tmp_path / "bench.csv"
    res = bench(sample_dir, "--concurrency", "2,8", "--sweep", "--input-tokens", "512",
                "--output-tokens", "64", "--num-requests", "100", "--csv", str(out),
                "--plot", str(tmp_path / "p.png"))
    assert res.exit_code == 0, res.output
    rows = read_bench_csv(out)
    assert [r.concurrency for r in rows] == [2, 8]
    assert all(r.in_tokens == 512 and r.itl_ms > 0 for r in rows)


@pytest.mark.parametrize(("args", "message"), [
    (["--concurrency", "2", "--input-tokens", "uniform:9", "--output-tokens", "8"],
     "--input-tokens: bad token spec 'uniform:9'"),
    (["--rate", "1", "--think", "1", "--input-tokens", "8", "--output-tokens", "8"],
     "--think and --stagger apply to --concurrency only"),
    (["--concurrency", "2", "--think", "lognormal:0:1", "--input-tokens", "8",
      "--output-tokens", "8"], "--think: think lognormal: need mean > 0"),
], ids=["token-spec", "think-open-loop", "think-lognormal-zero"])
def test_bad_client_options_exit_2(sample_dir, args, message):
    """Bad client options: exit 2, one line naming the option."""
    res = bench(sample_dir, *args)
    assert res.exit_code == 2
    assert message in res.output
