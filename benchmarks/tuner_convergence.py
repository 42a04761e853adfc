"""Tuner convergence from parameters 2× off, and the identifiability guard (docs/tuner.md).

The world is the analyzer at granite_13b/A100's true α, β, γ (sample-data small): per cycle
three replicas observe a load ramping 10 → 50 RPM over ten cycles, then held, with ±10 % load
and ±20 % token jitter across replicas and multiplicative Gaussian noise on TTFT and ITL. The
tuner starts from model data 2× off (α up, β down, γ up). A second run feeds one replica at a
constant load (a single operating point), with the guard on and off.

Writes docs/tuner-convergence.png and prints a summary table (cycles to 5 %, final errors,
time per cycle). Usage: python benchmarks/tuner_convergence.py [--noise 0.02,0.05] [--cycles 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from inferno.analyzer import QueueConfig, analyze
from inferno.model import Accelerator, ModelPerf, PerfParms, System
from inferno.tuner import TunerMode, TunerObservation, TunerSettings, TunerStage

DOCS = Path(__file__).resolve().parent.parent / "docs"
MODEL, ACC = "granite_13b", "A100"
TRUE = PerfParms(alpha_ms=20.58, beta_ms=0.041, gamma_ms=0.00128125)
OFF = PerfParms(alpha_ms=2 * TRUE.alpha_ms, beta_ms=TRUE.beta_ms / 2, gamma_ms=2 * TRUE.gamma_ms)
N, Q = 64, 640


def observe(rate_rpm: float, in_tokens: float, out_tokens: float, noise: float,
            rng: np.random.Generator) -> TunerObservation:
    m = analyze(QueueConfig(max_batch=N, max_queue=Q, in_tokens=in_tokens,
                            out_tokens=out_tokens, perf=TRUE), rate_rpm / 60.0)
    f = 1.0 + noise * rng.standard_normal(2)
    return TunerObservation(model=MODEL, accelerator=ACC, arrival_rpm=rate_rpm,
                            in_tokens=in_tokens, out_tokens=out_tokens, max_batch=N,
                            max_queue=Q, ttft_ms=m.ttft_ms * f[0], itl_ms=m.itl_ms * f[1],
                            throughput_rpm=m.throughput_rps * 60.0)


def ramp_cycles(num_cycles: int, noise: float, seed: int) -> list[list[TunerObservation]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = []
    for k in range(num_cycles):
        base = 10.0 + 40.0 * min(k, 10) / 10
        out.append([observe(base * rng.uniform(0.9, 1.1), 1024 * rng.uniform(0.8, 1.2),
                            512 * rng.uniform(0.8, 1.2), noise, rng) for _ in range(3)])
    return out


def single_point_cycles(num_cycles: int, noise: float, seed: int) -> list[list[TunerObservation]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    return [[observe(30.0, 1024, 512, noise, rng)] for _ in range(num_cycles)]


def run(settings: TunerSettings, cycles: list[list[TunerObservation]]
        ) -> tuple[np.ndarray, float]:
    """Parameters / truth per cycle (model data while nothing is learned), and ms per cycle."""
    system = System(accelerators={ACC: Accelerator(name=ACC, type=ACC)},
                    perf={(MODEL, ACC): ModelPerf(model=MODEL, accelerator=ACC,
                                                  max_batch_size=N, perf=OFF)})
    stage = TunerStage(settings)
    ratios, elapsed = [], 0.0
    truth = np.array([TRUE.alpha_ms, TRUE.beta_ms, TRUE.gamma_ms])
    for k, cycle in enumerate(cycles):
        t0 = time.perf_counter()
        stage.tune(cycle, now_s=60.0 * k, system=system)
        elapsed += time.perf_counter() - t0
        p = stage.merge(system).perf[(MODEL, ACC)].perf
        ratios.append(np.array([p.alpha_ms, p.beta_ms, p.gamma_ms]) / truth)
    return np.array(ratios), 1000.0 * elapsed / len(cycles)


def cycles_to(errors: np.ndarray, tolerance: float) -> int | None:
    """First cycle (1-based) from which every later cycle is within ``tolerance``."""
    bad = np.flatnonzero(errors > tolerance)
    if len(bad) == 0:
        return 1
    return None if bad[-1] + 1 >= len(errors) else int(bad[-1]) + 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--noise", default="0.02,0.05", help="relative noise levels (1σ), commas")
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=DOCS / "tuner-convergence.png")
    args = ap.parse_args()
    levels = [float(v) for v in args.noise.split(",")]

    runs: dict[str, tuple[np.ndarray, float]] = {}
    for noise in levels:
        ramp = ramp_cycles(args.cycles, noise, args.seed)
        for mode in (TunerMode.EKF, TunerMode.WINDOW):
            runs[f"{mode.value}, noise {100 * noise:g} %"] = run(TunerSettings(mode=mode), ramp)
    runs["ekf, no noise"] = run(TunerSettings(), ramp_cycles(args.cycles, 0.0, args.seed))
    single = single_point_cycles(args.cycles, levels[0], args.seed)
    guarded, _ = run(TunerSettings(), single)
    unguarded, _ = run(TunerSettings(max_condition_number=0.0), single)

    print(f"{args.cycles} cycles, 3 replicas per cycle, start 2x off, seed {args.seed}")
    print(f"{'run':<22} {'cycles to 5 %':>13} {'median err 11+ (%)':>18} "
          f"{'final |err| α, β, γ (%)':>24} {'ms/cycle':>9}")
    for name, (ratios, ms) in runs.items():
        err = np.abs(ratios - 1).max(axis=1)
        final = ", ".join(f"{100 * abs(v - 1):.2f}" for v in ratios[-1])
        print(f"{name:<22} {cycles_to(err, 0.05)!s:>13} {100 * np.median(err[10:]):>18.2f} "
              f"{final:>24} {ms:>9.1f}")
    for name, ratios in (("one point, guard on", guarded), ("one point, guard off", unguarded)):
        final = ", ".join(f"{100 * abs(v - 1):.1f}" for v in ratios[-1])
        print(f"{name:<22} {'':>13} {'':>18} {final:>24}")
    plot(runs, guarded, unguarded, args)
    print(f"plot: {args.out}")


def plot(runs: dict, guarded: np.ndarray, unguarded: np.ndarray,
         args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), constrained_layout=True)
    cycles = np.arange(1, args.cycles + 1)
    for name, (ratios, _) in runs.items():
        style = "s--" if "5 %" in name else "o-"
        ax1.semilogy(cycles, np.maximum(np.abs(ratios - 1).max(axis=1), 1e-9), style, ms=3,
                     label=name)
    ax1.axhline(0.05, color="k", ls=":", lw=1, label="5 %")
    ax1.set_xlabel("cycle")
    ax1.set_ylabel("max relative error of α, β, γ")
    ax1.set_title("Ramp with token jitter, start 2× off")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend()
    for k, (sym, color) in enumerate((("α", "C0"), ("β", "C1"), ("γ", "C2"))):
        ax2.plot(cycles, guarded[:, k], "-", color=color, label=f"{sym}, guard on")
        ax2.plot(cycles, unguarded[:, k], "--", color=color, label=f"{sym}, guard off")
    ax2.axhline(1.0, color="k", ls=":", lw=1)
    ax2.set_yscale("log")
    ax2.set_xlabel("cycle")
    ax2.set_ylabel("estimate / truth")
    noise = 100 * float(args.noise.split(",")[0])
    ax2.set_title(f"One replica at constant load, noise {noise:g} %")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(ncol=2, fontsize=8)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
