"""The controller's HTTP endpoints (aiohttp) and what an operator reads: metrics and log lines.

Server tests use a Driver over an in-memory collector (no world needed to test HTTP); the
operability tests run `LiveLoop` against the real Prometheus and the API emulator, where the
HPA policy's answer is the closed form of live_helpers (1 -> 3 replicas).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kube_emulator import EmulatorThread
from live_helpers import HOT_REPLICAS, HPA_NS, get, hpa_loop, put_hot, wait_until
from prom_harness import PrometheusServer
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from inferno.control import Controller, ControllerSettings, Driver, StaticPolicy
from inferno.errors import CollectError, ConfigError
from inferno.model.snapshot import ActuationReport, AllocationPlan, ClusterSnapshot
from live.app import LiveLoop
from live.config import KubeSettings
from live.server import ControlServer, ServerSettings


class Clock:
    def now_s(self) -> float:
        return 0.0


class Collector:
    """Raises CollectError (a skipped cycle is enough to exercise HTTP); `gate` holds it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def collect(self) -> ClusterSnapshot:
        self.entered.set()
        self.gate.wait(10)
        raise CollectError("prometheus: down")


class Actuator:
    def apply(self, plan: AllocationPlan) -> ActuationReport:
        return ActuationReport()


def make_driver(collector: Collector | None = None) -> Driver:
    return Driver(Controller(collector=collector or Collector(), actuator=Actuator(),
                             clock=Clock(), policy=StaticPolicy(),
                             settings=ControllerSettings(period_s=0.0, invoke_wait_s=10.0)))


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Gauge("inferno_test_value", "A test gauge.", registry=reg).set(7)
    return reg


@pytest.fixture
def servers() -> Iterator[list[ControlServer]]:
    started: list[ControlServer] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[ControlServer], driver: Driver, **settings: object) -> ControlServer:
    server = ControlServer(driver, registry(), ServerSettings(port=0, **settings))  # type: ignore[arg-type]
    server.start()
    servers.append(server)
    return server


def url(server: ControlServer, path: str, listener: int = 0) -> str:
    host, port = server.addresses[listener]
    return f"http://{host}:{port}{path}"


def test_endpoints_on_one_port(servers: list[ControlServer]) -> None:
    """/invoke answers the cycle's outcome (503 on a skipped collect), /health 200 on demand,
    /metrics the registry in the text format, anything else 404."""
    server = serve(servers, make_driver())
    status, body = get(url(server, "/invoke"))
    assert (status, body) == (503, b'{"message": "controller: collect: prometheus: down"}')
    assert get(url(server, "/health")) == (200, b"OK")
    status, body = get(url(server, "/metrics"))
    assert status == 200
    assert b"inferno_test_value 7.0" in body
    assert get(url(server, "/nope"))[0] == 404


def test_invoke_requires_the_bearer_token(servers: list[ControlServer], tmp_path: Path) -> None:
    """With a token file, /invoke without or with a wrong token is 401 (no cycle runs); the
    right one runs a cycle; a rotated file applies at once; /health and /metrics stay open."""
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    collector = Collector()
    server = serve(servers, make_driver(collector), invoke_token_path=str(token))
    assert get(url(server, "/invoke"))[0] == 401
    assert get(url(server, "/invoke"), {"Authorization": "Bearer wrong"})[0] == 401
    assert not collector.entered.is_set()
    assert get(url(server, "/invoke"), {"Authorization": "Bearer s3cret"})[0] == 503
    assert collector.entered.is_set()
    token.write_text("n3w")
    assert get(url(server, "/invoke"), {"Authorization": "Bearer s3cret"})[0] == 401
    assert get(url(server, "/invoke"), {"Authorization": "Bearer n3w"})[0] == 503
    assert get(url(server, "/health"))[0] == 200
    assert get(url(server, "/metrics"))[0] == 200


def test_unreadable_token_file_is_a_config_error(tmp_path: Path) -> None:
    """A token file that does not exist fails the start, naming the variable and path."""
    with pytest.raises(ConfigError, match="INFERNO_INVOKE_TOKEN_PATH .*missing"):
        ServerSettings(invoke_token_path=str(tmp_path / "missing")).check()


def test_metrics_port_separates_invoke_from_scrapes(servers: list[ControlServer]) -> None:
    """With a metrics port, /metrics is served there only and /invoke on the main port only
    (what the NetworkPolicy relies on); /health on both."""
    server = serve(servers, make_driver(), metrics_port=0)
    assert get(url(server, "/invoke", 0))[0] == 503
    assert get(url(server, "/metrics", 0))[0] == 404
    assert get(url(server, "/invoke", 1))[0] == 404
    assert get(url(server, "/metrics", 1))[0] == 200
    assert get(url(server, "/health", 0))[0] == get(url(server, "/health", 1))[0] == 200


def test_waiting_invokes_are_bounded(servers: list[ControlServer]) -> None:
    """While a cycle holds the controller, at most max_pending_invokes callers wait; the next
    is answered 429 at once."""
    collector = Collector()
    collector.gate.clear()
    server = serve(servers, make_driver(collector), max_pending_invokes=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        waiting = [pool.submit(get, url(server, "/invoke")) for _ in range(2)]
        assert collector.entered.wait(5)
        # both callers admitted (one in the cycle, one waiting) before the third asks
        wait_until(lambda: server.pending_invokes == 2, 5, "two admitted /invoke callers")
        status, body = get(url(server, "/invoke"))
        collector.gate.set()
        assert [f.result()[0] for f in waiting] == [503, 503]
    assert status == 429
    assert b"too many /invoke requests waiting" in body


def test_idle_connections_hold_no_threads(servers: list[ControlServer]) -> None:
    """The fault: 400 idle connections held 404 threads. 400 connections (half with one
    keep-alive request answered) add no thread, and /metrics still answers."""
    server = serve(servers, make_driver())
    host, port = server.addresses[0]
    get(url(server, "/metrics"))
    before = threading.active_count()
    sockets = []
    try:
        for i in range(400):
            sock = socket.create_connection((host, port), timeout=5)
            sockets.append(sock)
            if i % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert threading.active_count() == before
        assert get(url(server, "/metrics"))[0] == 200
    finally:
        for sock in sockets:
            sock.close()


# ------------------------------------------------------------------ operability, live loop

def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_controller_metrics_describe_the_cycles(
        kube: EmulatorThread, kube_settings: KubeSettings, hot_pod: PrometheusServer,
        tmp_path: Path, loops: list[LiveLoop]) -> None:
    """The fault: no metric about the controller. After an ok cycle (1 -> 3 replicas) and
    one skipped at collect (the list answered 500): the duration histogram counts 2, cycles
    by status and stage, the last success timestamp is the ok cycle's, one scale-up."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path)
    loops.append(loop)
    host, port = loop.serve()
    ok = loop.driver.invoke()
    kube.fail_next("GET", r"/deployments$", 500)
    assert loop.driver.invoke().stage == "collect"
    status, body = get(f"http://{host}:{port}/metrics")
    assert status == 200
    found = samples(body)
    assert found["inferno_cycle_duration_seconds_count", ()] == 2
    assert found["inferno_cycles_total", (("stage", ""), ("status", "ok"))] == 1
    assert found["inferno_cycles_total", (("stage", "collect"), ("status", "skipped"))] == 1
    assert found["inferno_last_successful_cycle_timestamp_seconds", ()] == ok.time_s
    assert found["inferno_decisions_total", (("change", "scale_up"),)] == 1
    assert found["inferno_decisions_total", (("change", "migrate"),)] == 0
    assert found["inferno_managed_servers", ()] == 1
    assert found["inferno_desired_replicas", (("accelerator", "A100"), ("namespace", HPA_NS),
                                              ("server", "hot"))] == HOT_REPLICAS


def test_one_log_line_per_decision(kube: EmulatorThread, kube_settings: KubeSettings,
                                   hot_pod: PrometheusServer, tmp_path: Path,
                                   loops: list[LiveLoop], caplog: pytest.LogCaptureFixture
                                   ) -> None:
    """The fault: nothing per cycle at default verbosity. A decided change is one INFO line
    with the move and what it was decided on; the cycle gets one summary line."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path)
    loops.append(loop)
    with caplog.at_level(logging.INFO, logger="live.report"):
        loop.driver.invoke()
    lines = [r.getMessage() for r in caplog.records if r.name == "live.report"]
    assert len(lines) == 2
    assert lines[0].startswith("hot: 1 -> 3 replicas on A100, batch 40: arrival ")
    assert "waiting 10" in lines[0]
    assert lines[1].startswith("cycle 1 ok in ")
    assert "1 servers, 1 changed" in lines[1]


def test_health_is_served_by_the_live_loop(kube: EmulatorThread, kube_settings: KubeSettings,
                                           hot_pod: PrometheusServer, tmp_path: Path,
                                           loops: list[LiveLoop]) -> None:
    """/health of a running loop is 200 after a successful cycle."""
    put_hot(kube)
    loop = hpa_loop(kube_settings, hot_pod.url, tmp_path, controller={"period_s": 0.5})
    loops.append(loop)
    host, port = loop.serve()
    runner = threading.Thread(target=loop.run)
    runner.start()
    try:
        wait_until(lambda: loop.driver.last_ok_s is not None, 10, "a successful cycle")
        assert get(f"http://{host}:{port}/health") == (200, b"OK")
    finally:
        loop.stop()
        runner.join(timeout=10)
