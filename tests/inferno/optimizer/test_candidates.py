"""Candidates: the batched, shared, chunked pipeline equals the scalar reference, row by row."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

import inferno.optimizer.candidates as candidates_module
from inferno.analyzer import QueueConfig, Targets, optimal_concurrency, size
from inferno.io import load_system
from inferno.model import BatchPolicy, Load, PerfModel, Server, StepShape, System
from inferno.optimizer import compute_candidates
from inferno.optimizer.candidates import demand_rps

CASES = Path(__file__).resolve().parents[2] / "data" / "optimizer-cases"
SMALL = Path(__file__).resolve().parents[3] / "sample-data" / "small"


def _system(seed: int, num_servers: int, policy: BatchPolicy) -> System:
    """Servers over the reference-case catalog with repeated shapes (power-of-two tokens,
    few loads), so that many servers share one sizing key."""
    base = load_system(CASES / "case-001")
    rng = np.random.default_rng(seed)
    servers = []
    for i in range(num_servers):
        cls = sorted(base.classes)[int(rng.integers(len(base.classes)))]
        model = sorted(base.classes[cls].targets)[int(rng.integers(2))]
        load = Load(arrival_rpm=float(rng.choice([30.0, 300.0, 2000.0])),
                    avg_in_tokens=int(2 ** rng.integers(7, 12)),
                    avg_out_tokens=int(2 ** rng.integers(4, 11)))
        servers.append(Server(name=f"s{i}", class_name=cls, model=model,
                              max_queue_size=[None, 0, 64][i % 3],
                              max_batch_size=16 if i % 7 == 0 else 0,
                              min_num_replicas=2 if i % 5 == 0 else 0,
                              current=dataclasses.replace(base.servers[0].current, load=load,
                                                          accelerator="", num_replicas=0,
                                                          cost=0.0)))
    settings = dataclasses.replace(base.settings, batch_policy=policy)
    return dataclasses.replace(base, servers=tuple(servers), settings=settings)


def _vllm_percentile_system(seed: int, num_servers: int, policy: BatchPolicy) -> System:
    """`_system` under the vllm model, with p99 TTFT / p90 ITL targets in half the classes
    and the optional perfParms terms of docs/validation.md (front-end cost, stream cost, piecewise
    shape) on every entry."""
    system = _system(seed, num_servers, policy)
    classes = {}
    for k, (name, cls) in enumerate(sorted(system.classes.items())):
        pct = (99.0, 90.0) if k % 2 == 0 else (0.0, 0.0)
        classes[name] = dataclasses.replace(cls, targets={
            m: dataclasses.replace(t, slo_ttft_percentile=pct[0], slo_itl_percentile=pct[1])
            for m, t in cls.targets.items()})
    perf = {key: dataclasses.replace(p, perf=dataclasses.replace(
        p.perf, frontend_ms=8.0, frontend_per_token_ms=0.002, stream_ms=0.01,
        shape=StepShape.PIECEWISE, knee_tokens=512.0, beta_high_ms=1.5 * p.perf.beta_ms))
        for key, p in system.perf.items()}
    settings = dataclasses.replace(system.settings, perf_model=PerfModel.VLLM)
    return dataclasses.replace(system, classes=classes, perf=perf, settings=settings)


@pytest.mark.parametrize(("policy", "make"), [
    (BatchPolicy.SEARCH, _system), (BatchPolicy.SCALED, _system),
    (BatchPolicy.SEARCH, _vllm_percentile_system), (BatchPolicy.SCALED, _vllm_percentile_system)])
def test_candidates_equal_scalar_reference(policy: BatchPolicy, make) -> None:
    """Every candidate's max batch, sustainable rate and replicas equal what the scalar
    `optimal_concurrency` (search) or `size` (fixed N) gives for that server alone; also
    under the vllm model with percentile targets and the optional perf terms."""
    system = make(3, 6, policy)
    servers = {s.name: s for s in system.servers}
    checked = 0
    reference: dict[tuple, tuple[int, float]] = {}  # shared keys are computed once
    for name, cands in compute_candidates(system).items():
        server = servers[name]
        target = system.classes[server.class_name].targets[server.model]
        targets = Targets(ttft_ms=target.slo_ttft_ms, itl_ms=target.slo_itl_ms,
                          tps=target.slo_tps, ttft_percentile=target.slo_ttft_percentile,
                          itl_percentile=target.slo_itl_percentile)
        for c in cands:
            perf = system.perf[(server.model, c.accelerator)]
            queue = server.max_queue_size
            cfg = QueueConfig(max_batch=c.max_batch, max_queue=c.max_queue,
                              in_tokens=server.load.avg_in_tokens,
                              out_tokens=server.load.avg_out_tokens, perf=perf.perf,
                              max_num_tokens=perf.max_num_tokens,
                              perf_model=system.settings.perf_model)
            searched = policy is BatchPolicy.SEARCH and server.max_batch_size == 0
            key = (searched, cfg if not searched else dataclasses.replace(cfg, max_batch=0),
                   targets, queue)
            if key not in reference:
                if searched:
                    ref = optimal_concurrency(
                        dataclasses.replace(cfg, max_batch=perf.max_batch_size or 256),
                        targets, queue_ratio=-10 if queue is None else queue)
                    assert ref.feasible
                    reference[key] = ref.max_batch, ref.throughput_rps
                else:
                    reference[key] = c.max_batch, size(cfg, targets).rate_rps
            max_batch, rate = reference[key]
            assert c.max_batch == max_batch, name
            assert c.max_rate_rps == pytest.approx(rate, rel=1e-12), (name, c.accelerator)
            need = math.ceil(demand_rps(system, server) / rate)
            assert c.num_replicas == max(need, server.min_num_replicas, 1)
            checked += 1
    assert checked > 40


def test_chunking_does_not_change_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizing in chunks of a few rows gives the same candidates as one batch."""
    system = _system(5, 16, BatchPolicy.SEARCH)
    whole = {n: list(cs) for n, cs in compute_candidates(system).items()}
    monkeypatch.setattr(candidates_module, "WHOLE_ROWS", 0)
    monkeypatch.setattr(candidates_module, "CHUNK_ROWS", 40)
    monkeypatch.setattr(candidates_module, "CHUNK_STATES", 3000)
    chunked = {n: list(cs) for n, cs in compute_candidates(system).items()}
    assert whole.keys() == chunked.keys()
    for name, cands in whole.items():
        assert [c[:8] for c in cands] == [c[:8] for c in chunked[name]], name
        assert [c.max_rate_rps for c in cands] == pytest.approx(
            [c.max_rate_rps for c in chunked[name]], rel=1e-12)


def test_candidate_list_is_a_sequence() -> None:
    """Lazy candidate lists index, slice, iterate and compare like lists."""
    system = _system(1, 4, BatchPolicy.SCALED)
    cands = next(cs for cs in compute_candidates(system).values() if len(cs) > 2)
    as_list = list(cands)
    assert cands[0] == as_list[0]
    assert cands[-1] == as_list[-1]
    assert cands[1:3] == as_list[1:3]
    assert cands == as_list
    assert [c.value for c in cands] == sorted(c.value for c in cands)
    with pytest.raises(IndexError):
        cands[len(cands)]


@pytest.mark.parametrize("unlimited", [False, True])
def test_no_candidate_beyond_a_deployments_replicas(unlimited: bool) -> None:
    """A load no Deployment could serve (more than 2**31 - 1 replicas, Kubernetes' int32
    bound) gets no candidate and leaves its server unallocated, instead of a count no
    cluster accepts; the others are allocated as if it were not there."""
    from inferno.optimizer import solve
    from inferno.optimizer.candidates import DEPLOYMENT_MAX_REPLICAS

    base = load_system(SMALL)
    base = dataclasses.replace(base, settings=dataclasses.replace(base.settings,
                                                                  unlimited=unlimited))
    huge = base.servers[0]
    load = dataclasses.replace(huge.current.load, arrival_rpm=1e15)
    system = dataclasses.replace(base, servers=(
        dataclasses.replace(huge, current=dataclasses.replace(huge.current, load=load)),
        *base.servers[1:]))
    cands = compute_candidates(system)
    assert not [c for c in cands[huge.name] if not c.is_empty]
    assert all(c.num_replicas <= DEPLOYMENT_MAX_REPLICAS for cs in cands.values() for c in cs)
    solution = solve(system)
    without = solve(dataclasses.replace(base, servers=base.servers[1:]))
    assert huge.name in solution.unallocated
    assert solution.allocations == without.allocations
