"""Percentile targets in the closed loop: the scenario `classes` section, the cycle log's
window statistic and the summary's target attainment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from closedloop_helpers import small_scenario

from inferno.errors import ConfigError
from sim.closedloop.record import write_run
from sim.closedloop.run import run_scenario
from sim.closedloop.summary import format_summary, window_statistic
from sim.scenario import parse_scenario, scenario_system, scenario_to_dict

P99 = {"Premium": {"targets": {"granite_13b": {"ttft_ms": 1000, "itl_ms": 40,
                                               "ttft_percentile": 99}}}}


def test_classes_override_the_data_files_targets() -> None:
    """A scenario class target replaces the data file's for its model; others are kept."""
    scenario = parse_scenario(small_scenario(classes=P99))
    system = scenario_system(scenario)
    target = system.classes["Premium"].targets["granite_13b"]
    assert (target.slo_ttft_ms, target.slo_itl_ms, target.slo_ttft_percentile) == (
        1000.0, 40.0, 99.0)
    assert system.classes["Premium"].priority == 1  # kept from serviceclass-data.json
    assert system.classes["Premium"].targets["llama3_8b"].slo_ttft_percentile == 0.0
    new = scenario_system(parse_scenario(small_scenario(
        classes={"Gold": {"priority": 2, "targets": {"granite_13b": {"ttft_ms": 500}}}})))
    assert new.classes["Gold"].priority == 2
    assert scenario_to_dict(scenario)["classes"]["Premium"]["targets"]["granite_13b"][
        "ttft_percentile"] == 99.0


@pytest.mark.parametrize(("classes", "message"), [
    ({"Premium": {"targets": {"granite_13b": {"ttft_percentile": 100}}}},
     r"classes\.Premium\.targets\.granite_13b: ttft_percentile must be 0 \(the mean\) or in"),
    ({"Premium": {"targets": {"granite_13b": {"ttft_ms": -1}}}},
     r"classes\.Premium\.targets\.granite_13b: ttft_ms must be >= 0"),
    ({"Premium": {"priority": 0}}, r"classes\.Premium: priority must be in 1\.\.100"),
    ({"Premium": {"targets": {"granite_13b": {"ttft": 1}}}},
     r"classes\.Premium\.targets\.granite_13b\.ttft: unknown key"),
], ids=["percentile-100", "negative-target", "priority-0", "typo"])
def test_bad_class_specs_name_the_key_path(classes: dict, message: str) -> None:
    """Bad values in `classes` are ConfigErrors naming the key path."""
    with pytest.raises(ConfigError, match=message):
        parse_scenario(small_scenario(classes=classes))


@pytest.fixture(scope="module")
def p99_run():
    """Ten minutes of the small scenario with a p99 TTFT target."""
    return run_scenario(parse_scenario(small_scenario(classes=P99)))


def test_cycle_log_carries_the_window_percentile(p99_run) -> None:
    """Each cycle's ttft_stat_ms is the p99 TTFT of the requests whose first token came in
    the collection window before it; ITL (a mean target) carries the collector's mean."""
    checked = 0
    for c in p99_run.cycles:
        (s,) = c.servers
        assert s.slo_ttft_percentile == 99.0
        assert s.slo_itl_percentile == 0.0
        expect = window_statistic(p99_run.requests, s.name, "ttft", 99.0, c.time_s - 60.0,
                                  c.time_s)
        if math.isnan(expect):
            assert s.ttft_stat_ms is None
            continue
        ttft = p99_run.requests
        rows = ttft[(ttft["first_token_s"] >= c.time_s - 60.0)
                    & (ttft["first_token_s"] < c.time_s) & (ttft["status"] == "done")]
        assert s.ttft_stat_ms == pytest.approx(float(np.percentile(rows["ttft_ms"], 99)))
        assert s.itl_stat_ms == s.itl_ms
        assert s.predicted_ttft_stat_ms is not None
        checked += 1
    assert checked >= 5


def test_summary_reports_targets_in_their_statistic(p99_run, tmp_path: Path) -> None:
    """The summary carries each target in its statistic (p99 TTFT, mean ITL), over the run
    and per cycle; summary.json gains `slo` for the percentile-targeted server; the table
    prints "p99 TTFT … ms / 1000"."""
    summary = p99_run.summary.servers["Premium-granite_13b"]
    ttft, itl = summary.targets
    assert (ttft.latency, ttft.statistic, ttft.target_ms) == ("ttft", "p99", 1000.0)
    done = p99_run.requests[p99_run.requests["status"] == "done"]
    assert ttft.value_ms == pytest.approx(float(np.percentile(done["ttft_ms"], 99)))
    assert (itl.statistic, itl.value_ms) == ("mean", pytest.approx(summary.itl_ms.mean))
    assert 0 < ttft.cycles_met <= ttft.cycles <= len(p99_run.cycles)
    paths = write_run(p99_run, tmp_path, plots=False)
    doc = json.loads(paths["summary"].read_text())["servers"]["Premium-granite_13b"]
    assert doc["slo"]["ttft"]["statistic"] == "p99"
    assert doc["slo"]["ttft"]["met"] == (ttft.value_ms <= 1000.0)
    assert "slo" not in json.loads(paths["summary"].read_text())  # per server only
    line = json.loads(paths["cycles"].read_text().splitlines()[2])["servers"][0]
    assert line["slo_ttft_percentile"] == 99.0
    assert f"p99 TTFT {ttft.value_ms:.0f} ms / 1000" in format_summary(p99_run.summary)


def test_mean_targets_keep_the_summary_keys() -> None:
    """A run without percentile targets writes no `slo` key (summary.json keys unchanged)."""
    result = run_scenario(parse_scenario(small_scenario(duration_s=180)))
    summary = result.summary.to_dict()["servers"]["Premium-granite_13b"]
    assert "slo" not in summary
    assert [t.statistic for t in result.summary.servers["Premium-granite_13b"].targets] == [
        "mean", "mean"]
