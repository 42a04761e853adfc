"""`inferno sim bench`'s run-away bounds that need what the command reads: the arrivals file
(read once) and the model's parameters (closed-loop users x duration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from inferno.cli import LazyGroup
from inferno.commands import limits
from inferno.commands.sim import bench
from inferno.errors import ConfigError
from inferno.io import safe
from inferno.model import PerfParms

ROOT = Path(__file__).resolve().parents[3]
SMALL = ROOT / "sample-data" / "small"
PERF = PerfParms(alpha_ms=10.0, beta_ms=0.5, gamma_ms=0.001)


def invoke(*args: str):
    group = LazyGroup(name="inferno", commands={"bench": bench})
    return CliRunner().invoke(group, ["bench", "--data", str(SMALL), "--model", "granite_13b",
                                      "--accelerator", "A100", "--input-tokens", "32",
                                      "--output-tokens", "8", *args])


def test_fastest_request_is_one_single_token_iteration_per_output_token() -> None:
    # 100 output tokens x (α + β·1 + γ·200 KV tokens) = 100 x 10.7 ms
    assert limits.fastest_request_s(PERF, 200.0, 100.0) == pytest.approx(1.07)


def test_users_x_duration_is_capped_unless_forced() -> None:
    cycle_s = 2.0
    limit_users = safe.MAX_SIM_REQUESTS * cycle_s / 1000.0  # at --duration 1000
    limits.check_users_duration([limit_users], 1000.0, cycle_s, force=False)
    with pytest.raises(ConfigError, match=r"--concurrency .* x --duration 1000: .*"
                                          r"\(2 s\) \(MAX_SIM_REQUESTS\)"):
        limits.check_users_duration([1.0, limit_users * 1.01], 1000.0, cycle_s, force=False)
    limits.check_users_duration([limit_users * 1.01], 1000.0, cycle_s, force=True)
    limits.check_users_duration([10 ** 9], None, cycle_s, force=False)  # --num-requests bounds it


def test_concurrency_times_duration_beyond_the_cap_exits_2_before_running() -> None:
    result = invoke("--concurrency", "1000", "--duration", "1000000")
    assert result.exit_code == 2
    assert "MAX_SIM_REQUESTS" in result.output
    assert "--force" in result.output


def test_arrivals_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim import workload

    path = tmp_path / "arrivals.txt"
    path.write_text("0.0\n0.5\n1.0\n", encoding="utf-8")
    reads: list[Path] = []
    real = workload.read_timestamps

    def counting(p, where):  # noqa: ANN001, ANN202
        reads.append(Path(p))
        return real(p, where)

    monkeypatch.setattr(workload, "read_timestamps", counting)
    result = invoke("--arrivals", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert reads == [path]


def test_arrivals_beyond_the_span_limit_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "arrivals.txt"
    path.write_text(f"0\n{safe.MAX_SIM_DURATION_S * 2:g}\n", encoding="utf-8")
    result = invoke("--arrivals", str(path))
    assert result.exit_code == 2
    assert "MAX_SIM_DURATION_S" in result.output


def test_a_fleet_hour_is_within_the_request_bound_without_force() -> None:
    """Issue 15's fleet-hour (1,000 replicas at 2,500 req/s for 3,600 s: 9 million requests)
    needs no --force: `sim bench` folds finished requests into sketches, so only time bounds
    it; ten times that is refused."""
    fleet_hour = {"rate": "2500", "duration": 3600.0, "replicas": 1000, "max_batch": 64,
                  "seed": 1}
    limits.check_bench(fleet_hour, force=False)
    with pytest.raises(ConfigError, match=r"--rate 25000 x --duration 3600: .*"
                                          r"\(MAX_SIM_REQUESTS\)"):
        limits.check_bench({**fleet_hour, "rate": "25000"}, force=False)


def test_calibrate_replays_keep_their_requests_so_their_bound_is_lower() -> None:
    from inferno.commands.calibrate import calibrate

    group = LazyGroup(name="inferno", commands={"calibrate": calibrate})
    result = CliRunner().invoke(group, [
        "calibrate", str(ROOT / "README.md"), "--model", "granite_13b", "--accelerator", "A100",
        "--data", str(SMALL), "--num-requests", str(safe.MAX_SIM_REQUESTS_KEPT + 1)])
    assert result.exit_code == 2
    assert "MAX_SIM_REQUESTS_KEPT" in result.output
