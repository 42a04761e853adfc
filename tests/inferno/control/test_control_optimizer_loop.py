"""The controller with the real optimizer, against the upstream Go reference solutions."""

from __future__ import annotations

from pathlib import Path

from control_fakes import FakeClock, FakeCollector, RecordingActuator, snapshot

from inferno.control.controller import Controller, FileStaticData
from inferno.control.policies import InfernoPolicy
from inferno.control.settings import NO_STABILISATION, ControllerSettings, InfernoSettings
from inferno.io import load_system
from inferno.io.solution import read_solution
from inferno.model.snapshot import ServerObservation


def test_snapshot_reproduces_upstream_allocations(cases_dir: Path) -> None:
    """Observed load in, upstream allocation out (case-000, unlimited: servers independent)."""
    case = cases_dir / "case-000"
    system = load_system(case)
    expected = read_solution(case / "expected-solution.json")
    # servers with a maxBatchSize override cannot be expressed by an observation
    servers = [s for s in system.servers if s.max_batch_size == 0 and s.name in expected]
    assert len(servers) >= 5
    observations = [ServerObservation(
        name=s.name, model=s.model, class_name=s.class_name, max_queue_size=s.max_queue_size,
        min_num_replicas=s.min_num_replicas, arrival_rpm=s.load.arrival_rpm,
        avg_in_tokens=float(s.load.avg_in_tokens), avg_out_tokens=float(s.load.avg_out_tokens))
        for s in servers]
    actuator = RecordingActuator()
    controller = Controller(
        collector=FakeCollector([snapshot(*observations)]), actuator=actuator,
        clock=FakeClock(),
        policy=InfernoPolicy(InfernoSettings(stabilisation=NO_STABILISATION, slo_margin=0.0)),
        settings=ControllerSettings(min_replicas=0), static_data=FileStaticData(case))
    record = controller.step()
    assert record.is_ok, record.reason
    plan = actuator.plans[0].servers
    for server in servers:
        want = expected[server.name]
        got = plan[server.name]
        assert (got.accelerator, got.num_replicas, got.max_batch) == (
            want.accelerator, want.num_replicas, want.max_batch), server.name
