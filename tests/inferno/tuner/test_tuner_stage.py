"""TunerStage: lifecycle from 2× off, guards, warm-up gating, merge, exception safety."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tuner_helpers import ACC, MODEL, OFF, TRUE, observe, ramp, rel_error

from inferno.model import Accelerator, ModelPerf, PerfParms, System
from inferno.model.snapshot import ClusterSnapshot, ServerObservation
from inferno.tuner import (
    SkipReason,
    TunerMode,
    TunerPhase,
    TunerSettings,
    TunerStage,
    observations_from_snapshot,
)
from inferno.tuner import stage as stage_module

KEY = (MODEL, ACC)


def _system(perf: PerfParms = OFF) -> System:
    return System(accelerators={ACC: Accelerator(name=ACC, type=ACC)},
                  perf={KEY: ModelPerf(model=MODEL, accelerator=ACC, max_batch_size=64,
                                       perf=perf)})


def _run(stage: TunerStage, cycles: list, system: System) -> list[PerfParms | None]:
    history = []
    for k, cycle in enumerate(cycles):
        stage.tune(cycle, now_s=60.0 * k, system=system)
        history.append(stage.candidates().get(KEY))
    return history


def test_noise_free_stage_recovers_exact_parameters_from_2x_off() -> None:
    """From model data 2× off, the first fit (≥ 5 observations) is exact to 1e-6 and stays."""
    stage, system = TunerStage(), _system()
    history = _run(stage, ramp(TRUE, 12, np.random.default_rng(1)), system)
    assert history[0] is None
    assert all(rel_error(p).max() < 1e-6 for p in history[1:])
    merged = stage.merge(system)
    assert rel_error(merged.perf[KEY].perf).max() < 1e-6
    assert merged.perf[KEY].max_batch_size == 64


@pytest.mark.parametrize("mode", [TunerMode.EKF, TunerMode.WINDOW], ids=["ekf", "window"])
def test_noisy_stage_stays_within_a_few_percent(mode: TunerMode) -> None:
    """With 2 % noise the first fit (six low-load observations) is within 10 % and every
    cycle from the tenth on within 5 % (the tuner's convergence target: 5 % in <= 10 cycles)."""
    stage = TunerStage(TunerSettings(mode=mode))
    history = _run(stage, ramp(TRUE, 20, np.random.default_rng(2), noise=0.02), _system())
    errors = np.array([rel_error(p).max() for p in history[1:]])
    assert errors.max() < 0.10, errors
    assert errors[8:].max() < 0.05, errors


def test_single_operating_point_holds_model_data() -> None:
    """One replica at constant load: the guard never lets a fit through; merge keeps OFF."""
    stage, system = TunerStage(), _system()
    rng = np.random.default_rng(3)
    cycles = [[observe(TRUE, 30.0, noise=0.02, rng=rng)] for _ in range(15)]
    _run(stage, cycles, system)
    state = stage.store.get(KEY)
    assert state.phase is TunerPhase.COLLECTING
    assert state.params is None
    assert state.counts[SkipReason.ILL_CONDITIONED] == 11
    assert state.kappa > 1000
    assert stage.merge(system).perf[KEY].perf == OFF


def test_guard_holds_a_tuned_pair_when_the_load_stops_varying() -> None:
    """After a good fit, 30 cycles at one noisy operating point: once the 20-observation
    window holds only that point the guard holds the parameters (within 3 % of the truth)."""
    stage = TunerStage()
    rng = np.random.default_rng(4)
    cycles = ramp(TRUE, 4, rng) + [[observe(TRUE, 30.0, noise=0.02, rng=rng)]
                                   for _ in range(30)]
    history = _run(stage, cycles, _system())
    state = stage.store.get(KEY)
    assert state.counts[SkipReason.ILL_CONDITIONED] >= 10
    assert all(p == history[-1] for p in history[-10:])
    assert max(rel_error(p).max() for p in history[1:]) < 0.03


def test_saturated_observations_are_counted_and_never_move_the_estimate() -> None:
    """A tuned pair sees loads past capacity (noise-free): those are skipped and counted,
    and the parameters stay exact."""
    stage = TunerStage()
    rng = np.random.default_rng(5)
    cycles = ramp(TRUE, 4, rng) + [[observe(TRUE, rate, time_s=60.0 * k)]
                                   for k, rate in enumerate(np.linspace(50, 90, 12))]
    history = _run(stage, cycles, _system())
    counts = stage.store.get(KEY).counts
    assert counts[SkipReason.SATURATED] + counts.get(SkipReason.MODEL_SATURATED, 0) >= 8
    assert all(rel_error(p).max() < 1e-6 for p in history[1:])


def test_nis_lockout_ends_in_a_refit_to_the_new_truth() -> None:
    """The truth moves 2× (α up, β down) after tuning: three cycles of NIS rejections, then
    a refit on the refused observations only, exact to 1e-6 for the new truth."""
    moved = PerfParms(alpha_ms=2 * TRUE.alpha_ms, beta_ms=0.5 * TRUE.beta_ms,
                      gamma_ms=TRUE.gamma_ms)
    stage = TunerStage()
    rng = np.random.default_rng(6)
    _run(stage, ramp(TRUE, 10, rng), _system())
    _run(stage, ramp(moved, 12, rng), _system())
    state = stage.store.get(KEY)
    assert state.counts["rejected_nis"] == 9
    assert state.counts["refit"] == 2
    assert rel_error(state.params, moved).max() < 1e-6


def test_warm_up_lasts_until_the_nis_free_cycles_are_done() -> None:
    """Warming while collecting and during the 5 NIS-free cycles, then not."""
    stage = TunerStage(TunerSettings(warm_up_cycles=5, warm_up_timeout_cycles=0))
    flags = []
    for k, cycle in enumerate(ramp(TRUE, 9, np.random.default_rng(7))):
        stage.tune(cycle, now_s=60.0 * k, system=_system())
        flags.append(stage.is_warming_up())
    # cycle 0 collects, cycle 1 fits, cycles 2-6 are the five warm-up updates
    assert flags == [True] * 6 + [False] * 3


def test_warm_up_times_out_after_the_configured_cycles() -> None:
    """A pair that never becomes identifiable stops gating after 3 consecutive cycles."""
    stage = TunerStage(TunerSettings(warm_up_timeout_cycles=3))
    flags = []
    for k in range(5):
        stage.tune([observe(TRUE, 30.0)], now_s=60.0 * k, system=_system())
        flags.append(stage.is_warming_up())
    assert flags == [True, True, False, False, False]


def test_tuner_failure_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside the pair update is logged and counted; merge keeps model data."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(stage_module, "tune_pair", broken)
    stage, system = TunerStage(), _system()
    stage.tune(ramp(TRUE, 1, np.random.default_rng(8))[0], now_s=0.0, system=system)
    log = stage.state_for_log()
    assert log["errors"] == 1
    assert "RuntimeError: boom" in log["lastError"]
    assert log["pairs"][0]["counts"] == {"error": 1}
    assert stage.merge(system) is system


def test_merge_failure_returns_the_input() -> None:
    """A system that cannot be merged comes back unchanged and the error is recorded."""
    stage = TunerStage()
    broken = dataclasses.replace(_system(), perf=None)  # type: ignore[arg-type]
    assert stage.merge(broken) is broken
    assert stage.state_for_log()["errors"] == 1


def test_off_mode_passes_model_data_through() -> None:
    """With mode off nothing is learned and merge returns its input."""
    stage, system = TunerStage(TunerSettings(mode=TunerMode.OFF)), _system()
    _run(stage, ramp(TRUE, 3, np.random.default_rng(9)), system)
    assert len(stage.store) == 0
    assert stage.merge(system) is system
    assert not stage.is_warming_up()


def test_merge_appends_a_learned_pair_missing_from_model_data() -> None:
    """A pair learned without model data is appended with accCount 1 and maxBatchSize 256."""
    stage = TunerStage()
    _run(stage, ramp(TRUE, 3, np.random.default_rng(10)), System())
    system = System(accelerators={ACC: Accelerator(name=ACC, type=ACC)})
    entry = stage.merge(system).perf[KEY]
    assert (entry.acc_count, entry.max_batch_size) == (1, 256)
    assert rel_error(entry.perf).max() < 1e-6


def test_state_for_log_is_plain_json() -> None:
    """The log record serialises without NaN/inf and carries parameters and counters."""
    stage = TunerStage()
    _run(stage, ramp(TRUE, 8, np.random.default_rng(11)), _system())
    doc = json.loads(json.dumps(stage.state_for_log(), allow_nan=False))
    pair = doc["pairs"][0]
    assert pair["phase"] == "tuned"
    assert pair["updateCount"] == 6
    assert pair["counts"]["accepted"] >= 18
    assert pair["alpha"] == pytest.approx(TRUE.alpha_ms, rel=1e-6)


def _server(**changes: object) -> ServerObservation:
    base = ServerObservation(name="s1", model=MODEL, class_name="Premium", accelerator=ACC,
                             max_batch=64, ready_replicas=4, arrival_rpm=120.0,
                             avg_in_tokens=1000.0, avg_out_tokens=500.0, itl_ms=20.0,
                             ttft_ms=80.0, waiting_requests=0.5)
    return dataclasses.replace(base, **changes)


def test_snapshot_gives_per_replica_observations() -> None:
    """Rate is divided by ready replicas; Q defaults to 10·N; idle servers give nothing."""
    snap = ClusterSnapshot(time_s=120.0, servers={
        "s1": _server(), "idle": _server(name="idle", arrival_rpm=0.0),
        "down": _server(name="down", ready_replicas=0),
        "q": _server(name="q", max_queue_size=0, ready_replicas=2)})
    obs = {o.arrival_rpm: o for o in observations_from_snapshot(snap, _system())}
    assert sorted(obs) == [30.0, 60.0]
    o = obs[30.0]
    assert (o.max_batch, o.max_queue, o.in_tokens, o.out_tokens, o.ttft_ms, o.itl_ms) == (
        64, 640, 1000.0, 500.0, 80.0, 20.0)
    assert (o.time_s, o.waiting_requests, o.max_num_tokens) == (120.0, 0.5, 8192)
    assert obs[60.0].max_queue == 0


def test_snapshot_without_latency_is_counted_invalid() -> None:
    """A server with traffic but no ITL reading is screened out as invalid."""
    stage = TunerStage()
    stage.observe(ClusterSnapshot(time_s=0.0, servers={"s1": _server(itl_ms=None)}), _system())
    assert stage.store.get(KEY).counts == {SkipReason.INVALID: 1}


def test_gate_publishes_a_better_candidate_after_the_validation_cycles() -> None:
    """Model data 2× off, noise-free observations: the exact candidate is published once it
    has out-predicted the prior on `validation_cycles` cycles it had not seen."""
    stage, system = TunerStage(), _system()
    published = []
    for k, cycle in enumerate(ramp(TRUE, 8, np.random.default_rng(12))):
        stage.tune(cycle, now_s=60.0 * k, system=system)
        published.append(stage.params().get(KEY))
    first = next(i for i, p in enumerate(published) if p is not None)
    # Fit at cycle 1 (5 observations), then scored on cycles 2, 3, 4 before publication.
    assert first == 1 + TunerSettings().validation_cycles
    assert rel_error(stage.merge(system).perf[KEY].perf).max() < 1e-6


def test_gate_holds_correct_model_data_against_noise() -> None:
    """Model data already right, observations with 5 % noise: the candidate fits the noise
    and never predicts unseen cycles 10 % better, so merge keeps the model data exactly."""
    stage, system = TunerStage(), _system(TRUE)
    for k, cycle in enumerate(ramp(TRUE, 20, np.random.default_rng(13), noise=0.05)):
        stage.tune(cycle, now_s=60.0 * k, system=system)
    assert stage.candidates()[KEY] != TRUE
    assert stage.params() == {}
    assert stage.merge(system).perf[KEY].perf == TRUE


def test_merge_keeps_the_data_terms_the_tuner_does_not_learn() -> None:
    """A published α, β, γ replaces only those: front-end and step shape stay the data's."""
    from inferno.model import StepShape

    extra = dataclasses.replace(OFF, frontend_ms=7.0, shape=StepShape.PIECEWISE,
                                knee_tokens=300.0, beta_high_ms=0.2)
    stage, system = TunerStage(), _system(extra)
    for k, cycle in enumerate(ramp(TRUE, 8, np.random.default_rng(14))):
        stage.tune(cycle, now_s=60.0 * k, system=system)
    merged = stage.merge(system).perf[KEY].perf
    assert (merged.frontend_ms, merged.shape, merged.knee_tokens) == (7.0, StepShape.PIECEWISE,
                                                                      300.0)
    assert merged.alpha_ms == stage.params()[KEY].alpha_ms
