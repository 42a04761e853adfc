"""The whole optimization input: accelerators, models, classes, servers, settings, capacity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from inferno.model.accelerator import Accelerator
from inferno.model.llm import ModelPerf
from inferno.model.server import Server
from inferno.model.service_class import ServiceClass


class PerfModel(StrEnum):
    CHUNKED = "chunked"
    """G7: upstream chunked prefill with a token budget (optimizer-light semantics)."""
    CLASSIC = "classic"
    """G3: reproduces the upstream sample solutions."""
    VLLM = "vllm"
    """Chunked prefill with vLLM's token accounting and latency model: the prefill iteration
    samples the first token, an arrival waits for the running iteration, near-deterministic
    batched service queues less than a Markovian one; predicts percentiles (the default)."""


class BatchPolicy(StrEnum):
    SEARCH = "search"
    """Optimal-concurrency search (default)."""
    SCALED = "scaled"
    """N = max(floor(maxBatchSize·atTokens/avgOutTokens), 1)."""


class SaturationPolicy(StrEnum):
    NONE = "None"
    PRIORITY_EXHAUSTIVE = "PriorityExhaustive"
    PRIORITY_ROUND_ROBIN = "PriorityRoundRobin"
    ROUND_ROBIN = "RoundRobin"


class SolverKind(StrEnum):
    UNLIMITED = "unlimited"
    GREEDY = "greedy"
    MILP = "milp"


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizerSettings:
    unlimited: bool = False
    heterogeneous: bool = False
    milp_solver: bool = False
    use_cplex: bool = False
    delayed_best_effort: bool = False
    saturation_policy: SaturationPolicy = SaturationPolicy.NONE
    perf_model: PerfModel = PerfModel.VLLM
    batch_policy: BatchPolicy = BatchPolicy.SEARCH
    accel_penalty_factor: float = 0.1
    """Transition penalty weight on a change of accelerator (docs/design/optimizer-model.md §3.4;
    upstream 0.1)."""
    milp_time_limit_s: float = 60.0
    """Budget of one MILP allocation, all its stages together (s); on expiry the best
    allocation found so far is used. Upstream's lp_solve timeout is 60 s."""

    @property
    def solver(self) -> SolverKind:
        """`unlimited` wins over `milpSolver` (upstream precedence)."""
        if self.unlimited:
            return SolverKind.UNLIMITED
        return SolverKind.MILP if self.milp_solver else SolverKind.GREEDY


@dataclass(frozen=True, slots=True, kw_only=True)
class System:
    accelerators: Mapping[str, Accelerator] = field(default_factory=dict)
    perf: Mapping[tuple[str, str], ModelPerf] = field(default_factory=dict)
    """Keyed by (model, accelerator name)."""
    classes: Mapping[str, ServiceClass] = field(default_factory=dict)
    servers: tuple[Server, ...] = ()
    settings: OptimizerSettings = OptimizerSettings()
    capacity: Mapping[str, int] = field(default_factory=dict)
    """Physical cards available per accelerator type."""

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(sorted({m for m, _ in self.perf}))
