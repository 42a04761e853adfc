"""The cluster-facing commands and their parts: `inferno live`, `load-noise`, `emulate`.

References: the seed's load emulator formula (docs/design/control-loop.md §4.1) recomputed with
numpy from
the same seed; the startup delay and speed-up given to the emulation; WVA's ratio rule
(docs/design/peers.md §1.6); bad input exits 2 with a message naming the argument or variable.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import numpy as np
import pytest
import simpy
import yaml
from click.testing import CliRunner
from kube_emulator import EmulatorThread, deployment
from live_helpers import get, wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from inferno.cli import cli
from inferno.control import CycleRecord, CycleStatus, ServerRecord
from inferno.control.settings import HpaSettings, InfernoSettings
from inferno.errors import ConfigError
from inferno.io import load_static_data
from live.app import WallClock, policy_settings, stop_on_signals
from live.metrics import DecisionExporter, MetricsActuator
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec, StartupDelay
from sim.emulate import (
    ClusterEmulation,
    CompressedTime,
    DesiredDeployment,
    EmulationSettings,
    Key,
)
from sim.promview import ReplicaCollector
from sim.workload import RequestFactory

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "sample-data" / "small"
RPM = "inferno.server.load.rpm"
NUM_TOKENS = "inferno.server.load.numtokens"
IN_TOKENS = "inferno.server.load.intokens"
OUT_TOKENS = "inferno.server.load.outtokens"


def managed(server: str, **extra: str) -> dict[str, str]:
    return {"inferno.server.managed": "true", "inferno.server.name": server,
            "inferno.server.model": "llama_13b", "inferno.server.allocation.accelerator": "G2",
            **extra}


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize(("args", "env", "message"), [
    (["live", "soon"], {}, "argument CONTROL_PERIOD"),
    (["live", "10", "maybe"], {}, "argument DYNAMIC"),
    (["live", "--data-path", "/nonexistent"], {}, "/nonexistent"),
    (["live", "--no-prometheus", "--prometheus-url", "http://x"], {}, "contradictory"),
    (["live", "--data-path", str(SMALL), "--policy", "nope"], {}, "choose one of"),
    (["live", "--data-path", str(SMALL), "--policy", "oracle"], {}, "twin only"),
    (["live", "--data-path", str(SMALL)], {"KUBECONFIG": "/nonexistent/kubeconfig"},
     "KUBECONFIG /nonexistent/kubeconfig"),
    (["live", "--data-path", str(SMALL), "--scale-down-window", "-1"], {},
     "scale_down_window_s"),
    (["live", "--actuation", "both"], {}, "'both' is not one of"),
    (["live", "--data-path", str(SMALL)], {"DEFAULT_MAX_BATCH_SIZE": "lots"},
     "DEFAULT_MAX_BATCH_SIZE"),
    (["load-noise", "10", "1.5"], {}, "alpha must be in [0, 1]"),
    (["load-noise", "often"], {}, "argument INTERVAL"),
    (["emulate-load"], {"INFERNO_LOAD_ALPHA": "x"}, "INFERNO_LOAD_ALPHA"),
    (["emulate", "--data-path", str(SMALL), "--speedup", "0"], {},
     "--speedup: expected a finite number > 0"),
    (["live", "--data-path", str(SMALL)], {"INFERNO_PROMETHEUS_TOKEN_PATH": "/t"},
     "INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN"),
    (["live", "--data-path", str(SMALL), "--invoke-token-file", "/nonexistent/token"], {},
     "INFERNO_INVOKE_TOKEN_PATH /nonexistent/token"),
    (["live", "--data-path", str(SMALL)], {"INFERNO_ACCELERATOR_RESOURCE": "nvidia gpu"},
     "INFERNO_ACCELERATOR_RESOURCE"),
    (["live", "--cycle-timeout", "0"], {}, "--cycle-timeout"),
], ids=["period", "dynamic", "data", "prom-flags", "policy", "oracle", "kubeconfig",
        "window", "actuation", "max-batch-env", "alpha", "interval", "alpha-env", "speedup",
        "token-over-http", "invoke-token", "gpu-resource", "cycle-timeout"])
def test_bad_input_exits_2_naming_it(args: list[str], env: dict[str, str],
                                     message: str) -> None:
    """Bad arguments, options or variables exit 2 with one line naming what is wrong."""
    result = CliRunner().invoke(cli, args, env={"KUBECONFIG": "", **env})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ inferno live, in process

def test_live_command_runs_cycles_until_sigterm(kube: EmulatorThread, kubeconfig: Path,
                                                tmp_path: Path) -> None:
    """`inferno live 0.2 --no-prometheus` cycles on the load labels; SIGTERM ends it with
    exit 0 and the cycle log holds the periodic cycles it reports."""
    kube.put_deployment(deployment("cmd", "d1", managed("s1", **{RPM: "60"})))
    cycle_log = tmp_path / "cycles.jsonl"

    def terminate_when_cycling() -> None:
        wait_until(lambda: cycle_log.exists() and cycle_log.read_text().count("\n") >= 2, 20,
                   "two cycles")
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_cycling, daemon=True)
    killer.start()
    result = CliRunner().invoke(cli, [
        "live", "0.2", "--no-prometheus", "--data-path", str(SMALL), "--port", "0",
        "--policy", "static", "--cycle-log", str(cycle_log)],
        env={"KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": "cmd"})
    killer.join(timeout=5)
    assert result.exit_code == 0, result.output
    cycles = [json.loads(line) for line in cycle_log.read_text().splitlines()]
    assert {c["status"] for c in cycles} == {"ok"}
    assert f"stopped after {len(cycles)} periodic cycles" in result.output


def test_live_command_port_in_use_exits_2(kubeconfig: Path) -> None:
    """A port another process listens on stops the start with exit 2 naming the address."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, [
            "live", "--no-prometheus", "--data-path", str(SMALL), "--port", str(port),
            "--cycle-log", "-"], env={"KUBECONFIG": str(kubeconfig)})
    assert result.exit_code == 2, result.output
    assert f"127.0.0.1:{port}: cannot listen" in result.output


def test_signals_stop_once_then_interrupt() -> None:
    """The first SIGTERM calls stop; a second signal raises KeyboardInterrupt; the previous
    handlers are back afterwards."""
    calls: list[int] = []
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(lambda: calls.append(1)) as installed:
        assert installed
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == [1]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_are_not_installed_off_the_main_thread() -> None:
    """From another thread the context installs nothing and says so."""
    seen: list[bool] = []

    def enter() -> None:
        with stop_on_signals(lambda: None) as installed:
            seen.append(installed)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [False]


def test_wall_clock_is_monotonic_unix_time() -> None:
    """WallClock reads Unix time at start and never goes backwards."""
    clock = WallClock()
    readings = [clock.now_s() for _ in range(1000)]
    assert readings == sorted(readings)
    assert abs(readings[0] - time.time()) < 1.0


def test_policy_settings_apply_window_and_max_batch() -> None:
    """--scale-down-window, --max-batch and --lead reach the inferno policy's settings (the
    window also caps its load-peak window); the HPA gets the window and ignores the others;
    no change gives the defaults (None)."""
    inferno = policy_settings("inferno", scale_down_window_s=7.0, max_batch=76, lead_s=0.0)
    assert isinstance(inferno, InfernoSettings)
    assert (inferno.stabilisation.scale_down_window_s, inferno.max_batch, inferno.lead_s) == (
        7.0, 76, 0.0)
    assert inferno.scale_down_window_s == 7.0
    assert policy_settings("inferno", scale_down_window_s=600.0).scale_down_window_s == 120.0
    hpa = policy_settings("hpa", scale_down_window_s=3.0, max_batch=76, lead_s=5.0)
    assert isinstance(hpa, HpaSettings)
    assert hpa.stabilisation.scale_down_window_s == 3.0
    assert policy_settings("inferno") is None


# ------------------------------------------------------------------ /metrics

def record(status: CycleStatus, *servers: tuple[str, str, int, int]) -> CycleRecord:
    return CycleRecord(cycle=1, time_s=0.0, policy="p", status=status, servers=tuple(
        ServerRecord(name=name, class_name="Free", model="m", namespace="ns", accelerator=acc,
                     current_replicas=current, num_replicas=desired)
        for name, acc, current, desired in servers))


def exported(exporter: DecisionExporter) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["server"]): s.value
            for family in text_string_to_metric_families(exporter.render().decode())
            for s in family.samples}


def test_exporter_gauges_and_ratio_rule() -> None:
    """desired, current and desired/current per server; the ratio is desired when current
    is 0 (WVA rule)."""
    exporter = DecisionExporter()
    assert exporter.update(record(CycleStatus.OK, ("a", "G2", 2, 3), ("b", "A100", 0, 2)))
    assert exported(exporter) == {
        ("inferno_desired_replicas", "a"): 3.0, ("inferno_desired_replicas", "b"): 2.0,
        ("inferno_current_replicas", "a"): 2.0, ("inferno_current_replicas", "b"): 0.0,
        ("inferno_desired_ratio", "a"): 1.5, ("inferno_desired_ratio", "b"): 2.0}


def test_exporter_keeps_gauges_over_skipped_cycles() -> None:
    """A skipped cycle changes nothing; the next decided cycle replaces the whole set."""
    exporter = DecisionExporter()
    exporter.update(record(CycleStatus.OK, ("a", "G2", 1, 2), ("b", "G2", 1, 1)))
    assert not exporter.update(record(CycleStatus.SKIPPED))
    assert {k for k in exported(exporter) if k[0] == "inferno_desired_replicas"} == {
        ("inferno_desired_replicas", "a"), ("inferno_desired_replicas", "b")}
    assert exporter.update(record(CycleStatus.FAILED, ("a", "A100", 2, 4)))
    assert exported(exporter)[("inferno_desired_replicas", "a")] == 4.0
    assert ("inferno_desired_replicas", "b") not in exported(exporter)


def test_exporter_registry_is_its_own() -> None:
    """Two exporters in one process never share series (no default registry)."""
    one, two = DecisionExporter(), DecisionExporter()
    one.update(record(CycleStatus.OK, ("a", "G2", 1, 5)))
    assert exported(two) == {}
    assert one.registry is not two.registry


def test_metrics_actuator_touches_nothing() -> None:
    """--actuation metrics: every planned server is reported unchanged."""
    from inferno.model.snapshot import AllocationPlan, ServerPlan

    plan = AllocationPlan(servers={n: ServerPlan(name=n, accelerator="G2", num_replicas=2,
                                                 max_batch=8) for n in ("b", "a")})
    report = MetricsActuator().apply(plan)
    assert (report.applied, report.unchanged, dict(report.failed)) == ((), ("a", "b"), {})


# ------------------------------------------------------------------ load-noise

def reference_walk(initial: dict[str, dict[str, float | None]], *, seed: int, alpha: float,
                   passes: int) -> dict[str, dict[str, str]]:
    """The seed's walk, x ← x + α·x₀·N(0, 1) per pass, over the labels as written."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    names = sorted(initial)
    original = {n: [v if v is not None else 1.0 for v in initial[n].values()] for n in names}
    current = {n: list(original[n]) for n in names}
    written: dict[str, dict[str, str]] = {}
    for _ in range(passes):
        z = rng.standard_normal((len(names), 3))
        for i, n in enumerate(names):
            x = np.maximum(np.array(current[n]) + alpha * np.array(original[n]) * z[i],
                           [0.0, 1.0, 1.0])
            rpm, tin, tout = f"{x[0]:.4f}", math.ceil(x[1]), math.ceil(x[2])
            present = initial[n]
            written[n] = {"rpm": rpm, "in": str(tin), "out": str(tout)}
            current[n] = [float(rpm), float(tin) if present["in"] is not None else 1.0,
                          float(tout)]
    return written


def seed_load(kube: EmulatorThread) -> None:
    kube.put_deployment(deployment("load", "a", managed("la", **{RPM: "60",
                                                                 NUM_TOKENS: "1024"})))
    kube.put_deployment(deployment("load", "b", managed("lb", **{RPM: "30", IN_TOKENS: "100",
                                                                 OUT_TOKENS: "200"})))


def run_emulate_load(kubeconfig: Path, seed: int) -> None:
    result = CliRunner().invoke(cli, ["load-noise", "0.01", "0.5", "--count", "2",
                                      "--seed", str(seed)],
                                env={"KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": "load"})
    assert result.exit_code == 0, result.output
    assert "2 passes" in result.output


def load_labels(kube: EmulatorThread, name: str) -> dict[str, str]:
    labels = kube.get_deployment("load", name)["metadata"]["labels"]
    return {k: v for k, v in labels.items() if ".load." in k}


def test_emulate_load_walk_matches_the_seed_formula(kube: EmulatorThread,
                                                    kubeconfig: Path) -> None:
    """Two passes with seed 7 write exactly the reference walk, only to the load labels each
    Deployment carried (numtokens for a; intokens and outtokens for b)."""
    seed_load(kube)
    run_emulate_load(kubeconfig, seed=7)
    expected = reference_walk({"la": {"rpm": 60.0, "in": None, "out": 1024.0},
                               "lb": {"rpm": 30.0, "in": 100.0, "out": 200.0}},
                              seed=7, alpha=0.5, passes=2)
    assert load_labels(kube, "a") == {RPM: expected["la"]["rpm"],
                                      NUM_TOKENS: expected["la"]["out"]}
    assert load_labels(kube, "b") == {RPM: expected["lb"]["rpm"], IN_TOKENS: expected["lb"]["in"],
                                      OUT_TOKENS: expected["lb"]["out"]}


def test_emulate_load_is_reproducible_by_seed(kube: EmulatorThread, kubeconfig: Path) -> None:
    """The same seed from the same labels writes the same labels; another seed does not."""
    results = []
    for seed in (3, 3, 4):
        kube.clear()
        seed_load(kube)
        run_emulate_load(kubeconfig, seed=seed)
        results.append((load_labels(kube, "a"), load_labels(kube, "b")))
    assert results[0] == results[1]
    assert results[0] != results[2]


# ------------------------------------------------------------------ emulation (sim.emulate)

SYSTEM = load_static_data(SMALL)


def want(**changes: object) -> DesiredDeployment:
    base: dict[str, object] = {"namespace": "ns", "deployment": "dep", "model": "llama_13b",
                               "accelerator": "G2", "replicas": 1}
    return DesiredDeployment(**{**base, **changes})  # type: ignore[arg-type]


class Desired:
    """A source whose desired state the test edits."""

    def __init__(self, *deployments: DesiredDeployment) -> None:
        self.items = {d.key: d for d in deployments}

    def set(self, *deployments: DesiredDeployment) -> None:
        self.items = {d.key: d for d in deployments}

    def __call__(self) -> dict[Key, DesiredDeployment]:
        return dict(self.items)


@pytest.fixture
def emulations() -> Iterator[list[ClusterEmulation]]:
    """Emulations registered here are stopped after the test."""
    started: list[ClusterEmulation] = []
    yield started
    for emulation in started:
        emulation.stop()


def start(emulations: list[ClusterEmulation], source: Desired, **settings: object
          ) -> ClusterEmulation:
    """An emulation that only polls when the test calls poll()."""
    options: dict[str, object] = {"poll_s": 1000.0, "tick_s": 0.02, **settings}
    emulation = ClusterEmulation(SYSTEM, source, EmulationSettings(**options))  # type: ignore
    emulation.start()
    emulations.append(emulation)
    return emulation


def pod_names(emulation: ClusterEmulation) -> list[str]:
    return [p.name for p in emulation.pods()]


def test_emulation_follows_replicas_after_the_startup_delay(
        emulations: list[ClusterEmulation]) -> None:
    """3 replicas instead of 1: the new pods are served only after the 5 simulated s of
    startup (1 wall s at speed-up 5), and status reports follow the counts."""
    source = Desired(want())
    reports: list[tuple[str, str, int, int]] = []
    emulation = ClusterEmulation(SYSTEM, source, EmulationSettings(
        poll_s=1000.0, tick_s=0.02, speedup=5.0, startup=StartupDelay(mean_s=5.0)),
        report=lambda *args: reports.append(args))
    emulation.start()
    emulations.append(emulation)
    assert pod_names(emulation) == ["dep-r0-0"]
    source.set(want(replicas=3))
    emulation.poll()
    polled_s = emulation.env.now
    assert pod_names(emulation) == ["dep-r0-0"]
    wait_until(lambda: len(emulation.pods()) == 3, 5, "three pods")
    assert emulation.env.now >= polled_s + 5.0
    emulation.poll()
    assert reports == [("ns", "dep", 1, 1), ("ns", "dep", 3, 1), ("ns", "dep", 3, 3)]


def test_emulation_rolls_over_to_a_new_accelerator(emulations: list[ClusterEmulation]) -> None:
    """A new accelerator label starts a new revision: its pods replace the old ones."""
    source = Desired(want(replicas=2))
    emulation = start(emulations, source, speedup=20.0, startup=StartupDelay(mean_s=2.0))
    assert pod_names(emulation) == ["dep-r0-0", "dep-r0-1"]
    source.set(want(replicas=2, accelerator="A100"))
    emulation.poll()
    wait_until(lambda: all("-r1-" in n for n in pod_names(emulation))
               and len(emulation.pods()) == 2, 5, "the new revision")
    assert emulation.cluster.deployments["ns/dep"].accelerator == "A100"


def test_emulation_skips_what_it_cannot_emulate(emulations: list[ClusterEmulation]) -> None:
    """An accelerator without data skips that Deployment with a reason; others are served."""
    source = Desired(want(), want(deployment="bad", accelerator="TPU"))
    emulation = start(emulations, source)
    assert "TPU" in emulation.skipped["ns", "bad"]
    assert pod_names(emulation) == ["dep-r0-0"]


def test_emulation_drains_a_deleted_deployment(emulations: list[ClusterEmulation]) -> None:
    """A Deployment gone from the API loses its pods."""
    source = Desired(want(replicas=2))
    emulation = start(emulations, source)
    wait_until(lambda: len(emulation.pods()) == 2, 5, "two pods before the deletion")
    source.set()
    emulation.poll()
    wait_until(lambda: emulation.pods() == [], 5, "no pods")


def test_targets_file_lists_pods_served_over_http(emulations: list[ClusterEmulation],
                                                  tmp_path: Path) -> None:
    """The file_sd JSON has one group per pod with namespace, deployment, pod and metrics
    path; that path serves vLLM metrics; an unknown pod is 404; stop empties the file."""
    targets = tmp_path / "targets.json"
    emulation = ClusterEmulation(SYSTEM, Desired(want(replicas=2, load_rpm=600.0)),
                                 EmulationSettings(poll_s=1000.0), targets_file=targets)
    emulation.start()
    emulations.append(emulation)
    host, port = emulation.address
    groups = json.loads(targets.read_text())
    assert groups == [{"targets": [f"{host}:{port}"],
                       "labels": {"__metrics_path__": f"/metrics/ns/dep-r0-{i}",
                                  "namespace": "ns", "deployment": "dep",
                                  "pod": f"dep-r0-{i}"}} for i in (0, 1)]
    status, body = get(f"http://{host}:{port}/metrics/ns/dep-r0-1")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"vllm:request_success", "vllm:num_requests_running",
            "vllm:time_to_first_token_seconds"} <= names
    assert get(f"http://{host}:{port}/metrics/ns/nobody")[0] == 404
    emulation.stop()
    assert json.loads(targets.read_text()) == []


def test_poisson_arrivals_follow_the_rate_and_the_seed(
        emulations: list[ClusterEmulation]) -> None:
    """600 RPM: 600 arrivals in the 60 simulated s after the first, within 4 standard
    deviations (√600); the same seed draws the same inter-arrival gaps."""
    gaps = []
    for _ in range(2):
        emulation = start(emulations, Desired(want(load_rpm=600.0)), speedup=100.0, seed=5)
        wait_until(lambda e=emulation: e.env.now > 61.0, 5, "61 simulated s")
        with emulation._lock:
            times = np.array([r.arrival_s for r in emulation.cluster.deployments["ns/dep"]
                              .requests])
        emulation.stop()
        assert abs(np.sum(times < times[0] + 60.0) - 1 - 600) < 4 * math.sqrt(600)
        gaps.append(np.diff(times[times < 60.0]))
    n = min(len(gaps[0]), len(gaps[1]))
    np.testing.assert_allclose(gaps[0][:n], gaps[1][:n], rtol=1e-9, atol=1e-9)


def test_compressed_time_divides_counters_not_gauges() -> None:
    """At speed-up 4 every counter and histogram sample is the replica's value / 4; gauges
    are unchanged."""
    env = simpy.Environment()
    cluster = Cluster(env, SYSTEM, sample_period_s=None)
    twin = cluster.add_deployment(DeploymentSpec(name="d", model="llama_13b", accelerator="G2",
                                                 max_batch=8))
    factory = RequestFactory()
    for _ in range(12):
        twin.submit(factory.make(100, 20))
    env.run(until=0.5)  # some finished, some in flight
    rep = twin.replicas[0]

    def samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                           tuple[str, float]]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)  # type: ignore[arg-type]
        return {(s.name, tuple(sorted(s.labels.items()))): (family.type, s.value)
                for family in registry.collect() for s in family.samples}

    plain = samples(ReplicaCollector(rep, model_name="m"))
    scaled = samples(CompressedTime(ReplicaCollector(rep, model_name="m"), 4.0))
    assert plain.keys() == scaled.keys()
    assert any(kind == "counter" and value > 0 for kind, value in plain.values())
    for key, (kind, value) in plain.items():
        factor = 4.0 if kind in ("counter", "histogram") else 1.0
        assert scaled[key] == (kind, pytest.approx(value / factor)), key


def test_emulation_settings_reject_bad_values() -> None:
    """Non-positive speed-up or poll period, an unknown token kind: ConfigError naming it."""
    for field, value in (("speedup", 0.0), ("poll_s", -1.0), ("token_kind", "zipf")):
        with pytest.raises(ConfigError, match=field):
            EmulationSettings(**{field: value})  # type: ignore[arg-type]


def test_emulate_command_writes_config_and_status(kube: EmulatorThread, kubeconfig: Path,
                                                  api_client: kubernetes.client.ApiClient,
                                                  tmp_path: Path) -> None:
    """`inferno emulate --duration` follows the API: a prometheus.yml scraping the targets
    file, ready replicas written into the status, an empty targets file at exit."""
    kube.put_deployment(deployment("emu", "d1", managed("s1"), replicas=2, ready=0))
    targets, config = tmp_path / "targets.json", tmp_path / "prometheus.yml"
    result = CliRunner().invoke(cli, [
        "emulate", "--data-path", str(SMALL), "--targets-file", str(targets),
        "--prometheus-config", str(config), "--scrape-interval", "2", "--write-status",
        "--duration", "0.5", "--poll", "0.1"],
        env={"KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": "emu"})
    assert result.exit_code == 0, result.output
    assert "2 pods" in result.output
    scrape = yaml.safe_load(config.read_text())
    assert scrape["global"]["scrape_interval"] == "2s"
    assert scrape["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(targets.resolve())]
    status = kube.get_deployment("emu", "d1")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert json.loads(targets.read_text()) == []
