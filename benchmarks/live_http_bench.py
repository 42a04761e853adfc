"""The controller's HTTP endpoints under load: /metrics latency with concurrent scrapers, and
the threads idle connections hold.

The server is `live.server.ControlServer` (aiohttp) with the registry `inferno live` serves:
the decision gauges of N servers (3 gauges × N series) and the controller's own metrics, after
one recorded cycle. Scrapers are threads in this process, each with one keep-alive
connection (http.client), fetching /metrics back to back; latency is per request, from send
to the last byte. Then I idle connections are opened (half after one answered request) and
the process's thread count is read.

Usage: python benchmarks/live_http_bench.py [--servers 500] [--scrapers 50] [--requests 40]
       [--idle 400]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import resource
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from inferno.control import (  # noqa: E402
    Controller,
    ControllerSettings,
    CycleRecord,
    CycleStatus,
    Driver,
    ServerRecord,
    StaticPolicy,
)
from live.metrics import ControllerMetrics, DecisionExporter  # noqa: E402
from live.server import ControlServer, ServerSettings  # noqa: E402


class _Clock:
    def now_s(self) -> float:
        return time.time()


def server_under_test(num_servers: int) -> tuple[ControlServer, Driver]:
    exporter = DecisionExporter()
    metrics = ControllerMetrics(exporter.registry)
    record = CycleRecord(cycle=1, time_s=time.time(), policy="inferno", status=CycleStatus.OK,
                         servers=tuple(ServerRecord(
                             name=f"srv-{i:03d}", class_name="Premium", model="llama_13b",
                             namespace="bench", current_replicas=2, num_replicas=3,
                             accelerator="A100", current_accelerator="A100")
                             for i in range(num_servers)))
    exporter.update(record)
    metrics.observe(record)
    driver = Driver(Controller(collector=None, actuator=None, clock=_Clock(),  # type: ignore[arg-type]
                               policy=StaticPolicy(), settings=ControllerSettings(period_s=0)))
    server = ControlServer(driver, exporter.registry, ServerSettings(port=0))
    server.start()
    return server, driver


def scrape(host: str, port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    latencies = []
    try:
        for _ in range(count):
            t = time.perf_counter()
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - t)
            assert response.status == 200
    finally:
        conn.close()
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=500)
    ap.add_argument("--scrapers", type=int, default=50)
    ap.add_argument("--requests", type=int, default=40, help="Requests per scraper.")
    ap.add_argument("--idle", type=int, default=400)
    args = ap.parse_args()
    server, _ = server_under_test(args.servers)
    host, port = server.addresses[0]
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/metrics")
        size_kib = len(conn.getresponse().read()) / 1024
        conn.close()
        threads_idle = threading.active_count()
        cpu0, t0 = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.scrapers) as pool:
            runs = list(pool.map(lambda _: scrape(host, port, args.requests),
                                 range(args.scrapers)))
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        lat_ms = np.array([x for run in runs for x in run]) * 1000
        sockets = []
        for i in range(args.idle):
            sock = socket.create_connection((host, port), timeout=10)
            sockets.append(sock)
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.recv(4096)
        threads_with_idle = threading.active_count()
        t = time.perf_counter()
        scrape(host, port, 1)
        with_idle_ms = (time.perf_counter() - t) * 1000
        for sock in sockets:
            sock.close()
    finally:
        server.stop()
    print(f"| /metrics ({size_kib:.0f} KiB), {args.servers} servers, {args.scrapers} "
          f"concurrent scrapers × {args.requests} | p50 (ms) | p99 (ms) | max (ms) | "
          "requests/s | CPU s (whole process) |")
    print("|---|---|---|---|---|---|")
    print(f"| aiohttp server | {np.percentile(lat_ms, 50):.1f} | {np.percentile(lat_ms, 99):.1f} "
          f"| {lat_ms.max():.1f} | {len(lat_ms) / wall_s:.0f} | {cpu_s:.2f} |")
    print(f"\nThreads of the process: {threads_idle} before, {threads_with_idle} with "
          f"{args.idle} idle connections open (scrape then {with_idle_ms:.1f} ms). "
          f"Max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB. "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
