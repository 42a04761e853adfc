"""Synthetic observations for tuner tests: the analyzer at known parameters is the ground truth."""

from __future__ import annotations

import numpy as np

from inferno.analyzer import QueueConfig, analyze
from inferno.model import PerfParms
from inferno.tuner import TunerObservation

MODEL, ACC = "granite_13b", "A100"
TRUE = PerfParms(alpha_ms=20.58, beta_ms=0.041, gamma_ms=0.00128125)
"""granite_13b on A100 in sample-data/small."""
OFF = PerfParms(alpha_ms=2 * TRUE.alpha_ms, beta_ms=TRUE.beta_ms / 2, gamma_ms=2 * TRUE.gamma_ms)
"""The 2× wrong start of the convergence scenario (scenarios/tuner-convergence.yaml): α up, β down,
γ up."""
MAX_BATCH, MAX_QUEUE = 64, 640
IN_TOKENS, OUT_TOKENS = 1024, 512


def observe(perf: PerfParms, rate_rpm: float, in_tokens: float = IN_TOKENS,
            out_tokens: float = OUT_TOKENS, *, max_batch: int = MAX_BATCH,
            max_queue: int = MAX_QUEUE, noise: float = 0.0,
            rng: np.random.Generator | None = None, time_s: float = 0.0) -> TunerObservation:
    """The analyzer's mean TTFT/ITL/throughput at ``perf``, times (1 + noise·N(0, 1))."""
    m = analyze(QueueConfig(max_batch=max_batch, max_queue=max_queue, in_tokens=in_tokens,
                            out_tokens=out_tokens, perf=perf), rate_rpm / 60.0)
    factor = np.ones(2) if not noise else 1.0 + noise * rng.standard_normal(2)
    return TunerObservation(
        model=MODEL, accelerator=ACC, arrival_rpm=rate_rpm, in_tokens=in_tokens,
        out_tokens=out_tokens, max_batch=max_batch, max_queue=max_queue,
        ttft_ms=m.ttft_ms * factor[0], itl_ms=m.itl_ms * factor[1],
        throughput_rpm=m.throughput_rps * 60.0, time_s=time_s)


def load_ratio(perf: PerfParms, rate_rpm: float, in_tokens: float = IN_TOKENS,
               out_tokens: float = OUT_TOKENS) -> float:
    """Offered rate over the analyzer's max rate at ``perf``."""
    m = analyze(QueueConfig(max_batch=MAX_BATCH, max_queue=MAX_QUEUE, in_tokens=in_tokens,
                            out_tokens=out_tokens, perf=perf), rate_rpm / 60.0)
    return m.offered_rps / m.max_rate_rps


def ramp(perf: PerfParms, num_cycles: int, rng: np.random.Generator, *, noise: float = 0.0,
         replicas: int = 3, low_rpm: float = 10.0, high_rpm: float = 50.0,
         ) -> list[list[TunerObservation]]:
    """Per cycle, ``replicas`` observations: load ramping low → high over ten cycles, then
    held, ±10 % load and ±20 % token jitter across replicas (as in
    scenarios/tuner-convergence.yaml)."""
    cycles = []
    for k in range(num_cycles):
        base = low_rpm + (high_rpm - low_rpm) * min(k, 10) / 10
        cycles.append([
            observe(perf, base * rng.uniform(0.9, 1.1), IN_TOKENS * rng.uniform(0.8, 1.2),
                    OUT_TOKENS * rng.uniform(0.8, 1.2), noise=noise, rng=rng, time_s=60.0 * k)
            for _ in range(replicas)])
    return cycles


def rel_error(p: PerfParms, ref: PerfParms = TRUE) -> np.ndarray:
    """|p/ref − 1| for α, β, γ."""
    return np.abs(np.array([p.alpha_ms / ref.alpha_ms, p.beta_ms / ref.beta_ms,
                            p.gamma_ms / ref.gamma_ms]) - 1.0)
