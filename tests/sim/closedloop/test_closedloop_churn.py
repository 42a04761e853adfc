"""Churn and migrations of the inferno policy in the twin (docs/control.md).

* Under a stationary noisy load (constant mean rate, the load emulator's random walk on rate
  and token means), a server reverses its replica direction at most once in any five
  consecutive cycles.
* With migrations allowed, the scarce-capacity scenario does no worse than with every server
  kept on its accelerator: a migration onto a type without headroom is held.
"""

from __future__ import annotations

import pytest
from closedloop_helpers import SCENARIOS

from sim.closedloop.run import run_scenario
from sim.scenario import load_scenario

WINDOW_CYCLES = 5


def reversal_cycles(cycles) -> dict[str, list[int]]:
    """Per server, the cycles whose decided replica count moved opposite to its last move."""
    last: dict[str, int] = {}
    direction: dict[str, int] = {}
    found: dict[str, list[int]] = {}
    for cycle in cycles:
        for server in cycle.servers:
            before = last.get(server.name)
            last[server.name] = server.num_replicas
            if before is None or server.num_replicas == before:
                continue
            step = 1 if server.num_replicas > before else -1
            if direction.get(server.name, step) != step:
                found.setdefault(server.name, []).append(cycle.cycle)
            direction[server.name] = step
    return found


def test_reversal_cycles_counts_direction_changes() -> None:
    """2 -> 3 -> 2 -> 2 -> 4: the down (cycle 2) and the following up (cycle 4) reverse."""
    class S:
        def __init__(self, n: int) -> None:
            self.name, self.num_replicas = "a", n

    class C:
        def __init__(self, i: int, n: int) -> None:
            self.cycle, self.servers = i, [S(n)]

    assert reversal_cycles([C(i, n) for i, n in enumerate([2, 3, 2, 2, 4])]) == {"a": [2, 4]}


@pytest.mark.parametrize("seed", [2, 5])
def test_at_most_one_reversal_in_five_cycles_under_stationary_noise(seed: int) -> None:
    """The quickstart's two servers at a constant mean load for an hour (60 cycles), rate and
    token means walking with σ = 20 % of nominal every 20 s."""
    scenario = load_scenario(SCENARIOS / "quickstart.yaml", [
        "duration_s=3600", "profile.phases=[]", "emulator.alpha=0.2", f"seed={seed}"])
    run = run_scenario(scenario)
    found = reversal_cycles(run.cycles)
    for name, at in found.items():
        worst = max(sum(1 for c in at if start <= c < start + WINDOW_CYCLES) for start in at)
        assert worst <= 1, (name, at)
    assert sum(len(at) for at in found.values()) == run.summary.replica_reversals


def test_migrations_do_no_worse_than_keeping_the_accelerators() -> None:
    """multi-model-capacity (4 H100 + 4 A100, three priorities, a 3x surge): allowing
    migrations keeps the SLO attainment of the no-migration run."""
    path = SCENARIOS / "multi-model-capacity.yaml"
    kept = run_scenario(load_scenario(path, ["policy.inferno.keep_accelerator=true"]))
    free = run_scenario(load_scenario(path, ["policy.inferno.keep_accelerator=false"]))
    assert free.summary.slo_attainment >= kept.summary.slo_attainment - 0.005
