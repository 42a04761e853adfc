"""The inferno policy's robustness rules, driven by fakes with hand-computed expectations."""

from __future__ import annotations

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

from inferno.analyzer import QueueConfig, analyze
from inferno.control.controller import Controller
from inferno.control.demand import StartupEstimate, forecast, least_squares_slope
from inferno.control.policies.inferno import InfernoPolicy, OraclePolicy
from inferno.control.settings import NO_STABILISATION, ControllerSettings, InfernoSettings
from inferno.errors import CollectError
from inferno.model import PerfParms, System
from inferno.optimizer.result import Status

ONE_SOLVE = InfernoSettings(scale_down_margin=0.0, lead_s=0.0)
"""No margin re-solve and no forecast: one solve per decision unless a test says otherwise."""


def planned(solver: FakeSolver) -> list[float]:
    return [s.servers[0].current.load.arrival_rpm for s in solver.systems]


# ------------------------------------------------------------------ demand
def test_least_squares_slope_and_forecast_bounds() -> None:
    """Slope of exact lines; the forecast never falls below the rate nor exceeds the cap."""
    assert least_squares_slope([(0.0, 1.0), (10.0, 3.0), (20.0, 5.0)]) == pytest.approx(0.2)
    assert least_squares_slope([(5.0, 1.0)]) == 0.0
    rising = [(0.0, 100.0), (30.0, 130.0), (60.0, 160.0)]
    assert forecast(rising, 60.0, 160.0, 60.0, 2.0) == pytest.approx(220.0)
    assert forecast(rising, 60.0, 160.0, 600.0, 2.0) == pytest.approx(320.0)  # at most 2x
    falling = [(0.0, 160.0), (30.0, 130.0), (60.0, 100.0)]
    assert forecast(falling, 60.0, 100.0, 60.0, 2.0) == 100.0
    jump = [(0.0, 100.0), (30.0, 100.0), (60.0, 1000.0)]  # a step is not projected
    assert forecast(jump, 60.0, 1000.0, 60.0, 2.0) == 1000.0
    uneven = [(0.0, 100.0), (30.0, 190.0), (60.0, 220.0)]  # at most the smaller step
    assert forecast(uneven, 60.0, 220.0, 60.0, 2.0) == pytest.approx(220.0 + 60.0)


def test_startup_estimate_learns_the_ready_delay() -> None:
    """Desired 2 -> 4 at t=0, ready at the cycle at 90 s: 90 s > the 60 s prior."""
    est = StartupEstimate(prior_s=60.0)
    assert est.startup_s == 60.0
    est.observe(0.0, desired=4, ready=2)
    est.observe(30.0, desired=4, ready=3)
    est.observe(90.0, desired=4, ready=4)
    assert est.startup_s == 90.0


def test_rising_load_is_planned_for_when_replicas_are_ready() -> None:
    """lead 60 s: 100, 130 (two points: +1 rpm/s -> 190), 160 (+1 rpm/s -> 220), a fall to
    120 (observed), then a jump to 300 (not a steady rise: planned as observed)."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(replace(ONE_SOLVE, lead_s=60.0), solve=solver)
    static = static_system()
    for t, rpm in ((0.0, 100.0), (30.0, 130.0), (60.0, 160.0), (90.0, 120.0), (120.0, 300.0)):
        policy.decide(snapshot(obs("a", arrival_rpm=rpm)), t, static)
    assert planned(solver) == pytest.approx([100.0, 190.0, 220.0, 120.0, 300.0])


def test_default_lead_is_period_plus_startup() -> None:
    """lead_s None: the decision spacing (30 s) plus the 45 s startup prior."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(replace(ONE_SOLVE, lead_s=None, startup_s=45.0), solve=solver)
    for t in (0.0, 30.0, 60.0):
        policy.decide(snapshot(obs("a")), t, static_system())
    assert policy.lead_s("a") == 75.0


def test_implausible_load_is_capped_and_named() -> None:
    """An arrival of 1e12 rpm is cut to 4 x the server's demand (here its 1e6 rpm throughput)
    and the cycle's note says so."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(ONE_SOLVE, solve=solver)
    decision = policy.decide(snapshot(obs("a", arrival_rpm=1e12, throughput_rpm=1e6)), 0.0,
                             static_system())
    assert planned(solver) == [4e6]
    assert "arrival 1e+12 rpm capped at 4e+06" in decision.notes["a"]
    assert decision.records["a"]["planned_rpm"] == 4e6


@pytest.mark.parametrize(("waiting", "expected"), [(64.0, 150.0), (244.0, 240.0), (3.0, 120.0)],
                         ids=["drain", "capped", "allowance"])
def test_backlog_is_planned_to_drain(waiting: float, expected: float) -> None:
    """120 rpm, 2 replicas (allowance 2 each): 60 extra waiting over 120 s is +30 rpm; 240 is
    +120 rpm, capped at 1 x the arrival; 3 waiting is within the allowance."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    InfernoPolicy(ONE_SOLVE, solve=solver).decide(
        snapshot(obs("a", arrival_rpm=120.0, waiting_now=waiting)), 0.0, static_system())
    assert planned(solver) == [pytest.approx(expected)]


def test_tokens_of_an_earlier_window_stand_in() -> None:
    """Nothing finished this window (no token means): the last known ones are planned."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(ONE_SOLVE, solve=solver)
    policy.decide(snapshot(obs("a", avg_in_tokens=300.0, avg_out_tokens=3000.0)), 0.0,
                  static_system())
    decision = policy.decide(snapshot(obs("a", avg_in_tokens=None, avg_out_tokens=None)), 60.0,
                             static_system())
    load = solver.systems[1].servers[0].current.load
    assert (load.avg_in_tokens, load.avg_out_tokens) == (300, 3000)
    assert "tokens of an earlier window" in decision.notes["a"]


# ------------------------------------------------------------------ churn
def _batch_answer(free_batch: int, pinned_cost: float):
    def answer(system: System):
        server = system.servers[0]
        if server.max_batch_size > 0:
            return solution({"a": allocation("A100", 3, server.max_batch_size, pinned_cost)})
        return solution({"a": allocation("A100", 2, free_batch, 80.0)})
    return answer


@pytest.mark.parametrize(("free_batch", "pinned_cost", "expected"),
                         [(18, 120.0, 18), (18, 84.0, 16), (17, 120.0, 16)],
                         ids=["worth-it", "saves-too-little", "within-tolerance"])
def test_max_batch_changes_only_when_worth_a_restart(free_batch: int, pinned_cost: float,
                                                     expected: int) -> None:
    """Current 16: the optimum 18 at cost 80 replaces it when keeping 16 costs 120 (50 % more
    than 80 > 10 %), not when it costs 84 (5 %), nor when 17 is within the 10 % tolerance."""
    solver = FakeSolver(_batch_answer(free_batch, pinned_cost))
    policy = InfernoPolicy(replace(ONE_SOLVE, max_batch_tolerance=0.1), solve=solver)
    plan = policy.decide(snapshot(obs("a", max_batch=16)), 0.0, static_system()).plan
    assert plan.servers["a"].max_batch == expected


def test_a_new_max_batch_dwells_before_the_next_change() -> None:
    """The batch changed to 18 at 60 s: at 120 s another worthwhile change waits (600 s)."""
    solver = FakeSolver(_batch_answer(24, 120.0))
    policy = InfernoPolicy(replace(ONE_SOLVE, max_batch_tolerance=0.1), solve=solver)
    static = static_system()
    policy.decide(snapshot(obs("a", max_batch=16)), 0.0, static)
    policy.decide(snapshot(obs("a", max_batch=18)), 60.0, static)
    young = policy.decide(snapshot(obs("a", max_batch=18)), 120.0, static).plan
    old = policy.decide(snapshot(obs("a", max_batch=18)), 700.0, static).plan
    assert (young.servers["a"].max_batch, old.servers["a"].max_batch) == (18, 24)


def test_scale_down_needs_the_margin() -> None:
    """Current 4: 120 rpm fits 2 replicas but 120 x 1.15 needs 3: the plan is 3."""
    solver = FakeSolver(lambda s: solution({"a": allocation(
        "A100", 3 if s.servers[0].current.load.arrival_rpm > 120.0 else 2, 16)}))
    policy = InfernoPolicy(replace(ONE_SOLVE, scale_down_margin=0.15), solve=solver)
    plan = policy.decide(snapshot(obs("a", desired_replicas=4, ready_replicas=4)), 0.0,
                         static_system()).plan
    assert planned(solver) == pytest.approx([120.0, 138.0])
    assert plan.servers["a"].num_replicas == 3


@pytest.mark.parametrize(("kw", "reason"),
                         [({"waiting_now": 10.0}, "10 requests waiting"),
                          ({"ttft_ms": 250.0}, "observed TTFT 250 ms > 200 ms"),
                          ({"itl_ms": 31.0}, "observed ITL 31 ms > 30 ms")],
                         ids=["waiting", "ttft", "itl"])
def test_no_scale_down_while_the_server_struggles(kw: dict[str, float], reason: str) -> None:
    """A scale-down 2 -> 1 waits while requests wait beyond 2 per replica or the observed
    latency is over the Premium target (TTFT 200 ms, ITL 30 ms)."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 1, 16)}))
    decision = InfernoPolicy(ONE_SOLVE, solve=solver).decide(snapshot(obs("a", **kw)), 0.0,
                                                            static_system())
    assert decision.plan.servers["a"].num_replicas == 2
    assert decision.notes["a"].endswith(f"held at 2: {reason}")


def test_no_scale_down_soon_after_a_scale_up() -> None:
    """Scaled 2 -> 3 at 60 s: a scale-down waits for reversal_hold_s (120 s)."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(ONE_SOLVE, solve=solver)
    static = static_system()
    policy.decide(snapshot(obs("a")), 0.0, static)
    three = obs("a", desired_replicas=3, ready_replicas=3)
    policy.decide(snapshot(three), 60.0, static)
    held = policy.decide(snapshot(three), 120.0, static)
    free = policy.decide(snapshot(three), 180.0, static)
    assert held.plan.servers["a"].num_replicas == 3
    assert held.notes["a"] == "held at 3: scaled up 60 s ago"
    assert free.plan.servers["a"].num_replicas == 2


# ------------------------------------------------------------------ capacity
def test_capacity_is_net_of_servers_left_out() -> None:
    """b, without usable load, keeps its 2 replicas: their 2 x 2 A100 cards are off the
    capacity; a's draining replicas (5 held for 3) will free theirs and stay in it."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 3, 16)}))
    InfernoPolicy(ONE_SOLVE, solve=solver).decide(
        snapshot(obs("a", desired_replicas=3, ready_replicas=3, held_replicas=5),
                 obs("b", arrival_rpm=None)), 0.0, static_system())
    assert solver.systems[0].capacity["A100"] == 16 - 4
    assert [s.name for s in solver.systems[0].servers] == ["a"]


def test_no_migration_onto_a_type_without_free_cards() -> None:
    """b holds both H100 cards (one of them draining): a's move A100 -> H100 is refused and
    re-solved in place."""
    def answer(system: System):
        a = next(s for s in system.servers if s.name == "a")
        alloc = allocation("A100", 2, 16) if a.keep_accelerator else allocation("H100", 1, 16)
        return solution({"a": alloc, "b": allocation("H100", 2, 16)})

    solver = FakeSolver(answer)
    decision = InfernoPolicy(replace(ONE_SOLVE, min_dwell_s=0.0), solve=solver).decide(
        snapshot(obs("a"), obs("b", accelerator="H100", desired_replicas=1, held_replicas=2)),
        0.0, static_system({"A100": 16, "H100": 2}))
    assert decision.plan.servers["a"].accelerator == "A100"
    assert "migration held: no free cards" in decision.notes["a"]


def _moves_to_h100(served_in_place: bool):
    """a moves A100 x 2 -> H100 x 1 when free to; pinned, it stays (or is left out)."""
    def answer(system: System):
        a = next(s for s in system.servers if s.name == "a")
        allocations = {"b": allocation("H100", 1, 16)}
        if not a.keep_accelerator:
            allocations["a"] = allocation("H100", 1, 16)
        elif served_in_place:
            allocations["a"] = allocation("A100", 2, 16)
        return solution(allocations, unallocated=() if "a" in allocations else ("a",))
    return answer


@pytest.mark.parametrize(("h100_cards", "served_in_place", "moved"), [
    (4, True, True),     # a and b on H100: 2 cards x headroom 2 = 4 fit
    (3, True, False),    # 2 x 2 > 3: a stays on A100, though a card is free
    (3, False, True),    # ... unless a can only be served on H100
], ids=["headroom", "crowded", "only-there"])
def test_migration_needs_headroom_on_the_cheaper_type(h100_cards: int, served_in_place: bool,
                                                      moved: bool) -> None:
    """A migration onto H100 is taken only if the H100 cards would hold twice what the
    servers on H100 are given (`migration_headroom` 2), or if a cannot stay where it is."""
    decision = InfernoPolicy(replace(ONE_SOLVE, min_dwell_s=0.0),
                             solve=FakeSolver(_moves_to_h100(served_in_place))).decide(
        snapshot(obs("a"), obs("b", accelerator="H100", desired_replicas=1, ready_replicas=1)),
        0.0, static_system({"A100": 16, "H100": h100_cards}))
    assert decision.plan.servers["a"].accelerator == ("H100" if moved else "A100")
    held = "migration held: no headroom on the cheaper type" in decision.notes.get("a", "")
    assert held is not moved


# ------------------------------------------------------------------ model correction
WORLD = PerfParms(alpha_ms=10.0, beta_ms=0.02, gamma_ms=0.000625)
"""The true step time; the controller's model data is 25 % optimistic (x 0.8)."""


def _world_observation(policy_static: System, t: float, rate_rpm: float) -> object:
    cfg = QueueConfig(max_batch=16, max_queue=160, in_tokens=100, out_tokens=200, perf=WORLD,
                      max_num_tokens=8192)
    seen = analyze(cfg, rate_rpm / 60.0 / 2)
    return obs("a", arrival_rpm=rate_rpm, throughput_rpm=rate_rpm, itl_ms=seen.itl_ms,
               ttft_ms=seen.ttft_ms, waiting_now=0.0)


def test_model_error_of_25_percent_is_corrected_within_three_cycles() -> None:
    """A world 1.25x slower than the model data (here the analyzer at the true parameters):
    the step-time factor reaches 1.25 within 3 % by the third cycle, and the solver sees the
    corrected parameters on the server's own model."""
    optimistic = PerfParms(alpha_ms=WORLD.alpha_ms * 0.8, beta_ms=WORLD.beta_ms * 0.8,
                           gamma_ms=WORLD.gamma_ms * 0.8)
    base = static_system()
    static = replace(base, perf={k: replace(v, perf=optimistic) for k, v in base.perf.items()})
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    policy = InfernoPolicy(ONE_SOLVE, solve=solver)
    factors = []
    for cycle in range(3):
        decision = policy.decide(snapshot(_world_observation(static, cycle, 240.0),
                                          time_s=60.0 * cycle),
                                 60.0 * cycle, static)
        factors.append(decision.records["a"]["itl_factor"])
    assert factors[-1] == pytest.approx(1.25, rel=0.03)
    assert abs(factors[0] - 1.25) > abs(factors[-1] - 1.25)
    corrected = solver.systems[-1]
    server = corrected.servers[0]
    assert server.model == "m1@a"
    assert corrected.perf[("m1@a", "A100")].perf.alpha_ms == pytest.approx(
        optimistic.alpha_ms * factors[-1], rel=0.011)  # applied on a 2 % grid
    assert corrected.perf[("m1@a", "H100")].perf == optimistic  # only where it was learned


def test_oracle_has_no_feedback() -> None:
    """The oracle neither corrects the model nor holds a scale-down for waiting requests."""
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 1, 16)}))
    oracle = OraclePolicy(ONE_SOLVE, future_load=lambda n, t0, t1: (60.0, 100.0, 200.0),
                          lead_s=0.0, solve=solver)
    decision = oracle.decide(snapshot(obs("a", waiting_now=50.0, throughput_rpm=120.0)), 0.0,
                             static_system())
    assert decision.plan.servers["a"].num_replicas == 1
    assert solver.systems[0].servers[0].model == "m1"


# ------------------------------------------------------------------ controller rules
def test_scale_down_waits_a_full_window_of_fresh_metrics_after_an_outage() -> None:
    """Cycle at 0 s ok, 60 s Prometheus down, 120 s back: a scale-down waits until the data
    since 120 s covers the 60 s window (the cycle at 180 s)."""
    clock = FakeClock()
    collector = FakeCollector([snapshot(obs("a")), CollectError("down"), snapshot(obs("a"))])
    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 1, 16)}))
    actuator = RecordingActuator()
    settings = replace(ONE_SOLVE, stabilisation=NO_STABILISATION, reversal_hold_s=0.0)
    controller = Controller(collector=collector, actuator=actuator, clock=clock,
                            policy=InfernoPolicy(settings, solve=solver),
                            settings=ControllerSettings(metrics_window_s=60.0),
                            static_data=static_system)
    records = []
    for _ in range(4):
        records.append(controller.step())
        clock.advance(60.0)
    replicas = [r.servers[0].num_replicas if r.servers else None for r in records]
    assert replicas == [1, None, 2, 1]
    assert "less than 60 s of fresh metrics" in records[2].servers[0].note


def test_infeasible_solve_without_any_allocation_changes_nothing() -> None:
    """Nothing allocated at all (not a priority cut): every server keeps its replicas."""
    solver = FakeSolver(lambda s: solution({}, status=Status.INFEASIBLE, unallocated=("a",)))
    decision = InfernoPolicy(replace(ONE_SOLVE, fallback_saturation_policy="None"),
                             solve=solver).decide(snapshot(obs("a")), 0.0, static_system())
    assert decision.plan.servers == {}
    assert decision.notes["a"] == "kept: unallocated"
