"""Offline calibration: closed-loop model, recovery from analyzer and twin rows, CSV, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tuner_helpers import TRUE, rel_error

from inferno.analyzer import QueueConfig, analyze
from inferno.cli import cli
from inferno.errors import ConfigError
from inferno.model import PerfParms
from inferno.tuner.benchfile import BenchRow, read_bench_csv
from inferno.tuner.calibrate import BenchModel, calibrate

GOLDEN = PerfParms(alpha_ms=8.0, beta_ms=0.033, gamma_ms=0.000333)
"""docs/design/optimizer-model.md §2.4 golden case: B=1, L=256, m=1024 → pre=16.533249,
τ=8504.378."""
SHAPES = [(1024, 256), (256, 1024)]
UPSTREAM = ("--perf-model", "chunked", "--fit", "alpha,beta,gamma")
"""The rows below come from the upstream chunked analyzer: fit that model's three terms."""
HEADER = ["input_tokens", "output_tokens", "concurrency", "rate_rps", "itl_ms", "ttft_ms",
          "throughput_rps", "max_batch"]


def _row(line: int, **kw: float) -> BenchRow:
    return BenchRow(line=line, **kw)  # type: ignore[arg-type]


def _closed(perf: PerfParms, users: int, max_batch: int) -> tuple[float, float, float]:
    model = BenchModel([_row(2, in_tokens=256, out_tokens=1024, concurrency=users,
                             itl_ms=1.0, ttft_ms=1.0)], max_batch=max_batch)
    ttft, itl, thr = model.predict(np.array([[perf.alpha_ms, perf.beta_ms, perf.gamma_ms]]))
    return float(ttft[0, 0]), float(itl[0, 0]), float(thr[0, 0])


def test_closed_loop_single_user_matches_the_golden_chunked_values() -> None:
    """C = 1: no wait, prefill 16.533249, ITL = (τ − prefill)/m, TTFT = prefill + ITL,
    throughput 1/τ (§2.4 golden values)."""
    ttft, itl, thr = _closed(GOLDEN, 1, 64)
    itl_ref = (8504.378 - 16.533249) / 1024
    assert itl == pytest.approx(itl_ref, rel=1e-6)
    assert ttft == pytest.approx(16.533249 + itl_ref, rel=1e-6)
    assert thr == pytest.approx(1000 / 8504.378, rel=1e-6)


def test_closed_loop_users_beyond_the_batch_wait_by_littles_law() -> None:
    """C = 3 users on N = 1: X = 1/τ(1), T = C/X, so the wait is 2·τ(1) ahead of TTFT."""
    ttft1, itl1, _ = _closed(GOLDEN, 1, 1)
    ttft3, itl3, thr3 = _closed(GOLDEN, 3, 1)
    assert itl3 == pytest.approx(itl1, rel=1e-12)
    assert ttft3 - ttft1 == pytest.approx(2 * 8504.378, rel=1e-6)
    assert thr3 == pytest.approx(1000 / 8504.378, rel=1e-6)


def _analyzer_rows(perf: PerfParms, noise: float = 0.0, seed: int = 0) -> list[BenchRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for big_l, m in SHAPES:
        for rate in (0.1, 0.3, 0.6, 0.9):
            met = analyze(QueueConfig(max_batch=64, max_queue=640, in_tokens=big_l,
                                      out_tokens=m, perf=perf), rate)
            f = 1 + noise * rng.standard_normal(2)
            rows.append(_row(len(rows) + 2, in_tokens=big_l, out_tokens=m, rate_rps=rate,
                             ttft_ms=met.ttft_ms * f[0], itl_ms=met.itl_ms * f[1],
                             max_batch=64))
    return rows


def test_calibration_recovers_analyzer_rows_exactly() -> None:
    """Open-loop rows from the analyzer at the truth: parameters back to 1e-6, no start given."""
    result = calibrate(_analyzer_rows(TRUE))
    assert rel_error(result.params).max() < 1e-6
    assert result.rms_rel_error < 1e-8
    assert result.kappa < 100


def test_confidence_intervals_cover_the_truth_on_noisy_rows() -> None:
    """With 2 % noise each 95 % interval contains the true value and is under ±15 % wide."""
    result = calibrate(_analyzer_rows(TRUE, noise=0.02, seed=3))
    truth = np.array([TRUE.alpha_ms, TRUE.beta_ms, TRUE.gamma_ms])
    low, high = np.array(result.ci_low), np.array(result.ci_high)
    assert np.all((low <= truth) & (truth <= high)), (low, high)
    assert np.all((high - low) / truth < 0.3)
    assert result.dof == 13


def _twin_rows(num_requests: int) -> list[BenchRow]:
    from inferno.io import load_system
    from sim.bench import BenchConfig, run_bench

    system = load_system(Path(__file__).resolve().parents[3] / "sample-data" / "small")
    assert system.perf[("granite_13b", "A100")].perf == TRUE
    rows = []
    for big_l, m in SHAPES:
        for users in (1, 4, 16, 48):
            r = run_bench(system, BenchConfig(model="granite_13b", accelerator="A100",
                                              in_tokens=big_l, out_tokens=m, concurrency=users,
                                              num_requests=num_requests, seed=1))
            rows.append(_row(len(rows) + 2, in_tokens=big_l, out_tokens=m, concurrency=users,
                             ttft_ms=r.ttft_ms.mean, itl_ms=r.itl_ms.mean,
                             throughput_rps=r.throughput_rps, max_batch=r.max_batch))
    return rows


def test_twin_benchmark_calibrates_within_two_percent() -> None:
    """Twin benchmarked at granite_13b/A100 (two token shapes × four concurrencies); the
    twin-refined calibration from a generic start recovers α, β, γ within 2 %."""
    from inferno.commands.calibrate import twin_predictor

    rows = _twin_rows(300)
    predictor = twin_predictor(rows, model="granite_13b", accelerator="A100", system=None,
                               max_batch=64, max_num_tokens=8192, num_requests=300, seed=0)
    result = calibrate(rows, max_batch=64, refine=predictor)
    assert rel_error(result.params).max() < 0.02
    assert result.rms_rel_error < 0.02


# -- CSV ------------------------------------------------------------------------------------


def _write(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _csv_rows(rows: list[BenchRow]) -> list[list[object]]:
    return [[r.in_tokens, r.out_tokens, r.concurrency or "", r.rate_rps or "", r.itl_ms,
             r.ttft_ms, "", r.max_batch or ""] for r in rows]


def test_csv_round_trip_keeps_values_and_line_numbers(tmp_path: Path) -> None:
    """Rows read back equal the written ones, with their file line numbers."""
    rows = _analyzer_rows(TRUE)[:3]
    got = read_bench_csv(_write(tmp_path / "b.csv", _csv_rows(rows)))
    assert [(r.line, r.rate_rps, r.itl_ms, r.max_batch) for r in got] == [
        (r.line, r.rate_rps, r.itl_ms, r.max_batch) for r in rows]


def test_csv_accepts_vllm_bench_column_names(tmp_path: Path) -> None:
    """mean_ttft_ms / mean_itl_ms / max_concurrency / request_throughput are aliases."""
    path = _write(tmp_path / "b.csv", [[1024, 256, 8, 30.0, 90.0, 2.5]],
                  ["input_tokens", "output_tokens", "max_concurrency", "mean_itl_ms",
                   "mean_ttft_ms", "request_throughput"])
    (row,) = read_bench_csv(path)
    assert (row.concurrency, row.itl_ms, row.ttft_ms, row.throughput_rps) == (8, 30.0, 90.0, 2.5)


@pytest.mark.parametrize(("rows", "header", "message"), [
    ([[1024, 256, 4, "", "abc", 90.0, "", ""]], HEADER,
     r"b\.csv:2: column 'itl_ms': must be a number > 0, got 'abc'"),
    ([[1024, 256, 4, "", 30.0, 90.0, "", ""], [1024, 256, 2.5, "", 30.0, 90.0, "", ""]],
     HEADER, r"b\.csv:3: column 'concurrency': must be an integer > 0, got '2.5'"),
    ([[1024, 256, 4, 1.0, 30.0, 90.0, "", ""]], HEADER,
     r"b\.csv:2: give one of columns 'concurrency' and 'rate_rps', got both"),
    ([[1024, 256, "", "", 30.0, 90.0, "", ""]], HEADER,
     r"b\.csv:2: give one of columns 'concurrency' and 'rate_rps', got neither"),
    ([[1024, 256, 4, 30.0]], ["input_tokens", "output_tokens", "concurrency", "itl_ms"],
     r"b\.csv:1: missing column 'ttft_ms'"),
    ([[1024, 256, 4, 30.0]], HEADER, r"b\.csv:2: expected 8 fields, got 4"),
    ([], HEADER, r"b\.csv: no benchmark rows"),
], ids=["not-a-number", "fractional-users", "both-loads", "no-load", "missing-column",
        "short-row", "no-rows"])
def test_bad_csv_is_a_config_error_naming_line_and_column(
        tmp_path: Path, rows: list, header: list[str], message: str) -> None:
    """Each malformed file gives one ConfigError with file:line and the column."""
    with pytest.raises(ConfigError, match=message):
        read_bench_csv(_write(tmp_path / "b.csv", rows, header))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable path is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=r"nope\.csv: cannot read"):
        read_bench_csv(tmp_path / "nope.csv")


# -- CLI ------------------------------------------------------------------------------------


def test_cli_bad_csv_exits_2_with_one_line(tmp_path: Path) -> None:
    """`inferno calibrate` on a bad value prints one ConfigError line and exits 2."""
    path = _write(tmp_path / "b.csv", [[1024, 256, 4, "", -1, 90.0, "", ""]])
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--model", "m",
                                      "--accelerator", "a"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"ConfigError: {path}:2: column 'itl_ms': must be a number > 0, got '-1'"]


def test_cli_merges_into_model_data_keeping_other_entries(tmp_path: Path) -> None:
    """The fitted pair's perfParms are replaced in place; other entries and keys survive."""
    out = tmp_path / "model-data.json"
    out.write_text(json.dumps({"models": [
        {"name": "granite_13b", "acc": "A100", "accCount": 1, "maxBatchSize": 64,
         "perfParms": {"Alpha": 1.0, "beta": 1.0, "gamma": 1.0}},
        {"name": "other", "acc": "A100", "perfParms": {"alpha": 2, "beta": 3, "gamma": 4}}]}))
    path = _write(tmp_path / "b.csv", _csv_rows(_analyzer_rows(TRUE)))
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--model", "granite_13b",
                                      "--accelerator", "A100", "--output", str(out), *UPSTREAM])
    assert result.exit_code == 0, result.output
    assert "alpha = 20.58 ms" in result.output
    doc = json.loads(out.read_text())
    first, other = doc["models"]
    assert first["perfParms"]["Alpha"] == pytest.approx(TRUE.alpha_ms, rel=1e-6)
    assert first["perfParms"]["gamma"] == pytest.approx(TRUE.gamma_ms, rel=1e-6)
    assert first["maxBatchSize"] == 64
    assert other == {"name": "other", "acc": "A100", "perfParms": {"alpha": 2, "beta": 3,
                                                                   "gamma": 4}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "model-data.json"]


def test_cli_appends_a_new_pair_to_the_data_directory_copy(tmp_path: Path) -> None:
    """With --data and a new --output file, the data's model-data is copied and the pair
    appended with accCount 1."""
    data = Path(__file__).resolve().parents[3] / "sample-data" / "small"
    out = tmp_path / "merged.json"
    path = _write(tmp_path / "b.csv", _csv_rows(_analyzer_rows(TRUE)))
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--model", "new_model",
                                      "--accelerator", "A100", "--data", str(data),
                                      "--output", str(out), *UPSTREAM])
    assert result.exit_code == 0, result.output
    models = json.loads(out.read_text())["models"]
    original = json.loads((data / "model-data.json").read_text())["models"]
    assert models[:-1] == original
    assert models[-1]["name"] == "new_model"
    assert models[-1]["accCount"] == 1


def test_cli_holds_what_one_operating_point_cannot_identify(tmp_path: Path) -> None:
    """One operating point repeated gives two equations for three parameters: the fit moves
    along what they identify, holds the rest at the prior and says so (exit 0)."""
    rows = _analyzer_rows(TRUE)[:1] * 3
    path = _write(tmp_path / "b.csv", _csv_rows(rows))
    result = CliRunner().invoke(cli, ["calibrate", str(path), "--model", "m",
                                      "--accelerator", "a", *UPSTREAM])
    assert result.exit_code == 0, result.output
    assert "held at the prior (not identified by these rows)" in result.output
    assert "RMS relative residual 0.00 %" in result.output
