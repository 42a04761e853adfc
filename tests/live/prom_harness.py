"""A real Prometheus server on 127.0.0.1 and vLLM-like metric endpoints for it to scrape.

`PrometheusServer` runs the Debian ``prometheus`` binary with a 1 s scrape interval and a
file-based service discovery file, so targets can be added while it runs (atomic rename, as
the Prometheus docs ask). `VllmPod` serves one pod's vLLM metrics whose values are exact linear
functions of wall time (counters) or constants (gauges), so the rates Prometheus computes are
known in closed form: rate(counter) = the driven per-second rate.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

HISTORY_S = 3600.0
"""Counters start as if the pod had served for an hour, so no window ever reaches zero."""


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class PodLoad:
    """What one pod's metrics say: per-second request rate and per-request means."""

    request_rps: float
    in_tokens: float
    out_tokens: float
    ttft_s: float
    itl_s: float
    waiting: float
    running: float
    kv_usage: float
    length_histograms: tuple[float, float] | None = None
    """Mean (prompt, generation) tokens of the vLLM per-request length histograms; None:
    the pod does not export them (older vLLM)."""
    old_names: bool = False
    """Export the KV-usage and ITL metrics under older vLLM names
    (``vllm:gpu_cache_usage_perc``, ``vllm:time_per_output_token_seconds``)."""


class VllmCollector(Collector):
    """vLLM's series for one pod with a fixed load (counters grow with wall time)."""

    def __init__(self, load: PodLoad, start_s: float) -> None:
        self.load = load
        self.start_s = start_s

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        load = self.load
        requests = load.request_rps * (time.time() - self.start_s)
        yield CounterMetricFamily("vllm:request_success", "Finished requests.", requests)
        yield CounterMetricFamily("vllm:prompt_tokens", "Prefill tokens.",
                                  requests * load.in_tokens)
        yield CounterMetricFamily("vllm:generation_tokens", "Generated tokens.",
                                  requests * load.out_tokens)
        itl = ("vllm:time_per_output_token_seconds" if load.old_names
               else "vllm:request_time_per_output_token_seconds")
        for name, mean_s in (("vllm:time_to_first_token_seconds", load.ttft_s),
                             (itl, load.itl_s)):
            yield HistogramMetricFamily(name, "Latency.", buckets=[("+Inf", requests)],
                                        sum_value=requests * mean_s)
        if load.length_histograms is not None:
            for name, mean in zip(("vllm:request_prompt_tokens",
                                   "vllm:request_generation_tokens"), load.length_histograms,
                                  strict=True):
                yield HistogramMetricFamily(name, "Tokens per request.",
                                            buckets=[("+Inf", requests)],
                                            sum_value=requests * mean)
        yield GaugeMetricFamily("vllm:num_requests_waiting", "Waiting.", load.waiting)
        yield GaugeMetricFamily("vllm:num_requests_running", "Running.", load.running)
        kv = "vllm:gpu_cache_usage_perc" if load.old_names else "vllm:kv_cache_usage_perc"
        yield GaugeMetricFamily(kv, "KV usage fraction.", load.kv_usage)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 answering every GET with ``answer(path, headers)``
    → (status, content type, body)."""

    def __init__(self, answer: Callable[[str, Mapping[str, str]], tuple[int, str, bytes]]
                 ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                status, ctype, body = answer(self.path, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class VllmPod(LoopbackServer):
    """One emulated pod: an HTTP /metrics endpoint on 127.0.0.1 with a fixed load."""

    def __init__(self, load: PodLoad) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(VllmCollector(load, start_s=time.time() - HISTORY_S))
        super().__init__(lambda path, headers: (
            200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)))


class PrometheusServer:
    """The prometheus binary on a free loopback port, scraping file-discovered targets."""

    def __init__(self, workdir: Path, scrape_interval_s: float = 1.0, *,
                 data_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.port = free_port()
        self.targets_file = workdir / "targets.json"
        self._groups: dict[str, dict[str, object]] = {}
        self._write_targets()
        config = {
            "global": {"scrape_interval": f"{scrape_interval_s:g}s",
                       "scrape_timeout": f"{scrape_interval_s:g}s",
                       "evaluation_interval": f"{scrape_interval_s:g}s"},
            "scrape_configs": [{
                "job_name": "vllm",
                "file_sd_configs": [{"files": [str(self.targets_file)],
                                     "refresh_interval": "1s"}],
            }],
        }
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._log = (workdir / "prometheus.log").open("wb")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Launch the process and wait until /-/ready answers 200."""
        self._proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_file}",
             f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self._proc.returncode}; see "
                                   f"{self.workdir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s} s")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None
        self._log.close()

    def _write_targets(self) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self._groups.values())), encoding="utf-8")
        os.replace(tmp, self.targets_file)

    def add_target(self, address: str, labels: Mapping[str, str], key: str = "") -> None:
        """Scrape `address` with the given target labels (e.g. namespace, deployment, pod,
        ``__metrics_path__``); `key` tells apart targets sharing an address."""
        self._groups[key or address] = {"targets": [address], "labels": dict(labels)}
        self._write_targets()

    def remove_targets(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self._groups.pop(address, None)
        self._write_targets()

    def query(self, promql: str) -> list[dict[str, object]]:
        """Instant query over plain HTTP (harness use; the code under test has its own client)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            result: list[dict[str, object]] = json.load(response)["data"]["result"]
            return result

    def wait_for_samples(self, selector: str, num_series: int, min_samples: int,
                         timeout_s: float = 30.0) -> None:
        """Block until `num_series` `up` series matching `selector` each have `min_samples`
        samples in the last `min_samples` seconds (the window is fully covered)."""
        promql = f"count_over_time(up{selector}[{min_samples}s]) >= {min_samples}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.query(promql)) >= num_series:
                return
            time.sleep(0.25)
        raise TimeoutError(f"{promql}: fewer than {num_series} series after {timeout_s} s")


class RecordingProxy(LoopbackServer):
    """A plain-http reverse proxy on 127.0.0.1 in front of `upstream` that records the
    Authorization header of every request (what a network observer would see)."""

    def __init__(self, upstream: str) -> None:
        self.authorization: list[str | None] = []

        def forward(path: str, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
            self.authorization.append(headers.get("Authorization"))
            try:
                with urllib.request.urlopen(upstream + path, timeout=10) as answer:
                    return (answer.status, answer.headers.get("Content-Type", "text/plain"),
                            answer.read())
            except urllib.error.HTTPError as exc:
                return exc.code, "application/json", exc.read()

        super().__init__(forward)
