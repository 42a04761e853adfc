"""SIGTERM and SIGINT end `inferno` through its context managers: a reserved output file is
removed, an existing one kept, and the exit code is 128 + the signal number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from inferno.cli import exit_on_signals

ROOT = Path(__file__).resolve().parents[3]
MAIN = "from inferno.cli import main; main()"


@pytest.fixture(scope="module")
def slow_system(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 servers: `inferno optimize` spends seconds loading and solving them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from synthetic import case_like_system
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from inferno.io.dump import write_system

    directory = tmp_path_factory.mktemp("slow") / "system"
    write_system(case_like_system(5000), directory)
    return directory


def _interrupt(system: Path, out_dir: Path, signum: int) -> subprocess.CompletedProcess[str]:
    """Run `inferno optimize SYSTEM -o out_dir/out.json`, send ``signum`` once the output is
    reserved and the work has begun, and wait for the exit."""
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "optimize", str(system), "-o",
                             str(out_dir / "out.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no reservation appeared"
        time.sleep(0.02)
    time.sleep(0.3)  # into loading and solving (seconds of work on 5,000 servers)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_mid_solve_leaves_no_reservation(slow_system: Path, tmp_path: Path,
                                                signum: int, code: int) -> None:
    """The temporary file is gone, nothing is written, the exit code is 128 + signum."""
    done = _interrupt(slow_system, tmp_path, signum)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_signal_keeps_an_existing_output(slow_system: Path, tmp_path: Path) -> None:
    """An interrupted run leaves the previous result as it was."""
    (tmp_path / "out.json").write_text('{"old": true}\n')
    done = _interrupt(slow_system, tmp_path, signal.SIGTERM)
    assert done.returncode == 143, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert (tmp_path / "out.json").read_text() == '{"old": true}\n'


@pytest.fixture
def restored_handlers() -> object:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield before
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_handlers_raise_system_exit_and_yield_to_later_ones(restored_handlers: object) -> None:
    """In-process: SIGTERM raises SystemExit(143); `live`'s graceful-stop handlers, installed
    later, win while they are in place, and ours are back afterwards."""
    live_app = pytest.importorskip("live.app")
    exit_on_signals()
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 143
    stops: list[int] = []
    with live_app.stop_on_signals(lambda: stops.append(1)):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stops == [1]
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGINT)
    assert info.value.code == 130


def test_ignored_signal_stays_ignored(restored_handlers: object) -> None:
    """A signal ignored at start (nohup, a background job's SIGINT) is not taken over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_on_signals()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)


def test_signal_ends_forked_workers_first(restored_handlers: object) -> None:
    """Unwinding must not wait on workers (a pool's shutdown joins them): the handler
    terminates this process's multiprocessing children, and a forked child, which inherits
    the handler, dies of the signal as it would have without it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    running = context.Event()
    child = context.Process(target=_sleep_after_setting, args=(running,), daemon=True)
    exit_on_signals()
    child.start()
    assert running.wait(timeout=10)  # a signal in fork()'s first instants is dropped by Python
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 143
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGTERM


def _sleep_after_setting(event: Any) -> None:
    event.set()
    time.sleep(60)
