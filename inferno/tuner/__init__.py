"""Online tuning of the α, β, γ performance parameters per (model, accelerator)
(docs/design/optimizer-model.md §6).

Layering: imports `inferno.analyzer` (for h(x)) and `inferno.model`, never `inferno.control`
or `inferno.optimizer`; the controller wires `TunerStage` in.
"""

from inferno.tuner.ekf import EkfOutcome, EkfState, EkfUpdate
from inferno.tuner.fit import FitResult, condition_number, fit, guess_init_state, refit_window
from inferno.tuner.observation import (
    FirstToken,
    ObservationSet,
    SkipReason,
    TunerObservation,
    check_observation,
)
from inferno.tuner.settings import CHI2_2DOF_975, TunerMode, TunerSettings
from inferno.tuner.stage import TunerStage, observations_from_snapshot
from inferno.tuner.store import PairState, ParameterStore, TunerPhase

__all__ = [
    "CHI2_2DOF_975", "EkfOutcome", "EkfState", "EkfUpdate", "FirstToken", "FitResult",
    "ObservationSet", "PairState", "ParameterStore", "SkipReason", "TunerMode", "TunerPhase",
    "TunerObservation", "TunerSettings", "TunerStage", "check_observation", "condition_number",
    "fit", "guess_init_state", "observations_from_snapshot", "refit_window",
]
