"""One live control cycle over 100 managed Deployments, on loopback, scrape interval excluded.

Set-up (all on 127.0.0.1): the Kubernetes API emulator of the tests (kmock) holding N managed
Deployments (models and classes of sample-data/small, seeded loads of 30-300 RPM); the twin's
pods serving vLLM metrics (`sim.emulate.ClusterEmulation`, speed-up 1, one replica each,
following the API); a real Prometheus scraping them every second (file_sd); `live.LiveLoop`
with the inferno policy and patch actuation, on demand. The policy's trend lead is 0: cycles
run back to back, and a 60 s lead would extrapolate the noise between two cycles milliseconds
apart. After Prometheus holds a full window of samples for every pod, cycles run back to back
with `Driver.invoke` and are timed from the cycle records (collect = one list call + 8 PromQL
queries; decide = optimizer; actuate = JSON patches). The first cycle patches most
Deployments (the optimizer's allocation differs from the seed labels); the later ones patch
what changed. Every process shares the same cores (Prometheus, the emulated pods, the API
emulator, the loop), so the numbers are pessimistic.

Usage: python benchmarks/live_cycle_bench.py [--deployments 100] [--cycles 20] [--lead 0]
       [--output FILE (a table to paste into docs/performance.md)]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import kubernetes.client
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "live")]

from kube_emulator import EmulatorThread, deployment  # noqa: E402
from prom_harness import PrometheusServer  # noqa: E402

from inferno.commands.live import follow_deployments  # noqa: E402
from inferno.control import ControllerSettings  # noqa: E402
from inferno.io import load_static_data  # noqa: E402
from live.app import LiveLoop, LiveSettings  # noqa: E402
from live.config import KubeSettings, PromSettings, load_api_client  # noqa: E402
from live.emulate import DeploymentReader  # noqa: E402
from live.kube import discover_deployments  # noqa: E402
from live.prom import PromReader  # noqa: E402
from sim.deployment import StartupDelay  # noqa: E402
from sim.emulate import ClusterEmulation, EmulationSettings  # noqa: E402

SMALL = ROOT / "sample-data" / "small"
NS = "bench"
WINDOW = "5s"
MODELS = ("llama_13b", "granite_13b", "granite_34b", "llama_70b", "mixtral_8_7b")
CLASSES = ("Premium", "Bronze", "Free")


def seed_deployments(kube: EmulatorThread, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        model = MODELS[i % len(MODELS)]
        labels = {
            "inferno.server.managed": "true", "inferno.server.name": f"srv-{i:03d}",
            "inferno.server.model": model, "inferno.server.class": CLASSES[i % len(CLASSES)],
            "inferno.server.allocation.accelerator": "G2",
            "inferno.server.load.rpm": f"{rng.uniform(30, 300):.1f}",
            "inferno.server.load.intokens": str(int(rng.integers(64, 512))),
            "inferno.server.load.outtokens": str(int(rng.integers(32, 256)))}
        kube.put_deployment(deployment(NS, f"dep-{i:03d}", labels))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run(n: int, cycles: int, seed: int, lead_s: float
        ) -> tuple[list[dict[str, float]], dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="inferno-live-bench-"))
    kube = EmulatorThread()
    kube.start()
    prometheus = PrometheusServer(work)
    kubeconfig = kube.write_kubeconfig(work / "kubeconfig")
    kube_settings = KubeSettings(kubeconfig=str(kubeconfig), watch_namespace=NS)
    api_client = load_api_client(kube_settings)
    seed_deployments(kube, n, seed)
    emulation = ClusterEmulation(
        load_static_data(SMALL), follow_deployments(DeploymentReader(api_client, kube_settings)),
        EmulationSettings(poll_s=2.0, startup=StartupDelay(mean_s=5.0), seed=seed),
        targets_file=prometheus.targets_file)
    loop: LiveLoop | None = None
    try:
        emulation.start()
        prometheus.start()
        t0 = time.monotonic()
        prometheus.wait_for_samples(f'{{namespace="{NS}"}}', num_series=n, min_samples=6,
                                    timeout_s=120)
        warm_s = time.monotonic() - t0
        settings = LiveSettings(
            controller=ControllerSettings(data_path=SMALL, period_s=0.0, port=0),
            kube=kube_settings, prom=PromSettings(url=prometheus.url, window=WINDOW),
            cycle_log="-", lead_s=lead_s)
        loop = LiveLoop(settings)
        rows = []
        for _ in range(cycles):
            before = len(kube.requests("PATCH"))
            t = time.perf_counter()
            record = loop.driver.invoke()
            wall_ms = (time.perf_counter() - t) * 1000
            if not record.is_ok:
                raise RuntimeError(f"cycle {record.cycle}: {record.status}: {record.reason}")
            timing = record.timing
            rows.append({"wall_ms": wall_ms, "total_ms": timing.total_ms,
                         "collect_ms": timing.collect_ms, "decide_ms": timing.decide_ms,
                         "solve_ms": timing.solve_ms, "actuate_ms": timing.actuate_ms,
                         "static_ms": timing.static_ms,
                         "patches": len(kube.requests("PATCH")) - before,
                         "servers": len(record.servers)})
        # the two halves of collect, alone
        prom = PromReader(replace(settings.prom, window=WINDOW))  # type: ignore[arg-type]
        parts: dict[str, list[float]] = {"prom_ms": [], "list_ms": []}
        apps = kubernetes.client.AppsV1Api(api_client)
        for _ in range(cycles):
            t = time.perf_counter()
            prom.collect(namespace=NS)
            parts["prom_ms"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            discover_deployments(apps, kube_settings)
            parts["list_ms"].append((time.perf_counter() - t) * 1000)
        prom.close()
        extra = {"warm_s": warm_s, "pods": len(emulation.pods()),
                 "prom_ms": statistics.median(parts["prom_ms"]),
                 "list_ms": statistics.median(parts["list_ms"])}
        return rows, extra
    finally:
        if loop is not None:
            loop.close()
        emulation.stop()
        prometheus.stop()
        api_client.close()
        kube.stop()


def table(rows: list[dict[str, float]], extra: dict[str, float], n: int) -> str:
    steady = rows[1:]
    cols = ("total_ms", "collect_ms", "decide_ms", "solve_ms", "actuate_ms")
    lines = [
        f"| cycles ({n} Deployments) | patches | " + " | ".join(
            c.replace("_ms", " (ms)") for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
        "| first cycle | {} | ".format(int(rows[0]["patches"])) + " | ".join(
            f"{rows[0][c]:.0f}" for c in cols) + " |"]
    for label, q in (("later, median", 50), ("later, p95", 95), ("later, max", 100)):
        lines.append(f"| {label} | {pct([r['patches'] for r in steady], q):.0f} | "
                     + " | ".join(f"{pct([r[c] for r in steady], q):.0f}" for c in cols) + " |")
    lines.append("")
    lines.append(f"Collect parts alone (median of {len(steady) + 1}): 8 PromQL queries "
                 f"{extra['prom_ms']:.0f} ms, Deployment list {extra['list_ms']:.0f} ms. "
                 f"Pods scraped: {extra['pods']:.0f}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deployments", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lead", type=float, default=0.0,
                    help="Trend lead of the inferno policy, s (its 60 s default extrapolates "
                    "the noise between back-to-back cycles).")
    ap.add_argument("--output", type=Path, default=None,
                    help="Also write the table (with the machine) to this markdown file.")
    args = ap.parse_args()
    rows, extra = run(args.deployments, args.cycles, args.seed, args.lead)
    text = table(rows, extra, args.deployments)
    machine = (f"{platform.python_implementation()} {platform.python_version()}, "
               f"{os.cpu_count()} CPUs, {platform.machine()}")
    print(text)
    print(f"\n{machine}; target: every cycle <= 1000 ms")
    if args.output is not None:
        args.output.write_text(text + f"\n\nMachine: {machine}.\n", encoding="utf-8")


if __name__ == "__main__":
    main()
