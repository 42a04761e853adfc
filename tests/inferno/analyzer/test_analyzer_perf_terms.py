"""Front-end cost, per-sample stream cost and the piecewise step shape in the analyzer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inferno.analyzer import QueueConfig, analyze, latency_stats
from inferno.analyzer.service import (
    decode_token_work_ms,
    prefill_work_ms,
    service_params,
    vllm_prefill_work_ms,
)
from inferno.model import PerfModel, PerfParms, StepShape, frontend_delay_ms, iteration_time_ms

BASE = PerfParms(alpha_ms=12.0, beta_ms=0.03, gamma_ms=0.001)


def test_iteration_time_closed_form():
    """Linear below the knee, β_high per token beyond it, stream cost per sample."""
    perf = dataclasses.replace(BASE, shape=StepShape.PIECEWISE, knee_tokens=256.0,
                               beta_high_ms=0.05, stream_ms=0.2)
    assert iteration_time_ms(perf, 100, 1000, 100) == pytest.approx(
        12.0 + 0.03 * 100 + 0.001 * 1000 + 0.2 * 100, rel=1e-15)
    assert iteration_time_ms(perf, 1000, 1000, 3) == pytest.approx(
        12.0 + 0.03 * 256 + 0.05 * 744 + 0.001 * 1000 + 0.2 * 3, rel=1e-15)
    linear = dataclasses.replace(perf, shape=StepShape.LINEAR)
    assert iteration_time_ms(linear, 1000, 1000, 0) == pytest.approx(
        12.0 + 0.03 * 1000 + 0.001 * 1000, rel=1e-15)


def test_frontend_delay():
    """α0 + α1·L."""
    perf = dataclasses.replace(BASE, frontend_ms=15.0, frontend_per_token_ms=0.002)
    assert frontend_delay_ms(perf, 1000) == pytest.approx(17.0, rel=1e-15)
    assert frontend_delay_ms(BASE, 1000) == 0.0


def test_work_terms_follow_the_shape():
    """A one-chunk prefill of L > knee carries (β_high − β)(L − knee); a sample costs s."""
    perf = dataclasses.replace(BASE, shape=StepShape.PIECEWISE, knee_tokens=256.0,
                               beta_high_ms=0.05, stream_ms=0.2)
    p = service_params(perf, 2048, 128, 64, 8192)
    base = service_params(BASE, 2048, 128, 64, 8192)
    one = np.ones(1)
    assert prefill_work_ms(one, p)[0] - prefill_work_ms(one, base)[0] == pytest.approx(
        0.02 * (2048 - 256), rel=1e-12)
    assert vllm_prefill_work_ms(one, p)[0] - prefill_work_ms(one, p)[0] == pytest.approx(0.2)
    assert decode_token_work_ms(p)[0] - decode_token_work_ms(base)[0] == pytest.approx(0.2)
    # Two chunks of 1024 tokens: the excess is counted per chunk.
    assert prefill_work_ms(2 * one, p)[0] - prefill_work_ms(2 * one, base)[0] == (
        pytest.approx(2 * 0.02 * (1024 - 256), rel=1e-12))


@pytest.mark.parametrize("rate_rps", [0.5, 3.0, 6.0], ids=["light", "half", "heavy"])
def test_frontend_shifts_vllm_ttft_only(rate_rps):
    """The front-end is a pure delay: mean and percentiles of TTFT shift by α0 + α1·L; ITL,
    throughput and the queue do not move."""
    fe = dataclasses.replace(BASE, frontend_ms=9.0, frontend_per_token_ms=0.003)
    cfgs = [QueueConfig(max_batch=32, max_queue=320, in_tokens=1500, out_tokens=200, perf=p,
                        perf_model=PerfModel.VLLM) for p in (BASE, fe)]
    (m0, m1) = (analyze(c, rate_rps) for c in cfgs)
    (s0, s1) = (latency_stats(c, rate_rps) for c in cfgs)
    shift = 9.0 + 0.003 * 1500
    assert m1.ttft_ms - m0.ttft_ms == pytest.approx(shift, rel=1e-9)
    assert m1.itl_ms == m0.itl_ms
    assert m1.throughput_rps == m0.throughput_rps
    for q in ("p50", "p90", "p99"):
        assert getattr(s1[0], q) - getattr(s0[0], q) == pytest.approx(shift, rel=1e-6)
        assert getattr(s1[1], q) == pytest.approx(getattr(s0[1], q), rel=1e-12)


@pytest.mark.parametrize("model", [PerfModel.VLLM, PerfModel.CHUNKED, PerfModel.CLASSIC])
def test_zero_extras_are_upstream(model):
    """Extras at 0 (and piecewise with β_high = β) leave every metric unchanged."""
    same = dataclasses.replace(BASE, shape=StepShape.PIECEWISE, knee_tokens=100.0,
                               beta_high_ms=BASE.beta_ms)
    cfgs = [QueueConfig(max_batch=16, max_queue=160, in_tokens=900, out_tokens=100, perf=p,
                        perf_model=model) for p in (BASE, same)]
    a, b = (analyze(c, 2.0) for c in cfgs)
    assert a == b
