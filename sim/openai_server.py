"""OpenAI-compatible endpoints in front of the emulated Deployments: real clients drive the twin.

Routes of `openai_app` (served on its own thread and port by `OpenAIServer`)::

    POST /<namespace>/<deployment>/v1/completions        a Service in front of the Deployment:
    POST /<namespace>/<deployment>/v1/chat/completions   its router picks a ready replica
    GET  /<namespace>/<deployment>/v1/models             its served model name
    GET  /<namespace>/<deployment>/health                200 with a ready replica, else 503
    POST /v1/completions, /v1/chat/completions           routed by the body's ``model`` (the
    GET  /v1/models, /health                             one followed Deployment serving it)

A generation request enters the twin's Deployment at the simulated time of its arrival
(`ClusterEmulation.submit`), next to the Deployment's synthetic load, as one more `Request`:
the pod's vLLM metrics count it as they count any other, and its timing is the replica's own.
`sim.token_pump.TokenPump` streams its tokens at the replica's iteration boundaries on the wall
clock (simulated time / speed-up). Lengths and wire rules are in `sim.openai_wire`.

Resources: asyncio on one thread (no thread per connection). A request arriving while more than
``max_connections`` connections are open is answered 503 and its connection closed; more than
``max_requests`` generation requests in flight: 429 with ``Retry-After``. Idle connections close
after ``keepalive_s``. A streaming client that disconnects has its request aborted at the end of
the replica's iteration in progress (`Replica.cancel`, vLLM's finish reason ``abort``), noticed
at the next token written; a non-streaming request runs to completion.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from inferno.errors import ConfigError
from sim.emulate import ClusterEmulation, Key, ServedDeployment
from sim.openai_wire import (
    SSE_DONE,
    ApiError,
    Endpoint,
    GenerationRequest,
    Reply,
    models_body,
    output_length,
    parse_request,
    sse,
    token_text,
)
from sim.request import RequestStatus
from sim.token_pump import TokenPump, TokenStream
from sim.workload import TokenDist

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAISettings:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    max_connections: int = 1024
    """Open connections served; a request on a connection beyond it is answered 503 and the
    connection closed (each costs a socket and a few kB, never a thread)."""
    max_requests: int = 512
    """Generation requests in flight; one more is answered 429 with ``Retry-After: 1``."""
    keepalive_s: float = 30.0
    """Wall s after which an idle connection (or one that never sends a request) is closed."""
    max_model_len: int = 32768
    """Context length of the served models: prompt + output tokens above it are a 400."""
    seed: int = 0
    """Seed of the end-of-sequence draws of requests without ``ignore_eos``."""

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_requests", "max_model_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"openai: {name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.keepalive_s) and self.keepalive_s > 0):
            raise ConfigError(f"openai: keepalive_s must be > 0, got {self.keepalive_s}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"openai: port must be in [0, 65535], got {self.port}")


class OpenAIService:
    """The handlers: parse, route to a Deployment, submit to the twin, stream the tokens."""

    def __init__(self, emulation: ClusterEmulation, settings: OpenAISettings,
                 num_connections: Callable[[], int] = lambda: 0) -> None:
        self.emulation = emulation
        self.settings = settings
        self.num_connections = num_connections
        self.pump = TokenPump(emulation)
        self.num_in_flight = 0
        self.num_refused = 0
        self._rng = np.random.default_rng(np.random.SeedSequence(settings.seed))

    # ------------------------------------------------------------------ application
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._limits])
        app.cleanup_ctx.append(self._pumping)
        prefix = "/{namespace}/{deployment}"
        for base in ("", prefix):
            app.router.add_post(base + "/v1/completions", self._completions)
            app.router.add_post(base + "/v1/chat/completions", self._chat)
            app.router.add_get(base + "/v1/models", self._models)
            app.router.add_get(base + "/health", self._health)
        return app

    async def _pumping(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.pump.run(), name="token-pump")
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    @web.middleware
    async def _limits(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        s = self.settings
        if self.num_connections() > s.max_connections:
            self.num_refused += 1
            response = _error(ApiError(503, f"the server is at its limit of {s.max_connections}"
                                       f" open connections; retry on a new connection"))
            response.force_close()
            return response
        if request.method != "POST":
            return await handler(request)
        if self.num_in_flight >= s.max_requests:
            self.num_refused += 1
            response = _error(ApiError(429, f"{s.max_requests} requests are in flight, the "
                                       f"server's limit; retry later"))
            response.headers["Retry-After"] = "1"
            return response
        self.num_in_flight += 1
        try:
            return await handler(request)
        finally:
            self.num_in_flight -= 1

    # ------------------------------------------------------------------ handlers
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.COMPLETIONS)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, Endpoint.CHAT)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        try:
            served = ([self._deployment(request)] if "namespace" in request.match_info
                      else list(self.emulation.served().values()))
        except ApiError as exc:
            return _error(exc)
        models = sorted({d.model for d in served})
        return web.json_response(models_body(models, created=int(time.time()),
                                             max_model_len=self.settings.max_model_len))

    async def _health(self, request: web.Request) -> web.StreamResponse:
        if "namespace" not in request.match_info:
            return web.Response(status=200)
        try:
            served = self._deployment(request)
        except ApiError as exc:
            return _error(exc)
        with self.emulation.lock:
            has_ready = bool(served.twin.ready)
        return web.Response(status=200 if has_ready else 503)

    async def _generate(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
            parsed = parse_request(body, endpoint, max_model_len=self.settings.max_model_len)
            served = self._route(request, parsed.model)
        except ApiError as exc:
            return _error(exc)
        eos = int(TokenDist(kind=self.emulation.settings.token_kind,
                            mean=served.out_tokens).sample(self._rng, 1)[0])
        out_tokens, finish = output_length(parsed, eos)
        req = self.emulation.submit(served.key, parsed.prompt_tokens, out_tokens)
        if req is None:
            return _error(ApiError(404, f"Deployment {served.namespace}/{served.deployment} "
                                   f"is no longer followed"))
        stream = self.pump.attach(req, served.twin)
        prefix = "chatcmpl" if endpoint is Endpoint.CHAT else "cmpl"
        reply = Reply(endpoint=endpoint, id=f"{prefix}-{req.id}", created=int(time.time()),
                      model=served.model)
        try:
            if parsed.stream:
                return await self._stream(request, parsed, stream, reply, finish)
            while not stream.is_final:
                await stream.changed.wait()
                stream.changed.clear()
            if stream.status is not RequestStatus.DONE:
                return _error(_ended(stream))
            return web.json_response(reply.body(req.out_tokens, finish, parsed.prompt_tokens))
        finally:
            self.pump.detach(stream)

    async def _stream(self, request: web.Request, parsed: GenerationRequest,
                      stream: TokenStream, reply: Reply, finish: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            prompt = parsed.prompt_tokens
            continuous = parsed.continuous_usage
            if parsed.endpoint is Endpoint.CHAT:
                await response.write(reply.chunk("", role=True,
                                                 counts=(prompt, 0) if continuous else None))
            sent = 0
            while True:
                await stream.changed.wait()
                stream.changed.clear()
                produced = stream.produced
                if produced > sent:
                    await response.write(b"".join(
                        reply.chunk(token_text(i), counts=(prompt, i + 1) if continuous
                                    else None) for i in range(sent, produced)))
                    sent = produced
                if stream.is_final:
                    break
            if stream.status is RequestStatus.DONE:
                tail = reply.chunk(None if parsed.endpoint is Endpoint.CHAT else "", finish,
                                   counts=(prompt, sent) if continuous else None)
                if parsed.include_usage:
                    tail += reply.usage_chunk(parsed.prompt_tokens, sent)
            else:
                tail = sse(_ended(stream).body())
            await response.write(tail + SSE_DONE)
            await response.write_eof()
        except ConnectionError:
            log.debug("client of %s went away; its request is aborted", reply.id)
            self.pump.cancel(stream)
        return response

    # ------------------------------------------------------------------ routing
    def _deployment(self, request: web.Request) -> ServedDeployment:
        key: Key = (request.match_info["namespace"], request.match_info["deployment"])
        served = self.emulation.served().get(key)
        if served is None:
            raise ApiError(404, f"no emulated Deployment {key[0]}/{key[1]}")
        return served

    def _route(self, request: web.Request, model: str | None) -> ServedDeployment:
        if "namespace" in request.match_info:
            served = self._deployment(request)
            if model is not None and model != served.model:
                raise ApiError(404, f"The model `{model}` does not exist.", "model")
            return served
        candidates = [d for d in self.emulation.served().values()
                      if model is None or d.model == model]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise ApiError(404, f"The model `{model}` does not exist.", "model")
        paths = ", ".join(f"/{d.namespace}/{d.deployment}/v1" for d in candidates)
        raise ApiError(400, f"{len(candidates)} Deployments serve "
                       f"{'models' if model is None else repr(model)}; use one of {paths}",
                       "model")


def _ended(stream: TokenStream) -> ApiError:
    if stream.status is RequestStatus.REJECTED:
        return ApiError(503, "the replica rejected the request (its waiting queue is full or "
                        "its KV cache can never hold the request)")
    return ApiError(503, "the replica was stopped before the request finished")


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


class OpenAIServer:
    """`OpenAIService` on its own thread and event loop; `start` returns the address."""

    def __init__(self, emulation: ClusterEmulation, settings: OpenAISettings | None = None
                 ) -> None:
        self.settings = settings or OpenAISettings()
        self._runner: web.AppRunner | None = None
        self.service = OpenAIService(emulation, self.settings, self._num_connections)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._failure: BaseException | None = None

    def _num_connections(self) -> int:
        runner = self._runner
        return len(runner.server.connections) if runner and runner.server else 0

    def start(self) -> tuple[str, int]:
        """Listen and serve; raises ConfigError when the address cannot be bound."""
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(ready),),
                                        name="emulate-openai", daemon=True)
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            self._thread.join()
            s = self.settings
            raise ConfigError(f"openai: cannot listen on {s.host}:{s.port}: "
                              f"{self._failure}") from self._failure
        assert self._address is not None
        return self._address

    async def _serve(self, ready: threading.Event) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.service.app(), handle_signals=False, access_log=None,
                               keepalive_timeout=s.keepalive_s, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, s.host, s.port, backlog=min(s.max_connections, 4096))
            await site.start()
        except OSError as exc:
            self._failure = exc
            await runner.cleanup()
            ready.set()
            return
        host, port = runner.addresses[0][:2]
        self._address = (str(host), int(port))
        ready.set()
        await self._stopping.wait()
        await runner.cleanup()

    def stop(self) -> None:
        """Close the listener and every connection; in-flight streams end."""
        thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return  # never started, or failed to bind
        assert self._loop is not None
        assert self._stopping is not None
        self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout=10)

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("OpenAI server not started")
        return self._address

    def __enter__(self) -> OpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
