"""Optimizer speed and memory: sample large and synthetic 100 / 1,000 / 10,000 servers.

Each configuration runs in a fresh single-threaded subprocess pinned to one core (so peak RSS
is that of one solve), several times; the table reports the median solve time (candidates +
solving, no file loading) and the peak memory. Prints a markdown table for
docs/performance.md.

Usage: python benchmarks/optimizer_bench.py [--repeats 5] [--sizes large,100,1000,10000]
       [--policies scaled,search] [--solvers greedy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _one(size: str, policy: str, solver: str) -> dict:
    from dataclasses import replace

    from synthetic import LARGE, synthetic_system

    from inferno.io import load_system
    from inferno.model import BatchPolicy, SolverKind
    from inferno.optimizer import solve

    system = load_system(LARGE) if size == "large" else synthetic_system(int(size))
    system = replace(system, settings=replace(system.settings, batch_policy=BatchPolicy(policy)))
    t0 = time.perf_counter()
    solution = solve(system, solver=SolverKind(solver))
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "policy": policy, "solver": solver, "servers": len(system.servers),
            "solve_ms": wall * 1000, "status": str(solution.status),
            "unallocated": len(solution.unallocated), "peak_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="large,100,1000,10000")
    ap.add_argument("--policies", default="scaled,search")
    ap.add_argument("--solvers", default="greedy")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(*args.child)))
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    print("| servers | batch policy | solver | median solve (ms) | peak RSS (MB) | status |")
    print("|---|---|---|---:|---:|---|")
    for solver in args.solvers.split(","):
        for policy in args.policies.split(","):
            for size in args.sizes.split(","):
                runs = [json.loads(subprocess.run(
                    ["taskset", "-c", "0", sys.executable, __file__, "--child", size, policy,
                     solver], check=True, capture_output=True, text=True, env=env).stdout)
                    for _ in range(args.repeats)]
                med = statistics.median(r["solve_ms"] for r in runs)
                peak = max(r["peak_mb"] for r in runs)
                r = runs[0]
                label = "sample large (27)" if size == "large" else f"{r['servers']:,}"
                print(f"| {label} | {policy} | {solver} | {med:,.0f} | {peak:,.0f} | "
                      f"{r['status']}, {r['unallocated']} unallocated |", flush=True)


if __name__ == "__main__":
    main()
