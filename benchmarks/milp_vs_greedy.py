"""MILP against greedy on the reference cases and on random capacity-starved systems.

For every system: the number of fully served servers (allocated at their SLO size, not best
effort) per priority level under greedy and under the MILP, total cost, and whether the MILP
kept capacity, never failed, and served at least as many servers as greedy at every level.
Systems with ``unlimited: true`` are also run with the MILP requested, and must come out
exactly as unlimited. Prints a summary (markdown) for docs/milp.md.

Usage: python benchmarks/milp_vs_greedy.py [--seeds 40] [--servers 12,25,40]
       [--scales 0.02,0.05,0.1,0.3] [--policies scaled,search] [--heterogeneous]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from synthetic import CASES, case_like_system  # noqa: E402

from inferno.io import load_system  # noqa: E402
from inferno.model import BatchPolicy, SolverKind, System  # noqa: E402
from inferno.optimizer import Solution, solve  # noqa: E402


def full_counts(system: System, solution: Solution) -> dict[int, int]:
    """Fully served servers per priority level."""
    prio = {s.name: system.classes[s.class_name].priority for s in system.servers}
    out: Counter[int] = Counter({p: 0 for p in prio.values()})
    for name in solution.allocations:
        if name not in solution.best_effort:
            out[prio[name]] += 1
    return dict(sorted(out.items()))


def full_value(system: System, solution: Solution) -> float:
    """Σ ranking value (cost + transition penalty) of the fully served servers: what the
    MILP minimises once the counts per level are fixed."""
    import numpy as np

    from inferno.optimizer.candidates import transition_value

    servers = {s.name: s for s in system.servers}
    total = 0.0
    for name, a in solution.allocations.items():
        if name in solution.best_effort or not a.accelerator:
            continue
        cur = servers[name].current
        total += float(transition_value(
            np.array(cur.accelerator == a.accelerator), np.array(cur.num_replicas),
            np.array(cur.cost), np.array(a.num_replicas), np.array(a.cost),
            system.settings.accel_penalty_factor))
    return total


def used_cards(system: System, solution: Solution) -> dict[str, int]:
    units = {(m, a): p.acc_count * system.accelerators[a].multiplicity
             for (m, a), p in system.perf.items()}
    model = {s.name: s.model for s in system.servers}
    used: Counter[str] = Counter()
    for name, alloc in solution.allocations.items():
        for part in solution.parts.get(name, (alloc,)):
            if part.accelerator:
                used[system.accelerators[part.accelerator].type] += (
                    part.num_replicas * units[(model[name], part.accelerator)])
    return dict(used)


def compare(label: str, system: System) -> dict:
    t0 = time.perf_counter()
    greedy = solve(system, solver=SolverKind.GREEDY)
    t1 = time.perf_counter()
    milp = solve(system, solver=SolverKind.MILP)
    t2 = time.perf_counter()
    g, m = full_counts(system, greedy), full_counts(system, milp)
    row = {"label": label, "greedy": g, "milp": m, "greedy_cost": greedy.cost,
           "milp_cost": milp.cost, "milp_s": t2 - t1, "greedy_s": t1 - t0,
           "greedy_value": full_value(system, greedy), "milp_value": full_value(system, milp),
           "message": milp.message, "unlimited": system.settings.unlimited}
    row["failed"] = "failed" in milp.message.lower() or "infeasible" in milp.message.lower()
    row["dominates"] = all(m[p] >= g[p] for p in g)
    row["lex_better"] = tuple(m.values()) > tuple(g.values())
    if system.settings.unlimited:
        unl = solve(system, solver=SolverKind.UNLIMITED)
        row["capacity_ok"] = milp.allocations == unl.allocations
    else:
        used = used_cards(system, milp)
        row["capacity_ok"] = all(v <= system.capacity.get(t, 0) for t, v in used.items())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--servers", default="12,25,40")
    ap.add_argument("--scales", default="0.02,0.05,0.1,0.3")
    ap.add_argument("--policies", default="scaled,search")
    ap.add_argument("--heterogeneous", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    rows = []
    for case in sorted(CASES.iterdir()):
        system = load_system(case)
        for het in (False, True) if args.heterogeneous else (False,):
            s = dataclasses.replace(system, settings=dataclasses.replace(
                system.settings, heterogeneous=het))
            rows.append(compare(f"{case.name}{' het' if het else ''}", s))
    for policy in args.policies.split(","):
        for n in (int(x) for x in args.servers.split(",")):
            for scale in (float(x) for x in args.scales.split(",")):
                for seed in range(args.seeds):
                    system = case_like_system(n, seed, capacity_scale=scale)
                    settings = dataclasses.replace(system.settings,
                                                   batch_policy=BatchPolicy(policy),
                                                   heterogeneous=args.heterogeneous)
                    rows.append(compare(f"{policy} n={n} cap={scale} seed={seed}",
                                        dataclasses.replace(system, settings=settings)))
    bad = [r for r in rows if r["failed"] or not r["dominates"] or not r["capacity_ok"]]
    for r in rows if args.verbose else bad:
        print(r)
    limited = [r for r in rows if not r["unlimited"]]
    g_full = sum(sum(r["greedy"].values()) for r in limited)
    m_full = sum(sum(r["milp"].values()) for r in limited)
    better = sum(r["lex_better"] for r in limited)
    same = [r for r in limited if r["milp"] == r["greedy"] and r["greedy_value"] > 0]
    saving = [1 - r["milp_value"] / r["greedy_value"] for r in same]
    dearer = sum(r["milp_value"] > r["greedy_value"] * (1 + 1e-9) for r in same)
    times = sorted(r["milp_s"] for r in rows)
    print("| systems | limited | failed | MILP < greedy at some level | capacity or "
          "unlimited broken | fully served greedy → MILP | MILP serves more (lexicographic) "
          "| value at equal counts: change (mean), systems dearer | MILP solve s (median / max) |")
    print("|---:|---:|---:|---:|---:|---|---:|---|---|")
    mean = sum(saving) / len(saving) if saving else 0.0
    print(f"| {len(rows)} | {len(limited)} | {sum(r['failed'] for r in rows)} | "
          f"{sum(not r['dominates'] for r in rows)} | {sum(not r['capacity_ok'] for r in rows)} "
          f"| {g_full} → {m_full} | {better} | {-100 * mean:+.2f} %, {dearer} of {len(same)} | "
          f"{times[len(times) // 2]:.2f} / {times[-1]:.2f} |")


if __name__ == "__main__":
    main()
