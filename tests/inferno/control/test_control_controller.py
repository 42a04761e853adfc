"""Controller safety rules and cycle records, driven by fakes (no SimPy, no Kubernetes)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from control_fakes import (
    FakeClock,
    FakeCollector,
    FakeSolver,
    RecordingActuator,
    allocation,
    obs,
    snapshot,
    solution,
    static_system,
)

from inferno.control.controller import (
    Controller,
    ControllerBusy,
    FileStaticData,
)
from inferno.control.cyclelog import CycleStatus
from inferno.control.demand import LoadEstimate
from inferno.control.observation import estimate_offered_rpm
from inferno.control.policies import InfernoPolicy, OraclePolicy, StaticPolicy
from inferno.control.policies.solve_input import observed_load
from inferno.control.settings import (
    NO_STABILISATION,
    ControllerSettings,
    InfernoSettings,
    StabilisationSettings,
    StaticSettings,
)
from inferno.errors import ActuateError, CollectError, ConfigError
from inferno.model import SaturationPolicy, System
from inferno.model.snapshot import ClusterSnapshot
from inferno.optimizer.result import Status

NO_DAMPING = InfernoSettings(stabilisation=NO_STABILISATION, scale_down_margin=0.0)
PLAIN = InfernoSettings(scale_down_margin=0.0,
                        stabilisation=StabilisationSettings(scale_down_window_s=120.0))
"""The controller's rules in isolation: no load margin (one solve per decision)."""


def make(collector: FakeCollector, policy: object, *, static: System | None = None,
         settings: ControllerSettings | None = None, clock: FakeClock | None = None,
         **kw: object) -> tuple[Controller, RecordingActuator]:
    actuator = RecordingActuator()
    controller = Controller(collector=collector, actuator=actuator, clock=clock or FakeClock(),
                            policy=policy,  # type: ignore[arg-type]
                            settings=settings, static_data=lambda: static or static_system(),
                            **kw)  # type: ignore[arg-type]
    return controller, actuator


def test_collect_error_skips_cycle() -> None:
    """A CollectError skips the cycle: nothing actuated, the record says why."""
    solver = FakeSolver(lambda s: solution({}))
    controller, actuator = make(FakeCollector([CollectError("prometheus down")]),
                                InfernoPolicy(solve=solver))
    record = controller.step()
    assert (record.status, record.stage) == (CycleStatus.SKIPPED, "collect")
    assert "prometheus down" in record.reason
    assert actuator.plans == []
    assert solver.systems == []


def test_static_data_error_skips_cycle_before_collecting() -> None:
    """Unreadable static data skips the cycle before any collect or actuation."""
    def broken() -> System:
        raise ConfigError("capacity-data.json: count[0].count: must be >= 0, got -1")

    collector = FakeCollector([snapshot(obs("a"))])
    actuator = RecordingActuator()
    controller = Controller(collector=collector, actuator=actuator, clock=FakeClock(),
                            policy=StaticPolicy(), static_data=broken)
    record = controller.step()
    assert (record.status, record.stage) == (CycleStatus.SKIPPED, "static")
    assert "count[0].count" in record.reason
    assert collector.calls == 0
    assert actuator.plans == []


def test_empty_snapshot_skips_cycle() -> None:
    """No managed server observed: skip (upstream "collector returned empty data")."""
    controller, actuator = make(FakeCollector([snapshot(skipped={"x": "bad label"})]),
                                StaticPolicy())
    record = controller.step()
    assert record.status is CycleStatus.SKIPPED
    assert record.skipped_servers == {"x": "bad label"}
    assert actuator.plans == []


def test_server_missing_from_solution_keeps_its_allocation() -> None:
    """A server absent from the solution keeps accelerator, replicas and max batch."""
    solver = FakeSolver(lambda s: solution({"a": allocation("H100", 4, 48)}))
    controller, actuator = make(
        FakeCollector([snapshot(obs("a"), obs("b", desired_replicas=3, ready_replicas=3))]),
        InfernoPolicy(NO_DAMPING, solve=solver))
    record = controller.step()
    plan = actuator.plans[0].servers
    assert (plan["a"].accelerator, plan["a"].num_replicas, plan["a"].max_batch) == (
        "H100", 4, 48)
    assert (plan["b"].accelerator, plan["b"].num_replicas, plan["b"].max_batch) == (
        "A100", 3, 16)
    b = {r.name: r for r in record.servers}["b"]
    assert b.recommended_replicas is None
    assert b.note == "kept: missing from solution"


def test_missing_metrics_never_scale_to_zero_and_reserve_capacity() -> None:
    """No rate or no tokens: left out of the solve, kept as is, its cards off the capacity."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 1)}))
    controller, actuator = make(
        FakeCollector([snapshot(obs("a"),
                                obs("b", arrival_rpm=None, desired_replicas=3, ready_replicas=3),
                                obs("c", avg_out_tokens=0.0, accelerator="H100"))]),
        InfernoPolicy(NO_DAMPING, solve=solver))
    record = controller.step()
    assert [s.name for s in solver.systems[0].servers] == ["a"]
    # b: 3 replicas x 2 A100 per replica = 6 cards; c: 2 replicas x 1 H100
    assert solver.systems[0].capacity == {"A100": 16 - 6, "H100": 8 - 2}
    plan = actuator.plans[0].servers
    assert (plan["b"].num_replicas, plan["c"].num_replicas) == (3, 2)
    notes = {r.name: r.note for r in record.servers}
    assert notes["b"] == "kept: no arrival-rate metrics"
    assert notes["c"] == "kept: no token metrics"


def test_observed_load_without_memory_uses_the_window() -> None:
    """Without a demand memory the window's own token means are the load (not a refusal)."""
    load = observed_load(obs("a"))
    assert isinstance(load, LoadEstimate)
    assert (load.arrival_rpm, load.avg_in_tokens, load.avg_out_tokens) == (120.0, 100.0, 200.0)
    assert observed_load(obs("c", avg_out_tokens=0.0)) == "no token metrics"


def test_solver_input_built_from_observation() -> None:
    """The optimizer sees the observed load, current allocation and its cost."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2)}))
    controller, _ = make(FakeCollector([snapshot(obs("a", avg_in_tokens=99.6,
                                                     min_num_replicas=1, max_queue_size=7))]),
                         InfernoPolicy(InfernoSettings(max_batch=64), solve=solver))
    controller.step()
    server = solver.systems[0].servers[0]
    assert (server.model, server.class_name, server.min_num_replicas, server.max_queue_size,
            server.max_batch_size) == ("m1", "Premium", 1, 7, 64)
    current = server.current
    assert (current.accelerator, current.num_replicas, current.max_batch) == ("A100", 2, 16)
    assert current.cost == 2 * 2 * 40.0  # replicas x A100 per replica x cost per A100
    assert (current.load.arrival_rpm, current.load.avg_in_tokens,
            current.load.avg_out_tokens) == (120.0, 100, 200)


def test_infeasible_falls_back_to_best_effort() -> None:
    """INFEASIBLE under saturation policy None: re-solve with PriorityExhaustive; the server it
    leaves out goes to its floor at once (its cards go to the priority), and a last solve
    gives the rest the capacity net of that floor."""
    def answer(system: System) -> object:
        if system.settings.saturation_policy is SaturationPolicy.NONE:
            return solution({}, status=Status.INFEASIBLE, unallocated=("a", "b"))
        if len(system.servers) == 2:
            return solution({"a": allocation("A100", 3)}, status=Status.PARTIAL,
                            unallocated=("b",), best_effort=("a",))
        return solution({"a": allocation("A100", 3)}, status=Status.PARTIAL,
                        best_effort=("a",))

    solver = FakeSolver(answer)  # type: ignore[arg-type]
    controller, actuator = make(FakeCollector([snapshot(obs("a"), obs("b"))]),
                                InfernoPolicy(NO_DAMPING, solve=solver))
    record = controller.step()
    assert [s.settings.saturation_policy for s in solver.systems] == [
        SaturationPolicy.NONE, SaturationPolicy.PRIORITY_EXHAUSTIVE,
        SaturationPolicy.PRIORITY_EXHAUSTIVE]
    assert [s.name for s in solver.systems[2].servers] == ["a"]
    # b's floor (1 replica of 2 A100 cards) is off the 16 A100 cards of the last solve
    assert solver.systems[2].capacity["A100"] == 14
    plan = actuator.plans[0].servers
    assert (plan["a"].num_replicas, plan["b"].num_replicas) == (3, 1)
    notes = {r.name: r.note for r in record.servers}
    assert notes == {"a": "best effort", "b": "unallocated: to its floor"}
    assert record.status is CycleStatus.OK
    assert record.solve_status == "partial"
    assert record.timing.solve_ms == pytest.approx(6.0)


def test_release_to_a_higher_priority_skips_the_scale_down_window() -> None:
    """A best-effort cut under scarce capacity is applied at once despite the 120 s window."""
    answers = iter([4, 1])
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", next(answers), 16)},
                                           status=Status.PARTIAL, best_effort=("a",)))
    clock = FakeClock()
    controller, actuator = make(FakeCollector([snapshot(obs("a", desired_replicas=4,
                                                            ready_replicas=4))]),
                                InfernoPolicy(PLAIN, solve=solver), clock=clock)
    controller.step()
    clock.advance(60.0)
    record = controller.step()
    assert actuator.plans[-1].servers["a"].num_replicas == 1
    assert record.servers[0].note == "best effort"


def test_infeasible_without_fallback_keeps_every_server() -> None:
    """With the fallback disabled an infeasible solve changes nothing and says so."""
    solver = FakeSolver(lambda s: solution({}, status=Status.INFEASIBLE, unallocated=("a",)))
    settings = InfernoSettings(fallback_saturation_policy=SaturationPolicy.NONE,
                               stabilisation=NO_STABILISATION)
    controller, actuator = make(FakeCollector([snapshot(obs("a"))]),
                                InfernoPolicy(settings, solve=solver))
    record = controller.step()
    assert len(solver.systems) == 1
    assert actuator.plans[0].servers["a"].num_replicas == 2
    assert record.solve_status == "infeasible"


def test_zero_allocation_is_floored_by_min_replicas() -> None:
    """A zero-load allocation of 0 replicas is raised to min_replicas (1 by default)."""
    zero = solution({"a": allocation("", 0, 0)})
    controller, actuator = make(FakeCollector([snapshot(obs("a", arrival_rpm=0.0))]),
                                InfernoPolicy(NO_DAMPING, solve=FakeSolver(lambda s: zero)))
    record = controller.step()
    plan = actuator.plans[0].servers["a"]
    assert (plan.num_replicas, plan.accelerator, plan.max_batch) == (1, "A100", 16)
    assert record.servers[0].note == "floored to 1"
    to_zero, actuator0 = make(FakeCollector([snapshot(obs("a", arrival_rpm=0.0))]),
                              InfernoPolicy(NO_DAMPING, solve=FakeSolver(lambda s: zero)),
                              settings=ControllerSettings(min_replicas=0))
    to_zero.step()
    assert actuator0.plans[0].servers["a"].num_replicas == 0


def test_restarted_controller_does_not_scale_down_at_once() -> None:
    """The first sighting seeds the window with the current replicas (HPA), so 4 -> 1 waits."""
    clock = FakeClock()
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 1, 16)}))
    controller, actuator = make(FakeCollector([snapshot(obs("a", desired_replicas=4,
                                                            ready_replicas=4))]),
                                InfernoPolicy(PLAIN, solve=solver), clock=clock)
    replicas = []
    for _ in range(3):
        controller.step()
        replicas.append(actuator.plans[-1].servers["a"].num_replicas)
        clock.advance(60.0)
    # window 120 s: the seed 4 at t=0 counts at t=0 and t=60 (window (-60, 60]), not at 120
    assert replicas == [4, 4, 1]


def test_scale_down_window_uses_previous_recommendations() -> None:
    """A dip after higher recommendations is held until they leave the 120 s window."""
    clock = FakeClock()
    answers = iter([4, 1, 1, 1])
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", next(answers), 16)}))
    controller, actuator = make(FakeCollector([snapshot(obs("a", desired_replicas=4,
                                                            ready_replicas=4))]),
                                InfernoPolicy(PLAIN, solve=solver), clock=clock)
    replicas = []
    for _ in range(4):
        record = controller.step()
        replicas.append(actuator.plans[-1].servers["a"].num_replicas)
        clock.advance(60.0)
    # t=0 rec 4; t=60 rec 1, window (-60, 60] holds 4; t=120 window (0, 120] holds 1, 1.
    assert replicas == [4, 4, 1, 1]
    assert record.servers[0].recommended_replicas == 1


def test_accelerator_migration_bypasses_window() -> None:
    """A move to another accelerator is not damped by recommendations for the old one."""
    clock = FakeClock()
    answers = iter([allocation("A100", 4, 16), allocation("H100", 1, 40)])
    solver = FakeSolver(lambda s: solution({"a": next(answers)}))
    controller, actuator = make(FakeCollector([snapshot(obs("a", desired_replicas=4,
                                                            ready_replicas=4))]),
                                InfernoPolicy(solve=solver), clock=clock)
    controller.step()
    clock.advance(60.0)
    controller.step()
    plan = actuator.plans[-1].servers["a"]
    assert (plan.accelerator, plan.num_replicas, plan.max_batch) == ("H100", 1, 40)


def test_step_limits_apply_per_cycle() -> None:
    """max_step_up 2 turns a 2 -> 9 recommendation into 4."""
    settings = InfernoSettings(stabilisation=StabilisationSettings(
        scale_down_window_s=0.0, max_step_up=2))
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 9, 16)}))
    controller, actuator = make(FakeCollector([snapshot(obs("a"))]),
                                InfernoPolicy(settings, solve=solver))
    record = controller.step()
    assert actuator.plans[0].servers["a"].num_replicas == 4
    assert record.servers[0].note == "stabilised 9 -> 4"


def test_record_has_costs_slos_predictions_and_timings() -> None:
    """The record carries observed values, SLOs, decided allocation, cost and timings."""
    solver = FakeSolver(lambda s: solution({"a": allocation("H100", 3, 32)}))
    controller, _ = make(FakeCollector([snapshot(obs("a"))]),
                         InfernoPolicy(NO_DAMPING, solve=solver))
    record = controller.step()
    a = record.servers[0]
    assert (a.arrival_rpm, a.itl_ms, a.current_replicas, a.current_accelerator) == (
        120.0, 20.0, 2, "A100")
    assert (a.slo_itl_ms, a.slo_ttft_ms) == (30.0, 200.0)
    assert (a.accelerator, a.num_replicas, a.max_batch) == ("H100", 3, 32)
    assert a.cost_per_hr == 3 * 75.0
    assert record.total_cost_per_hr == 3 * 75.0
    assert (a.predicted_itl_ms, a.predicted_ttft_ms) == (25.0, 120.0)
    assert record.timing.total_ms >= record.timing.decide_ms >= 0.0
    assert (record.cycle, record.policy, record.status) == (1, "inferno", CycleStatus.OK)


def test_decide_error_skips_cycle() -> None:
    """A ConfigError raised while deciding skips the cycle and keeps every server."""
    def answer(system: System) -> object:
        raise ConfigError("model-data.json: models[0].perfParms: missing")

    controller, actuator = make(FakeCollector([snapshot(obs("a"))]),
                                InfernoPolicy(solve=FakeSolver(answer)))  # type: ignore[arg-type]
    record = controller.step()
    assert (record.status, record.stage) == (CycleStatus.SKIPPED, "decide")
    assert actuator.plans == []
    assert record.servers[0].num_replicas == 2


def test_actuate_error_fails_cycle() -> None:
    """An ActuateError is recorded as a failed cycle with the decision kept in the record."""
    controller, actuator = make(FakeCollector([snapshot(obs("a"))]),
                                StaticPolicy(StaticSettings(default_replicas=3)))
    actuator.error = ActuateError("409 conflict")
    record = controller.step()
    assert (record.status, record.stage) == (CycleStatus.FAILED, "actuate")
    assert record.servers[0].num_replicas == 3


def test_dry_run_decides_without_actuating() -> None:
    """Dry run: the record has the decision, the actuator is never called."""
    controller, actuator = make(FakeCollector([snapshot(obs("a"))]),
                                StaticPolicy(StaticSettings(default_replicas=3)),
                                settings=ControllerSettings(dry_run=True))
    record = controller.step()
    assert record.status is CycleStatus.OK
    assert record.servers[0].num_replicas == 3
    assert actuator.plans == []


class FixedTune:
    """A `Tune` port that always returns the same System."""

    def __init__(self, tuned: System) -> None:
        self.tuned = tuned

    def __call__(self, snapshot: ClusterSnapshot, static: System) -> System:
        return self.tuned

    def state_for_log(self) -> dict[str, object]:
        return {"mode": "fixed"}


def test_tune_hook_feeds_the_policy() -> None:
    """The tune hook's System is the one the policy solves with; its state is logged."""
    tuned = replace(static_system(), capacity={"A100": 99})
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2)}))
    controller, _ = make(FakeCollector([snapshot(obs("a"))]),
                         InfernoPolicy(NO_DAMPING, solve=solver), tune=FixedTune(tuned))
    record = controller.step()
    assert solver.systems[0].capacity == {"A100": 99}
    assert record.tuner == {"mode": "fixed"}


def test_oracle_plans_for_future_load() -> None:
    """The oracle solves with the world's future load, even where metrics are missing."""
    calls = []

    def future(name: str, t0: float, t1: float) -> tuple[float, float, float]:
        calls.append((name, t0, t1))
        return 600.0, 50.0, 300.0

    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 5)}))
    clock = FakeClock(t_s=120.0)
    controller, actuator = make(FakeCollector([snapshot(obs("a", arrival_rpm=None))]),
                                OraclePolicy(NO_DAMPING, future_load=future, horizon_s=90.0,
                                             lead_s=45.0, solve=solver), clock=clock)
    controller.step()
    assert calls == [("a", 165.0, 255.0)]  # the period in which new replicas are ready
    load = solver.systems[0].servers[0].current.load
    assert (load.arrival_rpm, load.avg_in_tokens, load.avg_out_tokens) == (600.0, 50, 300)
    assert actuator.plans[0].servers["a"].num_replicas == 5


def test_concurrent_steps_never_overlap() -> None:
    """Two threads stepping at once run one cycle after the other; a zero wait is refused."""
    inside = 0
    max_inside = 0
    entered = threading.Event()
    release = threading.Event()
    lock = threading.Lock()

    def slow() -> None:
        nonlocal inside, max_inside
        with lock:
            inside += 1
            max_inside = max(max_inside, inside)
        entered.set()
        release.wait(5.0)
        with lock:
            inside -= 1

    controller, _ = make(FakeCollector([snapshot(obs("a"))], before=slow), StaticPolicy())
    records = []
    threads = [threading.Thread(target=lambda: records.append(controller.step()))
               for _ in range(2)]
    threads[0].start()
    assert entered.wait(5.0)
    threads[1].start()
    with pytest.raises(ControllerBusy):
        controller.step(wait_s=0.0)
    release.set()
    for thread in threads:
        thread.join(5.0)
    assert max_inside == 1
    assert sorted(r.cycle for r in records) == [1, 2]


@pytest.mark.parametrize(
    ("reports", "ready", "expected"),
    [([10.0, 20.0, None], 4, 60.0), ([None, None], 3, None), ([30.0, 30.0], 1, 60.0),
     ([12.0], 1, 12.0)],
    ids=["partial", "none", "more-reports-than-ready", "complete"],
)
def test_estimate_offered_rpm(reports: list[float | None], ready: int,
                              expected: float | None) -> None:
    """Offered load = mean reported rate x ready replicas; missing reports never lower it."""
    assert estimate_offered_rpm(reports, ready) == expected


def test_file_static_data_rereads_capacity_every_cycle() -> None:
    """Static files are read once (every cycle in dynamic mode); capacity every cycle."""
    counts = {"load": 0, "capacity": 0}

    def load(path: object) -> System:
        counts["load"] += 1
        return static_system()

    def capacity(path: object) -> dict[str, int]:
        counts["capacity"] += 1
        return {"A100": counts["capacity"]}

    data = FileStaticData("/nowhere", load=load, load_capacity=capacity)
    assert data().capacity == {"A100": 16, "H100": 8}
    assert data().capacity == {"A100": 1}
    assert data().capacity == {"A100": 2}
    assert counts == {"load": 1, "capacity": 2}
    dynamic = FileStaticData("/nowhere", is_dynamic=True, load=load, load_capacity=capacity)
    dynamic()
    dynamic()
    assert counts == {"load": 3, "capacity": 2}


def test_file_static_data_reads_upstream_files(cases_dir: object) -> None:
    """The default loader reads an upstream data directory into accelerators and capacity."""
    data = FileStaticData(cases_dir / "case-000")  # type: ignore[operator]
    system = data()
    assert system.accelerators
    assert system.capacity
    assert data().capacity == system.capacity


def test_tuner_hook_state_lands_in_cycle_record() -> None:
    """With a tuner hook the cycle record carries the tuner's state; off means no hook."""
    from inferno.control.tuning import make_tuner

    assert make_tuner("off") is None
    hook = make_tuner("ekf")
    assert hook is not None
    state = hook.state_for_log()
    assert state["mode"] == "ekf"
    assert state["cycles"] == 0
