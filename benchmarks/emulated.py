"""One Deployment played by ``inferno emulate --openai-port`` for the OpenAI-client benchmarks.

All on 127.0.0.1: the tests' Kubernetes API emulator (kmock) holds one managed Deployment with
no synthetic load; ``inferno emulate`` runs as its own process (speed-up 1), follows it and
serves its pod's OpenAI API and vLLM metrics. `EmulatedDeployment` starts both and reads the
pod's metrics and the server process's peak RSS and CPU time (/proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "live")]

from kube_emulator import EmulatorThread, deployment  # noqa: E402
from prom_harness import free_port  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SMALL = ROOT / "sample-data" / "small"


class EmulatedDeployment:
    """``inferno emulate`` serving one Deployment; a context manager."""

    def __init__(self, *, model: str, accelerator: str, max_batch: int, seed: int = 0,
                 namespace: str = "bench", name: str = "llama", max_requests: int = 512
                 ) -> None:
        self.model, self.namespace, self.name = model, namespace, name
        self.labels = {
            "inferno.server.managed": "true", "inferno.server.name": f"{namespace}-{name}",
            "inferno.server.model": model, "inferno.server.class": "Premium",
            "inferno.server.allocation.accelerator": accelerator,
            "inferno.server.allocation.maxbatchsize": str(max_batch)}
        self.seed, self.max_requests = seed, max_requests
        self.work = Path(tempfile.mkdtemp(prefix="inferno-openai-bench-"))
        self.port, self.metrics_port = free_port(), free_port()
        self._kube: EmulatorThread | None = None
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """The Deployment's base URL (a Service); the OpenAI base URL is target + /v1."""
        return f"http://127.0.0.1:{self.port}/{self.namespace}/{self.name}"

    @property
    def pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def __enter__(self) -> EmulatedDeployment:
        kube = self._kube = EmulatorThread()
        kube.start()
        kube.put_deployment(deployment(self.namespace, self.name, self.labels))
        env = {**os.environ, "KUBECONFIG": str(kube.write_kubeconfig(self.work / "kubeconfig")),
               "WATCH_NAMESPACE": self.namespace}
        with (self.work / "emulate.log").open("wb") as log:
            self._server = subprocess.Popen(
                [sys.executable, "-c", "from inferno.cli import main; main()", "emulate",
                 "--data-path", str(SMALL), "--targets-file", str(self.work / "targets.json"),
                 "--port", str(self.metrics_port), "--openai-port", str(self.port),
                 "--seed", str(self.seed), "--max-requests", str(self.max_requests)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.target + "/health", timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline or self._server.poll() is not None:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"emulate did not start; see {self.work}") from None
                time.sleep(0.2)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(signal.SIGTERM)
            self._server.wait(timeout=30)
        if self._kube is not None:
            self._kube.stop()

    def metrics(self) -> dict[str, float]:
        """The pod's vLLM samples (histogram buckets left out), by sample name."""
        url = (f"http://127.0.0.1:{self.metrics_port}/metrics/{self.namespace}/"
               f"{self.name}-r0-0")
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if "le" not in s.labels}

    def proc_stats(self) -> tuple[float, float]:
        """(peak RSS in MiB, CPU s) of the server process, from /proc."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        hwm_kib = next(int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmHWM:"))
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return hwm_kib / 1024.0, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
