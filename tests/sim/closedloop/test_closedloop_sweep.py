"""Sweeps: grid expansion, seeds, tidy tables, local processes and a Dask cluster agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from closedloop_helpers import small_scenario

from inferno.errors import ConfigError
from sim.sweep import Job, execute
from sim.sweep_spec import (
    TOTAL,
    expand,
    load_sweep,
    policy_means,
    results_table,
    run_seeds,
    scenario_for,
)


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    """A 2 (period) × 2 (policies) × 2 (seeds) sweep of a 5-minute one-server scenario."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(small_scenario(duration_s=300,
                                                                      drain_s=120)))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "scenario": "base.yaml", "policies": ["inferno", "hpa"], "seeds": 2, "seed": 7,
        "set": {"twin.startup.mean_s": 20}, "grid": {"controller.period_s": [30, 60]}}))
    return path


def test_expansion_is_grid_times_policies_times_seeds(sweep_file: Path) -> None:
    """8 runs in file order: period, then policy, then seed index."""
    spec = load_sweep(sweep_file)
    runs = expand(spec)
    assert [(r.params["controller.period_s"], r.policy, r.seed_index) for r in runs] == [
        (p, pol, i) for p in (30, 60) for pol in ("inferno", "hpa") for i in (0, 1)]
    assert [r.run_id for r in runs] == [f"{i:04d}" for i in range(8)]


def test_seeds_come_from_the_seed_sequence(sweep_file: Path) -> None:
    """Run seeds are SeedSequence(7).spawn(2) states, shared by every point and policy."""
    reference = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(7).spawn(2)]
    assert list(run_seeds(7, 2)) == reference
    runs = expand(load_sweep(sweep_file))
    assert {r.seed for r in runs if r.seed_index == 0} == {reference[0]}
    assert {r.seed for r in runs if r.seed_index == 1} == {reference[1]}


def test_scenario_for_applies_fixed_grid_policy_and_seed(sweep_file: Path) -> None:
    """A run's scenario carries the set: values, its grid point, policy and seed."""
    spec = load_sweep(sweep_file)
    run = expand(spec)[5]
    scenario = scenario_for(spec, run)
    assert scenario.twin.startup.mean_s == 20.0
    assert scenario.controller.period_s == 60.0
    assert (scenario.policy.name, scenario.seed) == ("inferno", run.seed)


@pytest.mark.parametrize(("doc", "message"), [
    ({"scenario": "base.yaml", "grids": {}}, r"grids: unknown key; allowed: name, scenario"),
    ({"scenario": "base.yaml", "policies": ["kpa"]}, r"policies\[0\]: unknown policy 'kpa'"),
    ({"scenario": "base.yaml", "seeds": 0}, r"seeds: expected an integer >= 1"),
    ({"scenario": "base.yaml", "grid": {"seed": 3}}, r"grid\.seed: expected a non-empty list"),
    ({"policies": ["hpa"]}, r"scenario: required"),
], ids=["unknown-key", "policy", "seeds", "grid", "no-scenario"])
def test_bad_sweep_files(tmp_path: Path, doc: dict, message: str) -> None:
    """Sweep-file errors name the file and the key."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def test_a_bad_grid_value_names_the_run(sweep_file: Path) -> None:
    """A grid value the scenario rejects is reported with the run and its grid point."""
    spec = load_sweep(sweep_file)
    from dataclasses import replace

    spec = replace(spec, grid=(("controller.period_s", (-5,)),))
    with pytest.raises(ConfigError, match=r"run 0000 \(controller.period_s=-5\).*period_s"):
        scenario_for(spec, expand(spec)[0])


def test_local_processes_and_dask_give_the_in_process_results(sweep_file: Path) -> None:
    """Two spawned workers and a 2-worker Dask LocalCluster (TCP on loopback) reproduce the
    in-process summaries exactly."""
    from distributed import LocalCluster

    spec = load_sweep(sweep_file)
    runs = expand(spec)[:4]
    jobs = [Job(run_id=r.run_id, scenario=scenario_for(spec, r)) for r in runs]
    inline = [json.dumps(o.summary) for o in execute(jobs, workers=1)]
    pooled = [json.dumps(o.summary) for o in execute(jobs, workers=2)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        remote = [json.dumps(o.summary) for o in execute(jobs, scheduler=cluster.scheduler_address)]
    assert pooled == inline
    assert remote == inline


def test_results_table_is_tidy(sweep_file: Path) -> None:
    """One row per run × server plus a total row per run; policy means per grid point."""
    spec = load_sweep(sweep_file)
    runs = expand(spec)[:2]
    jobs = [Job(run_id=r.run_id, scenario=scenario_for(spec, r)) for r in runs]
    outcomes = execute(jobs, workers=1)
    table = results_table(runs, [o.summary for o in outcomes])
    assert len(table) == 2 * 2
    assert table["server"].tolist() == [TOTAL, "Premium-granite_13b"] * 2
    assert {"run_id", "policy", "seed", "controller.period_s", "slo_attainment", "cost",
            "replica_changes"} <= set(table.columns)
    means = policy_means(table, ["controller.period_s"])
    totals = table[table["server"] == TOTAL]
    assert means["cost"].iloc[0] == pytest.approx(totals["cost"].mean())
