"""Twin at fleet scale: requests/s, real-time factor and peak memory, one process or sharded.

A fleet of R replicas: R/10 deployments of 10 llama_7b replicas on H100 (sample-data/large,
max batch 64, unlimited KV), 2.5 req/s of Poisson traffic per replica with 512 input / 256
output tokens, round-robin routing, the twin scraping every replica every 15 s and the static
policy deciding every 60 s (the controller is not what is measured here), no request table.
Each case runs `sim.closedloop.run.run_scenario` in a fresh subprocess, in one process
(``--shards 1``) or over 2 spawned worker processes (``--shards 2``); the table reports the
median wall and CPU time of the repeats (CPU of the process and of its worker processes),
simulated requests per wall second, the real-time factor (simulated seconds per wall second),
the peak RSS of the largest process, the spread of the walls (min-max) and whether the sharded
run's summary and cycle log (less wall-clock timings) equal the single process's (a SHA-256 of
their JSON).

``--engine bench`` measures `inferno sim bench` instead (`sim.bench.run_bench`, no request
table): one deployment of R replicas with the same traffic (rate 2.5·R req/s, seed 1), no
controller and no scrapes, simulated replica by replica (`sim.openloop`) in 1 or 2 processes
(``--shards``; ``simpy`` = one SimPy environment, the path state-dependent runs take). "same
summary" then compares the `sim bench --json` document with the first listed process count's.

Usage: python benchmarks/fleet_bench.py [--repeats 3] [--replicas 20,200,1000,5000]
       [--shards 1,2] [--seconds 600] [--engine closedloop|bench]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PER_DEPLOYMENT = 10
RPS_PER_REPLICA = 2.5


def fleet(replicas: int, duration_s: float) -> dict:
    num = max(1, replicas // PER_DEPLOYMENT)
    per = replicas // num
    servers = [{"name": f"s{i:04d}", "class": "Premium", "model": "llama_7b",
                "accelerator": "H100", "replicas": per, "max_batch": 64,
                "load": {"rate_rpm": per * RPS_PER_REPLICA * 60.0, "in_tokens": 512,
                         "out_tokens": 256, "lengths": "fixed"}}
               for i in range(num)]
    return {"name": f"fleet-{replicas}", "seed": 1, "duration_s": duration_s, "drain_s": 120,
            "data": str(ROOT / "sample-data" / "large"), "accelerators": ["H100"],
            "capacity": {"H100": 10 * replicas}, "controller": {"period_s": 60},
            "policy": {"name": "static"}, "twin": {"scrape_interval_s": 15},
            "servers": servers}


def _one(replicas: int, duration_s: float, shards: int) -> dict:
    from sim.closedloop.run import run_scenario
    from sim.scenario import parse_scenario

    scenario = parse_scenario(fleet(replicas, duration_s), file=f"fleet-{replicas}")
    w0, c0 = time.perf_counter(), time.process_time()
    result = run_scenario(scenario, requests_table=False, shards=shards)
    wall = time.perf_counter() - w0
    own = time.process_time() - c0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cycles = [{k: v for k, v in c.to_dict().items() if k != "timing"} for c in result.cycles]
    digest = hashlib.sha256(json.dumps([result.summary.to_dict(), cycles], sort_keys=True,
                                       default=str).encode()).hexdigest()
    return {"replicas": replicas, "shards": shards, "duration_s": duration_s,
            "requests": result.summary.requests, "wall_s": wall, "summary_sha": digest,
            "cpu_s": own + children.ru_utime + children.ru_stime,
            "peak_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                           children.ru_maxrss) / 1024}


def _one_bench(replicas: int, duration_s: float, shards: str) -> dict:
    from inferno.io import load_system
    from sim.bench import BenchConfig, run_bench

    system = load_system(ROOT / "sample-data" / "large")
    cfg = BenchConfig(model="llama_7b", accelerator="H100", in_tokens=512, out_tokens=256,
                      rate_rps=RPS_PER_REPLICA * replicas, replicas=replicas,
                      duration_s=duration_s, max_batch=64, seed=1)
    w0, c0 = time.perf_counter(), time.process_time()
    if shards == "simpy":
        result = run_bench(system, cfg, requests_table=False, per_replica=False)
    else:
        result = run_bench(system, cfg, requests_table=False, per_replica=True,
                           workers=int(shards))
    wall = time.perf_counter() - w0
    own = time.process_time() - c0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    digest = hashlib.sha256(json.dumps(result.to_json(), sort_keys=True,
                                       default=str).encode()).hexdigest()
    return {"replicas": replicas, "shards": shards, "duration_s": duration_s,
            "requests": result.num_requests, "wall_s": wall, "summary_sha": digest,
            "cpu_s": own + children.ru_utime + children.ru_stime,
            "peak_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                           children.ru_maxrss) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replicas", default="20,200,1000,5000")
    ap.add_argument("--shards", default="1,2")
    ap.add_argument("--seconds", type=float, default=600.0,
                    help="Simulated seconds per case (5,000 replicas: a fifth of it).")
    ap.add_argument("--engine", choices=("closedloop", "bench"), default="closedloop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        replicas, duration, shards, engine = json.loads(args.child)
        print(json.dumps(_one_bench(replicas, duration, shards) if engine == "bench"
                         else _one(replicas, duration, int(shards))))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    print(f"| replicas | processes | simulated s | requests | wall s | wall min-max | CPU s "
          f"| requests/s | x real time | peak MB | same summary | load average |  "
          f"(median of {args.repeats})")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for replicas in (int(r) for r in args.replicas.split(",")):
        duration = args.seconds if replicas < 5000 else args.seconds / 5
        reference = None
        for shards in args.shards.split(","):
            runs = []
            loads = []
            for _ in range(args.repeats):
                loads.append(os.getloadavg()[0])
                out = subprocess.run(
                    [sys.executable, __file__, "--child",
                     json.dumps([replicas, duration, shards, args.engine])],
                    check=True, capture_output=True, text=True, env=env)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            r = runs[0]
            walls = [x["wall_s"] for x in runs]
            shas = {x["summary_sha"] for x in runs}
            if reference is None:
                reference = shas
                same = "-"
            else:
                same = "yes" if shas == reference and len(shas) == 1 else "NO"
            print(f"| {replicas:,} | {shards} | {duration:,.0f} | {r['requests']:,} "
                  f"| {wall:.1f} | {min(walls):.1f}-{max(walls):.1f} | {cpu:.1f} "
                  f"| {r['requests'] / wall:,.0f} | {duration / wall:,.0f} "
                  f"| {max(x['peak_mb'] for x in runs):,.0f} | {same} "
                  f"| {min(loads):.1f}-{max(loads):.1f} |", flush=True)


if __name__ == "__main__":
    main()
