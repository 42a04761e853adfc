"""The inferno policy: the optimizer, fed what the servers are observed to need.

One decision, per cycle:

1. **Correct the model** from what was observed (`correction`): per server, the step-time
   factor and the TTFT-target divisor learned from observed vs predicted latency.
2. **Plan the load** (`demand`): observed offered load, sanity-capped, projected to when new
   replicas are ready, plus the backlog to drain.
3. **Solve** on the capacity that is really free: cards held by servers outside the solve are
   taken off; every server's floor is reserved once a solve leaves some server without an
   allocation; a migration must fit the cards free now (net of every held replica, starting
   and draining ones included).
4. **Damp** what the optimum would churn: a new max batch (a rolling restart) only when it
   saves enough or the current one cannot meet the SLO, and not before it has been in place
   `max_batch_dwell_s`; a scale-down only to what the load plus a margin needs; no migration
   onto an accelerator type without free cards or without `migration_headroom` (a surge
   must find the servers where they can grow), nor within `min_dwell_s` of the last one.
5. **Guard scale-downs**: none while requests wait beyond the allowance, while the observed
   TTFT or ITL is over target, or soon after a scale-up; except that a server the optimizer
   leaves unallocated or cuts for a higher priority goes to its floor at once (its cards are
   what the higher priority waits for), bypassing the controller's scale-down window.

The oracle is the same optimizer fed the true mean load of the period in which replicas
asked for now are ready, without feedback (no correction, backlog or observed-SLO guard): it
bounds what a perfect forecast alone achieves.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from inferno.control.correction import ModelCorrection
from inferno.control.decision import (
    Decision,
    FutureLoad,
    Solve,
    cards,
    current_replicas,
    held_replicas,
    keep_plan,
)
from inferno.control.demand import DemandState, LoadEstimate, StartupEstimate, plan_load
from inferno.control.policies.solve_input import (
    build_system,
    capacity_rpm,
    free_cards,
    observed_load,
    with_loads,
    with_margin,
    with_pinned,
    without_servers,
)
from inferno.control.settings import InfernoSettings, StabilisationSettings
from inferno.errors import ConfigError
from inferno.model.server import Allocation, Server
from inferno.model.service_class import DEFAULT_CLASS
from inferno.model.snapshot import AllocationPlan, ClusterSnapshot, ServerObservation, ServerPlan
from inferno.model.system import SaturationPolicy, System

if TYPE_CHECKING:  # the optimizer is imported on first solve only
    from inferno.optimizer.result import Solution

DEFAULT_PERIOD_S = 60.0
"""Control period assumed until two decisions have been seen."""


BATCH_MEMORY = 4096
"""Sizing keys whose searched max batch the policy remembers (least recently used go)."""
BATCH_TOKEN_TOLERANCE = 1.1
"""A searched max batch is reused while both token means stay within this factor of the
searched ones: the optimum moves by a few % over that range, inside `max_batch_tolerance`."""


def _near(value: float, reference: float) -> bool:
    if value <= 0 or reference <= 0:
        return value == reference
    return 1.0 / BATCH_TOKEN_TOLERANCE <= value / reference <= BATCH_TOKEN_TOLERANCE


def _sizing_key(system: System, server: Server) -> tuple | None:
    """What the optimizer's max-batch search depends on for a server kept on its accelerator,
    but the token means (compared with a tolerance): model data, targets and queue; None
    when it cannot be stated."""
    acc = server.current.accelerator
    mp = system.perf.get((server.model, acc))
    cls = system.classes.get(server.class_name or DEFAULT_CLASS)
    target = cls.targets.get(server.model) if cls is not None else None
    if mp is None or target is None:
        return None
    return (acc, mp.perf.alpha_ms, mp.perf.beta_ms, mp.perf.gamma_ms, mp.max_num_tokens,
            mp.max_batch_size, target.slo_itl_ms, target.slo_ttft_ms, target.slo_tps,
            server.max_queue_size, system.settings.perf_model, system.settings.batch_policy)


def _default_solve(system: System) -> Solution:
    from inferno.optimizer import solve  # imported on use: the optimizer is optional here

    return solve(system)


@dataclass(slots=True)
class _Memory:
    """What the policy remembers about one server besides its demand."""

    accelerator: str = ""
    placed_s: float = -math.inf
    """When the server was first seen on its accelerator (-inf: since before we looked)."""
    max_batch: int = 0
    batch_since_s: float = -math.inf
    desired: int = 0
    last_up_s: float = -math.inf
    """When its desired replicas last rose."""


class InfernoPolicy:
    """The optimizer: SLO-aware, cost-optimal accelerator, replicas and max batch per server."""

    name = "inferno"
    uses_feedback = True
    """Correction, backlog and observed-SLO guards (the oracle has none)."""

    def __init__(self, settings: InfernoSettings | None = None, *,
                 solve: Solve | None = None) -> None:
        self.settings = settings or InfernoSettings()
        self._solve = solve or _default_solve
        self.correction = ModelCorrection(self.settings.correction)
        self._demand: dict[str, DemandState] = {}
        self._memory: dict[str, _Memory] = {}
        self._decided_at: deque[float] = deque(maxlen=8)
        self._best_batch: OrderedDict[tuple, list[tuple[float, float, int]]] = OrderedDict()
        """Sizing key without the tokens → (in tokens, out tokens, the optimizer's searched max
        batch) of past searches: the optimum does not depend on the rate and moves slowly
        with the tokens, so a search within `BATCH_TOKEN_TOLERANCE` of the tokens is reused
        (pinned), sparing the search."""

    @property
    def stabilisation(self) -> StabilisationSettings:
        return self.settings.stabilisation

    @property
    def period_s(self) -> float:
        """The control period, as the spacing of recent decisions."""
        times = list(self._decided_at)
        if len(times) < 2:
            return DEFAULT_PERIOD_S
        return statistics.median(b - a for a, b in zip(times, times[1:], strict=False))

    # ------------------------------------------------------------------ memory
    def _remember(self, snapshot: ClusterSnapshot, now_s: float) -> None:
        for name, obs in snapshot.servers.items():
            mem = self._memory.get(name)
            if mem is None:
                mem = self._memory[name] = _Memory(accelerator=obs.accelerator,
                                                   max_batch=obs.max_batch,
                                                   desired=obs.desired_replicas)
            if obs.accelerator != mem.accelerator:
                mem.accelerator, mem.placed_s = obs.accelerator, now_s
            if obs.max_batch != mem.max_batch:
                mem.max_batch, mem.batch_since_s = obs.max_batch, now_s
            if obs.desired_replicas > mem.desired:
                mem.last_up_s = now_s
            mem.desired = obs.desired_replicas
            state = self._state(name)
            if state.startup is not None:
                state.startup.observe(now_s, obs.desired_replicas, obs.ready_replicas)

    def _state(self, name: str) -> DemandState:
        state = self._demand.get(name)
        if state is None:
            state = self._demand[name] = DemandState(
                startup=StartupEstimate(prior_s=self.settings.startup_s))
        return state

    # ------------------------------------------------------------------ loads
    def lead_s(self, name: str) -> float:
        """How far ahead a rising load is planned for this server."""
        if self.settings.lead_s is not None:
            return self.settings.lead_s
        startup = self._state(name).startup
        return self.period_s + (startup.startup_s if startup is not None
                                else self.settings.startup_s)

    def loads(self, snapshot: ClusterSnapshot, now_s: float,
              static: System) -> dict[str, LoadEstimate | str]:
        """The load to plan for, per server (`inferno.control.demand`)."""
        capacity = capacity_rpm(snapshot, static)
        loads: dict[str, LoadEstimate | str] = {}
        for name, obs in snapshot.servers.items():
            state = self._state(name)
            load = observed_load(obs, state)
            if isinstance(load, LoadEstimate):
                load = plan_load(load, obs, state, now_s=now_s, lead_s=self.lead_s(name),
                                 capacity_rpm=capacity.get(name),
                                 settings=self.settings.demand)
            loads[name] = load
        return loads

    # ------------------------------------------------------------------ decide
    def decide(self, snapshot: ClusterSnapshot, now_s: float, static: System) -> Decision:
        self._decided_at.append(now_s)
        self._remember(snapshot, now_s)
        if self.uses_feedback:
            self.correction.update(snapshot, static)
        loads = self.loads(snapshot, now_s, static)
        system, notes = build_system(with_margin(static, self.settings.slo_margin), snapshot,
                                     loads, self.settings)
        if not system.servers:
            return Decision(plan=AllocationPlan(), status="ok",
                            message="no server with usable load", notes=notes)
        names = [srv.name for srv in system.servers]
        system = self._hold_recent_migrations(system, snapshot, now_s)
        if self.uses_feedback:
            system = self.correction.apply(system)
        run = _Solves(self._solve)
        system, searched = self._recall_batches(system)
        solution, system = self._solve_with_batches(run, system, snapshot, now_s, searched)
        solution, system = self._best_effort(run, solution, system)
        if solution.unallocated and solution.allocations:
            # the servers left out keep their floors: take those cards off, solve the rest
            system = without_servers(system, solution.unallocated, snapshot, static,
                                     self.settings)
            second = run(system)
            second.unallocated |= solution.unallocated
            solution = second
        solution, system = self._with_margin(run, solution, system, snapshot, now_s)
        solution, system = self._guard_migrations(run, solution, system, snapshot, static)
        return self._decision(solution, names, snapshot, static, loads, notes, now_s,
                              run.solve_ms)

    def _hold_recent_migrations(self, system: System, snapshot: ClusterSnapshot,
                                now_s: float) -> System:
        """Keep the accelerator of servers that moved less than `min_dwell_s` ago."""
        dwell = self.settings.min_dwell_s
        if dwell <= 0:
            return system
        recent = [s.name for s in system.servers if not s.keep_accelerator
                  and snapshot.servers[s.name].accelerator
                  and now_s - self._memory[s.name].placed_s < dwell]
        return with_pinned(system, recent)

    def _recall_batches(self, system: System) -> tuple[System, dict[str, tuple]]:
        """Pin the remembered optimal max batch of servers searched before at nearly the same
        tokens; returns the system and, per server whose max batch is the optimizer's to
        choose (recalled or to search now), its sizing key."""
        keys: dict[str, tuple] = {}
        hits: dict[str, int] = {}
        for srv in system.servers:
            if srv.max_batch_size > 0 or not srv.keep_accelerator:
                continue  # pinned by the settings, or searched over several accelerators
            key = _sizing_key(system, srv)
            if key is None:
                continue
            keys[srv.name] = key
            load = srv.current.load
            for in_tokens, out_tokens, best in self._best_batch.get(key, ()):
                if (_near(load.avg_in_tokens, in_tokens)
                        and _near(load.avg_out_tokens, out_tokens)):
                    self._best_batch.move_to_end(key)
                    hits[srv.name] = best
                    break
        if hits:
            system = replace(system, servers=tuple(
                replace(s, max_batch_size=hits[s.name]) if s.name in hits else s
                for s in system.servers))
        return system, keys

    def _remember_batches(self, system: System, solution: _Result, keys: Mapping[str, tuple],
                          snapshot: ClusterSnapshot) -> None:
        searched = {s.name: s for s in system.servers if s.name in keys and s.max_batch_size <= 0}
        for name, server in searched.items():
            alloc = solution.allocations.get(name)
            if (alloc is not None and alloc.max_batch > 0 and name not in solution.best_effort
                    and alloc.accelerator == snapshot.servers[name].accelerator):
                load = server.current.load
                entries = self._best_batch.setdefault(keys[name], [])
                entries.insert(0, (load.avg_in_tokens, load.avg_out_tokens, alloc.max_batch))
                del entries[8:]
                self._best_batch.move_to_end(keys[name])
        while len(self._best_batch) > BATCH_MEMORY:
            self._best_batch.popitem(last=False)

    def _solve_with_batches(self, run: _Solves, system: System, snapshot: ClusterSnapshot,
                            now_s: float, searched: Mapping[str, tuple]
                            ) -> tuple[_Result, System]:
        """The solution with each current max batch kept unless changing it is worth a
        rolling restart (module notes), and the system with those batches pinned (every later
        solve of the cycle keeps them). ``searched``: servers whose max batch is the
        optimizer's to choose (recalled or searched now)."""
        free = run(system)
        self._remember_batches(system, free, searched, snapshot)
        system, _ = self._recall_batches(system)  # later solves of the cycle search nothing
        s = self.settings
        changed = [srv.name for srv in system.servers
                   if (srv.max_batch_size <= 0 or srv.name in searched)
                   and (a := free.allocations.get(srv.name))
                   and a.accelerator == snapshot.servers[srv.name].accelerator
                   and snapshot.servers[srv.name].max_batch > 0
                   and a.max_batch != snapshot.servers[srv.name].max_batch]
        if not changed:
            return free, system
        pinned_system = system
        for name in changed:
            pinned_system = with_pinned(pinned_system, [name],
                                    max_batch_size=snapshot.servers[name].max_batch)
        pinned = run(pinned_system)
        keep = []
        for name in changed:
            a_pin, a_free = pinned.allocations.get(name), free.allocations[name]
            if a_pin is None or name in pinned.best_effort or name in pinned.unallocated:
                continue  # the current max batch cannot serve the load: change it
            current = snapshot.servers[name].max_batch
            near = abs(a_free.max_batch - current) <= s.max_batch_tolerance * current
            young = now_s - self._memory[name].batch_since_s < s.max_batch_dwell_s
            small = a_pin.cost <= a_free.cost * (1.0 + s.max_batch_min_saving)
            if near or young or small:
                keep.append(name)
        if len(keep) == len(changed):
            return pinned, pinned_system
        if not keep:
            return free, system
        mixed = system
        for name in keep:
            mixed = with_pinned(mixed, [name], max_batch_size=snapshot.servers[name].max_batch)
        return run(mixed), mixed

    def _best_effort(self, run: _Solves, solution: _Result,
                     system: System) -> tuple[_Result, System]:
        """Solve again best effort (fallback saturation policy) when servers are short."""
        fallback = self.settings.fallback_saturation_policy
        is_short = solution.status == "infeasible" or bool(solution.unallocated)
        if not (is_short and system.settings.saturation_policy is SaturationPolicy.NONE
                and fallback is not SaturationPolicy.NONE):
            return solution, system
        system = replace(system, settings=replace(system.settings, saturation_policy=fallback))
        second = run(system)
        second.message = (f"{solution.status}: {solution.message}; best effort by {fallback}: "
                          f"{second.status}: {second.message}")
        return second, system

    def _with_margin(self, run: _Solves, solution: _Result, system: System,
                     snapshot: ClusterSnapshot, now_s: float) -> tuple[_Result, System]:
        """Scale down only to what the recent peak × (1 + margin) needs (hysteresis).

        The peak is the highest rate and token means observed over `scale_down_window_s`
        (and this cycle's plan): under a noisy stationary load the window
        means scatter by tens of % (a window's mean output length too), and a scale-down
        sized for a quiet window is reversed by the next busy one."""
        margin = self.settings.scale_down_margin
        downs = [name for name, a in solution.allocations.items()
                 if a.num_replicas < current_replicas(snapshot.servers[name])
                 and a.accelerator == snapshot.servers[name].accelerator
                 and name not in solution.best_effort and name not in solution.unallocated]
        if margin <= 0 or not downs:
            return solution, system
        since = now_s - self.settings.scale_down_window_s
        peaks = {}
        for srv in system.servers:
            if srv.name in downs:
                state, load = self._state(srv.name), srv.current.load
                rates = [rpm for t, rpm in state.history if t >= since]
                tokens = [(i, o) for t, i, o in state.token_history if t >= since]
                peaks[srv.name] = replace(
                    load, arrival_rpm=max([load.arrival_rpm, *rates]) * (1.0 + margin),
                    avg_in_tokens=round(max([load.avg_in_tokens, *(i for i, _ in tokens)])),
                    avg_out_tokens=round(max([load.avg_out_tokens, *(o for _, o in tokens)])))
        inflated = with_loads(system, peaks)
        second = run(inflated)
        if second.status == "infeasible" or len(second.allocations) < len(solution.allocations):
            return solution, system
        second.unallocated |= solution.unallocated
        allocations = dict(second.allocations)
        for name in downs:  # the margin holds a scale-down back, it never scales up
            alloc, now = allocations.get(name), current_replicas(snapshot.servers[name])
            if alloc is not None and alloc.num_replicas > now:
                allocations[name] = replace(alloc, num_replicas=now,
                                            cost=alloc.cost / alloc.num_replicas * now)
        second.allocations = allocations
        return second, system

    def _guard_migrations(self, run: _Solves, solution: _Result, system: System,
                          snapshot: ClusterSnapshot, static: System
                          ) -> tuple[_Result, System]:
        """No migration onto a type whose free cards cannot hold the new replicas, nor one
        that leaves the type less than `migration_headroom` × what it is given (settings);
        the latter only while the server can stay where it is."""
        free = free_cards(static, snapshot)
        used = self._cards_given(solution, snapshot, static)
        headroom = self.settings.migration_headroom
        priority = {c.name: c.priority for c in static.classes.values()}
        moves = sorted(
            ((name, a) for name, a in solution.allocations.items()
             if a.accelerator and a.num_replicas > 0
             and a.accelerator != snapshot.servers[name].accelerator),
            key=lambda item: (priority.get(snapshot.servers[item[0]].class_name
                                           or DEFAULT_CLASS, 100), item[0]))
        no_cards, crowded = [], []
        for name, alloc in moves:
            obs = snapshot.servers[name]
            acc_type, units = cards(static, obs.model, alloc.accelerator, alloc.num_replicas)
            if acc_type in free and free[acc_type] < units:
                no_cards.append(name)
            elif acc_type in free and headroom > 0 and obs.accelerator \
                    and used[acc_type] * headroom > static.capacity[acc_type]:
                crowded.append(name)
            elif acc_type in free:
                free[acc_type] -= units
        if not no_cards and not crowded:
            return solution, system
        pinned = with_pinned(system, no_cards + crowded)
        second = run(pinned)
        stranded = [n for n in crowded if n not in second.allocations]
        if stranded:  # served only elsewhere: the headroom is not worth the server
            pinned = with_pinned(system, no_cards)
            second = run(pinned)
        second.unallocated |= solution.unallocated
        second.blocked = set(no_cards)
        second.crowded = set(crowded) - set(stranded)
        return second, pinned

    @staticmethod
    def _cards_given(solution: _Result, snapshot: ClusterSnapshot,
                     static: System) -> dict[str, int]:
        """Cards of each type the solution gives, plus those held by servers outside it."""
        used = dict.fromkeys(static.capacity, 0)
        for name, obs in snapshot.servers.items():
            alloc = solution.allocations.get(name)
            model_acc = ((alloc.accelerator, alloc.num_replicas) if alloc is not None
                         else (obs.accelerator, held_replicas(obs)))
            if model_acc[0] in static.accelerators and model_acc[1] > 0:
                acc_type, units = cards(static, obs.model, *model_acc)
                if acc_type in used:
                    used[acc_type] += units
        return used

    def _decision(self, solution: _Result, names: list[str], snapshot: ClusterSnapshot,
                  static: System, loads: Mapping[str, LoadEstimate | str],
                  notes: dict[str, str], now_s: float, solve_ms: float) -> Decision:
        s = self.settings
        plans: dict[str, ServerPlan] = {}
        releases: set[str] = set()
        records: dict[str, dict[str, float | None]] = {}
        for name in names:
            obs = snapshot.servers[name]
            load = loads[name]
            why: list[str] = list(load.notes) if isinstance(load, LoadEstimate) else []
            record: dict[str, float | None] = dict(self.correction.state(name))
            if isinstance(load, LoadEstimate):
                record["planned_rpm"] = load.arrival_rpm
            records[name] = record
            if name in solution.blocked:
                why.append("migration held: no free cards")
            if name in solution.crowded:
                why.append("migration held: no headroom on the cheaper type")
            alloc = solution.allocations.get(name)
            current = current_replicas(obs)
            floor = max(obs.min_num_replicas, s.min_replicas)
            if name in solution.unallocated and not solution.allocations:
                # nothing was allocated at all: an infeasible solve changes nothing
                notes[name] = "; ".join([*why, "kept: unallocated"])
                continue
            if name in solution.unallocated:
                plans[name] = keep_plan(obs, floor)
                why.append("unallocated: to its floor")
                releases.add(name)
                notes[name] = "; ".join(why)
                continue
            if alloc is None:  # never scale a server down for being left out (P12)
                notes[name] = "; ".join([*why, "missing from solution"])
                continue
            if alloc.num_replicas == 0 or not alloc.accelerator:
                plan = keep_plan(obs, alloc.num_replicas)
            else:
                plan = ServerPlan(name=name, namespace=obs.namespace,
                                  accelerator=alloc.accelerator,
                                  num_replicas=alloc.num_replicas, max_batch=alloc.max_batch)
            if name in solution.best_effort:
                why.append("best effort")
                if plan.num_replicas < current:
                    releases.add(name)
            elif plan.num_replicas < current and plan.accelerator == obs.accelerator:
                hold = self._scale_down_hold(obs, static, now_s)
                if hold:
                    why.append(f"held at {current}: {hold}")
                    plan = replace(plan, num_replicas=current)
            plans[name] = plan
            if why:
                notes[name] = "; ".join(why)
        return Decision(plan=AllocationPlan(servers=plans), status=str(solution.status),
                        message=solution.message, predicted=dict(solution.allocations),
                        notes=notes, solve_ms=solve_ms, unstabilised=frozenset(releases),
                        records=records)

    def _scale_down_hold(self, obs: ServerObservation, static: System, now_s: float) -> str:
        """Why a scale-down of ``obs`` must wait ('' when it may go ahead)."""
        since_up = now_s - self._memory[obs.name].last_up_s
        if since_up < self.settings.reversal_hold_s:
            return f"scaled up {since_up:.0f} s ago"
        if not self.uses_feedback:
            return ""
        allowance = self.settings.demand.waiting_allowance * max(obs.ready_replicas, 1)
        if obs.waiting_now is not None and obs.waiting_now > allowance:
            return f"{obs.waiting_now:.0f} requests waiting"
        cls = static.classes.get(obs.class_name or DEFAULT_CLASS)
        target = cls.targets.get(obs.model) if cls is not None else None
        if target is not None:
            for label, seen, goal in (("TTFT", obs.ttft_ms, target.slo_ttft_ms),
                                      ("ITL", obs.itl_ms, target.slo_itl_ms)):
                if goal > 0 and seen is not None and seen > goal:
                    return f"observed {label} {seen:.0f} ms > {goal:.0f} ms"
        return ""


class _Result:
    """A solution plus what the policy learned while solving (mutable notes)."""

    def __init__(self, solution: Solution, unallocated: Iterable[str] | None = None) -> None:
        self.solution = solution
        self.allocations: Mapping[str, Allocation] = solution.allocations
        self.status = str(solution.status)
        self.message: str = solution.message
        self.best_effort = set(solution.best_effort)
        self.unallocated = set(solution.unallocated if unallocated is None else unallocated)
        self.blocked: set[str] = set()
        self.crowded: set[str] = set()


class _Solves:
    """Runs the optimizer and adds up its reported solve time."""

    def __init__(self, solve: Solve) -> None:
        self._solve = solve
        self.solve_ms = 0.0

    def __call__(self, system: System) -> _Result:
        solution = self._solve(system)
        self.solve_ms += solution.solve_time_ms
        return _Result(solution)


class OraclePolicy(InfernoPolicy):
    """The optimizer fed the true mean load of the period in which replicas asked for now
    are ready (``[now + lead, now + lead + horizon)``, lead = the expected startup), with no
    feedback: an upper bound on what forecasting alone gives."""

    name = "oracle"
    uses_feedback = False

    def __init__(self, settings: InfernoSettings | None = None, *, future_load: FutureLoad,
                 horizon_s: float = 60.0, lead_s: float | None = None,
                 solve: Solve | None = None) -> None:
        super().__init__(settings, solve=solve)
        if not (math.isfinite(horizon_s) and horizon_s > 0):
            raise ConfigError(f"oracle: horizon_s must be > 0, got {horizon_s!r}")
        self._future_load = future_load
        self.horizon_s = horizon_s
        self.offset_s = self.settings.startup_s if lead_s is None else lead_s

    def loads(self, snapshot: ClusterSnapshot, now_s: float,
              static: System) -> dict[str, LoadEstimate | str]:
        loads: dict[str, LoadEstimate | str] = {}
        start = now_s + self.offset_s
        for name in snapshot.servers:
            rpm, in_tokens, out_tokens = self._future_load(name, start, start + self.horizon_s)
            loads[name] = LoadEstimate(arrival_rpm=rpm, avg_in_tokens=in_tokens,
                                       avg_out_tokens=out_tokens)
        return loads
