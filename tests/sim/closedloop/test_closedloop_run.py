"""Closed-loop runs: determinism, replay, summary semantics, workload generation, driver timing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from closedloop_helpers import SCENARIOS, small_scenario

from inferno.errors import ConfigError
from sim.closedloop.record import RUN_FILES, decision_diff, load_run, write_run
from sim.closedloop.run import run_scenario
from sim.closedloop.summary import SUMMARY_KEYS
from sim.closedloop.workload import Workload, synthesize, trace_workload
from sim.scenario import apply_set, load_scenario, parse_scenario

PER_SERVER_KEYS = ["requests", "dropped", "slo_attainment", "ttft_ms", "itl_ms", "cost",
                   "gpu_hours", "replica_changes", "replica_reversals"]


def apply_seed(scenario, seed):
    """The same scenario with another seed."""
    return replace(scenario, seed=seed)


@pytest.fixture(scope="module")
def short_quickstart():
    """The quickstart scenario cut to 10 minutes (the ramp's first half)."""
    return load_scenario(SCENARIOS / "quickstart.yaml", ["duration_s=600", "drain_s=300"])


@pytest.fixture(scope="module")
def quickstart_run(short_quickstart):
    """One inferno run of the short quickstart."""
    return run_scenario(short_quickstart)


def test_same_seed_same_summary(short_quickstart, quickstart_run):
    """Determinism: a second run of the same scenario gives an identical summary.json."""
    again = run_scenario(short_quickstart)
    assert json.dumps(again.summary.to_dict()) == json.dumps(quickstart_run.summary.to_dict())
    assert decision_diff([c.to_dict() for c in quickstart_run.cycles], again.cycles) == []


def test_another_seed_gives_other_requests(short_quickstart, quickstart_run):
    """The seed drives the workload: seed 2 draws a different number of requests."""
    other = run_scenario(apply_seed(short_quickstart, 2))
    assert other.summary.requests != quickstart_run.summary.requests



def test_summary_has_exactly_the_documented_keys(quickstart_run):
    """summary.json keys: policy, requests, dropped, slo_attainment, ttft_ms, itl_ms, cost,
    gpu_hours, replica_changes, replica_reversals, servers (the same per server)."""
    doc = quickstart_run.summary.to_dict()
    assert list(doc) == ["policy", "requests", "dropped", "slo_attainment", "ttft_ms",
                         "itl_ms", "cost", "gpu_hours", "replica_changes",
                         "replica_reversals", "servers"]
    assert list(SUMMARY_KEYS) == list(doc)
    assert sorted(doc["servers"]) == ["Bronze-llama3_8b", "Premium-granite_13b"]
    for server in doc["servers"].values():
        assert list(server) == PER_SERVER_KEYS
        assert list(server["ttft_ms"]) == ["mean", "p50", "p90", "p99"]
    assert doc["requests"] == sum(s["requests"] for s in doc["servers"].values())
    assert doc["cost"] == pytest.approx(sum(s["cost"] for s in doc["servers"].values()))


def test_slo_attainment_counts_requests_meeting_both_class_targets(quickstart_run):
    """Attainment = share of requests with TTFT <= and ITL <= the serviceclass-data.json
    targets (Premium granite_13b 1000/40 ms, Bronze llama3_8b 2000/160 ms)."""
    df = quickstart_run.requests
    targets = {"Premium-granite_13b": (1000.0, 40.0), "Bronze-llama3_8b": (2000.0, 160.0)}
    for name, (ttft_slo, itl_slo) in targets.items():
        mine = df[df["server"] == name]
        ttft_ms = (mine["first_token_s"] - mine["arrival_s"]) * 1000
        itl_ms = (mine["finish_s"] - mine["first_token_s"]) / (mine["out_tokens"] - 1) * 1000
        ok = (mine["status"] == "done") & (ttft_ms <= ttft_slo) & (
            (itl_ms <= itl_slo) | (mine["out_tokens"] <= 1))
        summary = quickstart_run.summary.servers[name]
        assert summary.slo_attainment == pytest.approx(ok.mean(), abs=1e-12)


def test_replay_reproduces_the_run(tmp_path: Path, quickstart_run):
    """A recorded run replays to the same summary and the same decisions, cycle by cycle."""
    paths = write_run(quickstart_run, tmp_path / "run", plots=False)
    assert {p.name for p in paths.values()} <= set(RUN_FILES.values())
    recorded = load_run(tmp_path / "run")
    again = run_scenario(recorded.scenario)
    assert again.summary.to_dict() == recorded.summary
    assert decision_diff(recorded.cycles, again.cycles) == []


def test_controller_runs_every_period_from_one_period_in():
    """Period 60 s over 600 s: cycles at 60, 120, ..., 540 (upstream: first cycle one period
    after start; none once arrivals end)."""
    result = run_scenario(parse_scenario(small_scenario(), base_dir="."), policy="static")
    assert [c.time_s for c in result.cycles] == [60.0 * k for k in range(1, 10)]
    assert all(c.is_ok for c in result.cycles)


def test_static_cost_is_replicas_times_price_times_hours():
    """Two H100 replicas (75 per hour) held for 600 s cost 25 and use 1/3 card-hour."""
    doc = apply_set(small_scenario(), "servers.0.replicas", 2)
    doc = apply_set(doc, "policy.static.replicas", {"Premium-granite_13b": 2})
    result = run_scenario(parse_scenario(doc), policy="static")
    assert result.summary.cost == pytest.approx(2 * 75.0 * 600 / 3600, rel=1e-12)
    assert result.summary.gpu_hours == pytest.approx(2 * 600 / 3600, rel=1e-12)
    assert result.summary.replica_changes == 0


def test_constant_load_draws_poisson_counts():
    """120 rpm for 600 s: 1200 expected arrivals, within 4 standard deviations."""
    scenario = parse_scenario(small_scenario())
    seeds = np.random.SeedSequence(0).spawn(2)
    work = synthesize(scenario, seeds[0], seeds[1])
    assert abs(work.arrival_s.size - 1200) < 4 * math.sqrt(1200)
    assert np.all(np.diff(work.arrival_s) >= 0)
    assert work.arrival_s.max() < 600


def test_profile_ramp_integrates_to_the_expected_count():
    """1 req/s ramped linearly to 3 req/s over 300 s, then held: ∫λ = 600 + 900 = 1500."""
    doc = apply_set(small_scenario(), "servers.0.load.rate_rpm", 60)
    doc["profile"] = {"phases": [{"duration_s": 300, "ratio": 3}, {"duration_s": 0}]}
    counts = [synthesize(parse_scenario(doc), *np.random.SeedSequence(s).spawn(2)
                         ).arrival_s.size for s in range(5)]
    assert abs(np.mean(counts) - 1500) < 4 * math.sqrt(1500 / 5)


def test_token_means_follow_the_spec():
    """Lognormal lengths with mean 512 / 256 tokens: sample means within 3 %."""
    work = synthesize(parse_scenario(small_scenario()), *np.random.SeedSequence(1).spawn(2))
    assert work.in_tokens.mean() == pytest.approx(512, rel=0.03)
    assert work.out_tokens.mean() == pytest.approx(256, rel=0.03)
    assert work.in_tokens.min() >= 1
    assert work.out_tokens.min() >= 1


def test_max_model_len_truncates_by_redrawing():
    """No request exceeds max_model_len = 1024 tokens (in + out)."""
    doc = apply_set(small_scenario(), "servers.0.load.max_model_len", 1024)
    work = synthesize(parse_scenario(doc), *np.random.SeedSequence(1).spawn(2))
    assert int((work.in_tokens + work.out_tokens).max()) <= 1024


def test_future_load_counts_the_trace_exactly():
    """The oracle's view: 3 arrivals in [10, 40) → 6 rpm, mean tokens of those three."""
    work = Workload(servers=("a", "b"), arrival_s=np.array([5.0, 10.0, 20.0, 30.0, 40.0]),
                    in_tokens=np.array([1, 10, 20, 30, 99]),
                    out_tokens=np.array([1, 4, 5, 6, 99]),
                    server_index=np.array([0, 0, 0, 0, 1]))
    future = work.future_load()
    assert future("a", 10.0, 40.0) == pytest.approx((6.0, 20.0, 5.0))
    assert future("b", 0.0, 40.0) == (0.0, 0.0, 0.0)


def test_trace_rows_map_to_servers_and_stop_at_the_duration(tmp_path: Path):
    """Rows without a server go to the default; rows at or after duration_s are dropped."""
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_tokens,output_tokens,server\n1.0,10,5,\n"
                     "2.0,20,6,Premium-granite_13b\n600.0,30,7,\n")
    doc = small_scenario(trace={"path": str(trace)})
    scenario = parse_scenario(doc)
    work = trace_workload(scenario, scenario.trace)
    assert work.arrival_s.tolist() == [1.0, 2.0]
    assert work.in_tokens.tolist() == [10, 20]
    trace.write_text("arrival_s,input_tokens,output_tokens,server\n1.0,10,5,nobody\n")
    with pytest.raises(ConfigError, match="server 'nobody' of a row"):
        trace_workload(scenario, scenario.trace)


def test_load_run_rejects_a_directory_without_a_recording(tmp_path: Path):
    """replay needs scenario.yaml, trace.csv and cycles.jsonl."""
    with pytest.raises(ConfigError, match="not a run directory"):
        load_run(tmp_path)


def test_inferno_tracks_a_ramp_up_and_back_down():
    """Headline claim 1 (docs/design/control-loop.md §7): proportional scale-out on a 3x ramp and
    scale-in after it, never below the floor."""
    doc = small_scenario(duration_s=1500)
    doc["profile"] = {"phases": [{"duration_s": 300, "ratio": 1}, {"duration_s": 300, "ratio": 3},
                                 {"duration_s": 300, "ratio": 1},
                                 {"duration_s": 300, "ratio": 1 / 3}, {"duration_s": 0}]}
    doc = apply_set(doc, "servers.0.load.rate_rpm", 150)
    doc = apply_set(doc, "policy.inferno.keep_accelerator", True)
    result = run_scenario(parse_scenario(doc))
    replicas = {c.time_s: c.servers[0].num_replicas for c in result.cycles}
    start, peak, end = replicas[240.0], max(replicas[t] for t in (840.0, 900.0)), replicas[1440.0]
    assert peak >= 2 * start
    assert end < peak
    assert min(replicas.values()) >= 1


def test_emulator_steps_hold_the_rate_between_steps():
    """alpha 0, theta 1, interval 60 s: the rate is the phase multiplier at each step start,
    held for the step: 60 s × (1, 1.4, 1.8, 2.2, 2.6, 3 × 5) req/s = 1440 arrivals expected."""
    doc = apply_set(small_scenario(), "servers.0.load.rate_rpm", 60)
    doc["profile"] = {"phases": [{"duration_s": 300, "ratio": 3}, {"duration_s": 0}]}
    doc["emulator"] = {"interval_s": 60, "alpha": 0.0, "theta": 1.0}
    counts = [synthesize(parse_scenario(doc), *np.random.SeedSequence(s).spawn(2)
                         ).arrival_s.size for s in range(5)]
    assert abs(np.mean(counts) - 1440) < 4 * math.sqrt(1440 / 5)


def test_slo_scale_tightens_the_controllers_targets_only():
    """slo_scale 0.5: cycles carry half the Premium targets (20 / 500 ms); the requests table
    keeps the true ones (40 / 1000 ms, serviceclass-data.json)."""
    doc = apply_set(small_scenario(duration_s=180), "controller.slo_scale", 0.5)
    result = run_scenario(parse_scenario(doc))
    record = result.cycles[0].servers[0]
    assert (record.slo_itl_ms, record.slo_ttft_ms) == (20.0, 500.0)
    assert set(result.requests["slo_itl_ms"]) == {40.0}
    assert set(result.requests["slo_ttft_ms"]) == {1000.0}
