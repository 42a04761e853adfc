"""The controller's optional tune stage: a `TunerStage` adapted to the `Tune` port.

Warm-up gating: while a pair is still collecting its first observations the stage says so
in the cycle log; the optimizer keeps deciding with the prior model data (never blocked),
and the stage's own timeout ends the warm-up. A failure inside the tuner is logged by the
stage and never reaches the controller.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inferno.model.snapshot import ClusterSnapshot
from inferno.model.system import System
from inferno.tuner import TunerMode, TunerSettings, TunerStage


class TunerHook:
    """The `Tune` port over a `TunerStage`: observe the snapshot, then merge learned
    parameters."""

    def __init__(self, stage: TunerStage) -> None:
        self.stage = stage

    def __call__(self, snapshot: ClusterSnapshot, static: System) -> System:
        self.stage.observe(snapshot, static)
        return self.stage.merge(static)

    def state_for_log(self) -> dict[str, Any]:
        return self.stage.state_for_log()


def make_tuner(mode: str, settings: TunerSettings | None = None) -> TunerHook | None:
    """`--tuner ekf|window|off` → a hook (``settings`` with that mode), or None when off."""
    tuner_mode = TunerMode(mode)
    if tuner_mode is TunerMode.OFF:
        return None
    base = settings or TunerSettings()
    return TunerHook(TunerStage(replace(base, mode=tuner_mode)))
