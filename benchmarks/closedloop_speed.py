"""Wall time of a closed-loop hour with 20 servers in the twin (the robust-control budget).

`python benchmarks/closedloop_speed.py [--repeats N] [--policy P]`: 20 servers (five models
on H100 and A100, Premium / Bronze / Free), 50 req/s in all with mean-reverting noise and a
1.5x swell, a 60 s control period, for one simulated hour, keeping no request table (as
`inferno sim run --no-requests-table`); prints the median wall and CPU time of N runs and the
share spent in the controller: wall (its cycle timings) and CPU (process time of its steps),
the rest of the CPU being the simulation. The target is under 10 s for the inferno policy
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferno.control import Controller  # noqa: E402
from sim.closedloop.run import run_scenario  # noqa: E402
from sim.scenario import parse_scenario  # noqa: E402

MODELS = (("granite_13b", "H100", 56000), ("llama_13b", "A100", 56000),
          ("llama3_8b", "A100", 427000), ("mistral_7b", "H100", 439000),
          ("granite_20b", "H100", 40000))
CLASSES = ("Premium", "Bronze", "Free")


def fleet(num_servers: int = 20, total_rps: float = 50.0) -> dict:
    servers = []
    for i in range(num_servers):
        model, acc, kv = MODELS[i % len(MODELS)]
        servers.append({
            "name": f"s{i:02d}-{model}", "class": CLASSES[i % len(CLASSES)], "model": model,
            "accelerator": acc, "replicas": 1, "kv_capacity_tokens": kv,
            "load": {"rate_rpm": total_rps * 60.0 / num_servers,
                     "in_tokens": 256 + 64 * (i % 7), "out_tokens": 128 + 32 * (i % 5)}})
    return {
        "name": "fleet-20", "seed": 7, "duration_s": 3600, "drain_s": 300,
        "data": str(ROOT / "sample-data" / "large"), "accelerators": ["H100", "A100"],
        "controller": {"period_s": 60},
        "policy": {"inferno": {"keep_accelerator": True}},
        "profile": {"phases": [{"duration_s": 1200, "ratio": 1}, {"duration_s": 600, "ratio": 1.5},
                               {"duration_s": 1200, "ratio": 1}, {"duration_s": 600,
                                                                   "ratio": 0.666666667},
                               {"duration_s": 0}]},
        "emulator": {"interval_s": 30, "alpha": 0.1, "theta": 0.5},
        "twin": {"scrape_interval_s": 15, "startup": {"kind": "fixed", "mean_s": 60}},
        "servers": servers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--policy", default="inferno")
    args = parser.parse_args()
    scenario = parse_scenario(fleet(), file="fleet-20")
    walls, cpus, control, control_cpu = [], [], [], []
    stepped = [0.0]
    step = Controller.step

    def timed_step(self: Controller) -> object:
        c = time.process_time()
        try:
            return step(self)
        finally:
            stepped[0] += time.process_time() - c

    Controller.step = timed_step  # type: ignore[method-assign]
    for _ in range(args.repeats):
        stepped[0] = 0.0
        w0, c0 = time.perf_counter(), time.process_time()
        result = run_scenario(scenario, policy=args.policy, requests_table=False)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        control.append(sum(c.timing.total_ms for c in result.cycles) / 1000.0)
        control_cpu.append(stepped[0])
    s = result.summary
    print(f"{args.policy}: {s.requests} requests, SLO {100 * s.slo_attainment:.1f} %, "
          f"cost {s.cost:.0f}")
    runs = ", ".join(f"{w:.2f}" for w in walls)
    cpu = statistics.median(cpus)
    print(f"wall median {statistics.median(walls):.2f} s (runs {runs}), CPU median "
          f"{cpu:.2f} s, controller {statistics.median(control):.2f} s wall / "
          f"{statistics.median(control_cpu):.2f} s CPU, simulation "
          f"{statistics.median(c - k for c, k in zip(cpus, control_cpu, strict=True)):.2f} s CPU")


if __name__ == "__main__":
    main()
