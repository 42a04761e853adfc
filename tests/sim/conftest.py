"""Fixtures of the twin tests: the sample system, small perf parameters, a one-replica runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import simpy

from inferno.io import load_system
from inferno.model import PerfParms, System
from sim.replica import EngineSettings, Replica
from sim.request import Request

SIMPLE = PerfParms(alpha_ms=10.0, beta_ms=0.1, gamma_ms=0.01)
"""Round α/β/γ that make hand-computed timelines readable."""


@pytest.fixture(scope="session")
def large_system(sample_dir: Path) -> System:
    """sample-data/large, loaded once."""
    return load_system(sample_dir / "large")


@pytest.fixture
def simple_perf() -> PerfParms:
    """α = 10 ms, β = 0.1 ms/token, γ = 0.01 ms/KV token."""
    return SIMPLE


RunReplica = Callable[..., tuple[list[Request], Replica]]


@pytest.fixture
def run_replica() -> RunReplica:
    """Run one replica on ``[(arrival_s, in_tokens, out_tokens), ...]`` to completion."""

    def run(arrivals: Sequence[tuple[float, int, int]], *, perf: PerfParms = SIMPLE,
            max_batch: int = 8, **settings: object) -> tuple[list[Request], Replica]:
        env = simpy.Environment()
        rep = Replica(env, name="r", perf=perf, max_batch=max_batch,
                      settings=EngineSettings(**settings))  # type: ignore[arg-type]
        reqs = [Request(i, n_in, n_out) for i, (_, n_in, n_out) in enumerate(arrivals)]

        def source():
            for req, (t, _, _) in zip(reqs, arrivals, strict=True):
                if t > env.now:
                    yield env.timeout(t - env.now)
                req.arrival_s = env.now
                rep.submit(req)

        env.process(source())
        env.run()
        return reqs, rep

    return run


SubmitAt = Callable[[simpy.Environment, Replica, Sequence[Request], Sequence[float]], None]


@pytest.fixture
def submit_at() -> SubmitAt:
    """Start a SimPy process submitting ``reqs[i]`` to a replica at ``times[i]`` the way a
    workload source does: one timeout per arrival, a zero one too (simultaneous arrivals
    keep the event order of the twin's generators; `run_replica` skips those)."""

    def start(env: simpy.Environment, rep: Replica, reqs: Sequence[Request],
              times: Sequence[float]) -> None:
        def source():
            for req, t in zip(reqs, times, strict=True):
                yield env.timeout(t - env.now)
                req.arrival_s = env.now
                rep.submit(req)

        env.process(source())

    return start
