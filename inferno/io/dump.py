"""A `System` back to upstream JSON (the six data files), the inverse of `load_system`.

Used to write generated systems (benchmarks, tests) in the form the CLI and the upstream Go
optimizer read. ``load_system`` of the written files gives the same `System`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inferno.io.jsondata import (
    ACCELERATOR_FILE,
    CAPACITY_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    SERVER_FILE,
    SERVICECLASS_FILE,
)
from inferno.io.output import write_json_atomic
from inferno.io.solution import allocation_to_json
from inferno.model import Allocation, ModelTarget, PerfParms, StepShape, System


def _whole(value: float) -> float | int:
    """An integral value as a JSON integer: upstream types these fields ``int``, and Go's
    decoder rejects ``24.0`` there. Fractional values (inferno accepts them) stay as they are."""
    return int(value) if float(value).is_integer() else value


def _current(alloc: Allocation) -> dict[str, Any]:
    doc = allocation_to_json(alloc)
    del doc["saturated"]  # an output flag, not part of upstream AllocationData
    return doc


def perf_parms_to_json(p: PerfParms) -> dict[str, Any]:
    """perfParms: α, β, γ, and inferno's optional terms only where they are in use."""
    doc: dict[str, Any] = {"alpha": p.alpha_ms, "beta": p.beta_ms, "gamma": p.gamma_ms}
    doc.update({wire: value for wire, value in (
        ("frontend", p.frontend_ms), ("frontendPerToken", p.frontend_per_token_ms),
        ("stream", p.stream_ms)) if value})
    if p.shape is not StepShape.LINEAR:
        doc.update(shape=p.shape.value, kneeTokens=p.knee_tokens, betaHigh=p.beta_high_ms)
    return doc


def _target(t: ModelTarget) -> dict[str, Any]:
    """A model target; the percentile keys (inferno) only where a target is on one."""
    doc: dict[str, Any] = {"model": t.model, "slo-itl": t.slo_itl_ms,
                           "slo-ttft": t.slo_ttft_ms, "slo-tps": t.slo_tps}
    if t.slo_ttft_percentile:
        doc["slo-ttft-percentile"] = t.slo_ttft_percentile
    if t.slo_itl_percentile:
        doc["slo-itl-percentile"] = t.slo_itl_percentile
    return doc


def system_to_json(system: System) -> dict[str, dict[str, Any]]:
    """File name → document, for the six files of a data directory."""
    s = system.settings
    return {
        ACCELERATOR_FILE: {"accelerators": [{
            "name": a.name, "type": a.type, "multiplicity": a.multiplicity,
            "memSize": _whole(a.mem_gb), "memBW": _whole(a.mem_bw_gbps), "cost": a.cost_per_hr,
            "power": {"idle": _whole(a.power.idle_w), "full": _whole(a.power.full_w),
                      "midPower": _whole(a.power.mid_w), "midUtil": a.power.mid_util}}
            for a in system.accelerators.values()]},
        CAPACITY_FILE: {"count": [{"type": t, "count": n} for t, n in system.capacity.items()]},
        MODEL_FILE: {"models": [{
            "name": p.model, "acc": p.accelerator, "accCount": p.acc_count,
            "maxBatchSize": p.max_batch_size, "atTokens": p.at_tokens,
            "maxNumTokens": p.max_num_tokens,
            "perfParms": perf_parms_to_json(p.perf)} for p in system.perf.values()]},
        SERVICECLASS_FILE: {"serviceClasses": [{
            "name": c.name, "priority": c.priority,
            "modelTargets": [_target(t) for t in c.targets.values()]}
            for c in system.classes.values()]},
        SERVER_FILE: {"servers": [{
            "name": v.name, "class": v.class_name, "model": v.model,
            "keepAccelerator": v.keep_accelerator, "minNumReplicas": v.min_num_replicas,
            "maxBatchSize": v.max_batch_size,
            **({} if v.max_queue_size is None else {"maxQueueSize": v.max_queue_size}),
            "currentAlloc": _current(v.current)} for v in system.servers]},
        OPTIMIZER_FILE: {"optimizer": {
            "unlimited": s.unlimited, "heterogeneous": s.heterogeneous,
            "milpSolver": s.milp_solver, "useCplex": s.use_cplex,
            "delayedBestEffort": s.delayed_best_effort,
            "saturationPolicy": s.saturation_policy.value, "perfModel": s.perf_model.value,
            "batchPolicy": s.batch_policy.value, "accelPenaltyFactor": s.accel_penalty_factor,
            "milpTimeLimit": s.milp_time_limit_s}},
    }


def write_system(system: System, directory: str | Path) -> None:
    """Write the six data files of ``system`` into ``directory`` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in system_to_json(system).items():
        write_json_atomic(directory / name, doc)
