"""Sweeps: a grid of scenario variants × policies × seeds, and their tidy result tables.

A sweep file names a scenario and adds (docs/scenarios.md, "Sweeps"):

```yaml
scenario: ../ramp-5x.yaml          # relative to the sweep file
policies: [inferno, hpa]           # empty: the scenario's policy
seeds: 3                           # replications per grid point and policy
seed: 7                            # root of the SeedSequence the run seeds are spawned from
set: {duration_s: 1800}            # fixed overrides (dotted key paths)
grid:                              # dotted key path -> values; the product is swept
  twin.startup.mean_s: [30, 120]
```

Expansion is ``itertools.product(grid values) × policies × seeds``. Replication i uses the
same seed at every grid point and for every policy (common random numbers: policies are compared
on the same requests). Execution lives in `sim.sweep` (local processes or a Dask cluster); this
module is world independent.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferno.errors import ConfigError
from inferno.io.yamlbind import bind_path, describe
from sim.scenario import POLICY_NAMES, Scenario, load_scenario, read_yaml

SWEEP_KEYS = ("name", "scenario", "policies", "seeds", "seed", "set", "grid")
METRIC_COLUMNS = ("requests", "dropped", "slo_attainment", "ttft_mean_ms", "ttft_p90_ms",
                  "ttft_p99_ms", "itl_mean_ms", "itl_p90_ms", "itl_p99_ms", "cost", "gpu_hours",
                  "replica_changes")
TOTAL = "*"
"""`server` value of the rows that hold a run's totals."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepSpec:
    name: str
    scenario: Path
    policies: tuple[str, ...] = ()
    seeds: int = 1
    seed: int = 0
    fixed: tuple[tuple[str, Any], ...] = ()
    """The `set:` overrides, in file order."""
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One run of a sweep."""

    run_id: str
    policy: str
    seed: int
    seed_index: int
    params: Mapping[str, Any] = field(default_factory=dict)
    """The grid point: dotted key path → value."""


def load_sweep(path: Path | str) -> SweepSpec:
    """Read and check a sweep file (the scenario path is relative to the sweep file)."""
    path = Path(path)
    doc = read_yaml(path)
    where = f"{path}: "
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{where}expected a mapping at the top level")
    unknown = [k for k in doc if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown key; allowed: {', '.join(SWEEP_KEYS)}")
    if "scenario" not in doc:
        raise ConfigError(f"{where}scenario: required, the path of a scenario file")
    scenario = bind_path(doc["scenario"], file=str(path), base_dir=path.parent,
                         where="scenario")
    policies = doc.get("policies") or []
    if isinstance(policies, str):
        policies = [policies]
    if not isinstance(policies, list) or not all(isinstance(p, str) for p in policies):
        raise ConfigError(f"{where}policies: expected a list of policy names")
    for i, name in enumerate(policies):
        if name not in POLICY_NAMES:
            raise ConfigError(f"{where}policies[{i}]: unknown policy {describe(name)}; choose from "
                              f"{', '.join(POLICY_NAMES)}")
    seeds, root = doc.get("seeds", 1), doc.get("seed", 0)
    for key, value, low in (("seeds", seeds, 1), ("seed", root, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{where}{key}: expected an integer >= {low}, got {describe(value)}")
    fixed = doc.get("set") or {}
    grid = doc.get("grid") or {}
    for key, value in (("set", fixed), ("grid", grid)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}{key}: expected a mapping of dotted key paths")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}grid.{key}: expected a non-empty list of values")
    if not scenario.exists() or scenario.is_dir():
        raise ConfigError(f"{where}scenario: {scenario}: "
                          f"{'a directory, not a' if scenario.exists() else 'no such'} file")
    return SweepSpec(name=str(doc.get("name") or path.stem), scenario=scenario,
                     policies=tuple(policies), seeds=seeds, seed=root,
                     fixed=tuple((str(k), v) for k, v in fixed.items()),
                     grid=tuple((str(k), tuple(v)) for k, v in grid.items()),
                     source=str(path))


def run_seeds(root: int, count: int) -> tuple[int, ...]:
    """`count` independent run seeds spawned from `root` (numpy SeedSequence)."""
    return tuple(int(child.generate_state(1)[0])
                 for child in np.random.SeedSequence(root).spawn(count))


def expand(sweep: SweepSpec, default_policy: str = "inferno") -> list[RunSpec]:
    """Every run of the sweep: grid points (product, file order) × policies × seeds."""
    keys = [key for key, _ in sweep.grid]
    points = list(itertools.product(*(values for _, values in sweep.grid)))
    policies = sweep.policies or (default_policy,)
    seeds = run_seeds(sweep.seed, sweep.seeds)
    runs: list[RunSpec] = []
    for point in points:
        for policy in policies:
            for index, seed in enumerate(seeds):
                runs.append(RunSpec(run_id=f"{len(runs):04d}", policy=policy, seed=seed,
                                    seed_index=index, params=dict(zip(keys, point,
                                                                      strict=True))))
    return runs


def scenario_for(sweep: SweepSpec, run: RunSpec) -> Scenario:
    """The scenario of one run: the base, the fixed overrides, the grid point, policy, seed."""
    overrides = [*sweep.fixed, *run.params.items(), ("policy.name", run.policy),
                 ("seed", run.seed)]
    try:
        return load_scenario(sweep.scenario, overrides=overrides)
    except ConfigError as exc:
        point = ", ".join(f"{k}={describe(v)}" for k, v in run.params.items()) or "no grid values"
        raise ConfigError(f"{sweep.source}: run {run.run_id} ({point}): {exc}") from None


def _metrics(doc: Mapping[str, Any]) -> dict[str, Any]:
    ttft, itl = doc["ttft_ms"], doc["itl_ms"]
    return {"requests": doc["requests"], "dropped": doc["dropped"],
            "slo_attainment": doc["slo_attainment"], "ttft_mean_ms": ttft["mean"],
            "ttft_p90_ms": ttft["p90"], "ttft_p99_ms": ttft["p99"], "itl_mean_ms": itl["mean"],
            "itl_p90_ms": itl["p90"], "itl_p99_ms": itl["p99"], "cost": doc["cost"],
            "gpu_hours": doc["gpu_hours"], "replica_changes": doc["replica_changes"]}


def results_table(runs: Sequence[RunSpec], summaries: Sequence[Mapping[str, Any]]
                  ) -> pd.DataFrame:
    """The tidy table: one row per run × server, plus one `server = "*"` row per run."""
    rows = []
    for run, summary in zip(runs, summaries, strict=True):
        head = {"run_id": run.run_id, "policy": run.policy, "seed": run.seed,
                "seed_index": run.seed_index, **run.params}
        rows.append({**head, "server": TOTAL, **_metrics(summary)})
        rows.extend({**head, "server": name, **_metrics(doc)}
                    for name, doc in summary["servers"].items())
    return pd.DataFrame(rows)


def policy_means(table: pd.DataFrame, params: Sequence[str] = ()) -> pd.DataFrame:
    """Run totals averaged over seeds, per grid point and policy."""
    totals = table[table["server"] == TOTAL]
    keys = [*params, "policy"]
    return (totals.groupby(keys, sort=False)[["slo_attainment", "cost", "gpu_hours",
                                              "replica_changes", "dropped"]]
            .mean().reset_index())


def plot_cost_vs_slo(table: pd.DataFrame, path: Path | str, title: str = "") -> None:
    """Cost vs SLO attainment of every run (dots) and per-policy means (large markers)."""
    from matplotlib.figure import Figure

    totals = table[table["server"] == TOTAL]
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    colours = dict(zip(sorted(totals["policy"].unique()),
                       itertools.cycle(["tab:blue", "tab:orange", "tab:green", "tab:red",
                                        "tab:purple", "tab:brown"]), strict=False))
    for policy, group in totals.groupby("policy", sort=True):
        colour = colours[policy]
        ax.scatter(100 * group["slo_attainment"], group["cost"], s=14, alpha=0.45, color=colour)
        ax.scatter(100 * group["slo_attainment"].mean(), group["cost"].mean(), s=90,
                   marker="D", color=colour, edgecolor="black", label=policy)
    ax.set_xlabel("SLO attainment (% of requests)")
    ax.set_ylabel("cost (accelerator cost units × h)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "cost vs SLO attainment")
    fig.savefig(path, dpi=100)


def cycles_table(runs: Sequence[RunSpec], cycles: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """run × server × cycle: each run's cycle table with the run's policy, seed and point."""
    frames = []
    for run, frame in zip(runs, cycles, strict=True):
        head = pd.DataFrame({"run_id": run.run_id, "policy": run.policy, "seed": run.seed,
                             **{k: [v] * len(frame) for k, v in run.params.items()}},
                            index=frame.index)
        frames.append(pd.concat([head, frame], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def manifest(sweep: SweepSpec, base: Mapping[str, Any], runs: Sequence[RunSpec],
             wall_s: Sequence[float]) -> dict[str, Any]:
    """What was run: the sweep, the resolved base scenario, and every run's inputs."""
    return {
        "sweep": {"name": sweep.name, "source": sweep.source, "scenario": str(sweep.scenario),
                  "policies": list(sweep.policies), "seeds": sweep.seeds, "seed": sweep.seed,
                  "set": dict(sweep.fixed), "grid": {k: list(v) for k, v in sweep.grid}},
        "base_scenario": dict(base),
        "runs": [{"run_id": r.run_id, "policy": r.policy, "seed": r.seed,
                  "seed_index": r.seed_index, "params": dict(r.params), "wall_s": w}
                 for r, w in zip(runs, wall_s, strict=True)],
    }
