"""Timing of the batched analyzer at optimizer scale (a script, not collected by pytest).

20,000 candidates: N uniform in 1..256, Q = 64, L and m uniform in 128..2048, α/β/γ drawn
from sample-data/large/model-data.json, TTFT/ITL targets from its service classes (fixed
seed). Prints the median and minimum of 5 runs (CPU time, one thread).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python tests/inferno/analyzer/bench_analyzer.py
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inferno.analyzer import (
    QueueBatch,
    analyze_batch,
    latency_percentiles_batch,
    search_concurrency_batch,
    size_batch,
)
from inferno.model import PerfModel

LARGE = Path(__file__).resolve().parents[1] / "sample-data" / "large"


def candidates(num: int, model: PerfModel, seed: int = 1
               ) -> tuple[QueueBatch, np.ndarray, np.ndarray]:
    """(batch, ttft_ms, itl_ms) for ``num`` synthetic candidates."""
    rng = np.random.default_rng(seed)
    perf = json.loads((LARGE / "model-data.json").read_text())["models"]
    classes = json.loads((LARGE / "serviceclass-data.json").read_text())["serviceClasses"]
    targets: dict[str, list[tuple[float, float]]] = {}
    for cls in classes:
        for t in cls["modelTargets"]:
            targets.setdefault(t["model"], []).append((t.get("slo-ttft", 0.0),
                                                       t.get("slo-itl", 0.0)))
    pick = rng.integers(len(perf), size=num)
    choice = [targets[perf[i]["name"]][rng.integers(len(targets[perf[i]["name"]]))]
              for i in pick]
    batch = QueueBatch(
        max_batch=rng.integers(1, 257, num), max_queue=np.full(num, 64),
        in_tokens=rng.integers(128, 2049, num).astype(float),
        out_tokens=rng.integers(128, 2049, num).astype(float),
        alpha_ms=np.array([perf[i]["perfParms"]["alpha"] for i in pick]),
        beta_ms=np.array([perf[i]["perfParms"]["beta"] for i in pick]),
        gamma_ms=np.array([perf[i]["perfParms"]["gamma"] for i in pick]),
        max_num_tokens=np.full(num, 8192), perf_model=model)
    return batch, np.array([c[0] for c in choice]), np.array([c[1] for c in choice])


def timed(label: str, fn: Callable[[], object], repeats: int = 5) -> None:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        runs.append(time.process_time() - t0)
    sys.stdout.write(f"{label:48s} median {np.median(runs) * 1e3:7.1f} ms  "
                     f"min {min(runs) * 1e3:7.1f} ms\n")


def main() -> None:
    num = 20_000
    for model in PerfModel:
        batch, ttft, itl = candidates(num, model)
        sized = size_batch(batch, ttft, itl, 0.0)
        rate = np.where(sized.feasible, 0.7 * sized.rate_rps, 1.0)
        timed(f"size_batch {num} ({model})",
              lambda b=batch, t=ttft, i=itl: size_batch(b, t, i, 0.0))
        timed(f"size_batch {num} ({model}, exact_rates=False)",
              lambda b=batch, t=ttft, i=itl: size_batch(b, t, i, 0.0, exact_rates=False))
        timed(f"analyze_batch {num} ({model})", lambda b=batch, r=rate: analyze_batch(b, r))
    batch, ttft, itl = candidates(num, PerfModel.VLLM)
    timed(f"size_batch {num} (vllm, p99 TTFT targets)",
          lambda: size_batch(batch, ttft, itl, 0.0, exact_rates=False, ttft_percentile=99.0),
          repeats=1)
    sized = size_batch(batch, ttft, itl, 0.0)
    rate = np.where(sized.feasible, 0.7 * sized.rate_rps, 1.0)
    timed(f"latency_percentiles_batch {num} (vllm, p50/p90/p99)",
          lambda: latency_percentiles_batch(batch, rate), repeats=1)
    batch, ttft, itl = candidates(num, PerfModel.CHUNKED)
    ceiling = batch.with_sizes(np.full(num, 256), batch.max_queue)
    timed(f"search_concurrency_batch {num} (M_max 256)",
          lambda: search_concurrency_batch(ceiling, ttft, itl, 0.0), repeats=1)


if __name__ == "__main__":
    main()
