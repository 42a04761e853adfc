"""Percentile targets end to end: serviceclass-data keys, sizing, the predicted statistic in
the solution and the table, and `inferno analyze --percentile`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from inferno.analyzer import QueueConfig, latency_stats
from inferno.cli import cli
from inferno.commands.optimize import format_table
from inferno.io import load_system, solution_to_json
from inferno.model import PerfModel
from inferno.optimizer import solve

ROOT = Path(__file__).resolve().parents[3]
LARGE = ROOT / "sample-data" / "large"


def _docs(percentile: float | None) -> dict[str, Any]:
    """One llama3_8b server on A100 (sample large perf data) at 1,200 RPM, Premium targets
    TTFT 1000 ms (on ``percentile``, absent = mean) and ITL 80 ms."""
    target: dict[str, Any] = {"model": "llama3_8b", "slo-itl": 80, "slo-ttft": 1000}
    if percentile is not None:
        target["slo-ttft-percentile"] = percentile
    return {
        "accelerator-data.json": {"accelerators": [
            {"name": "A100", "type": "A100", "multiplicity": 1, "cost": 40.0}]},
        "capacity-data.json": {"count": [{"type": "A100", "count": 64}]},
        "model-data.json": {"models": [
            {"name": "llama3_8b", "acc": "A100", "accCount": 1, "maxBatchSize": 32,
             "atTokens": 512,
             "perfParms": {"alpha": 12.93, "beta": 0.059, "gamma": 0.00184375}}]},
        "serviceclass-data.json": {"serviceClasses": [
            {"name": "Premium", "priority": 1, "modelTargets": [target]}]},
        "server-data.json": {"servers": [
            {"name": "p", "class": "Premium", "model": "llama3_8b", "maxBatchSize": 32,
             "currentAlloc": {"load": {"arrivalRate": 1200, "avgInTokens": 512,
                                       "avgOutTokens": 256}}}]},
        "optimizer-data.json": {"optimizer": {}},
    }


def _write(directory: Path, docs: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (directory / name).write_text(json.dumps(doc))
    return directory


@pytest.fixture(scope="module")
def systems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pct")
    return {"mean": _write(base / "mean", _docs(None)),
            "p99": _write(base / "p99", _docs(99))}


def test_percentile_keys_are_read(systems: dict[str, Path]) -> None:
    """slo-ttft-percentile is read into the target; absent keys mean the mean."""
    p99 = load_system(systems["p99"]).classes["Premium"].targets["llama3_8b"]
    mean = load_system(systems["mean"]).classes["Premium"].targets["llama3_8b"]
    assert (p99.slo_ttft_percentile, p99.slo_itl_percentile) == (99.0, 0.0)
    assert (mean.slo_ttft_percentile, mean.slo_itl_percentile) == (0.0, 0.0)
    assert (p99.ttft_statistic(), p99.itl_statistic()) == ("p99", "mean")


def test_p99_target_needs_more_replicas_and_meets_its_statistic(systems) -> None:
    """The same 1 s as a p99 target costs more replicas than as a mean target; the chosen
    allocation's predicted p99 (at the per-replica load) meets it, the mean-sized one's
    does not (it only meets the mean)."""
    out = {}
    for name in ("mean", "p99"):
        system = load_system(systems[name])
        out[name] = solve(system).allocations["p"]
    assert out["p99"].num_replicas > out["mean"].num_replicas
    assert 0 < out["p99"].ttft_stat_ms <= 1000.0
    assert out["mean"].ttft_stat_ms == pytest.approx(out["mean"].ttft_ms)
    assert out["mean"].ttft_ms <= 1000.0
    # the mean-sized allocation, judged by the p99 the analyzer predicts for it
    cfg = QueueConfig(max_batch=32, max_queue=320, in_tokens=512, out_tokens=256,
                      perf=load_system(systems["mean"]).perf[("llama3_8b", "A100")].perf,
                      perf_model=PerfModel.VLLM)
    ttft, _ = latency_stats(cfg, 20.0 / out["mean"].num_replicas)
    assert ttft.p99 > 1000.0
    p99_cfg_ttft, _ = latency_stats(cfg, 20.0 / out["p99"].num_replicas, (99.0,))
    assert out["p99"].ttft_stat_ms == pytest.approx(p99_cfg_ttft.p99, rel=1e-9)


def test_solution_json_and_table_show_the_statistic(systems) -> None:
    """The solution's `slo` block and the table name the targeted statistic and its value."""
    system = load_system(systems["p99"])
    solution = solve(system)
    doc = solution_to_json(solution, system)
    slo = doc["allocations"]["p"]["slo"]
    assert slo["ttft"]["statistic"] == "p99"
    assert slo["ttft"]["targetMs"] == 1000.0
    assert slo["ttft"]["predictedMs"] == solution.allocations["p"].ttft_stat_ms
    assert slo["itl"] == {"statistic": "mean", "predictedMs": solution.allocations["p"].itl_ms,
                          "targetMs": 80.0}
    table = format_table(solution, system)
    assert f"p99 {solution.allocations['p'].ttft_stat_ms:.1f}/1000" in table
    mean_system = load_system(systems["mean"])
    assert "slo" not in solution_to_json(solve(mean_system), mean_system)["allocations"]["p"]


def test_analyze_percentile_flag(systems) -> None:
    """--percentile puts both targets on that percentile, reports it and sizes for it."""
    args = ["analyze", "--data", str(systems["mean"]), "--model", "llama3_8b",
            "--accelerator", "A100", "--rate-rpm", "100", "--in-tokens", "512",
            "--out-tokens", "256", "--class", "Premium", "--json"]
    mean = json.loads(CliRunner().invoke(cli, args).output)
    p99 = json.loads(CliRunner().invoke(cli, [*args, "--percentile", "99"]).output)
    assert set(mean["latency"]["ttftMs"]) == {"mean", "p50", "p90", "p99"}
    assert (mean["targets"]["ttftPercentile"], p99["targets"]["ttftPercentile"]) == (0.0, 99.0)
    assert p99["targets"]["itlPercentile"] == 99.0
    assert p99["maxRateRpm"] < mean["maxRateRpm"]
    odd = json.loads(CliRunner().invoke(cli, [*args, "--percentile", "95"]).output)
    assert odd["latency"]["ttftMs"]["p95"] > odd["latency"]["ttftMs"]["p90"]
    text = CliRunner().invoke(cli, [*args[:-1], "--percentile", "99"]).output
    assert "max rate meeting ITL p99 80 ms / TTFT p99 1000 ms" in text


def test_analyze_percentile_out_of_range_is_a_usage_error(systems) -> None:
    """--percentile 100 is rejected by click: exit 2, one line, no traceback."""
    result = CliRunner().invoke(cli, [
        "analyze", "--data", str(systems["mean"]), "--model", "llama3_8b", "--accelerator",
        "A100", "--rate-rpm", "100", "--in-tokens", "512", "--out-tokens", "256",
        "--percentile", "100"])
    assert result.exit_code == 2
    assert "--percentile" in result.output
    assert "Traceback" not in result.output


def test_sample_large_default_model_is_vllm_and_classic_scaled_stays_upstream() -> None:
    """Absent perfModel reads as vllm; --perf-model classic --batch-policy scaled keeps the
    upstream allocations (the parity tests check them value by value)."""
    assert load_system(LARGE).settings.perf_model is PerfModel.VLLM
    system = load_system(LARGE, overrides={"perf_model": "classic", "batch_policy": "scaled"})
    alloc = solve(system).allocations["Premium-mistral_7b"]
    assert (alloc.accelerator, alloc.num_replicas, alloc.max_batch) == ("MI300X", 1, 153)
