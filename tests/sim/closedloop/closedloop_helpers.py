"""Shared builders of the closed-loop tests: a tiny cluster and small scenario documents."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import simpy

from inferno.model import Accelerator, ModelPerf, PerfParms, System
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, StartupDelay
from sim.replica import EngineSettings
from sim.twin import ClusterTwin, ServerInfo, TwinSettings

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "scenarios"
SAMPLE_LARGE = ROOT / "sample-data" / "large"
A_MS, B_MS, G_MS = 10.0, 0.1, 0.01
"""α, β, γ of the tiny model (ms, ms/token, ms/KV token)."""


def tiny_system() -> System:
    """Model m on accelerator A (one card of type T, cost 60 per hour)."""
    acc = Accelerator(name="A", type="T", multiplicity=1, cost_per_hr=60.0)
    acc2 = Accelerator(name="B", type="U", multiplicity=1, cost_per_hr=30.0)
    perf = PerfParms(alpha_ms=A_MS, beta_ms=B_MS, gamma_ms=G_MS)
    return System(accelerators={"A": acc, "B": acc2},
                  perf={("m", "A"): ModelPerf(model="m", accelerator="A", max_batch_size=8,
                                              perf=perf),
                        ("m", "B"): ModelPerf(model="m", accelerator="B", max_batch_size=8,
                                              perf=perf)})


def tiny_twin(*, replicas: int = 1, startup_s: float = 0.0, capacity: dict[str, int] | None = None,
              max_batch: int = 8, window_s: float = 60.0, signal: str = "offered",
              kv_tokens: int | None = None, system: System | None = None
              ) -> tuple[simpy.Environment, Cluster, ClusterTwin]:
    """One deployment `d` of model m on A behind a ClusterTwin (scrapes every 5 s)."""
    env = simpy.Environment()
    cluster = Cluster(env, system or tiny_system(), capacity=capacity, seed=0,
                      sample_period_s=None)
    cluster.add_deployment(DeploymentSpec(
        name="d", model="m", accelerator="A", max_batch=max_batch, num_replicas=replicas,
        startup=StartupDelay(mean_s=startup_s),
        engine=EngineSettings(kv_capacity_tokens=kv_tokens)))
    twin = ClusterTwin(env, cluster, {"d": ServerInfo(name="d", model="m", class_name="Gold")},
                       TwinSettings(window_s=window_s, scrape_interval_s=5.0,
                                    arrival_signal=signal))
    twin.start()
    return env, cluster, twin


def small_scenario(**changes: Any) -> dict[str, Any]:
    """A 10-minute, one-server scenario document over sample-data/large (no noise)."""
    doc: dict[str, Any] = {
        "name": "small", "seed": 4, "duration_s": 600, "drain_s": 300,
        "data": str(SAMPLE_LARGE), "accelerators": ["H100"],
        "controller": {"period_s": 60},
        "twin": {"startup": {"mean_s": 30}},
        "servers": [{"name": "Premium-granite_13b", "class": "Premium", "model": "granite_13b",
                     "accelerator": "H100", "replicas": 1,
                     "load": {"rate_rpm": 120, "in_tokens": 512, "out_tokens": 256}}],
    }
    doc = copy.deepcopy(doc)
    doc.update(changes)
    return doc
