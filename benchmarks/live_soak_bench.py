"""`inferno live` as its own process over N managed Deployments: cycle time, CPU time and RSS.

Set-up (all on 127.0.0.1, as in live_cycle_bench.py): the tests' Kubernetes API emulator
(kmock) holding N managed Deployments (the five models of sample-data/small, classes
Premium/Bronze/Free, seeded loads); one pod per Deployment serving vLLM metrics; a real
Prometheus scraping them every 5 s (a second is more than 500 pods behind one Python HTTP
server keep up with on two shared cores; the window is 20 s). The pods are either ``static``
(default: counters growing at the Deployment's seeded rate, constant gauges, one loopback
server for all; the steady state of a fleet whose load does not move) or the ``twin``
(`sim.emulate.ClusterEmulation` following the API, as `inferno emulate`; it simulates every
request in real time, which on two shared cores slows everything else down). The controller
is the real command, ``inferno live 0`` (on demand, inferno policy, patch actuation, trend
lead 0, cycle log on), in a process of its own, so its CPU time and RSS are its own and not
the harness's. Cycles run back to back
through ``GET /invoke``.

Per cycle: the cycle's own time (its record's ``timing.total_ms``), the controller's CPU time
(utime + stime from /proc/PID/stat, all its threads), and its RSS (VmRSS). Steady state
excludes the first `--warmup` cycles (the first one patches most Deployments).

Usage: python benchmarks/live_soak_bench.py [--deployments 500] [--cycles 1000]
       [--rpm 10 60] [--output FILE (markdown, for docs/performance.md)]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "live")]

from kube_emulator import EmulatorThread, deployment  # noqa: E402
from prom_harness import (  # noqa: E402
    HISTORY_S,
    LoopbackServer,
    PodLoad,
    PrometheusServer,
    VllmCollector,
    free_port,
)
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from inferno.commands.live import follow_deployments  # noqa: E402
from inferno.io import load_static_data  # noqa: E402
from live.config import KubeSettings, load_api_client  # noqa: E402
from live.emulate import DeploymentReader  # noqa: E402
from sim.deployment import StartupDelay  # noqa: E402
from sim.emulate import ClusterEmulation, EmulationSettings  # noqa: E402

SMALL = ROOT / "sample-data" / "small"
NS = "soak"
MODELS = ("llama_13b", "granite_13b", "granite_34b", "llama_70b", "mixtral_8_7b")
CLASSES = ("Premium", "Bronze", "Free")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SCRAPE_S = 5.0
WINDOW = "20s"


def seed_deployments(kube: EmulatorThread, n: int, seed: int, rpm: tuple[float, float]
                     ) -> dict[str, PodLoad]:
    """Put N managed Deployments; returns the load of each (by Deployment name)."""
    rng = np.random.default_rng(seed)
    loads = {}
    for i in range(n):
        loads[f"dep-{i:03d}"] = PodLoad(
            request_rps=rng.uniform(*rpm) / 60.0, in_tokens=float(rng.integers(64, 512)),
            out_tokens=float(rng.integers(32, 256)), ttft_s=0.2, itl_s=0.03,
            waiting=0.0, running=float(rng.integers(1, 16)), kv_usage=0.3)
        load = loads[f"dep-{i:03d}"]
        labels = {
            "inferno.server.managed": "true", "inferno.server.name": f"srv-{i:03d}",
            "inferno.server.model": MODELS[i % len(MODELS)],
            "inferno.server.class": CLASSES[i % len(CLASSES)],
            "inferno.server.allocation.accelerator": "G2",
            "inferno.server.load.rpm": f"{load.request_rps * 60:.1f}",
            "inferno.server.load.intokens": str(int(load.in_tokens)),
            "inferno.server.load.outtokens": str(int(load.out_tokens))}
        kube.put_deployment(deployment(NS, f"dep-{i:03d}", labels))
    return loads


class StaticPods:
    """One pod per Deployment at /metrics/<deployment>, one loopback server for all."""

    def __init__(self, loads: dict[str, PodLoad], prometheus: PrometheusServer) -> None:
        start_s = time.time() - HISTORY_S
        self.registries = {}
        for name, load in loads.items():
            registry = CollectorRegistry(auto_describe=False)
            registry.register(VllmCollector(load, start_s=start_s))
            self.registries[f"/metrics/{name}"] = registry
        self.server = LoopbackServer(lambda path, headers: (
            200, "text/plain; version=0.0.4; charset=utf-8",
            generate_latest(self.registries[path])))
        for name in loads:
            prometheus.add_target(self.server.address, {
                "namespace": NS, "deployment": name, "pod": f"{name}-0",
                "__metrics_path__": f"/metrics/{name}"}, key=name)

    def stop(self) -> None:
        self.server.stop()


def wait_scraped(prometheus: PrometheusServer, n: int, timeout_s: float = 300.0) -> int:
    """Wait until (nearly) every Deployment has 3 successful scrapes in the last window;
    returns how many have (Deployments without data fall back to their load labels)."""
    promql = (f'count(sum by (deployment) (count_over_time(up{{namespace="{NS}"}}[{WINDOW}]))'
              " >= 3)")
    deadline = time.monotonic() + timeout_s
    found = 0
    while time.monotonic() < deadline:
        result = prometheus.query(promql)
        found = int(float(result[0]["value"][1])) if result else 0  # type: ignore[index]
        if found >= 0.98 * n:
            break
        time.sleep(2.0)
    return found


def cpu_s(pid: int) -> float:
    """utime + stime of the process (all threads), s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def record_after(path: Path, offset: int) -> dict[str, object]:
    """The record appended after byte `offset` (one cycle's line, ~0.5 KB per server)."""
    with path.open("rb") as f:
        f.seek(offset if f.seek(0, os.SEEK_END) >= offset else 0)  # 0: the log rotated
        return json.loads(f.read().decode().splitlines()[-1])


def run(n: int, cycles: int, seed: int, rpm: tuple[float, float], pods: str
        ) -> list[dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="inferno-soak-"))
    kube = EmulatorThread()
    kube.start()
    prometheus = PrometheusServer(work, scrape_interval_s=SCRAPE_S)
    kubeconfig = kube.write_kubeconfig(work / "kubeconfig")
    kube_settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    api_client = load_api_client(kube_settings)
    loads = seed_deployments(kube, n, seed, rpm)
    emulation: ClusterEmulation | StaticPods | None = None
    port = free_port()
    cycle_log = work / "cycles.jsonl"
    proc: subprocess.Popen[bytes] | None = None
    try:
        if pods == "twin":
            emulation = ClusterEmulation(
                load_static_data(SMALL),
                follow_deployments(DeploymentReader(api_client, kube_settings)),
                EmulationSettings(poll_s=2.0, startup=StartupDelay(mean_s=5.0), seed=seed),
                targets_file=prometheus.targets_file)
            emulation.start()
        else:
            emulation = StaticPods(loads, prometheus)
        prometheus.start()
        ready = wait_scraped(prometheus, n)
        print(f"{ready} of {n} Deployments scraped over a full window", flush=True)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": NS,
               "INFERNO_PROMETHEUS_WINDOW": WINDOW}
        with (work / "live.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", "from inferno.cli import main; main()", "live", "0",
                 "--data-path", str(SMALL), "--prometheus-url", prometheus.url, "--port",
                 str(port), "--lead", "0", "--cycle-log", str(cycle_log),
                 "--cycle-timeout", "60"], cwd=ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/invoke"
        for _ in range(600):
            if b"GET http://" in (work / "live.log").read_bytes():
                break
            time.sleep(0.1)
        rows = []
        for i in range(cycles):
            offset = size(cycle_log)
            cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
            with urllib.request.urlopen(url, timeout=120) as answer:
                answer.read()
            wall_ms = (time.perf_counter() - t0) * 1000
            record = record_after(cycle_log, offset)
            timing = record["timing"]
            assert isinstance(timing, dict)
            rows.append({"cycle": i + 1, "wall_ms": wall_ms, "total_ms": timing["total_ms"],
                         "collect_ms": timing["collect_ms"], "decide_ms": timing["decide_ms"],
                         "actuate_ms": timing["actuate_ms"],
                         "cpu_ms": (cpu_s(proc.pid) - cpu0) * 1000, "rss_mib": rss_mib(proc.pid),
                         "ok": float(record["status"] == "ok")})
            if (i + 1) % 100 == 0:
                print(f"cycle {i + 1}: total {timing['total_ms']:.0f} ms, "
                      f"rss {rows[-1]['rss_mib']:.1f} MiB", flush=True)
        rows[0]["load1"] = os.getloadavg()[0]
        return rows
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if emulation is not None:
            emulation.stop()
        prometheus.stop()
        api_client.close()
        kube.stop()


def report(rows: list[dict[str, float]], n: int, warmup: int) -> str:
    steady = rows[warmup:]

    def q(col: str, p: float, which: list[dict[str, float]] = steady) -> float:
        return float(np.percentile([r[col] for r in which], p))

    cols = ("total_ms", "collect_ms", "decide_ms", "actuate_ms", "cpu_ms")
    lines = [f"| {n} Deployments, {len(rows)} cycles | " + " | ".join(
        c.replace("_ms", " (ms)").replace("cpu", "CPU") for c in cols) + " |",
        "|---|" + "---|" * len(cols),
        "| first cycle | " + " | ".join(f"{rows[0][c]:.0f}" for c in cols) + " |"]
    for label, p in (("steady, median", 50), ("steady, p95", 95), ("steady, p99", 99),
                     ("steady, max", 100)):
        lines.append(f"| {label} | " + " | ".join(f"{q(c, p):.0f}" for c in cols) + " |")
    ok = sum(r["ok"] for r in rows)
    marks = [c for c in (warmup, 100, 250, 500, 750, len(rows)) if c <= len(rows)]
    rss = ", ".join(f"{c}: {rows[c - 1]['rss_mib']:.1f}" for c in marks)
    x = np.array([r["cycle"] for r in steady])
    y = np.array([r["rss_mib"] for r in steady])
    slope = float(np.polyfit(x, y, 1)[0]) * 1000 if len(steady) > 1 else 0.0
    lines += ["", f"Cycles ok: {ok:.0f}/{len(rows)}. RSS of the controller (MiB) after cycle "
              f"{rss}; least-squares slope over the steady cycles {slope:+.2f} MiB per 1,000 "
              f"cycles. Load average at the end of the run: {rows[0].get('load1', 0):.1f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deployments", type=int, default=500)
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rpm", type=float, nargs=2, default=(10.0, 60.0),
                    help="Range of the seeded loads, RPM (the twin runs them in real time).")
    ap.add_argument("--pods", choices=("static", "twin"), default="static")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    rows = run(args.deployments, args.cycles, args.seed, tuple(args.rpm), args.pods)
    text = report(rows, args.deployments, min(args.warmup, len(rows) - 1))
    text += f" Pods: {args.pods}."
    machine = (f"{platform.python_implementation()} {platform.python_version()}, "
               f"{os.cpu_count()} CPUs, {platform.machine()}")
    print(text)
    print(f"\n{machine}; target: steady cycles <= 1000 ms, RSS flat")
    if args.output is not None:
        args.output.write_text(text + f"\n\nMachine: {machine}.\n", encoding="utf-8")


if __name__ == "__main__":
    main()
