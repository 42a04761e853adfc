"""The controller's HTTP endpoints: ``GET /invoke``, ``/health`` and ``/metrics``, on aiohttp.

One asyncio loop in one thread serves every connection, so idle keep-alive connections cost
no thread; ``/invoke`` runs its cycle on a small thread pool (cycles are serialised by the
controller's lock anyway) and at most `ServerSettings.max_pending_invokes` callers wait at
once, later ones get 429 at once. ``/metrics`` is prometheus_client's text exposition
(`generate_latest`), rendered once per cycle: every metric of the registry changes only when a
cycle ends, so scrapes between two cycles are served from memory (gzip when asked) and 50
concurrent scrapers cost one rendering, not fifty.

Two listeners when `ServerSettings.metrics_port` is set: ``/invoke`` (and ``/health``) on
`port`, ``/metrics`` and ``/health`` on `metrics_port`, so a NetworkPolicy can admit
Prometheus and the kubelet to one port and only labelled clients to the port that actuates.
``/invoke`` also accepts a bearer token check (`invoke_token_path`, re-read per request so a
rotated Secret applies without a restart); compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from inferno.control.driver import Driver, Response, message_response
from inferno.errors import ConfigError

log = logging.getLogger(__name__)

ENV_INVOKE_TOKEN_PATH = "INFERNO_INVOKE_TOKEN_PATH"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Where the endpoints listen and who may call /invoke."""

    host: str = "127.0.0.1"
    """Listen address (loopback: nothing exposed unless asked)."""
    port: int = 3300
    """/invoke and /health (and /metrics when `metrics_port` is None); 0 picks a free port."""
    metrics_port: int | None = None
    """Separate listener for /metrics and /health; None serves them on `port`."""
    invoke_token_path: str | None = None
    """File holding the bearer token /invoke requires; None: no check (rely on the network)."""
    max_pending_invokes: int = 4
    """/invoke callers waiting at once; more get 429 (each waits up to a cycle)."""
    invoke_threads: int = 2
    """Threads running /invoke cycles: one runs, one waits on the controller's lock."""
    shutdown_timeout_s: float = 1.0
    """s given to requests in flight when the server stops."""

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"server: {name} must be in [0, 65535], got {value!r}")
        if self.max_pending_invokes < 1 or self.invoke_threads < 1:
            raise ConfigError("server: max_pending_invokes and invoke_threads must be >= 1, "
                              f"got {self.max_pending_invokes}, {self.invoke_threads}")

    def check(self) -> None:
        """Raise ConfigError when the token file cannot be read (at start, not per request)."""
        if self.invoke_token_path is not None:
            read_token(self.invoke_token_path)


def read_token(path: str) -> bytes:
    """The token in `path`, stripped; ConfigError when unreadable or empty."""
    try:
        token = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{ENV_INVOKE_TOKEN_PATH} {path}: cannot read: {exc}") from exc
    if not token:
        raise ConfigError(f"{ENV_INVOKE_TOKEN_PATH} {path}: the file is empty")
    return token


def _respond(response: Response) -> web.Response:
    status, ctype, body = response
    content_type, _, params = ctype.partition(";")
    charset = params.partition("charset=")[2].strip() or None
    return web.Response(status=status, body=body, content_type=content_type.strip(),
                        charset=charset)


class ControlServer:
    """The endpoints of one Driver on an aiohttp loop in a background thread."""

    def __init__(self, driver: Driver, registry: Collector, settings: ServerSettings) -> None:
        self.driver = driver
        self.registry = registry
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._runners: list[web.AppRunner] = []
        self._pending = 0
        self._rendered: tuple[object, bytes] | None = None
        """(the driver's last record when rendered, exposition)."""
        self.addresses: list[tuple[str, int]] = []
        """Bound (host, port) per listener: the main one first."""

    @property
    def pending_invokes(self) -> int:
        """/invoke callers admitted and not yet answered (the one in a cycle included)."""
        return self._pending

    # ---------------------------------------------------------------- handlers
    async def _invoke(self, request: web.Request) -> web.Response:
        token_path = self.settings.invoke_token_path
        if token_path is not None:
            denied = self._authorise(request, token_path)
            if denied is not None:
                return denied
        if self._pending >= self.settings.max_pending_invokes:
            return _respond(message_response(HTTPStatus.TOO_MANY_REQUESTS,
                                             "too many /invoke requests waiting"))
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return _respond(await loop.run_in_executor(self._pool, self.driver.handle_invoke))
        finally:
            self._pending -= 1

    def _authorise(self, request: web.Request, token_path: str) -> web.Response | None:
        try:
            expected = read_token(token_path)
        except ConfigError as exc:
            log.error("%s", exc)
            return _respond(message_response(HTTPStatus.SERVICE_UNAVAILABLE,
                                             "the /invoke token cannot be read"))
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return None
        response = _respond(message_response(HTTPStatus.UNAUTHORIZED,
                                             "a valid bearer token is required"))
        response.headers["WWW-Authenticate"] = 'Bearer realm="inferno"'
        return response

    async def _health(self, request: web.Request) -> web.Response:
        return _respond(self.driver.handle_health())

    async def _metrics(self, request: web.Request) -> web.Response:
        key = self.driver.last_record
        if self._rendered is None or self._rendered[0] is not key:
            self._rendered = (key, generate_latest(self.registry))
        response = web.Response(body=self._rendered[1],
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.enable_compression()
        return response

    # ---------------------------------------------------------------- lifecycle
    def _apps(self) -> list[tuple[web.Application, int]]:
        metrics = self._metrics
        main = web.Application()
        main.router.add_get("/invoke", self._invoke)
        main.router.add_get("/health", self._health)
        if self.settings.metrics_port is None:
            main.router.add_get("/metrics", metrics)
            return [(main, self.settings.port)]
        side = web.Application()
        side.router.add_get("/metrics", metrics)
        side.router.add_get("/health", self._health)
        return [(main, self.settings.port), (side, self.settings.metrics_port)]

    async def _start(self) -> None:
        for app, port in self._apps():
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   shutdown_timeout=self.settings.shutdown_timeout_s)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, self.settings.host, port, backlog=128).start()
            host, bound = runner.addresses[0][:2]
            self.addresses.append((str(host), int(bound)))

    async def _cleanup(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    def _call(self, factory: Callable[[], Any], timeout_s: float) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout=timeout_s)

    def start(self) -> tuple[str, int]:
        """Bind and serve; returns the main (host, port). Raises OSError when binding fails."""
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(max_workers=self.settings.invoke_threads,
                                        thread_name_prefix="inferno-invoke")
        self._thread = threading.Thread(target=self._loop.run_forever, name="inferno-http",
                                        daemon=True)
        self._thread.start()
        try:
            self._call(self._start, 30.0)
        except BaseException:
            self.stop()
            raise
        for host, port in self.addresses:
            log.info("serving on http://%s:%d", host, port)
        return self.addresses[0]

    def stop(self) -> None:
        """Close the listeners and the loop (idempotent); requests in flight get a second."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._cleanup(), loop).result(
                timeout=self.settings.shutdown_timeout_s + 5.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5.0)
                self._thread = None
            if not loop.is_running():
                loop.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
