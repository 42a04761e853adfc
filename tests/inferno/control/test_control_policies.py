"""Policies: HPA, saturation, static and the registry, with hand-computed expectations."""

from __future__ import annotations

import pytest
from control_fakes import obs, snapshot

from inferno.control.policies import (
    LIVE_POLICY_NAMES,
    POLICIES,
    POLICY_NAMES,
    POLICY_TABLE,
    SETTINGS,
    HpaPolicy,
    PolicyDeps,
    SaturationScalingPolicy,
    StaticPolicy,
    make_policy,
)
from inferno.control.settings import (
    HpaMetric,
    HpaSettings,
    InfernoSettings,
    SaturationSettings,
    StaticSettings,
)
from inferno.errors import ConfigError
from inferno.model import System

EMPTY = System()


@pytest.mark.parametrize(
    ("settings", "observation", "expected"),
    [
        # default target 0.8 x max batch 10 = 8; (12 + 4) / 8 = 2 -> ceil(2 x 3) = 6
        (HpaSettings(), obs("s", max_batch=10, desired_replicas=3, ready_replicas=3,
                            running_requests=12.0, waiting_requests=4.0), 6),
        # same, capped by max_replicas
        (HpaSettings(max_replicas=5), obs("s", max_batch=10, desired_replicas=3,
                                          ready_replicas=3, running_requests=12.0,
                                          waiting_requests=4.0), 5),
        # KV 0.4 vs default target 0.8 -> ceil(0.5 x 4) = 2
        (HpaSettings(metric=HpaMetric.KV_USAGE), obs("s", desired_replicas=4,
                                                     ready_replicas=4, kv_usage=0.4), 2),
        # explicit target 10 waiting: 1 / 10 -> ceil(0.2) = 1, raised to min_replicas 2
        (HpaSettings(metric=HpaMetric.WAITING, target=10.0, min_replicas=2),
         obs("s", desired_replicas=1, ready_replicas=1, waiting_requests=1.0), 2),
        # server minimum wins over the HPA's
        (HpaSettings(metric=HpaMetric.KV_USAGE), obs("s", desired_replicas=4,
                                                     ready_replicas=4, kv_usage=0.1,
                                                     min_num_replicas=3), 3),
        # a per-Deployment target (a load test's) wins over the shared one: 16 / 4 x 3 = 12
        (HpaSettings(target=100.0, targets={"s": 4.0}),
         obs("s", desired_replicas=3, ready_replicas=3, running_requests=12.0,
             waiting_requests=4.0), 12),
        # a per-Deployment maxReplicas caps it
        (HpaSettings(targets={"s": 4.0}, max_replicas_for={"s": 7}),
         obs("s", desired_replicas=3, ready_replicas=3, running_requests=12.0,
             waiting_requests=4.0), 7),
    ],
    ids=["requests", "max-replicas", "kv-usage", "waiting-min", "server-min",
         "own-target", "own-max"],
)
def test_hpa_policy_table(settings: HpaSettings, observation: object, expected: int) -> None:
    """HPA recommendations per metric, with min/max clamping."""
    decision = HpaPolicy(settings).decide(snapshot(observation), 0.0, EMPTY)  # type: ignore[arg-type]
    plan = decision.plan.servers["s"]
    assert (plan.num_replicas, plan.accelerator, plan.max_batch) == (expected, "A100",
                                                                     observation.max_batch)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("observation", "note"),
    [(obs("s", running_requests=None), "no requests metrics"),
     (obs("s", ready_replicas=0), "no ready replicas"),
     (obs("s", max_batch=0), "no max batch")],
    ids=["no-metric", "no-ready", "no-target"],
)
def test_hpa_policy_leaves_undecidable_servers_out(observation: object, note: str) -> None:
    """A server without metric, ready replicas or target gets no recommendation, only a note."""
    decision = HpaPolicy().decide(snapshot(observation), 0.0, EMPTY)  # type: ignore[arg-type]
    assert decision.plan.servers == {}
    assert note in decision.notes["s"]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"kv_usage": 0.75, "waiting_requests": 0.0}, 3),   # spare KV 0.05 < 0.1
        ({"kv_usage": 0.3, "waiting_requests": 4.0}, 3),    # spare queue 1 < 3
        ({"kv_usage": 0.75, "desired_replicas": 3}, 3),     # 1 pending: no cascade up
        ({"kv_usage": 0.2, "waiting_requests": 0.0, "desired_replicas": 3,
          "ready_replicas": 3}, 2),                         # 0.2 x 3/2 = 0.3: spare 0.5
        ({"kv_usage": 0.5, "waiting_requests": 1.0, "desired_replicas": 3,
          "ready_replicas": 3}, 3),                         # 0.5 x 3/2 = 0.75: spare 0.05
        ({"kv_usage": 0.2, "waiting_requests": 1.5, "desired_replicas": 3,
          "ready_replicas": 3}, 3),                         # queue 1.5 x 3/2 = 2.25: spare 2.75
        ({"kv_usage": 0.1, "waiting_requests": 0.0, "desired_replicas": 1,
          "ready_replicas": 1}, 1),                         # one replica: nothing to remove
        ({"kv_usage": None, "waiting_requests": 4.5}, 3),   # queue alone decides
    ],
    ids=["kv-up", "queue-up", "pending", "down", "down-vetoed-kv", "down-vetoed-queue",
         "single", "queue-only"],
)
def test_saturation_policy_table(kw: dict[str, object], expected: int) -> None:
    """WVA V1: +1 below a spare trigger, -1 only if N-1 keeps both spares above triggers."""
    observation = obs("s", **kw)
    decision = SaturationScalingPolicy(SaturationSettings()).decide(snapshot(observation), 0.0,
                                                                    EMPTY)
    assert decision.plan.servers["s"].num_replicas == expected


def test_saturation_policy_without_metrics_leaves_server_out() -> None:
    """No KV and no queue metrics: no recommendation."""
    observation = obs("s", kv_usage=None, waiting_requests=None)
    decision = SaturationScalingPolicy().decide(snapshot(observation), 0.0, EMPTY)
    assert decision.plan.servers == {}
    assert "no kv_usage or waiting" in decision.notes["s"]


def test_static_policy_fixed_default_and_keep() -> None:
    """Static: listed servers get their count, others the default or their current count."""
    observations = (obs("a"), obs("b", desired_replicas=5, ready_replicas=5))
    keep = StaticPolicy(StaticSettings(replicas={"a": 7})).decide(snapshot(*observations), 0.0,
                                                                  EMPTY)
    assert {n: p.num_replicas for n, p in keep.plan.servers.items()} == {"a": 7, "b": 5}
    fixed = StaticPolicy(StaticSettings(replicas={"a": 7}, default_replicas=1)).decide(
        snapshot(*observations), 0.0, EMPTY)
    assert {n: p.num_replicas for n, p in fixed.plan.servers.items()} == {"a": 7, "b": 1}


def test_make_policy_by_name_and_errors() -> None:
    """Policies are picked by name; unknown names and wrong settings raise ConfigError."""
    assert make_policy("hpa").name == "hpa"
    assert make_policy("static", StaticSettings(default_replicas=2)).name == "static"
    assert make_policy("inferno").stabilisation.scale_down_window_s == 300.0
    assert make_policy("inferno").settings.scale_down_window_s == 120.0
    assert make_policy("hpa").stabilisation.scale_down_window_s == 300.0
    with pytest.raises(ConfigError, match="choose one of hpa, inferno, oracle, saturation"):
        make_policy("hap")
    with pytest.raises(ConfigError, match="future load"):
        make_policy("oracle")
    with pytest.raises(ConfigError, match="must be HpaSettings"):
        make_policy("hpa", InfernoSettings())


@pytest.mark.parametrize("name", sorted(POLICY_TABLE))
def test_policy_table_builds_each_class_with_its_settings(name: str) -> None:
    """One table: every name builds its class from its settings class, and the older views
    (POLICIES, SETTINGS, the name lists) agree with it."""
    entry = POLICY_TABLE[name]
    deps = PolicyDeps(future_load=lambda server, t0_s, t1_s: (0.0, 0.0, 0.0))
    policy = make_policy(name, entry.settings(), deps)
    assert type(policy) is entry.policy
    assert policy.name == name
    assert SETTINGS[name] is entry.settings
    assert POLICIES[name] is entry.build
    assert name in POLICY_NAMES
    assert (name in LIVE_POLICY_NAMES) is (not entry.twin_only)


def test_only_the_oracle_is_twin_only() -> None:
    """The oracle reads the world's future load, which a live cluster cannot give."""
    assert [n for n, e in POLICY_TABLE.items() if e.twin_only] == ["oracle"]
    assert set(POLICY_NAMES) == {"inferno", "oracle", "hpa", "saturation", "static"}


@pytest.mark.parametrize(
    ("factory", "match"),
    [(lambda: HpaSettings(target=0.0), "target"),
     (lambda: HpaSettings(tolerance=1.5), "tolerance"),
     (lambda: SaturationSettings(kv_spare_trigger=0.9), "kv_spare_trigger"),
     (lambda: StaticSettings(replicas={"x": -1}), r"replicas\.x")],
    ids=["hpa-target", "hpa-tolerance", "sat-trigger", "static-negative"],
)
def test_policy_settings_reject_bad_values(factory: object, match: str) -> None:
    """Bad policy settings raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=match):
        factory()  # type: ignore[operator]


def test_migration_penalty_reaches_the_optimizer() -> None:
    """The policy's migration penalty is the optimizer's accelerator penalty factor."""
    from control_fakes import FakeSolver, allocation, solution, static_system

    from inferno.control.policies import InfernoPolicy
    from inferno.control.settings import InfernoSettings

    solver = FakeSolver(lambda s: solution({"a": allocation("A100", 2, 16)}))
    InfernoPolicy(InfernoSettings(migration_penalty=0.3), solve=solver).decide(
        snapshot(obs("a")), 0.0, static_system())
    assert solver.systems[0].settings.accel_penalty_factor == 0.3


def test_recent_migration_keeps_its_accelerator_for_the_dwell_time() -> None:
    """After a change of accelerator the server is pinned to it for min_dwell_s, then free."""
    from control_fakes import FakeSolver, allocation, solution, static_system

    from inferno.control.policies import InfernoPolicy
    from inferno.control.settings import InfernoSettings

    solver = FakeSolver(lambda s: solution({"a": allocation("H100", 2, 16)}))
    policy = InfernoPolicy(InfernoSettings(min_dwell_s=600.0, lead_s=0.0), solve=solver)
    static = static_system()
    policy.decide(snapshot(obs("a", accelerator="A100")), 0.0, static)     # first sight: free
    policy.decide(snapshot(obs("a", accelerator="H100")), 60.0, static)    # moved at 60 s
    policy.decide(snapshot(obs("a", accelerator="H100")), 659.0, static)   # still pinned
    policy.decide(snapshot(obs("a", accelerator="H100")), 660.0, static)   # dwell over
    kept = [s.servers[0].keep_accelerator for s in solver.systems]
    assert kept == [False, True, True, False]
