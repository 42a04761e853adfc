"""Determinism: same seed, same tables; two twins in one process never interact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

from inferno.model import System
from sim import workload as wl
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, StartupDelay
from sim.replica import EngineSettings


def build(system: System, seed: int) -> tuple[simpy.Environment, Cluster]:
    """A busy little world: gamma diurnal arrivals, lognormal lengths, P2C, jittered startups,
    a finite KV cache and a rolling accelerator change at t = 60 s."""
    env = simpy.Environment()
    ss_cluster, ss_arrivals, ss_lengths = np.random.SeedSequence(seed).spawn(3)
    cluster = Cluster(env, system, seed=ss_cluster, sample_period_s=2.0)
    dep = cluster.add_deployment(DeploymentSpec(
        name="s", model="granite_13b", accelerator="H100", max_batch=16, num_replicas=3,
        router="power_of_two", engine=EngineSettings(kv_capacity_tokens=12_000),
        startup=StartupDelay(kind="lognormal", mean_s=8.0, spread=0.5)))
    proc = wl.ArrivalProcess(rate=wl.Diurnal(mean_rps=6.0, amplitude=0.7, period_s=60.0),
                             kind="gamma", cv=2.0)
    lengths = wl.Lengths(input=wl.TokenDist(kind="lognormal", mean=600, cv=1.0),
                         output=wl.TokenDist(kind="exponential", mean=150), max_model_len=4096)
    wl.arrivals(env, proc.times(np.random.default_rng(ss_arrivals)),
                lengths.pairs(np.random.default_rng(ss_lengths)), dep.submit,
                wl.RequestFactory(), until_s=120.0)
    env.timeout(60.0).callbacks.append(lambda _ev: dep.set_allocation(accelerator="A100"))
    return env, cluster


def tables(cluster: Cluster) -> tuple[pd.DataFrame, pd.DataFrame]:
    return cluster.requests(), cluster.timeseries()


def test_same_seed_gives_identical_tables(large_system):
    """Two runs with seed 5: per-request and time-series tables are identical."""
    runs = []
    for _ in range(2):
        env, cluster = build(large_system, 5)
        env.run()
        runs.append(tables(cluster))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    assert len(runs[0][0]) > 400
    assert (runs[0][0]["num_preemptions"] > 0).any()


def test_different_seeds_differ(large_system):
    """Seeds 5 and 6 give different arrival times."""
    out = []
    for seed in (5, 6):
        env, cluster = build(large_system, seed)
        env.run(until=30.0)
        out.append(cluster.requests()["arrival_s"].to_numpy())
    n = min(len(out[0]), len(out[1]))
    assert not np.array_equal(out[0][:n], out[1][:n])


@pytest.mark.parametrize("cut_s", [17.3, 61.0])
def test_interleaved_twins_do_not_interact(large_system, cut_s):
    """Advancing twin A, then B, then both to the end equals running each alone."""
    env_a, a = build(large_system, 5)
    env_b, b = build(large_system, 9)
    env_a.run(until=cut_s)
    env_b.run(until=cut_s)
    env_a.run()
    env_b.run()
    for seed, got in ((5, a), (9, b)):
        env, alone = build(large_system, seed)
        env.run()
        pd.testing.assert_frame_equal(tables(got)[0], tables(alone)[0])
        pd.testing.assert_frame_equal(tables(got)[1], tables(alone)[1])
