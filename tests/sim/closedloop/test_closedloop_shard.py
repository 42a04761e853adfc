"""Sharded closed-loop runs: lock-step shards reproduce the single-process run exactly."""

from __future__ import annotations

import pandas as pd
import pytest
from closedloop_helpers import small_scenario

from inferno.errors import ConfigError
from sim.closedloop.run import run_scenario
from sim.scenario import parse_scenario
from sim.shard import split


def two_servers(**changes):
    """Premium granite (p99 TTFT target, two replicas) and Bronze llama3_8b behind random
    routers, 5 minutes, the inferno policy; startup 60 s = the period, so replicas become
    ready exactly at cycle instants (the same-time order a shard must keep)."""
    doc = small_scenario(duration_s=300, drain_s=120)
    doc["twin"] = {"startup": {"kind": "fixed", "mean_s": 60}, "router": "uniform_random"}
    doc["classes"] = {"Premium": {"targets": {"granite_13b": {
        "ttft_ms": 400, "itl_ms": 60, "ttft_percentile": 99}}}}
    doc["accelerators"] = ["H100"]
    doc["servers"] = [
        {**doc["servers"][0], "replicas": 2,
         "load": {"rate_rpm": 600, "in_tokens": 512, "out_tokens": 256}},
        {"name": "Bronze-llama3_8b", "class": "Bronze", "model": "llama3_8b",
         "accelerator": "H100", "replicas": 1,
         "load": {"rate_rpm": 300, "in_tokens": 256, "out_tokens": 128}}]
    doc.update(changes)
    return parse_scenario(doc, file="two-servers")


def comparable(result):
    """Everything a run reports except wall-clock timings."""
    cycles = [c.to_dict() for c in result.cycles]
    for c in cycles:
        c.pop("timing", None)
    return result.summary.to_dict(), cycles


def test_split_balances_nominal_load_in_scenario_order():
    """Largest load first onto the least-loaded shard; no shard is empty; order kept."""
    scenario = two_servers()
    assert split(scenario, 2) == [("Premium-granite_13b",), ("Bronze-llama3_8b",)]
    assert split(scenario, 5) == split(scenario, 2)
    assert split(scenario, 1) == [("Premium-granite_13b", "Bronze-llama3_8b")]


@pytest.mark.slow
def test_two_local_shards_and_dask_reproduce_the_single_process_run():
    """Summary, cycle log (observations, decisions, window p99s), requests, scrapes and
    actuations of 2 spawned shards and of 2 Dask actors equal the in-process run's."""
    from distributed import LocalCluster

    scenario = two_servers()
    single = run_scenario(scenario, requests_table=True)
    sharded = run_scenario(scenario, requests_table=True, shards=2)
    assert single.summary.servers["Premium-granite_13b"].targets[0].cycles > 0
    assert len(single.actuations) > 0
    assert comparable(sharded) == comparable(single)
    pd.testing.assert_frame_equal(sharded.requests, single.requests)
    pd.testing.assert_frame_equal(sharded.timeseries, single.timeseries)
    pd.testing.assert_frame_equal(sharded.actuations, single.actuations)
    streaming = run_scenario(scenario, requests_table=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        remote = run_scenario(scenario, requests_table=False,
                              scheduler=cluster.scheduler_address)
    assert comparable(remote) == comparable(streaming)
    assert remote.requests is None


@pytest.mark.slow
def test_pool_contended_across_shards_is_refused():
    """Two static servers of 2 replicas on a 3-card type: one process would queue a replica,
    shards cannot; the run stops with a ConfigError naming the type."""
    scenario = two_servers(capacity={"H100": 3}, policy={"name": "static"})
    scenario = parse_scenario({**_doc(scenario), "servers": [
        {**s, "replicas": 2} for s in _doc(scenario)["servers"]]}, file="tight")
    with pytest.raises(ConfigError, match="H100 may be contended"):
        run_scenario(scenario, shards=2)


def _doc(scenario):
    from sim.scenario import scenario_to_dict

    return scenario_to_dict(scenario)
