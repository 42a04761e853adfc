"""OpenAI endpoints of the emulation, driven by the `openai` package and raw HTTP on loopback.

Reference timings come from the α/β/γ iteration model written out here (a lone request: one
prefill iteration emits the first token, then one decode iteration per token), and the
tokens' wall times from the emulation's clock (`wall_s`), which shares `time.monotonic` with
the test. Margins on lateness are generous (a shared 2-core machine); earliness has none.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferno.errors import ConfigError
from inferno.io import load_static_data
from sim.emulate import ClusterEmulation, DesiredDeployment, EmulationSettings, Key
from sim.openai_server import OpenAIServer, OpenAISettings
from sim.openai_wire import token_text
from sim.replica import EngineSettings
from sim.request import Request, RequestStatus

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = load_static_data(ROOT / "sample-data" / "small")
MODEL, ACC = "llama_70b", "G2"
PERF = SYSTEM.perf[MODEL, ACC].perf
LATE_S = 0.1
"""How late a token may reach the client on a busy machine (never early)."""


def want(**changes: Any) -> DesiredDeployment:
    base: dict[str, Any] = {"namespace": "ns", "deployment": "dep", "model": MODEL,
                            "accelerator": ACC, "replicas": 1}
    return DesiredDeployment(**{**base, **changes})


class Emulated:
    """An emulation with its OpenAI server; `base` is the Deployment's /v1 URL."""

    def __init__(self, *deployments: DesiredDeployment, settings: OpenAISettings | None = None,
                 **emulation: Any) -> None:
        items = {d.key: d for d in deployments or (want(),)}
        self.emulation = ClusterEmulation(SYSTEM, lambda: items, EmulationSettings(
            **{"poll_s": 1000.0, "tick_s": 0.02, **emulation}))
        self.emulation.start()
        self.server = OpenAIServer(self.emulation, settings)
        host, port = self.server.start()
        self.url = f"http://{host}:{port}"
        self.base = f"{self.url}/ns/dep/v1"

    def client(self, base: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=base or self.base, api_key="none", max_retries=0)

    def requests(self, key: Key = ("ns", "dep")) -> list[Request]:
        with self.emulation.lock:
            return list(self.emulation.cluster.deployments["/".join(key)].requests)

    def stop(self) -> None:
        self.server.stop()
        self.emulation.stop()


@pytest.fixture
def emulated() -> Iterator[list[Emulated]]:
    """Emulations registered here are stopped after the test."""
    started: list[Emulated] = []
    yield started
    for item in started:
        item.stop()


def start(emulated: list[Emulated], *deployments: DesiredDeployment, **kwargs: Any
          ) -> Emulated:
    item = Emulated(*deployments, **kwargs)
    emulated.append(item)
    return item


def lone_request_ends_s(in_tokens: int, out_tokens: int) -> np.ndarray:
    """Iteration ends of a lone request after its arrival, from the α/β/γ model (s)."""
    a, b, g = PERF.alpha_ms, PERF.beta_ms, PERF.gamma_ms
    its = [a + b * in_tokens + g * in_tokens] + [a + b + g * (in_tokens + j)
                                                 for j in range(1, out_tokens)]
    return np.cumsum(its) / 1000.0


def post(url: str, body: object, timeout_s: float = 10.0) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# ------------------------------------------------------------------ timing


@pytest.mark.parametrize("speedup", [1.0, 4.0], ids=["real-time", "speedup-4"])
def test_tokens_stream_at_the_replica_iteration_ends(emulated: list[Emulated],
                                                     speedup: float) -> None:
    """A lone streamed completion: the twin stamps the α/β/γ timeline from its arrival, and
    each token reaches the client after its iteration's end on the wall clock (simulated
    time / speed-up), never before, at most LATE_S after."""
    item = start(emulated, speedup=speedup)
    n_in, n_out = 200, 12
    sent = time.monotonic()
    stream = item.client().completions.create(
        model=MODEL, prompt="x", max_tokens=n_out, stream=True,
        extra_body={"ignore_eos": True, "prompt_tokens": n_in})
    arrivals, texts, finish = [], [], []
    for chunk in stream:
        if chunk.choices[0].text:
            arrivals.append(time.monotonic())
            texts.append(chunk.choices[0].text)
        finish.append(chunk.choices[0].finish_reason)
    (req,) = item.requests()
    ends = req.arrival_s + lone_request_ends_s(n_in, n_out)
    assert (req.in_tokens, req.out_tokens, req.status) == (n_in, n_out, RequestStatus.DONE)
    assert req.first_token_s == pytest.approx(ends[0], abs=1e-9)
    assert req.finish_s == pytest.approx(ends[-1], abs=1e-9)
    assert texts == [token_text(i) for i in range(n_out)]
    assert finish[-1] == "length"
    due = np.array([item.emulation.wall_s(t) for t in ends])
    assert item.emulation.wall_s(req.arrival_s) >= sent - 1e-3
    late = np.array(arrivals) - due
    assert late.min() >= -1e-3, late
    assert late.max() <= LATE_S, late


def test_chat_stream_with_usage_and_non_streaming_bodies(emulated: list[Emulated]) -> None:
    """Chat streaming: role chunk, one delta per token (with vLLM's continuous usage), the
    finish reason, then usage; non-streaming completion and chat bodies carry the text and
    the token counts."""
    item = start(emulated, speedup=10.0)
    client = item.client()
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "abcd" * 10}], max_tokens=5,
        stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True},
        extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    tokens = [c for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].delta.content for c in tokens] == [token_text(i) for i in range(5)]
    assert [c.usage.completion_tokens for c in tokens] == [1, 2, 3, 4, 5]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (10 + 4, 5)

    text = client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=4,
                                     extra_body={"ignore_eos": True})
    assert text.choices[0].text == "".join(token_text(i) for i in range(4))
    assert (text.usage.prompt_tokens, text.usage.completion_tokens) == (3, 4)
    chat = client.chat.completions.create(model=MODEL, max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "".join(token_text(i) for i in range(3))
    assert chat.choices[0].finish_reason == "length"  # the EOS draw (mean 128) comes later
    assert [(r.in_tokens, r.out_tokens) for r in item.requests()] == [(14, 5), (3, 4), (5, 3)]


def test_eos_drawn_from_the_deployment_output_length(emulated: list[Emulated]) -> None:
    """Without ignore_eos the output ends at the Deployment's own length (fixed 6 tokens):
    finish reason stop; min_tokens lengthens it."""
    item = start(emulated, want(out_tokens=6), speedup=10.0)
    client = item.client()
    first = client.completions.create(model=MODEL, prompt="a", max_tokens=50)
    assert (first.usage.completion_tokens, first.choices[0].finish_reason) == (6, "stop")
    longer = client.completions.create(model=MODEL, prompt="a", max_tokens=50,
                                       extra_body={"min_tokens": 9})
    assert (longer.usage.completion_tokens, longer.choices[0].finish_reason) == (9, "stop")


# ------------------------------------------------------------------ metrics and mixed mode


def scrape(item: Emulated, pod: str) -> dict[str, float]:
    host, port = item.emulation.address
    status, body = get(f"http://{host}:{port}/metrics/ns/{pod}")
    assert status == 200
    return {s.name: s.value for f in text_string_to_metric_families(body.decode())
            for s in f.samples if not s.labels.get("le")}


def test_pod_metrics_count_external_requests_as_vllm_does(emulated: list[Emulated]) -> None:
    """Three client requests (no synthetic load): the pod's vLLM counters and histogram
    sums hold exactly their requests, prompt and generated tokens, and the TTFT sum is at
    most the clients' (a client also waits for HTTP)."""
    item = start(emulated, speedup=10.0)
    client = item.client()
    lengths = [(40, 3), (100, 7), (17, 2)]
    client_ttft = []
    for n_in, n_out in lengths:
        sent = time.monotonic()
        for chunk in client.completions.create(
                model=MODEL, prompt="x", max_tokens=n_out, stream=True,
                extra_body={"ignore_eos": True, "prompt_tokens": n_in}):
            if chunk.choices[0].text:
                client_ttft.append((time.monotonic() - sent) * 10.0)  # simulated s
                break
    deadline = time.monotonic() + 5
    while any(r.status is not RequestStatus.DONE for r in item.requests()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    m = scrape(item, "dep-r0-0")
    n = len(lengths)
    assert m["vllm:request_success_total"] == n / 10.0  # counters per simulated s (speed-up)
    assert m["vllm:prompt_tokens_total"] == pytest.approx(sum(i for i, _ in lengths) / 10.0)
    assert m["vllm:generation_tokens_total"] == pytest.approx(sum(o for _, o in lengths) / 10)
    assert m["vllm:request_prompt_tokens_sum"] == pytest.approx(sum(i for i, _ in lengths) / 10)
    assert m["vllm:time_to_first_token_seconds_count"] == pytest.approx(n / 10.0)
    server_ttft = m["vllm:time_to_first_token_seconds_sum"] * 10.0
    assert server_ttft <= sum(client_ttft) + 1e-6
    assert server_ttft >= sum(client_ttft) - n * LATE_S * 10.0


def test_mixed_mode_shares_replicas_with_the_synthetic_load(emulated: list[Emulated]) -> None:
    """Synthetic Poisson load (240 RPM) and a client's request on the same replica: they
    share iterations (the client's ITL is above a lone request's), the client sees the
    twin's own timing for its request, and the pod counts both kinds."""
    item = start(emulated, want(load_rpm=240.0, in_tokens=200, out_tokens=30), speedup=4.0)
    time.sleep(0.4)  # let the synthetic load fill the batch
    n_in, n_out = 200, 20
    stream = item.client().completions.create(
        model=MODEL, prompt="x", max_tokens=n_out, stream=True,
        extra_body={"ignore_eos": True, "prompt_tokens": n_in})
    arrivals = [time.monotonic() for chunk in stream if chunk.choices[0].text]
    reqs = item.requests()
    (mine,) = [r for r in reqs if r.out_tokens == n_out]
    lone = lone_request_ends_s(n_in, n_out)
    assert mine.itl_s > 1.1 * (lone[-1] - lone[0]) / (n_out - 1)
    overlapping = [r for r in reqs if r is not mine and r.replica == mine.replica
                   and r.first_scheduled_s < mine.finish_s
                   and r.finish_s > mine.first_scheduled_s]
    assert len(overlapping) >= 2
    assert arrivals[0] >= item.emulation.wall_s(mine.first_token_s) - 1e-3
    client_itl = (arrivals[-1] - arrivals[0]) / (n_out - 1) * 4.0
    assert client_itl == pytest.approx(mine.itl_s, abs=2 * LATE_S * 4.0 / (n_out - 1))
    done_before = sum(r.status is RequestStatus.DONE for r in item.requests())
    counted = scrape(item, "dep-r0-0")["vllm:request_success_total"] * 4.0
    done_after = sum(r.status is RequestStatus.DONE for r in item.requests())
    assert done_before - 1e-9 <= counted <= done_after + 1e-9
    assert done_before >= 3  # the client's request and synthetic ones


# ------------------------------------------------------------------ routes and errors


def test_routes_models_health_and_unknown_targets(emulated: list[Emulated]) -> None:
    """Per-Deployment and root routes; the root routes by model when one Deployment serves
    it; unknown Deployments and models are 404, an ambiguous model a 400 naming the paths."""
    item = start(emulated, want(), want(deployment="other", model="llama_13b"),
                 want(deployment="idle", model="llama_13b", replicas=0), speedup=10.0)
    assert [m.id for m in item.client().models.list()] == [MODEL]
    assert [m.id for m in item.client(item.url + "/v1").models.list()] == ["llama_13b", MODEL]
    assert get(item.url + "/ns/dep/health")[0] == 200
    assert get(item.url + "/ns/idle/health")[0] == 503
    assert get(item.url + "/health")[0] == 200
    body = {"model": MODEL, "prompt": "a", "max_tokens": 2}
    status, _, reply = post(item.url + "/v1/completions", body)
    assert (status, reply["model"]) == (200, MODEL)
    assert item.requests()[-1].out_tokens == 2
    status, _, reply = post(item.url + "/v1/completions", {**body, "model": "llama_13b"})
    assert status == 400
    assert "/ns/idle/v1" in reply["error"]["message"]
    assert "/ns/other/v1" in reply["error"]["message"]
    assert post(item.url + "/v1/completions", {**body, "model": "gpt"})[0] == 404
    assert post(item.url + "/ns/dep/v1/completions", {**body, "model": "gpt"})[0] == 404
    status, _, reply = post(item.url + "/ns/nope/v1/completions", body)
    assert (status, reply["error"]["message"]) == (404, "no emulated Deployment ns/nope")
    status, _, reply = post(item.base + "/completions", {**body, "n": 3})
    assert (status, reply["error"]["param"]) == (400, "n")
    status, _, reply = post(item.base + "/completions", b"{nope")
    assert status == 400
    assert reply["error"]["message"].startswith("the request body is not valid JSON")


def test_rejected_request_is_503(emulated: list[Emulated]) -> None:
    """A request the replica can never hold in its KV cache is answered 503 (non-streaming)
    and ends its stream with an error event."""
    item = start(emulated, speedup=10.0, engine=EngineSettings(kv_capacity_tokens=256))
    body = {"model": MODEL, "prompt": "a", "prompt_tokens": 400, "max_tokens": 2}
    status, _, reply = post(item.base + "/completions", body)
    assert status == 503
    assert "KV cache" in reply["error"]["message"]
    with pytest.raises(openai.APIError, match="KV cache"):
        list(item.client().completions.create(model=MODEL, prompt="a", max_tokens=2,
                                              stream=True, extra_body={"prompt_tokens": 400}))


# ------------------------------------------------------------------ bounded resources


def test_request_cap_answers_429_with_retry_after(emulated: list[Emulated]) -> None:
    """With max_requests 2, a third generation request while two stream is a 429."""
    item = start(emulated, settings=OpenAISettings(max_requests=2))
    client = item.client()
    streams = [client.completions.create(model=MODEL, prompt="a", max_tokens=200, stream=True,
                                         extra_body={"ignore_eos": True}) for _ in range(2)]
    try:
        status, headers, reply = post(item.base + "/completions",
                                      {"model": MODEL, "prompt": "a", "max_tokens": 1})
        assert (status, headers["Retry-After"]) == (429, "1")
        assert reply["error"]["type"] == "RateLimitError"
        assert get(item.base + "/models")[0] == 200  # cheap GETs are not capped
    finally:
        for stream in streams:
            stream.close()
    assert item.server.service.num_refused == 1


def test_connection_cap_answers_503_and_closes(emulated: list[Emulated]) -> None:
    """With max_connections 3, a request on a fourth open connection is a 503 and the
    server closes that connection; idle connections hold no thread."""
    item = start(emulated, settings=OpenAISettings(max_connections=3))
    host, port = item.server.address
    threads = threading.active_count()
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
    try:
        time.sleep(0.2)
        assert threading.active_count() == threads
        status, _, reply = post(item.base + "/completions", {"model": MODEL, "prompt": "a"})
        assert status == 503
        assert "3 open connections" in reply["error"]["message"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert post(item.base + "/completions", {"model": MODEL, "prompt": "a",
                                             "max_tokens": 1})[0] == 200


def test_idle_connections_are_closed_after_keepalive(emulated: list[Emulated]) -> None:
    """A connection that sends nothing is closed by the server after keepalive_s."""
    item = start(emulated, settings=OpenAISettings(keepalive_s=0.3))
    with socket.create_connection(item.server.address, timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # EOF: the server closed it
        assert 0.2 <= time.monotonic() - started <= 3.0


def test_disconnected_client_aborts_its_request(emulated: list[Emulated]) -> None:
    """A streaming client that leaves after two tokens: its request is ABORTED in the twin
    (vLLM's finish reason abort) with fewer tokens than asked, and the pump goes idle."""
    item = start(emulated, speedup=10.0)

    async def leave_after_two_tokens() -> int:
        seen = 0
        async with aiohttp.ClientSession() as session, session.post(
                item.base + "/completions", json={"model": MODEL, "prompt": "a",
                                                  "max_tokens": 100, "stream": True,
                                                  "ignore_eos": True}) as response:
            async for line in response.content:
                seen += line.startswith(b"data: {")
                if seen == 2:
                    break
        return seen

    assert asyncio.run(leave_after_two_tokens()) == 2
    deadline = time.monotonic() + 5
    while item.requests()[0].status is not RequestStatus.ABORTED or (
            item.server.service.pump.num_streams):
        assert time.monotonic() < deadline, "request not aborted or stream not detached"
        time.sleep(0.02)
    host, port = item.emulation.address
    _, body = get(f"http://{host}:{port}/metrics/ns/dep-r0-0")
    reasons = {s.labels["finished_reason"]: s.value * 10.0
               for f in text_string_to_metric_families(body.decode())
               for s in f.samples if s.name == "vllm:request_success_total"}
    assert reasons.get("abort") == pytest.approx(1.0)
    generated = scrape(item, "dep-r0-0")["vllm:generation_tokens_total"] * 10.0
    assert 2 <= generated < 100
    assert item.server.service.num_in_flight == 0


@pytest.mark.parametrize(("changes", "match"), [
    ({"max_connections": 0}, "max_connections must be >= 1"),
    ({"max_requests": -1}, "max_requests must be >= 1"),
    ({"keepalive_s": 0.0}, "keepalive_s must be > 0"),
    ({"port": 70000}, "port must be in"),
])
def test_settings_reject_bad_values(changes: dict[str, Any], match: str) -> None:
    """Out-of-range OpenAI settings are ConfigErrors naming the field and value."""
    with pytest.raises(ConfigError, match=match):
        OpenAISettings(**changes)


def test_port_in_use_is_a_config_error(emulated: list[Emulated]) -> None:
    """A second server on a bound port fails to start with a ConfigError naming it."""
    item = start(emulated)
    port = item.server.address[1]
    second = OpenAIServer(item.emulation, OpenAISettings(port=port))
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        second.start()
    second.stop()  # nothing to stop, no error
