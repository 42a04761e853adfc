"""Twin vs analyzer over a grid from sample-data/large; writes docs/validation.md.

Grid: 8 (model, accelerator) pairs × 2 token shapes × 3 loads (λ/λ_max = 0.2, 0.5, 0.8) = 48
points. Shape 128 in / 1024 out is the load of every server in sample-data/large
server-data.json; 2048 in / 256 out is a prefill-heavy contrast. Each point: one replica, N from
model-data, Q = 10·N, Poisson arrivals, fixed lengths, vLLM token semantics (sim.validation).
Also: full-batch capacity (closed loop with C = N) against the analyzer's max rate, the
analyzer's own token accounting, and variable (geometric) output lengths.

Usage: python benchmarks/validate_twin.py [--requests 20000] [--out docs/validation.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAIRS = [("granite_13b", "H100"), ("granite_13b", "L40S"), ("llama3_8b", "A100"),
         ("llama_70b", "4xA100"), ("mixtral_8_7b", "MI300X"), ("granite_34b", "AIU2"),
         ("mistral_7b", "G2"), ("llama_13b", "L4")]
SHAPES = [(128, 1024), (2048, 256)]
LOADS = [0.2, 0.5, 0.8]
TOL = 0.10


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def _ok(x: float) -> str:
    return "yes" if abs(x) <= TOL else "**no**"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "validation.md")
    args = ap.parse_args()

    from inferno.analyzer import QueueConfig, analyze
    from inferno.io import load_system
    from inferno.model import PerfModel
    from sim.bench import BenchConfig, run_bench
    from sim.validation import Point, compare

    system = load_system(ROOT / "sample-data" / "large")
    t_start = time.perf_counter()
    grid = []
    for shape in SHAPES:
        for model, acc in PAIRS:
            for load in LOADS:
                p = Point(model=model, accelerator=acc, in_tokens=shape[0],
                          out_tokens=shape[1], load=load)
                grid.append(compare(system, p, num_requests=args.requests, seed=1))
                print(f"{model} {acc} {shape} {load}: itl {_pct(grid[-1].itl_err)} "
                      f"ttft {_pct(grid[-1].ttft_err)}", flush=True)

    rows = []
    for c in grid:
        p = c.point
        aligned = c.an_ttft_ms - c.an_itl_ms / 2.0
        queueing = c.an_wait_ms < 0.1 * c.an_ttft_ms
        rows.append(
            f"| {p.model} | {p.accelerator} | {p.in_tokens}/{p.out_tokens} | {c.max_batch} "
            f"| {p.load:.1f} | {c.rate_rps:.3g} | {c.an_rho:.2f} "
            f"| {c.twin_itl_ms:.2f} | {c.an_itl_ms:.2f} | {_pct(c.itl_err)} | {_ok(c.itl_err)} "
            f"| {c.twin_ttft_ms:.1f} | {c.an_ttft_ms:.1f} | {_pct(c.ttft_err)} "
            f"| {_ok(c.ttft_err)} | {_pct(c.twin_ttft_ms / aligned - 1)} "
            f"| {c.twin_wait_ms:.1f} | {c.an_wait_ms:.1f} | {c.twin_prefill_ms:.1f} "
            f"| {c.an_prefill_ms:.1f} | {c.twin_running:.2f} | {c.an_running:.2f} "
            f"| {'' if queueing else 'queueing'} |")
    n = len(grid)
    itl_ok = sum(abs(c.itl_err) <= TOL for c in grid)
    run_ok = sum(abs(c.twin_running / c.an_running - 1) <= TOL for c in grid)
    ttft_ok = sum(abs(c.ttft_err) <= TOL for c in grid)
    light = [c for c in grid if c.an_wait_ms < 0.1 * c.an_ttft_ms]
    aligned_ok = sum(abs(c.twin_ttft_ms / (c.an_ttft_ms - c.an_itl_ms / 2) - 1) <= TOL
                     for c in light)
    below = sum(c.twin_ttft_ms < c.an_ttft_ms for c in grid)
    max_itl = max(abs(c.itl_err) for c in grid)
    max_rho = max(c.an_rho for c in grid)

    def err_range(points: list, f) -> str:
        vals = sorted(abs(f(c)) for c in points)
        return f"{vals[0]:.0%}–{vals[-1]:.0%}" if vals else "n/a"

    short = [c for c in light if c.point.in_tokens == SHAPES[0][0]]
    long_ = [c for c in light if c.point.in_tokens == SHAPES[1][0]]
    heavy = [c for c in grid if c not in light and c.twin_wait_ms > 0]
    wait_ratio = sorted(c.an_wait_ms / c.twin_wait_ms for c in heavy)
    ratio_text = (f"{wait_ratio[0]:.1f}–{wait_ratio[-1]:.1f}×" if wait_ratio else "n/a")
    low = [c for c in grid if c.point.load == LOADS[0]]
    max_pre = max(c.twin_prefill_ms / c.an_prefill_ms - 1 for c in low)

    cap_rows = []
    for shape in SHAPES:
        for model, acc in PAIRS:
            mp = system.perf[(model, acc)]
            n_batch = mp.max_batch_size or 256
            cfg = QueueConfig(max_batch=n_batch, max_queue=10 * n_batch, in_tokens=shape[0],
                              out_tokens=shape[1], perf=mp.perf, perf_model=PerfModel.CHUNKED,
                              max_num_tokens=mp.max_num_tokens)
            lam_max = analyze(cfg, 1e-6).max_rate_rps
            res = run_bench(system, BenchConfig(model=model, accelerator=acc,
                                                in_tokens=shape[0], out_tokens=shape[1],
                                                concurrency=n_batch,
                                                num_requests=max(2000, 20 * n_batch)))
            cap_rows.append(f"| {model} | {acc} | {shape[0]}/{shape[1]} | {n_batch} "
                            f"| {res.throughput_rps:.4g} | {lam_max:.4g} "
                            f"| {_pct(res.throughput_rps / lam_max - 1)} |")

    acct_rows = []
    for model, acc in PAIRS[:4]:
        p = Point(model=model, accelerator=acc, in_tokens=128, out_tokens=1024, load=0.2)
        vllm = compare(system, p, num_requests=args.requests // 2, seed=1)
        an_acct = compare(system, p, num_requests=args.requests // 2, seed=1,
                          prefill_emits_token=False)
        acct_rows.append(
            f"| {model} | {acc} | {vllm.twin_ttft_ms:.1f} | {an_acct.twin_ttft_ms:.1f} "
            f"| {vllm.an_ttft_ms:.1f} | {vllm.twin_wait_ms:.1f} | {vllm.an_itl_ms:.2f} |")

    var_rows = []
    for model, acc in PAIRS[:4]:
        for load in (0.2, 0.4):
            p = Point(model=model, accelerator=acc, in_tokens=128, out_tokens=1024, load=load)
            fx = compare(system, p, num_requests=args.requests // 2, seed=1)
            ex = compare(system, p, num_requests=args.requests // 2, seed=1,
                         output_kind="exponential")
            var_rows.append(
                f"| {model} | {acc} | {load:.1f} | {fx.twin_itl_ms:.2f} | {ex.twin_itl_ms:.2f} "
                f"| {ex.an_itl_ms:.2f} | {fx.twin_ttft_ms:.1f} | {ex.twin_ttft_ms:.1f} "
                f"| {ex.an_ttft_ms:.1f} | {ex.twin_running:.2f} | {ex.an_running:.2f} |")

    elapsed = time.perf_counter() - t_start
    text = TEMPLATE.format(
        n=n, requests=args.requests, itl_ok=itl_ok, max_itl=f"{max_itl:.1%}", run_ok=run_ok,
        ttft_ok=ttft_ok, below=below, light=len(light), aligned_ok=aligned_ok,
        max_rho=f"{max_rho:.2f}", short=err_range(short, lambda c: c.ttft_err),
        long=err_range(long_, lambda c: c.ttft_err), wait_ratio=ratio_text,
        max_pre=f"{max_pre:.0%}",
        grid="\n".join(rows), cap="\n".join(cap_rows), acct="\n".join(acct_rows),
        var="\n".join(var_rows), elapsed=f"{elapsed:.0f}")
    args.out.write_text(text)
    print(f"wrote {args.out} in {elapsed:.0f} s")


TEMPLATE = """# Twin vs analyzer: validation

Generated by `python benchmarks/validate_twin.py` ({elapsed} s on one core); do not edit by
hand. The tests in `tests/sim/test_sim_validation.py` check a small subset of the same points
on every run, together with Little's law and the M/D/1 closed form.

## Setup

- **Grid**: {n} points = 8 (model, accelerator) pairs from `sample-data/large` × 2 token shapes
  × 3 loads. Shape 128 in / 1024 out is the load of every server in
  `sample-data/large/server-data.json`; 2048 / 256 is a prefill-heavy contrast. Load is
  λ/λ_max, the offered rate over the analyzer's max rate (throughput with a full batch); the
  analyzer's reported utilisation ρ = n_srv/N is listed too (at most {max_rho} here).
- **Same model on both sides**: α/β/γ and max batch N from model-data, Q = 10·N waiting slots,
  8192-token budget, G7 chunked service-time model in the analyzer.
- **Twin**: one replica, Poisson arrivals, fixed lengths, vLLM semantics (the prefill
  iteration samples the first token), {requests} requests per point; means over the requests
  that arrived between the 10th and 90th percentile of arrivals (no warm-up or drain).
- **Criterion** (issue 3, item 6): |twin/analyzer − 1| ≤ 10% for mean ITL and mean TTFT at
  utilisation ≤ 0.8.

## Summary

| quantity | points within 10% | comment |
|---|---:|---|
| mean ITL | **{itl_ok} / {n}** | largest deviation {max_itl} |
| mean requests in the batch | {run_ok} / {n} | |
| mean TTFT, as published by the analyzer | {ttft_ok} / {n} | the twin is lower at {below} / {n} points |
| mean TTFT vs analyzer TTFT − ITL/2, where queueing is light | {aligned_ok} / {light} | the first-token convention aligned (see below) |

**ITL meets the criterion everywhere. TTFT does not**, and the difference is the analyzer's
approximation, not a twin defect; three effects explain it, in order of size.

1. **First-token convention (all loads).** The analyzer computes TTFT = W + prefill + ITL:
   in its accounting the first token costs one decode iteration after the prefill. In vLLM
   (and the twin) the iteration that completes the prefill samples the first token; what the
   analyzer leaves out instead is the wait for the iteration already running when a request
   arrives: iterations are never interrupted, so a request that finds the replica busy waits
   for the residual of the current iteration, E[T²]/(2·E[T]) for Poisson arrivals, about half
   an iteration when iterations are all decode-like (column "twin wait" at light load ≈ ITL/2).
   Net, the published TTFT is about ITL/2 too high. With 128-token prompts the prefill
   iteration is about as long as a decode iteration, so this is {short} of TTFT at light
   queueing; with 2048-token prompts {long}. Replacing the analyzer's "+ ITL" by "+ ITL/2"
   brings {aligned_ok} of the {light} light-queueing points (analyzer wait < 10% of its TTFT)
   within 10%; the worst are 2048-token points with a small N, where long prefill iterations
   lengthen the residual beyond ITL/2.
2. **Queueing at high load (λ/λ_max = 0.8; llama_70b, N = 10, already at 0.5).** The
   analyzer's birth–death chain is Markovian: it treats a request's service time as
   exponential (coefficient of variation 1). With fixed lengths, service is nearly
   deterministic, and Pollaczek–Khinchine scales the queueing delay by (1 + cv²)/2 = ½ in the
   single-server case. In the rows marked "queueing" the analyzer's wait is {wait_ratio} the
   twin's (the twin's also contains the residual iteration, so the queueing parts differ
   more). The M/D/1 test shows the twin matches the exact closed form in the degenerate case,
   so this gap is the chain's approximation, not the engine's.
3. **Prefill at a fractional batch (light load, small N).** The analyzer evaluates the prefill
   at x = n_srv with a term (x − 1)·δ that goes negative below one request in service; an
   arriving request sees 1 + n_srv requests in its prefill iteration (Poisson arrivals see time
   averages), so at λ/λ_max = 0.2 the twin's prefill is up to {max_pre} longer. ITL and the
   mean batch are unaffected.

**Which is closer to reality?** For TTFT, the twin: vLLM v1 samples the first token in the
prefill step and schedules new requests only between steps, which is exactly what the twin
does; real TTFT is higher than both by API-server overheads (tokenisation, detokenisation,
HTTP) that neither models (control-loop.md §5.10: real 70–350 ms vs the analyzer's 66–164 ms
for Qwen2.5-14B on H100). For waits near saturation it depends on the traffic: with fixed
lengths (`vllm bench` style) the twin is right; with variable real-world lengths the
analyzer's Markovian waits are closer, but then its capacity is optimistic (last table).

## Grid

ITL/TTFT in ms; "aligned" compares the twin's TTFT with analyzer TTFT − ITL/2; wait = arrival
to admission (twin: includes the residual iteration); prefill = admission to first token;
running = mean requests in the batch.

| model | acc | in/out | N | λ/λmax | rate (req/s) | ρ | ITL twin | ITL an | ITL err | ≤10% | TTFT twin | TTFT an | TTFT err | ≤10% | aligned err | wait twin | wait an | prefill twin | prefill an | running twin | running an | note |
|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|
{grid}

## Capacity: full batch

Closed loop with C = N users (`inferno sim bench --concurrency N`): the twin's throughput
against the analyzer's max rate λ_max = N/τ(N).

| model | acc | in/out | N | twin (req/s) | analyzer λ_max (req/s) | diff |
|---|---|---|---:|---:|---:|---:|
{cap}

## Token accounting

128 in / 1024 out at λ/λ_max = 0.2. With `EngineSettings(prefill_emits_token=False)` the twin
follows the analyzer's accounting (the first token comes from the first decode iteration);
its TTFT is then the analyzer's plus the residual iteration. The default (vLLM) semantics is
what the rest of this page and the twin use.

| model | acc | TTFT twin, vLLM | TTFT twin, analyzer accounting | TTFT analyzer | twin wait (residual) | ITL analyzer |
|---|---|---:|---:|---:|---:|---:|
{acct}

## Variable output lengths

Geometric output lengths with the same mean (1024), 128 in. The analyzer only sees the mean,
but the KV-read term of a request grows with the square of its length, so its mean KV work is
E[M²]/2 ≈ m² instead of m²/2: iterations are longer (ITL higher) and capacity lower than
predicted. At λ/λ_max = 0.4 queueing already dominates the twin's TTFT where N is small
(llama_70b, N = 10; llama3_8b): with variable lengths the real capacity is well below λ_max.

| model | acc | λ/λmax | ITL twin fixed | ITL twin geometric | ITL analyzer | TTFT twin fixed | TTFT twin geometric | TTFT analyzer | running twin geometric | running analyzer |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{var}
"""  # noqa: E501


if __name__ == "__main__":
    main()
