"""Twin speed and memory: simulated traffic per wall second, and how cost scales.

Reference case (speed target: ≤ 1.8 s wall, i.e. ≥ 2,000x real time, and ≤ 1 GB): one hour
of Poisson traffic at 50 req/s over 20 replicas of granite_13b on H100 (sample-data/large, max
batch 64), 512 input / 256 output tokens, round-robin routing, metrics sampled every 5 s.
"streaming" cases keep no request once it has finished (handed off every 10 s, as
`inferno sim bench` without --requests-table); the others keep every request and build the
per-request table at the end. Each case runs in a fresh subprocess on one core (OMP/BLAS
threads = 1), several times; the table reports the median wall and CPU time with the spread of
the walls (min-max), simulated requests and SimPy events per wall second, and the peak RSS of
the child. Wall times are noisy on a shared machine: CPU time is the steadier figure.

The "sim bench" cases run `inferno sim bench` itself (`sim.bench.run_bench`, no request
table, no sampler): "one SimPy environment" is the path state-dependent runs take; "per
replica" simulates each replica on its own (`sim.openloop`, the default for open-loop
round-robin runs) in 1 or 2 processes. CPU time there includes the worker process.

Usage: python benchmarks/sim_bench.py [--repeats 5] [--quick]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL, ACC = "granite_13b", "H100"


def _one(rate_rps: float, replicas: int, duration_s: float, kv_tokens: int | None,
         fast_path: bool, streaming: bool = False) -> dict:
    import numpy as np
    import simpy

    from inferno.io import load_system
    from sim import workload as wl
    from sim.cluster import Cluster
    from sim.deployment import DeploymentSpec
    from sim.replica import EngineSettings

    system = load_system(ROOT / "sample-data" / "large")
    mp = system.perf[(MODEL, ACC)]
    t0, c0 = time.perf_counter(), time.process_time()
    env = simpy.Environment()
    ss_cluster, ss_arrivals = np.random.SeedSequence(2026).spawn(2)
    cluster = Cluster(env, system, seed=ss_cluster, sample_period_s=5.0,
                      retain_requests=not streaming)
    dep = cluster.add_deployment(DeploymentSpec(
        name="bench", model=MODEL, accelerator=ACC, max_batch=mp.max_batch_size,
        num_replicas=replicas,
        engine=EngineSettings(kv_capacity_tokens=kv_tokens, fast_path=fast_path)))
    lengths = iter(lambda: (512, 256), None)
    wl.arrivals(env, wl.ArrivalProcess(rate=wl.constant(rate_rps)).times(
        np.random.default_rng(ss_arrivals)), lengths, dep.submit, wl.RequestFactory(),
        until_s=duration_s)
    handed_off = [0]

    def hand_off():  # what a streaming run does: forget finished requests every 10 s
        while env.now < duration_s or dep.num_pending():
            yield env.timeout(10.0)
            handed_off[0] += sum(len(r.hand_off()) for r in dep.replicas)

    if streaming:
        env.process(hand_off())
    env.run()
    if streaming:
        num = dep.num_arrivals
    else:
        num = len(cluster.requests())
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    samples = len(cluster.timeseries())
    events = cluster.num_events + num + samples // max(replicas, 1)
    return {"rate_rps": rate_rps, "replicas": replicas, "duration_s": duration_s,
            "kv_tokens": kv_tokens, "fast_path": fast_path, "wall_s": wall, "cpu_s": cpu,
            "requests": num, "events": events, "iterations": cluster.num_iterations,
            "preemptions": sum(r.num_preemptions for r in dep.replicas),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _one_bench(rate_rps: float, replicas: int, duration_s: float, workers: str) -> dict:
    from inferno.io import load_system
    from sim.bench import BenchConfig, run_bench

    system = load_system(ROOT / "sample-data" / "large")
    mp = system.perf[(MODEL, ACC)]
    cfg = BenchConfig(model=MODEL, accelerator=ACC, in_tokens=512, out_tokens=256,
                      rate_rps=rate_rps, replicas=replicas, duration_s=duration_s,
                      max_batch=mp.max_batch_size, seed=2026)
    t0, c0 = time.perf_counter(), time.process_time()
    if workers == "simpy":
        result = run_bench(system, cfg, requests_table=False, per_replica=False)
    else:
        result = run_bench(system, cfg, requests_table=False, per_replica=True,
                           workers=int(workers))
    wall = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rate_rps": rate_rps, "replicas": replicas, "duration_s": duration_s,
            "wall_s": wall, "requests": result.num_requests,
            "cpu_s": time.process_time() - c0 + children.ru_utime + children.ru_stime,
            "events": 0, "peak_mb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                        children.ru_maxrss) / 1024}


BENCH_CASES = {
    # name: (rate_rps, replicas, duration_s, processes or "simpy")
    "sim bench 50 rps x 20, 1 h, per replica, 1 process": (50.0, 20, 3600.0, "1"),
    "sim bench 50 rps x 20, 1 h, per replica, 2 processes": (50.0, 20, 3600.0, "2"),
    "sim bench 50 rps x 20, 1 h, one SimPy environment": (50.0, 20, 3600.0, "simpy"),
}

CASES = {
    # name: (rate_rps, replicas, duration_s, kv_tokens, fast_path[, streaming])
    "reference 50 rps x 20, 1 h, streaming": (50.0, 20, 3600.0, None, True, True),
    "reference 50 rps x 20, 1 h": (50.0, 20, 3600.0, None, True),
    "load 12.5 rps x 20": (12.5, 20, 3600.0, None, True),
    "load 25 rps x 20": (25.0, 20, 3600.0, None, True),
    "load 100 rps x 20": (100.0, 20, 3600.0, None, True),
    "replicas 12.5 rps x 5": (12.5, 5, 3600.0, None, True),
    "replicas 25 rps x 10": (25.0, 10, 3600.0, None, True),
    "replicas 100 rps x 40": (100.0, 40, 3600.0, None, True),
    "KV 8k tokens (preempting), 50 rps x 20": (50.0, 20, 3600.0, 8_000, True),
    "no fast path, 50 rps x 20, 6 min": (50.0, 20, 360.0, None, False),
    "fast path, 50 rps x 20, 6 min": (50.0, 20, 360.0, None, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="Only the reference cases.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        params = json.loads(args.child)
        print(json.dumps(_one_bench(*params) if len(params) == 4 else _one(*params)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    cases = {**BENCH_CASES, **(dict(list(CASES.items())[:2]) if args.quick else CASES)}
    print(f"| case | requests | events | wall s (median of {args.repeats}) | wall min-max "
          "| CPU s | x real time | requests/s | events/s | peak MB | load average |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, params in cases.items():
        runs = []
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(params)],
                                 check=True, capture_output=True, text=True, env=env)
            runs.append(json.loads(out.stdout))
        wall = statistics.median(r["wall_s"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        r = runs[0]
        walls = [x["wall_s"] for x in runs]
        print(f"| {name} | {r['requests']:,} | {r['events']:,} | {wall:.2f} "
              f"| {min(walls):.2f}-{max(walls):.2f} | {cpu:.2f} "
              f"| {r['duration_s'] / wall:,.0f} | {r['requests'] / wall:,.0f} "
              f"| {r['events'] / wall:,.0f} | {max(x['peak_mb'] for x in runs):.0f} "
              f"| {load:.1f}-{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
