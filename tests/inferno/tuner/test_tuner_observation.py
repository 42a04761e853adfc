"""Observation screening and h(x), the analyzer prediction the tuner fits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from tuner_helpers import TRUE, observe

from inferno.analyzer import QueueConfig, analyze
from inferno.model import PerfParms
from inferno.tuner import ObservationSet, SkipReason, TunerObservation, check_observation
from inferno.tuner.observation import as_array

BASE = observe(TRUE, 30.0)


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, None),
    ({"arrival_rpm": 0.0}, SkipReason.INVALID),
    ({"in_tokens": 0.0}, SkipReason.INVALID),
    ({"out_tokens": 0.5}, SkipReason.INVALID),
    ({"ttft_ms": math.nan}, SkipReason.INVALID),
    ({"itl_ms": -1.0}, SkipReason.INVALID),
    ({"max_batch": 0}, SkipReason.INVALID),
    ({"max_queue": -1}, SkipReason.INVALID),
    ({"throughput_rpm": 0.0}, SkipReason.ZERO_THROUGHPUT),
    ({"throughput_rpm": 0.94 * 30.0}, SkipReason.SATURATED),
    ({"throughput_rpm": 0.96 * 30.0}, None),
    ({"throughput_rpm": None}, None),
    ({"waiting_requests": 64.0}, SkipReason.SATURATED),
    ({"waiting_requests": 63.0}, None),
], ids=["healthy", "no-rate", "no-input", "no-output", "nan-ttft", "negative-itl", "no-batch",
        "negative-queue", "zero-throughput", "throughput-short", "throughput-ok",
        "throughput-unknown", "batch-waiting", "almost-batch-waiting"])
def test_screening_table(changes: dict, expected: SkipReason | None) -> None:
    """Invalid, zero-throughput and observed-saturated samples are named; others pass."""
    obs = dataclasses.replace(BASE, **changes)
    assert check_observation(obs, min_throughput_ratio=0.95) == expected


def test_prediction_equals_the_analyzer_per_parameter_row() -> None:
    """h(x) for 2 parameter rows × 3 observations equals scalar `analyze` calls."""
    obs = [observe(TRUE, r, big_l, m) for r, big_l, m in
           ((10.0, 1024, 512), (30.0, 300, 800), (45.0, 2000, 100))]
    params = np.array([as_array(TRUE), as_array(TRUE) * np.array([1.5, 0.8, 1.2])])
    pred = ObservationSet(obs).predict(params)
    for p, x in enumerate(params):
        for i, o in enumerate(obs):
            m = analyze(QueueConfig(max_batch=o.max_batch, max_queue=o.max_queue,
                                    in_tokens=o.in_tokens, out_tokens=o.out_tokens,
                                    perf=PerfParms(alpha_ms=x[0], beta_ms=x[1],
                                                   gamma_ms=x[2])), o.rate_rps)
            assert pred.ttft_ms[p, i] == pytest.approx(m.ttft_ms, rel=1e-12)
            assert pred.itl_ms[p, i] == pytest.approx(m.itl_ms, rel=1e-12)
            assert pred.load_ratio[p, i] == pytest.approx(m.offered_rps / m.max_rate_rps,
                                                          rel=1e-12)


@pytest.mark.parametrize("bad", [[-1.0, 0.04, 0.001], [np.inf, 0.04, 0.001],
                                 [20.0, 0.0, 0.001], [2e9, 0.04, 0.001]],
                         ids=["negative", "infinite", "zero", "huge"])
def test_prediction_of_unphysical_parameters_is_inf(bad: list[float]) -> None:
    """Rows outside the physical range are reported as inf; the other rows are unaffected."""
    pred = ObservationSet([BASE]).predict(np.array([bad, as_array(TRUE)]))
    assert np.isinf(pred.ttft_ms[0, 0])
    assert np.isinf(pred.load_ratio[0, 0])
    assert np.isfinite(pred.ttft_ms[1, 0])


def test_observation_key_and_rate_units() -> None:
    """The key is (model, accelerator); rate_rps is the RPM rate over 60."""
    obs = TunerObservation(model="m", accelerator="a", arrival_rpm=90.0, in_tokens=1.0,
                           out_tokens=1.0, max_batch=1, max_queue=0, ttft_ms=1.0, itl_ms=1.0)
    assert obs.key == ("m", "a")
    assert obs.rate_rps == 1.5
