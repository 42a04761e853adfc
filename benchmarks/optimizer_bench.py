"""Optimizer speed and memory: the whole `inferno optimize` process and the solver inside it.

For each system size and batch policy the script writes the system as the six upstream JSON
files (once, into a temporary directory), then runs ``inferno optimize DIR -o out.json`` in a
fresh process ``--repeats`` times and reports:

* whole process: wall time (median and min), CPU time (user + sys, median) and peak RSS
  (max), from ``os.wait4`` of each child;
* solver: ``solveTimeMs`` from the written JSON (wall, inside the process: candidates +
  solving, no loading) and the solver's CPU time, measured in a separate child that times
  ``solve()`` with ``time.process_time``.

Systems (`synthetic.py`, ``--seed``, default 42): ``case`` draws servers like the upstream
reference cases (tests/data/optimizer-cases: 21 accelerators, 9 models, 4 classes, power-of-two
token counts, queues 0/16/64/256) and ``synthetic`` like sample large with uniform token counts
(almost no two servers share a sizing key: the worst case for sharing). The CLI runs with no
BLAS thread variable set, as a user runs it (it then uses one BLAS thread); the solver child is
pinned to 1. The machine is shared, so CPU time is the steadier number; the load average is
printed.

``--baseline DIR`` runs the same commands against another checkout's ``inferno`` package
(``PYTHONPATH=DIR``), interleaved with this one, and adds the ratio of the CPU medians
(this / baseline). CPU times are given as median (min–max) over the runs.

``--perf-model`` replaces the perfModel written in the systems (case systems are written
with the reference cases' ``chunked``, synthetic ones with the default ``vllm``).

Both packages are byte-compiled first (``compileall``): with ``PYTHONDONTWRITEBYTECODE=1``
and no ``__pycache__`` every run would compile inferno again (~50 ms, not start-up).

``--peer LABEL=COMMAND`` also times another optimizer on each system, whole process only,
interleaved with the first policy's runs (COMMAND with ``{data}`` and ``{out}``; the written
systems are plain upstream JSON, so a build of the upstream Go optimizer reads them): the
ratios in docs/performance.md come from it.

Usage: python benchmarks/optimizer_bench.py [--sizes 100,1000,5000,10000]
       [--policies scaled,search] [--systems case] [--repeats 5] [--baseline DIR]
       [--perf-model vllm|chunked|classic] [--peer LABEL=COMMAND ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CLI = [sys.executable, "-c", "from inferno.cli import main; main()"]


ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _write(kind: str, size: int, root: Path, seed: int = 42) -> Path:
    from synthetic import case_like_system, synthetic_system

    from inferno.io.dump import write_system

    path = root / (f"{kind}-{size}" if seed == 42 else f"{kind}-{size}-seed{seed}")
    if not path.exists():
        make = case_like_system if kind == "case" else synthetic_system
        write_system(make(size, seed), path)
    return path


def _solver_cpu(data: str, policy: str, perf_model: str) -> None:
    """Child mode: CPU and wall time of solve() alone (after loading), printed as JSON."""
    from inferno.io import load_system
    from inferno.model import BatchPolicy, PerfModel
    from inferno.optimizer import solve

    system = load_system(data)
    settings = replace(system.settings, batch_policy=BatchPolicy(policy))
    if perf_model != "-":
        settings = replace(settings, perf_model=PerfModel(perf_model))
    system = replace(system, settings=settings)
    c0, w0 = time.process_time(), time.perf_counter()
    solution = solve(system)
    print(json.dumps({"cpu_ms": 1000 * (time.process_time() - c0),
                      "wall_ms": 1000 * (time.perf_counter() - w0),
                      "status": str(solution.status), "servers": len(system.servers),
                      "unallocated": len(solution.unallocated),
                      "best_effort": len(solution.best_effort)}))


GNU_TIME = "/usr/bin/time"
"""GNU time reports the child's own peak RSS. ``os.wait4`` cannot: a child started from this
process counts this process's resident set (~40 MiB with numpy) as its floor, since Linux
keeps the pre-``exec`` high-water mark."""


def _measure(cmd: list[str], env: dict[str, str], cwd: Path
             ) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak MiB, stdout) of one child process: times from ``os.wait4``, the
    peak from `GNU_TIME` where it is installed (else ``os.wait4``'s, an upper bound).

    ``cwd`` must not hold an ``inferno`` package: ``python -c`` puts the working directory
    first on sys.path, which would shadow a baseline's PYTHONPATH.
    """
    peak_file = cwd / "peak-kib.txt"
    gnu_time = os.access(GNU_TIME, os.X_OK)
    if gnu_time:
        cmd = [GNU_TIME, "-f", "%M", "-o", str(peak_file), *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True, cwd=cwd)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}")
    peak_kib = (int(peak_file.read_text().split()[-1]) if gnu_time
                else usage.ru_maxrss)
    return wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024, out


def _bench(data: Path, policy: str, repeats: int, envs: list[dict[str, str]], out_dir: Path,
           perf_model: str | None = None, peers: Sequence[str] = ()
           ) -> tuple[list[dict[str, float | str]], list[dict[str, float | str]]]:
    """One result per environment and one per peer command; every run of a repeat is done
    before the next repeat starts (interleaved), so a change in the machine's load hits them
    alike. ``perf_model`` replaces the data's."""
    model_args = ["--perf-model", perf_model] if perf_model else []
    out = out_dir / "solution.json"
    whole: list[list[tuple[float, float, float, float]]] = [[] for _ in envs]
    solver: list[list[dict]] = [[] for _ in envs]
    peer_runs: list[list[tuple[float, float, float]]] = [[] for _ in peers]
    for _ in range(repeats):
        for runs, template in zip(peer_runs, peers, strict=True):
            cmd = shlex.split(template.format(data=data, out=out_dir / "peer-solution.json"))
            runs.append(_measure(cmd, dict(os.environ), out_dir)[:3])
        for k, env in enumerate(envs):
            wall, cpu, peak, _ = _measure([*CLI, "optimize", str(data), "--batch-policy",
                                           policy, *model_args, "-o", str(out)], env, out_dir)
            whole[k].append((wall, cpu, peak, json.loads(out.read_text())["solveTimeMs"]))
            solver[k].append(json.loads(_measure(
                [sys.executable, __file__, "--child", str(data), policy, perf_model or "-"],
                {**env, **ONE_BLAS_THREAD}, out_dir)[3]))
    results = []
    for w, sv in zip(whole, solver, strict=True):
        s = sv[0]
        results.append({
            "wall_ms": 1000 * statistics.median(x[0] for x in w),
            "wall_min_ms": 1000 * min(x[0] for x in w),
            "cpu_ms": 1000 * statistics.median(x[1] for x in w),
            "cpu_range": _range(1000 * x[1] for x in w),
            "peak_mib": max(x[2] for x in w),
            "solve_ms": statistics.median(x[3] for x in w),
            "solve_cpu_ms": statistics.median(r["cpu_ms"] for r in sv),
            "solve_cpu_range": _range(r["cpu_ms"] for r in sv),
            "status": f"{s['status']}, {s['unallocated']} unallocated, "
                      f"{s['best_effort']} best effort",
        })
    return results, [_peer_result(runs) for runs in peer_runs]


def _peer_result(runs: list[tuple[float, float, float]]) -> dict[str, float | str]:
    """Whole-process figures of another optimizer's runs (wall s, CPU s, peak MiB)."""
    return {"wall_ms": 1000 * statistics.median(r[0] for r in runs),
            "wall_min_ms": 1000 * min(r[0] for r in runs),
            "cpu_ms": 1000 * statistics.median(r[1] for r in runs),
            "cpu_range": _range(1000 * r[1] for r in runs),
            "peak_mib": max(r[2] for r in runs)}


def _range(values) -> str:
    """``min–max`` of ``values`` (ms), the spread shown next to a median."""
    v = list(values)
    return f"{min(v):,.0f}–{max(v):,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,5000,10000")
    ap.add_argument("--policies", default="scaled,search")
    ap.add_argument("--systems", default="case", help="case and/or synthetic")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42, help="seed of the generated systems")
    ap.add_argument("--baseline", type=Path, help="another checkout to compare against")
    ap.add_argument("--data", type=Path, help="where to write the systems (default: temp)")
    ap.add_argument("--perf-model", help="replace the systems' perfModel (vllm, chunked, "
                                         "classic; default: as written: case systems chunked, "
                                         "synthetic ones the default)")
    ap.add_argument("--peer", action="append", default=[], metavar="LABEL=COMMAND",
                    help="also time another optimizer on each system: COMMAND with {data} "
                         "and {out} (e.g. a build of the upstream Go optimizer); repeatable")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _solver_cpu(*args.child)
        return
    # The CLI runs as a user runs it: with no BLAS thread setting (`inferno` then picks
    # one thread itself); the solver child, which imports inferno directly, is pinned.
    env = {k: v for k, v in os.environ.items() if k not in ONE_BLAS_THREAD}
    base_env = None
    packages = [HERE.parent / "inferno"]
    if args.baseline:
        base_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
        packages.append(args.baseline.resolve() / "inferno")
    for package in packages:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True,
                       stdout=subprocess.DEVNULL)
    tmp = tempfile.TemporaryDirectory()
    root = args.data or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs; "
          f"Python {sys.version.split()[0]}; {args.repeats} runs per row\n")
    cols = ("| system | servers | batch policy | process wall ms (median / min) | process CPU "
            "ms (median, min–max) | peak RSS MiB | solve ms (solveTimeMs) | solve CPU ms "
            "(median, min–max) | status |")
    if base_env:
        cols += (" baseline process CPU ms | baseline solve CPU ms | baseline peak MiB | "
                 "CPU ratio process / solve |")
    print(cols)
    print("|" + "---|" * (cols.count("|") - 1))
    for kind in args.systems.split(","):
        for size in (int(x) for x in args.sizes.split(",")):
            data = _write(kind, size, root, args.seed)
            peers = [p.partition("=") for p in args.peer]
            peer_rows: list[dict[str, float | str]] = []
            for i, policy in enumerate(args.policies.split(",")):
                # the peers run once per system, interleaved with the first policy's runs
                (r, *base), found = _bench(data, policy, args.repeats,
                                           [env] + ([base_env] if base_env else []), root,
                                           args.perf_model,
                                           [t for _, _, t in peers] if i == 0 else ())
                peer_rows = peer_rows or found
                row = (f"| {kind} | {size:,} | {policy} | {r['wall_ms']:,.0f} / "
                       f"{r['wall_min_ms']:,.0f} | {r['cpu_ms']:,.0f} ({r['cpu_range']}) | "
                       f"{r['peak_mib']:.0f} | {r['solve_ms']:,.0f} | {r['solve_cpu_ms']:,.0f} "
                       f"({r['solve_cpu_range']}) | {r['status']} |")
                for b in base:
                    row += (f" {b['cpu_ms']:,.0f} ({b['cpu_range']}) | {b['solve_cpu_ms']:,.0f} "
                            f"({b['solve_cpu_range']}) | {b['peak_mib']:.0f} | "
                            f"{r['cpu_ms'] / b['cpu_ms']:.2f} / "
                            f"{r['solve_cpu_ms'] / b['solve_cpu_ms']:.2f} |")
                print(row, flush=True)
            for (label, _, _), q in zip(peers, peer_rows, strict=True):
                print(f"| {kind} | {size:,} | peer: {label} | {q['wall_ms']:,.0f} / "
                      f"{q['wall_min_ms']:,.0f} | {q['cpu_ms']:,.0f} ({q['cpu_range']}) | "
                      f"{q['peak_mib']:.0f} | | | |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
