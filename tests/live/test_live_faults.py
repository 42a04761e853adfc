"""Faults an operator meets, against the real Prometheus and the Kubernetes API emulator.

Each test names the fault found by fault injection against the earlier `inferno live` (hung
API server, a second SIGTERM, a killed writer's partial cycle-log line, an unbounded cycle
log). Bounds are live mode's fault targets (a cycle under a hung API within 2 periods, a second
SIGTERM
exits within 2 s); elapsed times are wall clock on a shared machine, so the tests hold the
bound itself, not a tighter one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_emulator import EmulatorThread, deployment
from live_helpers import (
    HOT_REPLICAS,
    HPA_NS,
    RPM,
    SMALL,
    get,
    hpa_loop,
    labels,
    put_hot,
    spawn,
    terminate,
    wait_until,
)
from prom_harness import PrometheusServer

from inferno.control import CycleStatus, read_cycle_log
from live.app import LiveLoop
from live.config import KubeSettings

DEPLOYMENTS = r"/deployments$"
"""Path of a Deployment list (all namespaces or one)."""


@pytest.fixture(autouse=True)
def release_hung_requests(kube: EmulatorThread) -> Iterator[None]:
    """Requests left hanging by a test end with it (kube.clear releases them)."""
    yield
    kube.clear()


# ------------------------------------------------------------------ hung API server

def test_cycle_under_a_hung_list_is_skipped_within_a_period(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """The fault: a hung API server made one cycle take 204 s. The Deployment list never
    answers: the cycle is skipped at collect within the 2 s period (not the 5 s request
    timeout, not urllib3's retries), and nothing is patched."""
    put_hot(kube)
    kube.hang_next("GET", DEPLOYMENTS)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"period_s": 2.0})
    loops.append(loop)
    start = time.monotonic()
    record = loop.driver.invoke()
    elapsed_s = time.monotonic() - start
    assert (record.status, record.stage) == (CycleStatus.SKIPPED, "collect")
    assert "timed out" in record.reason.lower()
    assert elapsed_s <= 2 * 2.0
    assert len(kube.requests("GET", DEPLOYMENTS)) == 1  # no stacked retries
    assert kube.requests("PATCH") == []


def test_cycle_under_a_hung_patch_fails_within_a_period(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """Listing works, the PATCH hangs: the cycle fails at actuate within the 2 s period and
    says why; the Deployment keeps its replicas."""
    put_hot(kube)
    kube.hang_next("PATCH", r"/deployments/hot$")
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"period_s": 2.0})
    loops.append(loop)
    start = time.monotonic()
    record = loop.driver.invoke()
    elapsed_s = time.monotonic() - start
    assert (record.status, record.stage) == (CycleStatus.FAILED, "actuate")
    assert "deadline" in record.reason
    assert [s.num_replicas for s in record.servers] == [HOT_REPLICAS]
    assert elapsed_s <= 2 * 2.0
    assert kube.get_deployment(HPA_NS, "hot")["spec"]["replicas"] == 1


def test_periodic_cycles_go_on_and_health_fails_under_a_hung_api(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """The fault: no periodic cycle ran for 3.4 min and /health said OK. With every list
    hung and a 1 s period, cycles keep coming (each within 2 periods), /invoke answers within
    2 periods instead of a 409 after 60 s, and /health turns 503 after 2 periods without a
    success; once the API answers again, a cycle succeeds and /health is 200."""
    put_hot(kube)
    period_s = 1.0
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, health_periods=2,
                    controller={"period_s": period_s})
    loops.append(loop)
    host, port = loop.serve()
    assert get(f"http://{host}:{port}/health")[0] == 200
    kube.hang_next("GET", DEPLOYMENTS)
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        cycle_log = tmp_path / "cycles.jsonl"
        wait_until(lambda: cycle_log.exists() and len(read_cycle_log(cycle_log)) >= 3, 15,
                   "three periodic cycles")
        start = time.monotonic()
        status, _ = get(f"http://{host}:{port}/invoke")
        invoke_s = time.monotonic() - start
        wait_until(lambda: get(f"http://{host}:{port}/health")[0] == 503, 10, "/health 503")
        _, body = get(f"http://{host}:{port}/health")
        kube.clear()
        put_hot(kube)
        wait_until(lambda: get(f"http://{host}:{port}/health")[0] == 200, 10, "/health 200")
    finally:
        loop.stop()
        runner.join(timeout=10)
    records = read_cycle_log(cycle_log)
    hung = [r for r in records if r["status"] == "skipped"]
    assert len(hung) >= 3
    assert all(r["timing"]["total_ms"] <= 2 * period_s * 1000 for r in hung)
    assert status in (409, 503)
    assert invoke_s <= 2 * period_s + 1.0  # + scheduling slack of the HTTP round trip
    assert b"no successful cycle for" in body
    assert records[-1]["status"] == "ok"


# ------------------------------------------------------------------ signals

def test_second_sigterm_exits_within_2_s_and_records_the_cycle(
        kube: EmulatorThread, kubeconfig: Path, tmp_path: Path) -> None:
    """The fault: a second SIGTERM waited up to ~54 s. `inferno live` in a cycle whose list
    hangs (30 s budget): the first SIGTERM waits for the cycle, the second exits within 2 s
    with code 1, and the cycle log's last line says which cycle was interrupted, where."""
    kube.put_deployment(deployment("sig", "d1", labels("s1", **{RPM: "60"})))
    kube.hang_next("GET", DEPLOYMENTS)
    cycle_log = tmp_path / "cycles.jsonl"
    log = tmp_path / "live.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": "sig"}
    proc = spawn(["live", "0", "--no-prometheus", "--data-path", str(SMALL), "--port", "0",
                  "--cycle-timeout", "30", "--cycle-log", str(cycle_log)], env, log)
    try:
        wait_until(lambda: "GET http://" in log.read_text(), 30, "the server to listen")
        address = re.search(r"GET http://([\d.]+:\d+)/invoke", log.read_text())
        assert address is not None
        url = f"http://{address.group(1)}/invoke"

        def invoke() -> None:
            with contextlib.suppress(OSError):  # the process is gone before it answers
                get(url, timeout_s=60)

        invoker = threading.Thread(target=invoke, daemon=True)
        invoker.start()
        wait_until(lambda: len(kube.requests("GET", DEPLOYMENTS)) >= 1, 20, "the hung list")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # the first signal waits for the running cycle
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        exit_s = time.monotonic() - start
    finally:
        terminate(proc)
        kube.clear()
    assert exit_s <= 2.0, log.read_text()[-2000:]
    assert code == 1
    last = read_cycle_log(cycle_log)[-1]
    assert (last["status"], last["stage"]) == ("failed", "collect")
    assert last["reason"].startswith("interrupted: second SIGTERM after")
    assert "second SIGTERM: exiting during cycle 1 (collect)" in log.read_text()


# ------------------------------------------------------------------ cycle log

def test_partial_last_line_is_tolerated_and_cut_off(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """The fault: a kill mid-write left a partial last line and `read_cycle_log` failed on
    the whole file. Now it reads the complete records; the next loop cuts the partial line
    off before appending, so every line is a record again."""
    put_hot(kube)
    first = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"dry_run": True})
    loops.append(first)
    first.driver.invoke()
    first.driver.invoke()
    cycle_log = tmp_path / "cycles.jsonl"
    complete = cycle_log.read_text()
    with cycle_log.open("a", encoding="utf-8") as out:
        out.write(complete.splitlines()[0][:57])  # a write cut short by SIGKILL
    assert [r["cycle"] for r in read_cycle_log(cycle_log)] == [1, 2]
    second = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"dry_run": True})
    loops.append(second)
    second.driver.invoke()
    lines = cycle_log.read_text().splitlines()
    assert [json.loads(line)["cycle"] for line in lines] == [1, 2, 1]
    assert cycle_log.read_text().startswith(complete)


def test_cycle_log_rotates_by_size(kube: EmulatorThread, kube_settings: KubeSettings,
                                   hot_pod: PrometheusServer, tmp_path: Path,
                                   loops: list[LiveLoop]) -> None:
    """The fault: the log grew without bound (~413 MB/day at 500 servers). With a limit of
    three records and two backups, 10 cycles leave three files, none over the limit, holding
    the newest records in order."""
    put_hot(kube)
    probe = hpa_loop(kube_settings, hot_pod.url, tmp_path / "probe",
                     controller={"dry_run": True}, cycle_log="-")
    loops.append(probe)
    record_bytes = len(probe.driver.invoke().to_json()) + 1
    limit = 3 * record_bytes + record_bytes // 2
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"dry_run": True},
                    cycle_log_max_bytes=limit, cycle_log_backups=2)
    loops.append(loop)
    for _ in range(10):
        loop.driver.invoke()
    files = [tmp_path / "cycles.jsonl.2", tmp_path / "cycles.jsonl.1", tmp_path / "cycles.jsonl"]
    assert sorted(p.name for p in tmp_path.glob("cycles.jsonl*")) == sorted(f.name for f in files)
    assert all(f.stat().st_size <= limit for f in files)
    cycles = [r["cycle"] for f in files for r in read_cycle_log(f)]
    assert cycles == list(range(10 - len(cycles) + 1, 11))
    assert len(cycles) >= 7
