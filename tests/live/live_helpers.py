"""Small helpers shared by the live tests: HTTP GET, polling, the commands as processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from kube_emulator import EmulatorThread, deployment

from inferno.control import ControllerSettings
from live.app import LiveLoop, LiveSettings
from live.config import KubeSettings, PromSettings

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "sample-data" / "small"


def get(url: str, headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of a GET, HTTP errors included."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               poll_s: float = 0.05) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`inferno ARGS` as a process, output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", "from inferno.cli import main; main()",
                                 *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait up to 15 s, else SIGKILL; returns the exit code (-9 when killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return -9


# ------------------------------------------------------------------ a hot Deployment, HPA policy

HPA_NS = "e2e-hpa"
HOT_REPLICAS = 3
"""running + waiting = 80 per pod against the HPA target 0.8 × max batch 40 = 32: ratio 2.5,
ceil(2.5 × 1 ready) = 3 replicas (Kubernetes HPA's closed form)."""
ACC = "inferno.server.allocation.accelerator"
MAX_BATCH = "inferno.server.allocation.maxbatchsize"
RPM = "inferno.server.load.rpm"


def labels(server: str, **extra: str) -> dict[str, str]:
    """Managed labels of a llama_13b server of class Premium."""
    return {"inferno.server.managed": "true", "inferno.server.name": server,
            "inferno.server.model": "llama_13b", "inferno.server.class": "Premium", **extra}

WINDOW = "3s"
"""Prometheus window of the in-process loops (1 s scrapes)."""


def hpa_loop(kube_settings: KubeSettings, prom_url: str, tmp_path: Path,
             **changes: Any) -> LiveLoop:
    """LiveLoop on e2e-hpa with the HPA policy, on demand only, on a free port."""
    controller = ControllerSettings(data_path=SMALL, period_s=0.0, port=0)
    settings = LiveSettings(
        controller=replace(controller, **changes.pop("controller", {})),
        kube=replace(kube_settings, watch_namespace=HPA_NS),
        prom=PromSettings(url=prom_url, window=WINDOW, timeout_s=2.0),
        cycle_log=changes.pop("cycle_log", str(tmp_path / "cycles.jsonl")),
        **{"policy": "hpa", **changes})
    return LiveLoop(settings)


def put_hot(kube: EmulatorThread, **extra: str) -> None:
    kube.put_deployment(deployment(HPA_NS, "hot", labels("hot", **{ACC: "A100", MAX_BATCH: "40"},
                                                           **extra)))


