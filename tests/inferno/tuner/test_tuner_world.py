"""How a world's observations enter the tuner: the TTFT convention of h(x) and transient windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tuner_helpers import ACC, IN_TOKENS, MODEL, OUT_TOKENS, TRUE, observe

from inferno.model import ModelPerf, System
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from inferno.tuner import (
    FirstToken,
    ObservationSet,
    SkipReason,
    TunerSettings,
    TunerStage,
    check_observation,
    observations_from_snapshot,
)
from inferno.tuner.observation import as_array

KEY = (MODEL, ACC)


def _prefill(o):
    return dataclasses.replace(o, first_token=FirstToken.PREFILL)


def test_decode_convention_is_the_analyzers_prediction() -> None:
    """first_token=decode (the default) leaves h(x) equal to the analyzer's TTFT and ITL."""
    o = observe(TRUE, 30.0)
    h = ObservationSet([o]).predict(as_array(TRUE)[None])
    assert h.ttft_ms[0, 0] == pytest.approx(o.ttft_ms, rel=1e-12)
    assert h.itl_ms[0, 0] == pytest.approx(o.itl_ms, rel=1e-12)


def test_prefill_convention_at_vanishing_load_is_one_lone_prefill_iteration() -> None:
    """At λ → 0 (idle replica, no wait) the first token comes with the prompt's own iteration:
    TTFT = α + β·L + γ·L (iteration time with L tokens computed and L in the KV cache)."""
    o = _prefill(observe(TRUE, 1e-4))
    h = ObservationSet([o]).predict(as_array(TRUE)[None])
    lone = TRUE.alpha_ms + (TRUE.beta_ms + TRUE.gamma_ms) * IN_TOKENS
    assert h.ttft_ms[0, 0] == pytest.approx(lone, rel=1e-4)


def test_prefill_convention_changes_ttft_only() -> None:
    """The convention moves TTFT below the analyzer's (no closing decode step); ITL and the
    load ratio are untouched."""
    rates = [5.0, 20.0, 40.0]
    decode = ObservationSet([observe(TRUE, r) for r in rates]).predict(as_array(TRUE)[None])
    prefill = ObservationSet([_prefill(observe(TRUE, r)) for r in rates]).predict(
        as_array(TRUE)[None])
    np.testing.assert_array_equal(prefill.itl_ms, decode.itl_ms)
    np.testing.assert_array_equal(prefill.load_ratio, decode.load_ratio)
    assert np.all(prefill.ttft_ms < decode.ttft_ms)
    assert np.all(decode.ttft_ms - prefill.ttft_ms < decode.itl_ms)


def test_prefill_observations_are_fitted_back_exactly() -> None:
    """Noise-free observations made with the prefill convention recover the parameters."""
    from inferno.tuner import fit

    rng = np.random.default_rng(3)
    obs = []
    for rate, big_l, m in [(10, 1024, 512), (30, 512, 256), (50, 768, 128), (20, 256, 512),
                           (40, 1024, 256)]:
        o = _prefill(observe(TRUE, rate, big_l, m))
        h = ObservationSet([o]).predict(as_array(TRUE)[None])
        obs.append(dataclasses.replace(o, ttft_ms=float(h.ttft_ms[0, 0])))
    start = as_array(TRUE) * np.array([2.0, 0.5, 2.0]) * rng.uniform(0.99, 1.01, 3)
    result = fit(ObservationSet(obs), start)
    np.testing.assert_allclose(result.x, as_array(TRUE), rtol=1e-6)


# ------------------------------------------------------------------ transient windows
def _server(**changes) -> ServerObservation:
    base = ServerObservation(name="s1", model=MODEL, class_name="Premium", accelerator=ACC,
                             max_batch=64, ready_replicas=2, arrival_rpm=60.0,
                             avg_in_tokens=float(IN_TOKENS), avg_out_tokens=float(OUT_TOKENS),
                             itl_ms=30.0, ttft_ms=90.0)
    return dataclasses.replace(base, **changes)


def _snap(time_s: float, **servers: ServerObservation) -> ClusterSnapshot:
    return ClusterSnapshot(time_s=time_s, servers=servers)


@pytest.mark.parametrize(("before", "transient"), [
    ({"s1": _server()}, False),
    ({"s1": _server(ready_replicas=3)}, True),
    ({"s1": _server(max_batch=32)}, True),
    ({"s1": _server(accelerator="H100")}, True),
    ({}, True),
], ids=["same", "scaled", "max-batch", "accelerator", "new-server"])
def test_window_after_a_replica_set_change_is_transient(before, transient) -> None:
    """A server whose ready replicas, accelerator or max batch changed since the previous
    snapshot (or that was not in it) gives a transient observation."""
    (o,) = observations_from_snapshot(_snap(120.0, s1=_server()),
                                      previous=_snap(60.0, **before))
    assert o.is_transient is transient


def test_without_history_nothing_is_transient() -> None:
    """Callers that pass no previous snapshot get every window as stationary."""
    (o,) = observations_from_snapshot(_snap(120.0, s1=_server()))
    assert o.is_transient is False


def test_transient_observations_are_screened_and_counted() -> None:
    """check_observation says transient; the stage counts its first cycle's windows so."""
    assert check_observation(dataclasses.replace(observe(TRUE, 30.0), is_transient=True),
                             0.95) is SkipReason.TRANSIENT
    system = System(perf={KEY: ModelPerf(model=MODEL, accelerator=ACC, max_batch_size=64,
                                         perf=TRUE)})
    stage = TunerStage(TunerSettings(first_token=FirstToken.PREFILL))
    stage.observe(_snap(60.0, s1=_server()), system)
    stage.observe(_snap(120.0, s1=_server(ready_replicas=3)), system)
    stage.observe(_snap(180.0, s1=_server(ready_replicas=3)), system)
    state = stage.store.get(KEY)
    assert state.counts == {SkipReason.TRANSIENT: 2}
    assert len(state.window) == 1
    assert state.window[0].first_token is FirstToken.PREFILL
