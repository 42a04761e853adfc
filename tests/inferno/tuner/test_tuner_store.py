"""Parameter store: learned pairs, JSON persistence, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tuner_helpers import ACC, MODEL, TRUE, ramp

from inferno.errors import ConfigError
from inferno.tuner import ParameterStore, TunerPhase, TunerStage


def _trained() -> TunerStage:
    stage = TunerStage()
    for k, cycle in enumerate(ramp(TRUE, 8, np.random.default_rng(0), noise=0.02)):
        stage.tune(cycle, now_s=60.0 * k)
    return stage


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    """Parameters, covariance, bounds and update count survive a save/load cycle."""
    stage = _trained()
    path = tmp_path / "tuner.json"
    stage.store.save(path)
    loaded = ParameterStore.load(path).get((MODEL, ACC))
    original = stage.store.get((MODEL, ACC))
    assert loaded.params == original.params
    assert loaded.update_count == original.update_count
    assert loaded.phase is TunerPhase.TUNED
    np.testing.assert_array_equal(loaded.ekf.p, original.ekf.p)
    np.testing.assert_array_equal(loaded.ekf.x_min, original.ekf.x_min)


def test_loaded_store_continues_tuning(tmp_path: Path) -> None:
    """A stage built on a loaded store merges the saved parameters without new data."""
    path = tmp_path / "tuner.json"
    _trained().store.save(path)
    stage = TunerStage(store=ParameterStore.load(path))
    assert stage.params()[(MODEL, ACC)] == ParameterStore.load(path).get((MODEL, ACC)).params
    assert not stage.is_warming_up()


def test_collecting_pairs_are_not_saved(tmp_path: Path) -> None:
    """A pair without learned parameters is left out of the file."""
    stage = TunerStage()
    stage.tune(ramp(TRUE, 1, np.random.default_rng(0))[0], now_s=0.0)
    path = tmp_path / "tuner.json"
    stage.store.save(path)
    assert json.loads(path.read_text()) == {"pairs": []}


@pytest.mark.parametrize(("doc", "message"), [
    ({"pairs": 3}, r"pairs: must be a list"),
    ({"pairs": [{"model": "m"}]}, r"pairs\[0\]: malformed entry"),
    ({"pairs": [{"model": "m", "accelerator": "a", "alpha": -1, "beta": 1, "gamma": 1}]},
     r"pairs\[0\]: alpha, beta, gamma must be > 0"),
], ids=["not-a-list", "missing-keys", "negative"])
def test_malformed_store_file_is_a_config_error(tmp_path: Path, doc: dict, message: str) -> None:
    """Bad content names the entry and the problem."""
    path = tmp_path / "tuner.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        ParameterStore.load(path)


def test_entry_without_covariance_resumes_with_a_fresh_filter(tmp_path: Path) -> None:
    """A hand-written entry (parameters only) is tuned on from new data, not an error."""
    path = tmp_path / "tuner.json"
    path.write_text(json.dumps({"pairs": [{
        "model": MODEL, "accelerator": ACC, "alpha": TRUE.alpha_ms * 1.1,
        "beta": TRUE.beta_ms, "gamma": TRUE.gamma_ms}]}))
    stage = TunerStage(store=ParameterStore.load(path))
    for k, cycle in enumerate(ramp(TRUE, 10, np.random.default_rng(1))):
        stage.tune(cycle, now_s=60.0 * k)
    state = stage.store.get((MODEL, ACC))
    assert stage.state_for_log()["errors"] == 0
    assert state.counts["accepted"] >= 20
    assert abs(state.params.alpha_ms / TRUE.alpha_ms - 1) < 0.05
