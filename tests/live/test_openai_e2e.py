"""End to end with a client nobody here wrote: the `openai` package streams completions
against `inferno emulate --openai-port`, a real Prometheus scrapes the emulated pods and
`inferno live` scales the Deployment; the client sees the effect.

Everything runs on 127.0.0.1. The Deployment (llama_70b on G2, class Bronze: ITL SLO 160 ms,
TTFT 2 s) has no synthetic load: all its requests come from 6 closed-loop streaming users (a
4,096-character prompt, 1,024 tokens by the server's estimate, and 32 tokens with
``ignore_eos``). On one replica the batch and the other users' prefills push the ITL above the
SLO; `inferno live` (period 1 s, Prometheus window 5 s, max batch pinned at the model's 12, G2
the only accelerator in its inventory so it scales without moving the pods Prometheus sums)
adds replicas, and the requests sent after they are ready see a lower ITL. At the end the
clients' mean TTFT and ITL agree within 10 % with the servers' histograms as Prometheus sums
them over the pods. vLLM's TTFT starts when the server has parsed the request, the client's
when it sends it: the 1,024-token prefill makes that difference small (~1 %; under 10 % with
both cores saturated by other processes).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
import numpy as np
import openai
import pytest
from click.testing import CliRunner
from kube_emulator import EmulatorThread, deployment
from live_helpers import SMALL, get, spawn, terminate, wait_until
from prom_harness import PrometheusServer, free_port

from inferno.cli import cli
from inferno.control import read_cycle_log

NS, NAME, SERVER, MODEL = "e2e-openai", "llama", "openai-llama", "llama_70b"
USERS, PROMPT, OUT_TOKENS = 6, "abcd" * 1024, 32
CLASS = "Bronze"


@dataclass(frozen=True, slots=True)
class Sample:
    """One streamed request as the client measured it (monotonic s)."""

    sent_s: float
    first_s: float
    last_s: float
    tokens: int

    @property
    def ttft_s(self) -> float:
        return self.first_s - self.sent_s

    @property
    def itl_s(self) -> float:
        return (self.last_s - self.first_s) / (self.tokens - 1)


async def users(base_url: str, stop: threading.Event, samples: list[Sample]) -> None:
    """USERS closed-loop users; each finishes its request in flight after `stop`."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0,
                                timeout=60.0)

    async def user() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            stream = await client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=OUT_TOKENS, stream=True,
                extra_body={"ignore_eos": True})
            times = [time.monotonic() async for chunk in stream
                     if chunk.choices and chunk.choices[0].text]
            samples.append(Sample(sent, times[0], times[-1], len(times)))

    async with client:
        await client.models.list()  # warm up the client (imports, connection pool)
        await asyncio.gather(*(user() for _ in range(USERS)))


def g2_only(path: Path) -> Path:
    """sample-data/small with G2 as the only accelerator in the inventory: the optimizer
    scales the Deployment without moving it (a move would retire the pods Prometheus sums)."""
    shutil.copytree(SMALL, path)
    (path / "capacity-data.json").write_text(json.dumps({"count": [{"type": "G2",
                                                                    "count": 64}]}))
    return path


def health(url: str) -> int:
    try:
        return get(url, timeout_s=2.0)[0]
    except OSError:
        return 0


def server_mean_s(prometheus: PrometheusServer, histogram: str) -> tuple[float, float]:
    """(sum, count) of a vLLM histogram over every pod of the Deployment, now."""
    values = []
    for suffix in ("sum", "count"):
        result = prometheus.query(f'sum(vllm:{histogram}_{suffix}{{namespace="{NS}"}})')
        values.append(float(result[0]["value"][1]) if result else 0.0)  # type: ignore[index]
    return values[0], values[1]


@pytest.mark.timeout(120)
def test_openai_clients_drive_the_twin_and_live_scales_it(
        kube: EmulatorThread, kubeconfig: Path, api_client: kubernetes.client.ApiClient,
        tmp_path: Path) -> None:
    """6 streaming users on one replica violate the ITL SLO; inferno live scales the
    Deployment up on the measured metrics; requests sent after the new replicas are ready see
    a lower ITL; client TTFT/ITL are within 10 % of the servers' Prometheus histograms."""
    kube.put_deployment(deployment(NS, NAME, {
        "inferno.server.managed": "true", "inferno.server.name": SERVER,
        "inferno.server.model": MODEL, "inferno.server.class": CLASS,
        "inferno.server.allocation.accelerator": "G2"}))
    data = g2_only(tmp_path / "data")
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus")
    prometheus.start()
    openai_port, live_port = free_port(), free_port()
    cycle_log = tmp_path / "cycles.jsonl"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "WATCH_NAMESPACE": NS,
           "INFERNO_PROMETHEUS_WINDOW": "5s"}
    emulate = spawn(["emulate", "--data-path", str(SMALL), "--targets-file",
                     str(prometheus.targets_file), "--poll", "0.5", "--startup", "1",
                     "--write-status", "--seed", "1", "--openai-port", str(openai_port)],
                    env, tmp_path / "emulate.log")
    live = spawn(["-v", "live", "1", "--data-path", str(data), "--prometheus-url",
                  prometheus.url, "--port", str(live_port), "--cycle-log", str(cycle_log),
                  "--max-batch", "12", "--lead", "0", "--scale-down-window", "120"], env,
                 tmp_path / "live.log")
    base = f"http://127.0.0.1:{openai_port}/{NS}/{NAME}"
    samples: list[Sample] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def drive() -> None:
        try:
            asyncio.run(users(base + "/v1", stop, samples))
        except Exception as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
            stop.set()

    driver = threading.Thread(target=drive, daemon=True)

    def spec_replicas() -> int:
        return int(kube.get_deployment(NS, NAME)["spec"]["replicas"])

    def ready_replicas() -> int:
        return int(kube.get_deployment(NS, NAME).get("status", {}).get("readyReplicas", 0))

    try:
        wait_until(lambda: health(base + "/health") == 200, 30, "the OpenAI endpoint")
        driver.start()
        wait_until(lambda: spec_replicas() >= 2, 40, "inferno live to scale up")
        wait_until(lambda: ready_replicas() >= spec_replicas() >= 2, 20,
                   "the new replicas to be ready")
        scaled_s = time.monotonic()
        wait_until(lambda: sum(s.sent_s > scaled_s for s in samples) >= USERS
                   or stop.is_set(), 40, "a round of requests on the scaled Deployment")
        stop.set()
        driver.join(timeout=30)
        assert not driver.is_alive()
        assert failures == []
        n = len(samples)
        wait_until(lambda: server_mean_s(prometheus, "time_to_first_token_seconds")[1] >= n
                   and server_mean_s(prometheus, "request_time_per_output_token_seconds")[1]
                   >= n, 15, "Prometheus to scrape every request")
        ttft = server_mean_s(prometheus, "time_to_first_token_seconds")
        itl = server_mean_s(prometheus, "request_time_per_output_token_seconds")
        decisions = [r for r in read_cycle_log(cycle_log) if r["status"] == "ok"]
    finally:
        stop.set()
        codes = terminate(live), terminate(emulate)
        prometheus.stop()
    assert codes == (0, 0), ((tmp_path / "live.log").read_text()[-2000:]
                             + (tmp_path / "emulate.log").read_text()[-2000:])
    assert all(s.tokens == OUT_TOKENS for s in samples)
    assert (ttft[1], itl[1]) == (len(samples), len(samples))
    client_ttft = float(np.mean([s.ttft_s for s in samples]))
    client_itl = float(np.mean([s.itl_s for s in samples]))
    assert client_ttft == pytest.approx(ttft[0] / ttft[1], rel=0.10)
    assert client_itl == pytest.approx(itl[0] / itl[1], rel=0.10)
    before = [s.itl_s for s in samples if s.last_s < scaled_s]
    after = [s.itl_s for s in samples if s.sent_s > scaled_s]
    assert len(before) >= USERS // 2
    assert len(after) >= USERS
    assert np.mean(after) < 0.9 * np.mean(before)
    scaled = next(r for r in decisions if r["servers"][0]["num_replicas"] >= 2)
    assert scaled["servers"][0]["itl_ms"] is not None  # decided on measured metrics



def test_emulate_openai_port_in_use_exits_2(kubeconfig: Path, tmp_path: Path) -> None:
    """An OpenAI port another process listens on stops `inferno emulate` with exit 2 naming
    the address; a bad cap is refused before anything starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, [
            "emulate", "--data-path", str(SMALL), "--targets-file",
            str(tmp_path / "targets.json"), "--openai-port", str(port), "--duration", "5"],
            env={"KUBECONFIG": str(kubeconfig)})
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    result = CliRunner().invoke(cli, ["emulate", "--data-path", str(SMALL), "--openai-port",
                                      "0", "--max-requests", "0"])
    assert result.exit_code == 2, result.output
    assert "--max-requests: expected a finite number >= 1, got 0" in result.output
