"""Optimizer speed and memory: sample large and synthetic 100 / 1,000 / 10,000 servers.

Each size runs in a fresh subprocess (so peak RSS is that of one solve), several times; the
table reports the median solve time (candidates + solving, no file loading) and peak memory.
Usage: python benchmarks/optimizer_bench.py [--repeats 5] [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _one(size: str, solver: str) -> dict:
    from synthetic import LARGE, synthetic_system

    from inferno.io import load_system
    from inferno.model import SolverKind
    from inferno.optimizer import solve

    system = load_system(LARGE) if size == "large" else synthetic_system(int(size))
    t0 = time.perf_counter()
    solution = solve(system, solver=SolverKind(solver))
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "solver": solver, "servers": len(system.servers),
            "solve_ms": wall * 1000, "status": str(solution.status),
            "unallocated": len(solution.unallocated), "peak_mb": peak_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="large,100,1000,10000")
    ap.add_argument("--solvers", default="greedy")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(*args.child)))
        return
    rows = []
    for solver in args.solvers.split(","):
        for size in args.sizes.split(","):
            runs = [json.loads(subprocess.run(
                [sys.executable, __file__, "--child", size, solver], check=True,
                capture_output=True, text=True, env={"OMP_NUM_THREADS": "1",
                                                     "OPENBLAS_NUM_THREADS": "1",
                                                     **_env()}).stdout)
                for _ in range(args.repeats)]
            row = dict(runs[0])
            row["solve_ms"] = statistics.median(r["solve_ms"] for r in runs)
            row["peak_mb"] = max(r["peak_mb"] for r in runs)
            rows.append(row)
            print(f"{solver:>9} {row['size']:>6} servers={row['servers']:>6} "
                  f"median solve {row['solve_ms']:9.1f} ms  peak {row['peak_mb']:7.1f} MB  "
                  f"{row['status']} unallocated={row['unallocated']}", flush=True)


def _env() -> dict:
    import os
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}


if __name__ == "__main__":
    main()
