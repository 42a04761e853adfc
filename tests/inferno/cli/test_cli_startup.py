"""Start-up: `inferno optimize` imports only what it needs; `--help` imports no command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from inferno.cli import LAZY_COMMANDS, SHORT_HELP, cli

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("pandas", "matplotlib", "simpy", "kubernetes", "scipy", "prometheus_api_client",
         "yaml")


def _imported_after(args: list[str]) -> set[str]:
    """Top-level packages imported by running the CLI with ``args`` in a fresh interpreter."""
    code = ("import sys\nfrom inferno.cli import cli\n"
            "try:\n    cli(args=sys.argv[1:], prog_name='inferno')\n"
            "except SystemExit:\n    pass\n"
            "sys.stderr.write(repr(sorted({m.split('.')[0] for m in sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return set(eval(done.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own repr


@pytest.mark.parametrize("policy", ["search", "scaled"])
def test_optimize_imports_no_heavy_package(tmp_path: Path, policy: str) -> None:
    """A greedy `inferno optimize` loads none of pandas, matplotlib, simpy, kubernetes, scipy
    (scipy is for the MILP and ITL percentile targets only), and still writes its solution."""
    out = tmp_path / "s.json"
    modules = _imported_after(["optimize", str(ROOT / "sample-data" / "small"),
                               "--batch-policy", policy, "-o", str(out)])
    assert json.loads(out.read_text())["status"] == "optimal"
    assert "numpy" in modules
    assert modules.isdisjoint(HEAVY), modules & set(HEAVY)


def test_milp_imports_scipy_on_use(tmp_path: Path) -> None:
    """--solver milp is the one optimize path that needs scipy (HiGHS)."""
    modules = _imported_after(["optimize", str(ROOT / "sample-data" / "small"),
                               "--solver", "milp", "-o", str(tmp_path / "s.json")])
    assert "scipy" in modules


def test_sim_bench_imports_neither_pandas_nor_the_control_package() -> None:
    """`inferno sim bench` keeps no table in memory, so it needs no pandas, and its help
    names no policy class: neither pandas nor `inferno.control` (which brings the tuner's
    scipy.optimize) is loaded. Its JSON still comes out."""
    code = ("import sys\nfrom inferno.cli import cli\n"
            "try:\n    cli(args=sys.argv[1:], prog_name='inferno')\n"
            "except SystemExit:\n    pass\n"
            "sys.stderr.write(repr(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code, "sim", "bench", "--data",
                           str(ROOT / "sample-data" / "small"), "--model", "granite_13b",
                           "--accelerator", "A100", "--rate", "2", "--duration", "20",
                           "--input-tokens", "64", "--output-tokens", "8", "--json"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    modules = set(eval(done.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own repr
    assert json.loads(done.stdout)["num_requests"] > 0
    assert "simpy" in modules
    assert "pandas" not in modules
    assert not {m for m in modules if m.startswith(("inferno.control", "scipy.optimize"))}


def test_help_imports_no_command_and_lists_their_help() -> None:
    """`inferno --help` lists every command with its docstring's first line, importing none
    of the command modules (SHORT_HELP equals the commands' own short help)."""
    modules = _imported_after(["--help"])
    assert "inferno" in modules
    assert modules.isdisjoint({"numpy", *HEAVY})
    limit = click.HelpFormatter(width=78).width - 6 - max(len(name) for name in LAZY_COMMANDS)
    ctx = click.Context(cli)
    for name in LAZY_COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert SHORT_HELP[name] == command.get_short_help_str(limit=limit), name


def test_cli_module_imports_no_numpy() -> None:
    """`main` pins BLAS threads before numpy loads, so `inferno.cli` must not import it."""
    code = "import sys, inferno.cli\nsys.stdout.write(repr('numpy' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout == "False"


@pytest.mark.parametrize(("env", "expected"), [
    ({}, {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
    ({"OMP_NUM_THREADS": "4"}, {"OMP_NUM_THREADS": "4"}),
    ({"OPENBLAS_NUM_THREADS": "8"}, {"OPENBLAS_NUM_THREADS": "8"}),
])
def test_blas_threads_default_to_one_unless_set(env: dict[str, str], expected: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """One BLAS thread by default; any thread variable the user set wins, untouched."""
    from inferno.cli import BLAS_THREAD_VARS, single_blas_thread

    for var in BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    single_blas_thread()
    assert {v: os.environ[v] for v in BLAS_THREAD_VARS if v in os.environ} == expected
