"""A mixed twin workload whose per-request stamps are pinned in tests/golden/engine-mixed/.

Two deployments in one cluster: finite KV caches (recompute preemptions), a waiting-queue bound
(rejections), chunked prefills of long prompts, lognormal lengths, a ramping Poisson rate,
gamma arrivals, closed-loop users, both prefill accountings, three routers, a scale-down that
drains and a scale-up with startup delay. `benchmarks/record_engine_golden.py` records it;
`tests/sim/test_sim_engine_golden.py` replays it against the recording.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from inferno.model import System
from sim import workload as wl
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, StartupDelay
from sim.replica import EngineSettings

STAMPS = ("id", "server", "replica", "status", "in_tokens", "out_tokens", "arrival_s",
          "first_scheduled_s", "first_token_s", "finish_s", "num_preemptions")


def run_mixed(system: System, seed: int = 11, duration_s: float = 120.0) -> pd.DataFrame:
    """Every request of the mixed run (sim.metrics columns), sorted by id."""
    env = simpy.Environment()
    ss_cluster, ss_a, ss_b, ss_c = np.random.SeedSequence(seed).spawn(4)
    cluster = Cluster(env, system, seed=ss_cluster, sample_period_s=None)
    kv = cluster.add_deployment(DeploymentSpec(
        name="kv", model="granite_13b", accelerator="H100", max_batch=16, num_replicas=3,
        router="round_robin", startup=StartupDelay(kind="uniform", mean_s=5.0, spread=2.0),
        engine=EngineSettings(kv_capacity_tokens=6_000, max_waiting=12)))
    lo = cluster.add_deployment(DeploymentSpec(
        name="lo", model="granite_13b", accelerator="H100", max_batch=8, num_replicas=2,
        router="least_outstanding",
        engine=EngineSettings(kv_capacity_tokens=20_000, prefill_emits_token=False,
                              max_num_batched_tokens=1024)))
    factory = wl.RequestFactory()
    rng_a = np.random.default_rng(ss_a)
    lengths_a = wl.Lengths(input=wl.TokenDist(kind="lognormal", mean=700, cv=1.2),
                           output=wl.TokenDist(kind="lognormal", mean=150, cv=1.0),
                           max_model_len=5_000).pairs(rng_a)
    wl.arrivals(env, wl.ArrivalProcess(rate=wl.ramp(4.0, 14.0, 0.0, duration_s)).times(rng_a),
                lengths_a, kv.submit, factory, until_s=duration_s)
    rng_b = np.random.default_rng(ss_b)
    lengths_b = wl.Lengths(input=wl.TokenDist(kind="uniform", low=16, high=2_500),
                           output=wl.TokenDist(kind="exponential", mean=60)).pairs(rng_b)
    wl.arrivals(env, wl.ArrivalProcess(rate=wl.constant(3.0), kind="gamma", cv=2.0).times(
        rng_b), lengths_b, lo.submit, factory, until_s=duration_s)
    rng_c = np.random.default_rng(ss_c)
    wl.ClosedLoop(env=env, num_users=3, lengths=wl.Lengths(
        input=wl.fixed(300), output=wl.TokenDist(kind="uniform", low=1, high=90)).pairs(rng_c),
        submit=lo.submit, factory=factory, think_s=0.5, until_s=duration_s).start()

    def operate():
        yield env.timeout(duration_s / 3)
        kv.set_replicas(2)
        yield env.timeout(duration_s / 3)
        kv.set_replicas(4)

    env.process(operate())
    env.run()
    return cluster.requests()[list(STAMPS)].sort_values("id").reset_index(drop=True)
