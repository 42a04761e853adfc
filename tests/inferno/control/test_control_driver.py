"""Driver: periodic schedule, /invoke and /health answers, cycle log, env/argument precedence."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from control_fakes import FakeClock, FakeCollector, RecordingActuator, obs, snapshot

from inferno.control.controller import Controller
from inferno.control.cyclelog import CycleLog, read_cycle_log
from inferno.control.driver import Driver, run_periodic
from inferno.control.policies import StaticPolicy
from inferno.control.settings import ControllerSettings, resolve_controller_settings
from inferno.errors import CollectError, ConfigError


def make_driver(collector: FakeCollector, clock: FakeClock | None = None,
                **settings: object) -> Driver:
    controller = Controller(collector=collector, actuator=RecordingActuator(),
                            clock=clock or FakeClock(), policy=StaticPolicy(),
                            settings=ControllerSettings(port=0, **settings))  # type: ignore[arg-type]
    return Driver(controller)


def test_invoke_returns_ok() -> None:
    """/invoke runs one cycle and answers 200 "OK"."""
    collector = FakeCollector([snapshot(obs("a"))])
    driver = make_driver(collector)
    assert driver.handle_invoke() == (200, "text/plain; charset=utf-8", b"OK")
    assert collector.calls == 1


def test_invoke_reports_collect_failure() -> None:
    """A skipped cycle answers 503 with the reason."""
    driver = make_driver(FakeCollector([CollectError("prometheus: connection refused")]))
    status, ctype, body = driver.handle_invoke()
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body) == {
        "message": "controller: collect: prometheus: connection refused"}


def test_invoke_answers_500_on_a_crash() -> None:
    """An unexpected exception in a cycle answers 500 and the next invoke works."""
    driver = make_driver(FakeCollector([RuntimeError("bug"), snapshot(obs("a"))]))
    status, _, body = driver.handle_invoke()
    assert status == 500
    assert b"bug" in body
    assert driver.handle_invoke()[0] == 200


def test_invoke_busy_answers_409() -> None:
    """An /invoke during a running cycle waits invoke_wait_s, then answers 409."""
    entered, release = threading.Event(), threading.Event()

    def block() -> None:
        entered.set()
        release.wait(5.0)

    driver = make_driver(FakeCollector([snapshot(obs("a"))], before=block),
                         invoke_wait_s=0.05)
    worker = threading.Thread(target=driver.invoke)
    worker.start()
    assert entered.wait(5.0)
    status, _, body = driver.handle_invoke()
    release.set()
    worker.join(5.0)
    assert status == 409
    assert b"already running" in body


def test_observers_see_every_record_and_a_failing_one_is_contained() -> None:
    """Observers get each record after it is logged; one that raises does not fail the cycle."""
    seen: list[str] = []

    def broken(record: object) -> None:
        raise RuntimeError("observer bug")

    controller = Controller(collector=FakeCollector([snapshot(obs("a")), CollectError("x")]),
                            actuator=RecordingActuator(), clock=FakeClock(),
                            policy=StaticPolicy())
    driver = Driver(controller, observers=(broken, lambda r: seen.append(r.status)))
    assert driver.invoke().is_ok
    assert not driver.invoke().is_ok
    assert seen == ["ok", "skipped"]


@pytest.mark.parametrize(("outcomes", "elapsed_s", "status"), [
    ([], 90.0, 200),                      # within 3 periods of 30 s from the start
    ([], 91.0, 503),                      # no success since the start for > 3 periods
    (["ok"], 90.0, 200),                  # counted from the last success
    (["ok", "skip", "skip"], 91.0, 503),  # skipped cycles do not count
], ids=["start-grace", "never-succeeded", "recent-success", "only-skips-since"])
def test_health_fails_after_n_periods_without_success(outcomes: list[str], elapsed_s: float,
                                                      status: int) -> None:
    """/health: 503 once no cycle succeeded for health_periods × period; the body says why."""
    clock = FakeClock()
    items = [snapshot(obs("a")) if o == "ok" else CollectError("down") for o in outcomes]
    driver = make_driver(FakeCollector(items or [snapshot(obs("a"))]), clock, period_s=30.0)
    success_s = 0.0
    for outcome in outcomes:
        if outcome == "ok":
            success_s = clock.now_s()
        driver.invoke()
        clock.advance(1.0)
    clock.t_s = success_s + elapsed_s
    answer = driver.handle_health()
    assert answer[0] == status
    if status == 503:
        assert b"no successful cycle for 91 s" in answer[2]


def test_health_on_demand_only_is_always_ok() -> None:
    """Period 0 has no schedule to fall behind: /health stays 200."""
    clock = FakeClock()
    driver = make_driver(FakeCollector([CollectError("down")]), clock, period_s=0.0)
    driver.invoke()
    clock.advance(1e6)
    assert driver.handle_health()[0] == 200


def fake_wait(clock: FakeClock, stop_after_s: float) -> object:
    """A wait that advances the fake clock and reports stop once past `stop_after_s`."""
    def wait(timeout_s: float | None) -> bool:
        if timeout_s is None or clock.t_s + timeout_s > stop_after_s:
            return True
        clock.advance(timeout_s)
        return False

    return wait


def test_run_periodic_first_cycle_one_period_after_start() -> None:
    """Period 60 s from t=0 until t=200: cycles at 60, 120, 180."""
    clock = FakeClock()
    times: list[float] = []
    count = run_periodic(lambda: times.append(clock.now_s()), clock=clock, period_s=60.0,
                         stop=threading.Event(), wait=fake_wait(clock, 200.0))  # type: ignore[arg-type]
    assert (count, times) == (3, [60.0, 120.0, 180.0])


def test_run_periodic_drops_missed_ticks() -> None:
    """A 130 s action at period 60 s skips the ticks it overran: cycles at 60 and 240."""
    clock = FakeClock()
    times: list[float] = []

    def slow() -> None:
        times.append(clock.now_s())
        clock.advance(130.0)

    run_periodic(slow, clock=clock, period_s=60.0, stop=threading.Event(),
                 wait=fake_wait(clock, 300.0))  # type: ignore[arg-type]
    assert times == [60.0, 240.0]


def test_run_periodic_period_zero_is_on_demand_only() -> None:
    """Period 0: no periodic cycle, returns when stopped."""
    stop = threading.Event()
    stop.set()
    assert run_periodic(lambda: pytest.fail("must not run"), clock=FakeClock(), period_s=0.0,
                        stop=stop) == 0


def test_driver_run_writes_cycle_log(tmp_path: Path) -> None:
    """Each periodic cycle appends one strict-JSON line, skipped cycles included."""
    clock = FakeClock()
    collector = FakeCollector([snapshot(obs("a", itl_ms=float("nan"))),
                               CollectError("timeout")])
    controller = Controller(collector=collector, actuator=RecordingActuator(), clock=clock,
                            policy=StaticPolicy(), settings=ControllerSettings(period_s=30.0))
    log_path = tmp_path / "cycles.jsonl"
    driver = Driver(controller, log=CycleLog(log_path), wait=fake_wait(clock, 70.0))  # type: ignore[arg-type]
    assert driver.run() == 2
    lines = read_cycle_log(log_path)
    assert [(d["cycle"], d["time_s"], d["status"]) for d in lines] == [
        (1, 30.0, "ok"), (2, 60.0, "skipped")]
    assert lines[0]["servers"][0]["itl_ms"] is None
    assert lines[1]["reason"] == "collect: timeout"
    assert "NaN" not in log_path.read_text()


def test_cycle_log_dash_disables(tmp_path: Path) -> None:
    """Path "-" disables the log (upstream INFERNO_CYCLE_LOG=-)."""
    log = CycleLog("-")
    assert log.path is None


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, {}, (Path("."), 60.0, False)),
        ({"INFERNO_DATA_PATH": "/etc/data/", "INFERNO_CONTROL_PERIOD": "30",
          "INFERNO_CONTROL_DYNAMIC": "true"}, {}, (Path("/etc/data"), 30.0, True)),
        ({"INFERNO_CONTROL_PERIOD": "30", "INFERNO_CONTROL_DYNAMIC": "true"},
         {"period_s": "0", "is_dynamic": "false"}, (Path("."), 0.0, False)),
        ({"INFERNO_DATA_PATH": "/a", "INFERNO_CONTROL_PERIOD": ""},
         {"data_path": "/b"}, (Path("/b"), 60.0, False)),
        ({"INFERNO_CONTROL_DYNAMIC": "1"}, {"period_s": 15}, (Path("."), 15.0, True)),
    ],
    ids=["defaults", "env", "args-override-env", "empty-env-is-unset", "mixed"],
)
def test_settings_env_then_arguments(env: dict[str, str], args: dict[str, object],
                                     expected: tuple[Path, float, bool]) -> None:
    """Defaults < environment < command-line arguments."""
    s = resolve_controller_settings(env, **args)  # type: ignore[arg-type]
    assert (s.data_path, s.period_s, s.is_dynamic) == expected


def test_settings_host_and_port_from_env() -> None:
    """CONTROLLER_HOST/PORT set the listen address; default 127.0.0.1:3300."""
    assert (ControllerSettings().host, ControllerSettings().port) == ("127.0.0.1", 3300)
    s = resolve_controller_settings({"CONTROLLER_HOST": "0.0.0.0", "CONTROLLER_PORT": "8080"})
    assert (s.host, s.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("env", "args", "match"),
    [({"INFERNO_CONTROL_PERIOD": "soon"}, {}, "INFERNO_CONTROL_PERIOD: .*'soon'"),
     ({"INFERNO_CONTROL_PERIOD": "-5"}, {}, "INFERNO_CONTROL_PERIOD"),
     ({"INFERNO_CONTROL_DYNAMIC": "maybe"}, {}, "INFERNO_CONTROL_DYNAMIC: .*'maybe'"),
     ({}, {"period_s": "x"}, "argument CONTROL_PERIOD"),
     ({}, {"is_dynamic": "2"}, "argument DYNAMIC"),
     ({"CONTROLLER_PORT": "70000"}, {}, "CONTROLLER_PORT")],
    ids=["period-text", "period-negative", "dynamic-text", "arg-period", "arg-dynamic",
         "port-range"],
)
def test_settings_bad_values_name_their_source(env: dict[str, str], args: dict[str, object],
                                               match: str) -> None:
    """Invalid env vars and arguments raise ConfigError naming the variable or argument."""
    with pytest.raises(ConfigError, match=match):
        resolve_controller_settings(env, **args)  # type: ignore[arg-type]
