"""Wall-clock driver of a Controller: a periodic loop and the on-demand `GET /invoke` endpoint.

Upstream semantics (control-loop.md §1.3): the first periodic cycle fires one period after
start; period 0 means on demand only; periodic and on-demand cycles share the controller's
lock, so they never overlap (an /invoke waits for a running cycle, at most
`ControllerSettings.invoke_wait_s`, then answers 409). The HTTP server is the standard
library's `ThreadingHTTPServer`; nothing here depends on Kubernetes, so live mode and the tests
use the same driver.

| outcome of the cycle                         | /invoke answer                           |
|----------------------------------------------|------------------------------------------|
| ran (status ok)                              | 200 `OK`                                 |
| skipped: collect error                       | 503 `{"message": "controller: ..."}`     |
| skipped (static data, decide) or failed      | 500 `{"message": "controller: ..."}`     |
| a cycle was running for longer than the wait | 409 `{"message": "controller: ..."}`     |
| unexpected exception (a bug)                 | 500, logged with its traceback           |
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from inferno.control.controller import Controller, ControllerBusy
from inferno.control.cyclelog import CycleLog, CycleRecord, CycleStatus
from inferno.control.ports import Clock

logger = logging.getLogger(__name__)

Wait = Callable[[float | None], bool]
"""Wait up to the given seconds (None: forever); True when asked to stop."""

Response = tuple[int, str, bytes]
"""(HTTP status, content type, body)."""

Route = Callable[[], Response]


def run_periodic(action: Callable[[], object], *, clock: Clock, period_s: float,
                 stop: threading.Event, wait: Wait | None = None) -> int:
    """Call `action` every `period_s` of `clock` time until `stop`; returns the call count.

    The first call is one period after start. Deadlines are absolute, so slow actions do not
    make the schedule drift; ticks missed while an action ran are dropped (Go's ticker).
    Period 0 only waits for `stop`. `wait` defaults to `stop.wait`; tests pass one that
    advances a fake clock.
    """
    wait = wait or stop.wait
    if period_s <= 0:
        while not wait(None):
            pass
        return 0
    count = 0
    next_s = clock.now_s() + period_s
    while not wait(max(next_s - clock.now_s(), 0.0)):
        action()
        count += 1
        now_s = clock.now_s()
        next_s += period_s
        while next_s <= now_s:
            next_s += period_s
    return count


def invoke_response(record: CycleRecord) -> Response:
    """HTTP answer of /invoke for a cycle's record (see the module table)."""
    if record.status is CycleStatus.OK:
        return HTTPStatus.OK, "text/plain; charset=utf-8", b"OK"
    status = (HTTPStatus.SERVICE_UNAVAILABLE if record.stage == "collect"
              else HTTPStatus.INTERNAL_SERVER_ERROR)
    return _message(status, record.reason)


def _message(status: int, reason: str) -> Response:
    body = json.dumps({"message": f"controller: {reason}"}).encode()
    return status, "application/json", body


class Driver:
    """Runs a controller periodically and on demand, and writes its cycle log."""

    def __init__(self, controller: Controller, *, stop: threading.Event | None = None,
                 log: CycleLog | None = None, wait: Wait | None = None) -> None:
        self.controller = controller
        self.settings = controller.settings
        self.stop_event = stop or threading.Event()
        self.log = log
        self._wait = wait
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def invoke(self, wait_s: float | None = None) -> CycleRecord:
        """One cycle now, logged; raises ControllerBusy if another does not end in time."""
        record = self.controller.step(wait_s=wait_s)
        if self.log is not None:
            self.log.append(record)
        return record

    def handle_invoke(self) -> Response:
        """The /invoke endpoint, without HTTP (also what the server calls)."""
        try:
            record = self.invoke(wait_s=self.settings.invoke_wait_s)
        except ControllerBusy as exc:
            return _message(HTTPStatus.CONFLICT, str(exc))
        except Exception as exc:  # a bug: answer 500 and keep serving, traceback logged
            logger.exception("control cycle crashed")
            return _message(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc!r}")
        return invoke_response(record)

    def _periodic_cycle(self) -> None:
        try:
            self.invoke()
        except Exception:  # a bug must not end the loop; the next period retries
            logger.exception("control cycle crashed")

    def run(self) -> int:
        """Periodic cycles until `stop()`; returns the number of cycles run."""
        return run_periodic(self._periodic_cycle, clock=self.controller.clock,
                            period_s=self.settings.period_s, stop=self.stop_event,
                            wait=self._wait)

    def serve(self, routes: Mapping[str, Route] | None = None) -> tuple[str, int]:
        """Start the HTTP server in a daemon thread; returns the bound (host, port).

        `routes` adds GET paths (e.g. live mode's /metrics). Port 0 picks a free port.
        """
        handlers: dict[str, Route] = {"/invoke": self.handle_invoke,
                                      "/health": _health, **(routes or {})}
        server = ThreadingHTTPServer((self.settings.host, self.settings.port),
                                     _handler_class(handlers))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                                        name="inferno-invoke", daemon=True)
        self._thread.start()
        host, port = server.server_address[:2]
        logger.info("serving /invoke on %s:%d", host, port)
        return str(host), int(port)

    def stop(self) -> None:
        """Stop the periodic loop and the HTTP server (idempotent)."""
        self.stop_event.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _health() -> Response:
    return HTTPStatus.OK, "text/plain; charset=utf-8", b"OK"


def _handler_class(routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                status, ctype, body = _message(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            else:
                status, ctype, body = route()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s - %s", self.address_string(), format % args)

    return Handler
