"""Wall-clock driver of a Controller: the periodic loop, the on-demand cycle, the health state.

Upstream semantics (docs/design/control-loop.md §1.3): the first periodic cycle fires one period
after
start; period 0 means on demand only; periodic and on-demand cycles share the controller's
lock, so they never overlap (an /invoke waits for a running cycle, at most
`ControllerSettings.invoke_wait_s`, then answers 409). This module speaks no HTTP: it returns
``(status, content type, body)`` triples that a server in a world serves (`live.server`), so
the same driver runs under any server and in the tests without one.

| outcome of the cycle                         | /invoke answer                           |
|----------------------------------------------|------------------------------------------|
| ran (status ok)                              | 200 `OK`                                 |
| skipped: collect error                       | 503 `{"message": "controller: ..."}`     |
| skipped (static data, decide) or failed      | 500 `{"message": "controller: ..."}`     |
| a cycle was running for longer than the wait | 409 `{"message": "controller: ..."}`     |
| unexpected exception (a bug)                 | 500, logged with its traceback           |

Health (``/health``): 200 while a cycle succeeded (status ok) within `health_periods` periods
(counted from the start until the first success), 503 with the time since and the last reason
otherwise. On-demand mode (period 0) has no schedule to fall behind and is always healthy.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus

from inferno.control.controller import Controller, ControllerBusy
from inferno.control.cyclelog import CycleLog, CycleRecord, CycleStatus
from inferno.control.ports import Clock

logger = logging.getLogger(__name__)

Wait = Callable[[float | None], bool]
"""Wait up to the given seconds (None: forever); True when asked to stop."""

Response = tuple[int, str, bytes]
"""(HTTP status, content type, body)."""

Observer = Callable[[CycleRecord], None]
"""Called with every cycle's record after it was logged (metrics, decision log lines)."""

DEFAULT_HEALTH_PERIODS = 3
"""Periods without a successful cycle before /health fails: one failed cycle is noise, three
in a row (3 min at the upstream period) is a controller that no longer does its job."""

TEXT = "text/plain; charset=utf-8"


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
        return HTTPStatus.OK, TEXT, b"OK"
    status = (HTTPStatus.SERVICE_UNAVAILABLE if record.stage == "collect"
              else HTTPStatus.INTERNAL_SERVER_ERROR)
    return message_response(status, record.reason)


def message_response(status: int, reason: str) -> Response:
    """A JSON ``{"message": "controller: <reason>"}`` answer (upstream's error body)."""
    body = json.dumps({"message": f"controller: {reason}"}).encode()
    return status, "application/json", body


class Driver:
    """Runs a controller periodically and on demand, logs its records, tracks its health."""

    def __init__(self, controller: Controller, *, stop: threading.Event | None = None,
                 log: CycleLog | None = None, wait: Wait | None = None,
                 observers: Iterable[Observer] = (),
                 health_periods: int = DEFAULT_HEALTH_PERIODS) -> None:
        if health_periods < 1:
            raise ValueError(f"health_periods must be >= 1, got {health_periods}")
        self.controller = controller
        self.settings = controller.settings
        self.stop_event = stop or threading.Event()
        self.log = log
        self.observers = tuple(observers)
        self.health_periods = health_periods
        self._wait = wait
        clock = controller.clock
        self.started_s = clock.now_s()
        self.last_ok_s: float | None = None
        """Clock time of the start of the last successful cycle."""
        self.last_record: CycleRecord | None = None
        """The last cycle's record, set after the log and every observer have seen it."""
        self.running_since_s: float | None = None
        """Clock time an invoke started (it may still wait for the lock); None when idle."""

    def invoke(self, wait_s: float | None = None) -> CycleRecord:
        """One cycle now, logged; raises ControllerBusy if another does not end in time."""
        self.running_since_s = self.controller.clock.now_s()
        try:
            record = self.controller.step(wait_s=wait_s)
        finally:
            self.running_since_s = None
        if self.log is not None:
            self.log.append(record)
        for observe in self.observers:
            try:
                observe(record)
            except Exception:  # an observer's bug must not fail the cycle
                logger.exception("cycle observer %r failed", observe)
        if record.is_ok:
            self.last_ok_s = record.time_s
        self.last_record = record  # last: what observers updated is complete (see live.server)
        return record

    def handle_invoke(self) -> Response:
        """The /invoke endpoint, without HTTP (what the server calls)."""
        try:
            record = self.invoke(wait_s=self.settings.invoke_wait_s)
        except ControllerBusy as exc:
            return message_response(HTTPStatus.CONFLICT, str(exc))
        except Exception as exc:  # a bug: answer 500 and keep serving, traceback logged
            logger.exception("control cycle crashed")
            return message_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                                    f"internal error: {exc!r}")
        return invoke_response(record)

    def seconds_without_success(self) -> float:
        """Clock seconds since the last successful cycle (since the start if none yet)."""
        since = self.last_ok_s if self.last_ok_s is not None else self.started_s
        return max(self.controller.clock.now_s() - since, 0.0)

    def is_healthy(self) -> bool:
        """False once no cycle succeeded for `health_periods` periods (never on demand)."""
        period_s = self.settings.period_s
        return period_s <= 0 or self.seconds_without_success() <= self.health_periods * period_s

    def handle_health(self) -> Response:
        """The /health endpoint: 200 OK, or 503 saying how long and why (module notes)."""
        if self.is_healthy():
            return HTTPStatus.OK, TEXT, b"OK"
        last = self.last_record
        why = f"; last cycle {last.cycle}: {last.status} {last.reason}".rstrip() if last else ""
        return message_response(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"no successful cycle for {self.seconds_without_success():.0f} s (limit "
            f"{self.health_periods} periods of {self.settings.period_s:g} s){why}")

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

    def stop(self) -> None:
        """Ask `run` to return after the running cycle (thread and signal safe)."""
        self.stop_event.set()
